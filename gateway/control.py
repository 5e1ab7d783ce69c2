"""The gateway's local control API (loopback HTTP) used by ``pilectl``, and its Prometheus metrics.

Endpoints: ``GET /status``, ``GET /plan``, ``GET /telemetry``, ``POST /read``, ``POST /write``,
``POST /command``, ``POST /scan``, ``GET /tail``, ``GET /outbox``, ``GET /metrics``. ``/scan`` and
``/tail`` stream JSON lines (``application/x-ndjson``, one object per line, chunked). It can start
and stop charging, so besides listening on a loopback address only (enforced by the config) every
request must:

* carry ``Authorization: Bearer <token>``, the token in the gateway's control token file (any local
  user or process could otherwise start a charge; Prometheus sends it from the same file);
* name this API in its ``Host`` header (a loopback address or ``localhost`` with the listening
  port), so a web page whose DNS name was rebound to 127.0.0.1 is refused;
* carry no ``Origin`` header other than this API's own, so no other web page can use it;
* if it is a POST, send ``application/json``: browsers send ``text/plain`` bodies cross-origin
  without asking first.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware

from drivers.bus import MODBUS_MAX_WRITE, Bus
from drivers.errors import DriverError
from drivers.plan import MODBUS_MAX_BITS, MODBUS_MAX_READ, compile_read_plan, format_plan
from gateway.commands import CommandExecutor
from gateway.feed import Feed, Subscription
from gateway.outbox import Outbox
from gateway.runtime import GatewayRuntime, PileRuntime
from gateway.scan import UnitReport, default_timeout_s, min_timeout_s, scan, shipped_maps, unit_ids
from pilegate.metrics import Sample, render_metrics
from protocols.payloads import CommandMessage, PayloadError

log = structlog.get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


HEARTBEAT_S = 5.0  # a quiet stream writes a heartbeat line this often (and so notices a gone reader)
SCAN_DEADLINE_S = 120.0
TAIL_QUEUE_ITEMS = 1000


class BadRequest(Exception):
    """A control API request is malformed; the message names the field."""


class Busy(Exception):
    """The request conflicts with one already running (a second scan of the same bus)."""


def _json(data: object, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda o: json.dumps(o, default=str))


_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")


def _own_hosts(request: web.Request) -> set[str]:
    """The ``Host`` values that name this API: loopback names with the port the request came in on."""
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    if not sockname:
        return set()
    address, port = sockname[0], sockname[1]
    names = {*_LOOPBACK_NAMES, f"[{address}]" if ":" in address else address}
    return {f"{name}:{port}" for name in names}


def _refusal(status: int, message: str) -> web.Response:
    response = _json({"error": message}, status)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="pilegate gateway"'
    return response


def guard(token: str) -> Middleware:
    """Middleware refusing requests that are not from a local client holding ``token``."""
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        hosts = _own_hosts(request)
        host = request.headers.get("Host", "")
        if host not in hosts:
            return _refusal(403, f"Host {host!r} is not this API's (use 127.0.0.1 and its port)")
        origin = request.headers.get("Origin")
        if origin is not None and origin not in {f"http://{h}" for h in hosts}:
            return _refusal(403, f"requests from origin {origin!r} are not allowed")
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            return _refusal(
                401,
                "a valid 'Authorization: Bearer <token>' header is required "
                "(the token is in the gateway's control token file)",
            )
        if request.method == "POST" and request.content_type != "application/json":
            return _refusal(415, "POST bodies must be application/json")
        return await handler(request)

    return check


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except BadRequest as exc:
        return _json({"error": str(exc)}, 400)
    except Busy as exc:
        return _json({"error": str(exc)}, 409)
    except DriverError as exc:
        return _json({"error": f"{exc.kind}: {exc}"}, 502)


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise BadRequest("body must be a JSON object") from None
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    return body


def _int(body: Mapping[str, Any], name: str, low: int, high: int) -> int:
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadRequest(f"{name} must be an integer {low}..{high}, got {value!r}")
    return value


def _number(body: Mapping[str, Any], name: str, low: float, high: float, default: float) -> float:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise BadRequest(f"{name} must be a number {low:g}..{high:g}, got {value!r}")
    return float(value)


def _registers(body: Mapping[str, Any], address: int) -> list[int]:
    values = body.get("values")
    if not isinstance(values, list) or not 1 <= len(values) <= MODBUS_MAX_WRITE:
        raise BadRequest(f"values must be a list of 1..{MODBUS_MAX_WRITE} register values, got {values!r}")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFFFF:
            raise BadRequest(f"values: {value!r} is not a register value 0..65535")
    if address + len(values) > 0x10000:
        raise BadRequest(f"registers {address}..{address + len(values) - 1} go past 65535")
    return values


def _query_int(request: web.Request, name: str, low: int, high: int) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise BadRequest(f"{name} must be an integer {low}..{high}, got {raw!r}")
    return int(raw)


async def _stream(request: web.Request) -> web.StreamResponse:
    """A started response of JSON lines."""
    response = web.StreamResponse(
        headers={"Content-Type": "application/x-ndjson", "Cache-Control": "no-store"}
    )
    response.enable_chunked_encoding()
    await response.prepare(request)
    return response


async def _send(response: web.StreamResponse, item: Mapping[str, Any]) -> None:
    await response.write(json.dumps(item, default=str, separators=(",", ":")).encode() + b"\n")


class ControlApi:
    """Builds the aiohttp application over the running gateway's parts; ``token`` guards every route."""

    def __init__(
        self,
        runtime: GatewayRuntime,
        executor: CommandExecutor,
        status: Callable[[], dict[str, Any]],
        metrics: Callable[[], list[Sample]],
        token: str,
        *,
        outbox: Outbox,
        feed: Feed,
        heartbeat_s: float = HEARTBEAT_S,
    ) -> None:
        self.runtime, self.executor = runtime, executor
        self._status, self._metrics = status, metrics
        self._token = token
        self.outbox, self.feed = outbox, feed
        self._heartbeat_s = heartbeat_s
        self._scanning: set[str] = set()  # buses with a scan running
        self._closing = asyncio.Event()

    def app(self) -> web.Application:
        app = web.Application(middlewares=[guard(self._token), _errors])
        app.router.add_get("/status", self.get_status)
        app.router.add_get("/plan", self.get_plan)
        app.router.add_get("/telemetry", self.get_telemetry)
        app.router.add_post("/read", self.post_read)
        app.router.add_post("/write", self.post_write)
        app.router.add_post("/command", self.post_command)
        app.router.add_post("/scan", self.post_scan)
        app.router.add_get("/tail", self.get_tail)
        app.router.add_get("/outbox", self.get_outbox)
        app.router.add_get("/metrics", self.get_metrics)
        app.on_shutdown.append(self._shutdown)
        return app

    async def _shutdown(self, app: web.Application) -> None:
        """End the streams (tails, scans) so the server does not wait for them to stop."""
        self._closing.set()
        self.feed.close()

    async def get_status(self, request: web.Request) -> web.Response:
        return _json(self._status())

    async def get_plan(self, request: web.Request) -> web.Response:
        plans = {}
        for pile in self.runtime.piles.values():
            cfg = pile.config
            plan = compile_read_plan(
                pile.regmap, cfg.ports, max_registers=cfg.max_registers, max_gap=cfg.max_gap
            )
            plans[pile.id] = {
                "bus": cfg.bus,
                "unit": cfg.unit,
                "text": format_plan(plan),
                "requests": [[r.address, r.count] for r in plan.requests],
            }
        return _json(plans)

    async def get_telemetry(self, request: web.Request) -> web.Response:
        return _json(
            {
                pid: {"ts": p.last_ts_ms, "state": p.state, "ports": p.last}
                for pid, p in self.runtime.piles.items()
            }
        )

    def _pile_for_unit(self, body: Mapping[str, Any], unit: int) -> PileRuntime:
        """The pile named in ``body``, else the one pile with ``unit``: its bus is the one to use."""
        if body.get("pile") is not None:
            pile = self.runtime.piles.get(str(body["pile"]))
            if pile is None:
                raise BadRequest(f"pile must be one of {sorted(self.runtime.piles)}")
            return pile
        matches = [p for p in self.runtime.piles.values() if p.config.unit == unit]
        if len(matches) != 1:
            raise BadRequest(f"unit {unit} is on {len(matches)} buses; name a pile to pick one")
        return matches[0]

    async def post_read(self, request: web.Request) -> web.Response:
        body = await _body(request)
        unit = _int(body, "unit", 1, 247)
        pile = self._pile_for_unit(body, unit)
        address = _int(body, "address", 0, 65535)
        function = _int(body, "function", 1, 4) if "function" in body else 3
        bits = function in (1, 2)
        count = _int(body, "count", 1, MODBUS_MAX_BITS if bits else MODBUS_MAX_READ)
        values = await pile.bus.read_registers(unit, address, count, function)
        key = "bits" if bits else "registers"
        return _json({"pile": pile.id, "unit": unit, "address": address, "function": function, key: values})

    async def post_write(self, request: web.Request) -> web.Response:
        """Write holding registers through the bus owner (command priority); every write is logged."""
        body = await _body(request)
        unit = _int(body, "unit", 1, 247)
        pile = self._pile_for_unit(body, unit)
        address = _int(body, "address", 0, 65535)
        values = _registers(body, address)
        audit = log.bind(
            who="control token holder", peer=request.remote, pile=pile.id, bus=pile.config.bus, unit=unit
        )
        try:
            await pile.bus.write_registers(unit, address, values)
        except DriverError as exc:
            audit.warning(
                "register write", address=address, values=values, result=f"{exc.kind}: {exc.message}"
            )
            raise
        audit.warning("register write", address=address, values=values, result="written")
        return _json(
            {"pile": pile.id, "unit": unit, "address": address, "values": values, "result": "written"}
        )

    async def post_command(self, request: web.Request) -> web.Response:
        body = await _body(request)
        pile_id = str(body.get("pile"))
        if pile_id not in self.runtime.piles:
            raise BadRequest(f"pile must be one of {sorted(self.runtime.piles)}")
        port = _int(body, "port", 1, 99)
        raw = {
            "id": f"local-{uuid.uuid4().hex[:12]}",
            "op": body.get("op"),
            "params": body.get("params", {}),
            "expires_at": int(time.time() * 1000) + 60_000,
        }
        try:
            command = CommandMessage.from_json(json.dumps(raw))
        except PayloadError as exc:
            raise BadRequest(str(exc)) from None
        result = await self.executor.submit(pile_id, port, command)
        return _json(json.loads(result.to_json()))

    def _bus_for_scan(self, body: Mapping[str, Any]) -> Bus:
        buses = self.runtime.buses
        if body.get("bus") is not None:
            if str(body["bus"]) not in buses:
                raise BadRequest(f"bus must be one of {sorted(buses)}")
            return buses[str(body["bus"])]
        if body.get("pile") is not None:
            if str(body["pile"]) not in self.runtime.piles:
                raise BadRequest(f"pile must be one of {sorted(self.runtime.piles)}")
            return self.runtime.piles[str(body["pile"])].bus
        if len(buses) != 1:
            raise BadRequest(f"the gateway has {len(buses)} buses; name one of {sorted(buses)} (or a pile)")
        return next(iter(buses.values()))

    def _scan_params(self, body: Mapping[str, Any], bus: Bus) -> tuple[range, float, float]:
        transport, maps = bus.spec.transport, shipped_maps()
        units = unit_ids(transport)  # 1..255 behind a TCP host, 1..247 on an RTU line
        first = _int({"first": units.start, **body}, "first", units.start, units.stop - 1)
        last = _int({"last": units.stop - 1, **body}, "last", first, units.stop - 1)
        shortest_s = min_timeout_s(transport, maps)
        timeout_s = _number(body, "timeout_s", 0.001, 10.0, default_timeout_s(transport, maps))
        if timeout_s <= shortest_s:
            raise BadRequest(
                f"timeout_s {timeout_s:g} is not longer than the {shortest_s:.3f} s an identity read "
                f"takes on this line; every unit would look silent"
            )
        deadline_s = _number(body, "deadline_s", 0.1, 3600.0, SCAN_DEADLINE_S)
        return range(first, last + 1), timeout_s, deadline_s

    async def post_scan(self, request: web.Request) -> web.StreamResponse:
        """Probe unit ids on a bus through its owner (poll priority); streams one line per unit."""
        body = await _body(request)
        bus = self._bus_for_scan(body)
        units, timeout_s, deadline_s = self._scan_params(body, bus)
        if bus.spec.name in self._scanning:
            raise Busy(f"a scan of bus {bus.spec.name} is already running")
        self._scanning.add(bus.spec.name)
        try:
            response = await _stream(request)
            params = {"first": units.start, "last": units.stop - 1, "timeout_s": timeout_s}
            start = {"kind": "start", "bus": bus.spec.name, "transport": bus.spec.transport.describe()}
            await _send(response, {**start, **params, "deadline_s": deadline_s})
            log.info("scan started", bus=bus.spec.name, peer=request.remote, **params)
            await self._scan(bus, units, timeout_s, deadline_s, response)
        except ConnectionResetError:
            log.info("scan stopped: the reader went away", bus=bus.spec.name, peer=request.remote)
        finally:
            self._scanning.discard(bus.spec.name)
        return response

    async def _scan(
        self, bus: Bus, units: range, timeout_s: float, deadline_s: float, response: web.StreamResponse
    ) -> None:
        piles = {p.config.unit: p.id for p in self.runtime.piles.values() if p.bus is bus}

        async def read(unit: int, address: int, count: int, function: int) -> list[int]:
            return await bus.probe_registers(unit, address, count, timeout_s, function)

        async def progress(report: UnitReport, probed: int) -> None:
            line = {"kind": "unit", "probed": probed, "pile": piles.get(report.unit), **report.as_dict()}
            await _send(response, line)

        maps = shipped_maps()
        stop = self._closing.is_set
        report = await scan(read, units, maps, deadline_s=deadline_s, progress=progress, stop=stop)
        await _send(response, {"kind": "done", "bus": bus.spec.name, **report.as_dict(piles)})
        log.info(
            "scan done", bus=bus.spec.name, probed=report.probed, answered=[u.unit for u in report.found]
        )

    async def get_tail(self, request: web.Request) -> web.StreamResponse:
        """Live telemetry, events and statuses as JSON lines, until the reader or the gateway goes."""
        pile = request.query.get("pile")
        if pile is not None and pile not in self.runtime.piles:
            raise BadRequest(f"pile must be one of {sorted(self.runtime.piles)}")
        port = _query_int(request, "port", 1, 99)
        queue = _query_int(request, "queue", 1, TAIL_QUEUE_ITEMS) or TAIL_QUEUE_ITEMS
        sub = self.feed.subscribe(pile, port, queue)
        try:
            response = await _stream(request)
            await _send(response, {"kind": "start", "pile": pile, "port": port, "queue_items": queue})
            await self._pump(sub, response)
        except ConnectionResetError:
            log.debug("tail reader went away", peer=request.remote)
        finally:
            self.feed.unsubscribe(sub)
            if sub.dropped_total:
                log.info("tail reader was slow", dropped=sub.dropped_total, peer=request.remote)
        return response

    async def _pump(self, sub: Subscription, response: web.StreamResponse) -> None:
        while True:
            item = await sub.next(self._heartbeat_s)
            if item is not None:
                await _send(response, item)
            elif sub.closed:
                await _send(response, {"kind": "end", "reason": "the gateway is stopping"})
                return
            else:
                await _send(response, {"kind": "heartbeat", "ts": int(time.time() * 1000)})

    async def get_outbox(self, request: web.Request) -> web.Response:
        report = self.outbox.report()
        oldest = report["oldest"]
        now_ms = int(time.time() * 1000)
        age_s = (now_ms - oldest["created_ms"]) / 1000 if isinstance(oldest, dict) else None
        return _json({**report, "oldest_age_s": age_s})

    async def get_metrics(self, request: web.Request) -> web.Response:
        return web.Response(text=render_metrics(self._metrics()), content_type="text/plain", charset="utf-8")
