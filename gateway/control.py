"""The gateway's local control API (loopback HTTP) used by ``pilectl``, and its Prometheus metrics.

Endpoints: ``GET /status``, ``GET /plan``, ``GET /telemetry``, ``POST /read``, ``POST /command``,
``GET /metrics``. It can start and stop charging, so besides listening on a loopback address only
(enforced by the config) every request must:

* carry ``Authorization: Bearer <token>``, the token in the gateway's control token file (any local
  user or process could otherwise start a charge; Prometheus sends it from the same file);
* name this API in its ``Host`` header (a loopback address or ``localhost`` with the listening
  port), so a web page whose DNS name was rebound to 127.0.0.1 is refused;
* carry no ``Origin`` header other than this API's own, so no other web page can use it;
* if it is a POST, send ``application/json``: browsers send ``text/plain`` bodies cross-origin
  without asking first.
"""

from __future__ import annotations

import hmac
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

from drivers.errors import DriverError
from drivers.plan import compile_read_plan, format_plan
from gateway.commands import CommandExecutor
from gateway.runtime import GatewayRuntime
from pilegate.metrics import Sample, render_metrics
from protocols.payloads import CommandMessage, PayloadError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class BadRequest(Exception):
    """A control API request is malformed; the message names the field."""


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


class ControlApi:
    """Builds the aiohttp application over the running gateway's parts; ``token`` guards every route."""

    def __init__(
        self,
        runtime: GatewayRuntime,
        executor: CommandExecutor,
        status: Callable[[], dict[str, Any]],
        metrics: Callable[[], list[Sample]],
        token: str,
    ) -> None:
        self.runtime, self.executor = runtime, executor
        self._status, self._metrics = status, metrics
        self._token = token

    def app(self) -> web.Application:
        app = web.Application(middlewares=[guard(self._token), _errors])
        app.router.add_get("/status", self.get_status)
        app.router.add_get("/plan", self.get_plan)
        app.router.add_get("/telemetry", self.get_telemetry)
        app.router.add_post("/read", self.post_read)
        app.router.add_post("/command", self.post_command)
        app.router.add_get("/metrics", self.get_metrics)
        return app

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

    async def post_read(self, request: web.Request) -> web.Response:
        body = await _body(request)
        unit = _int(body, "unit", 1, 247)
        if body.get("pile") is not None:
            pile = self.runtime.piles.get(str(body["pile"]))
            if pile is None:
                raise BadRequest(f"pile must be one of {sorted(self.runtime.piles)}")
        else:  # the bus is the one whose pile has that unit, if there is exactly one
            matches = [p for p in self.runtime.piles.values() if p.config.unit == unit]
            if len(matches) != 1:
                raise BadRequest(f"unit {unit} is on {len(matches)} buses; name a pile to pick one")
            pile = matches[0]
        address = _int(body, "address", 0, 65535)
        count = _int(body, "count", 1, 125)
        words = await pile.bus.read_registers(unit, address, count)
        return _json({"pile": pile.id, "unit": unit, "address": address, "registers": words})

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

    async def get_metrics(self, request: web.Request) -> web.Response:
        return web.Response(text=render_metrics(self._metrics()), content_type="text/plain", charset="utf-8")
