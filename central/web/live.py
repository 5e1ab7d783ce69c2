"""The live-update hub of the station dashboard: Server-Sent Events of what changed.

Once a second the hub reads the charging service's in-memory state and the latest port readings the
ingest delivered (:class:`ObservedListener` shows them to the hub on their way to the service). For
each channel someone watches it builds the state as a flat mapping of keys to JSON values and pushes
only the keys that changed, encoded once per channel whatever the number of streams. A stream
starts with the channel's whole state (a ``snapshot`` event), so a page that reconnects after a
dropped connection or a restarted central re-syncs with one message and then applies changes.

Channels:

- ``public``: every charging point's state and queue numbers, the waiting lines with estimated
  waits, the waiting area's fill and the current tariff period. No personal data.
- ``operator`` (staff only): the public keys with pile health, the cars and their users at every
  point, the waiting area and fault group, every port's live readings and session energy, the
  station-local day's takings, recent notifications and faults, and a power chart of the last hour
  (its own ``chart`` events, one sample every :data:`CHART_STEP_S`).
- ``driver:<user id>``: that driver's request (queue number, position, wait, live kWh and cost).

Operator and driver streams open with a short-lived, single-use ticket bought with the bearer
token (:meth:`LiveHub.issue_ticket`), so the token itself never travels in a URL. The stream stays
bound to that token: every :data:`TOKEN_RECHECK_S` the hub checks the tokens behind its open streams
and ends (an ``ended`` event naming why) each one whose token no longer holds: logged out, expired,
ended by a password change, account disabled, or an operator view whose account lost its staff role.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
import time
import zoneinfo
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any

import msgspec
import structlog
from aiohttp import web

from central.adapters import dashboard_queries, users
from central.adapters.ingest import IngestListener
from central.adapters.storage import Store
from central.application.charging import ChargingService
from central.application.views import RequestView
from central.domain.levels import is_staff_level
from central.domain.model import Mode
from central.domain.tariff import Tariff
from central.domain.units import Quantity, display_number, exact
from protocols.payloads import CommandResult, PileEvent, Telemetry

log = structlog.get_logger(__name__)

PUBLIC = "public"
OPERATOR = "operator"
TICKET_TTL_S = 60.0
STREAM_BACKLOG = 32  # events a slow page may lag behind before its stream is ended (it re-syncs)
HEARTBEAT_S = 15.0
RETRY_MS = 2000
SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
CHART_STEP_S = 10.0
CHART_POINTS = 360  # one hour of samples
EXTRAS_EVERY_S = 5.0  # how often the day's takings and the notifications are read from the store
TOKEN_RECHECK_S = 5.0  # how long a stream may outlive the token that opened it
ANOMALY_REPEAT_S = 60.0  # a port's same meter anomaly shows once in this long (the count goes on)
RECENT = 12
_MODES = {Mode.FAST: "fast", Mode.TRICKLE: "slow"}
_BAD_HEALTH = ("faulted", "comm_fault", "offline")


def rounded(value: Quantity | float) -> float:
    """A figure rounded half up to 0.01, as the REST APIs show it."""
    return display_number(exact(value))


def local_iso(value: datetime | str | None, zone: zoneinfo.ZoneInfo) -> str | None:
    """ISO 8601 to the second in the station's time zone; naive values are UTC."""
    if not value:
        return None
    at = datetime.fromisoformat(value) if isinstance(value, str) else value
    at = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
    return at.astimezone(zone).isoformat(timespec="seconds")


def driver_channel(user_id: int) -> str:
    """The channel of one driver's own data."""
    return f"driver:{user_id}"


def sse(event: str, data: Any) -> bytes:
    """One Server-Sent Event (msgspec's JSON has no newlines, so one ``data:`` line)."""
    return b"event: " + event.encode() + b"\ndata: " + msgspec.json.encode(data) + b"\n\n"


def diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any] | None:
    """The keys ``new`` sets differently from ``old`` and the keys it dropped; None when equal."""
    changed = {k: v for k, v in new.items() if old.get(k, diff) != v}
    dropped = [k for k in old if k not in new]
    if not changed and not dropped:
        return None
    return {"set": changed, "del": dropped}


@dataclass(frozen=True)
class Ticket:
    """What a stream ticket opens: the channels of one user, until ``expires`` (monotonic s); the
    stream it opens lasts as long as the token (by its hash) that bought the ticket."""

    user_id: int
    channels: tuple[str, ...]
    expires: float
    token_hash: str


class Stream:
    """One connected page: the encoded events still to write; ``None`` in the queue ends it."""

    def __init__(self, channels: tuple[str, ...], grant: Ticket | None = None) -> None:
        self.channels, self.grant = channels, grant
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(STREAM_BACKLOG + 1)
        self.closed = False

    def push(self, data: bytes) -> None:
        """Queue an event; a page that stopped reading is ended instead (it re-syncs on reconnect)."""
        if self.closed:
            return
        if self.queue.qsize() >= STREAM_BACKLOG:
            self.close()
            return
        self.queue.put_nowait(data)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.queue.put_nowait(None)


class LiveHub:
    """Watches the service and the port readings; serves the dashboard's live streams."""

    def __init__(
        self,
        service: ChargingService,
        store: Store,
        *,
        interval_s: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = lambda: int(time.time() * 1000),
        token_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.service, self.store = service, store
        self.interval_s = interval_s
        self._monotonic, self._wall_ms = monotonic, wall_ms
        self._token_clock = token_clock  # the clock tokens expire by (the API's, not the station's)
        self.readings: dict[tuple[str, int], Telemetry] = {}
        self.faults: deque[dict[str, Any]] = deque(maxlen=RECENT)
        self.chart: deque[tuple[int, dict[str, float]]] = deque(maxlen=CHART_POINTS)
        self._pile_states: dict[str, str] = {}
        self._streams: dict[str, set[Stream]] = {}
        self._states: dict[str, dict[str, Any]] = {}
        self._tickets: dict[str, Ticket] = {}
        self._extras: dict[str, Any] = {"stats": None, "notes": []}
        self._extras_at = -math.inf
        self._chart_at = -math.inf
        self._tokens_at = -math.inf
        self._anomalies_shown: dict[tuple[str, str], float] = {}
        self._task: asyncio.Task[None] | None = None
        service.live.watch_anomalies(self.observe_anomaly)

    # -- what the ingest shows the hub ----------------------------------------------------------

    def observe_telemetry(self, pile_no: str, port: int, reading: Telemetry) -> None:
        """Keep a port's newest reading; a fault appearing on it goes to the recent faults."""
        key = (pile_no, port)
        previous = self.readings.get(key)
        if previous is not None and reading.ts < previous.ts:
            return
        self.readings[key] = reading
        if reading.fault != "none" and (previous is None or previous.fault != reading.fault):
            self._fault(f"{pile_no}-{port}", reading.fault)

    def observe_pile_state(self, pile_no: str, state: str) -> None:
        """A pile going faulted, unreachable or offline goes to the recent faults."""
        if self._pile_states.get(pile_no) != state and state in _BAD_HEALTH:
            self._fault(pile_no, state)
        self._pile_states[pile_no] = state

    def observe_anomaly(self, where: str, kind: str, what: str) -> None:
        """A meter anomaly goes to the recent faults, once per port and kind in
        :data:`ANOMALY_REPEAT_S` (a meter stuck on bad readings must not push the rest out)."""
        now = self._monotonic()
        if now - self._anomalies_shown.get((where, kind), -math.inf) < ANOMALY_REPEAT_S:
            return
        self._anomalies_shown[(where, kind)] = now
        self._fault(where, what)

    def _fault(self, where: str, what: str) -> None:
        """Remember a fault with the station's time, as the notifications carry it."""
        self.faults.appendleft(
            {"at": local_iso(self.service.now(), self._zone()), "where": where, "what": what}
        )

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start ticking once a second."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="dashboard-live")

    async def stop(self) -> None:
        """Stop ticking and end every stream."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.close_streams()

    def close_streams(self) -> None:
        """End every open stream (the server is shutting down; pages will reconnect)."""
        for streams in self._streams.values():
            for stream in streams:
                stream.close()

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("dashboard tick failed")
            await asyncio.sleep(self.interval_s)

    # -- tickets and streams ---------------------------------------------------------------------

    def issue_ticket(self, user_id: int, channels: Iterable[str], token_hash: str) -> str:
        """A single-use ticket that opens a stream of ``channels`` within :data:`TICKET_TTL_S`, for
        as long as the token whose hash is ``token_hash`` holds."""
        now = self._monotonic()
        self._tickets = {t: v for t, v in self._tickets.items() if v.expires > now}
        ticket = secrets.token_urlsafe(24)
        self._tickets[ticket] = Ticket(user_id, tuple(channels), now + TICKET_TTL_S, token_hash)
        return ticket

    def redeem(self, ticket: str) -> Ticket | None:
        """The ticket's grant, once; None when unknown, used or expired."""
        grant = self._tickets.pop(ticket, None)
        if grant is None or grant.expires <= self._monotonic():
            return None
        return grant

    async def serve(
        self, request: web.Request, channels: tuple[str, ...], grant: Ticket | None = None
    ) -> web.StreamResponse:
        """Stream ``channels`` to one page: a snapshot of each, then changes, until either side ends
        or (with a ``grant``) the token behind it stops holding."""
        response = web.StreamResponse(headers=SSE_HEADERS)
        await response.prepare(request)
        stream = Stream(channels, grant)
        for channel in channels:
            self._streams.setdefault(channel, set()).add(stream)
        try:
            await response.write(f"retry: {RETRY_MS}\n\n".encode())
            for channel in channels:
                await response.write(await self._snapshot(channel))
            while True:
                try:
                    async with asyncio.timeout(HEARTBEAT_S):
                        data = await stream.queue.get()
                except TimeoutError:
                    data = b": keep-alive\n\n"
                if data is None:
                    break
                await response.write(data)
        except (ConnectionResetError, ConnectionError):
            pass
        finally:
            for channel in channels:
                watchers = self._streams.get(channel)
                if watchers is not None:
                    watchers.discard(stream)
                    if not watchers:
                        del self._streams[channel]
                        self._states.pop(channel, None)
        return response

    async def _snapshot(self, channel: str) -> bytes:
        if channel == OPERATOR and channel not in self._states:
            await self._refresh_extras()
        if channel not in self._states:  # a tick during the read may have built it already
            self._states[channel] = self.state(channel)
        body: dict[str, Any] = {"ch": channel, "state": self._states[channel]}
        if channel == OPERATOR:
            body["chart"] = {"step_s": CHART_STEP_S, "points": list(self.chart)}
        return sse("snapshot", body)

    # -- the tick --------------------------------------------------------------------------------

    async def tick(self) -> None:
        """Sample the chart when due, then push each watched channel's changes to its streams."""
        now = self._monotonic()
        if now - self._chart_at >= CHART_STEP_S:
            self._chart_at = now
            sample = (self._wall_ms(), self.pile_power())
            self.chart.append(sample)
            self._broadcast(OPERATOR, sse("chart", sample))
        if OPERATOR in self._streams and now - self._extras_at >= EXTRAS_EVERY_S:
            await self._refresh_extras()
        for channel in list(self._streams):
            new = self.state(channel)
            change = diff(self._states.get(channel, {}), new)
            self._states[channel] = new
            if change is not None:
                self._broadcast(channel, sse("change", {"ch": channel, **change}))
        if now - self._tokens_at >= TOKEN_RECHECK_S:
            await self.recheck_tokens()

    async def recheck_tokens(self) -> int:
        """End every stream whose token no longer holds (see the module's docstring): an ``ended``
        event naming why, then the end of the stream. The page then asks for a new ticket, which its
        token no longer buys. How many streams ended."""
        self._tokens_at = self._monotonic()  # before the read: a failing store is not asked every tick
        granted = {  # a driver's stream watches two channels: once each
            stream: grant
            for streams in self._streams.values()
            for stream in streams
            if (grant := stream.grant) is not None and not stream.closed
        }
        if not granted:
            return 0
        hashes = {grant.token_hash for grant in granted.values()}
        now = self._token_clock()
        levels = await self.store.read(lambda db: users.live_token_levels(db, hashes, now=now))
        ended = 0
        for stream, grant in granted.items():
            level = levels.get(grant.token_hash)
            if level is None:
                why = "the sign-in that opened this stream has ended (logged out, expired or disabled)"
            elif OPERATOR in grant.channels and not is_staff_level(level):
                why = "the account no longer has a staff role"
            else:
                continue
            stream.push(sse("ended", {"reason": why}))
            stream.close()
            ended += 1
        return ended

    def _broadcast(self, channel: str, data: bytes) -> None:
        for stream in list(self._streams.get(channel, ())):
            stream.push(data)

    async def _refresh_extras(self) -> None:
        self._extras_at = self._monotonic()
        zone = self._zone()
        today = self.service.now().astimezone(zone).date()
        start = datetime.combine(today, datetime.min.time(), zone)
        end = start + timedelta(days=1)

        def read(db: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
            totals = dashboard_queries.day_totals(db, start, end, station=self.service.station)
            return totals, dashboard_queries.recent_notifications(db, RECENT)

        totals, notes = await self.store.read(read)
        stats = {k: v if isinstance(v, int) else rounded(v) for k, v in totals.items()}
        self._extras = {
            "stats": {**stats, "date": today.isoformat()},
            "notes": [
                {
                    "id": n["id"],
                    "kind": n["kind"],
                    "user": n["username"],
                    "text": n["content"],
                    "at": local_iso(n["create_time"], zone),
                }
                for n in notes
            ],
        }

    # -- the states ------------------------------------------------------------------------------

    def _zone(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.service.params.timezone)

    def state(self, channel: str) -> dict[str, Any]:
        """The whole current state of a channel, as the pages show it."""
        if channel == PUBLIC:
            return self.public_state()
        if channel == OPERATOR:
            return self.operator_state()
        return self.driver_state(int(channel.removeprefix("driver:")))

    def public_state(self) -> dict[str, Any]:
        """Charging points, waiting lines with estimated waits, the waiting area, the tariff now."""
        service = self.service
        state: dict[str, Any] = {}
        piles = service.piles_status()
        for entry in piles["fast_piles"] + piles["slow_piles"]:
            state[f"point:{entry['pile_id']}"] = {
                "id": entry["pile_id"],
                "mode": entry["pile_type"],
                "status": entry["status"],
                "working": entry["is_working"],
                "queue": entry["queue"],
            }
        lines = service.queue_status()
        for mode, key in (("fast", "fast_charging"), ("slow", "slow_charging")):
            state[f"line:{mode}"] = [
                [c["queue_number"], c["estimated_wait_time"]] for c in lines[key]["queue_list"]
            ]
        state["area"] = lines["waiting_area_capacity"]
        tariff = Tariff.from_params(service.params)
        period = tariff.period_at(service.now())
        state["tariff"] = {
            "period": period.value,
            "rate": rounded(tariff.rates[period]),
            "service": rounded(tariff.service_rate),
        }
        return state

    def operator_state(self) -> dict[str, Any]:
        """The public state with users, health, ports' live readings, takings, notices and faults."""
        service = self.service
        scheduler = service.scheduler
        state = self.public_state()
        waits = {no: wait for mode in ("fast", "slow") for no, wait in state[f"line:{mode}"]}
        for point in scheduler.point_states():
            key = f"point:{point.point.point_id}"
            state[key] = {
                **state[key],
                "pile": point.point.pile_id,
                "health": service.live.health.get(point.point.pile_id, "offline"),
                "disabled": point.disabled,
                "faulted": point.faulted,
                "cars": [self._car(car) for car in point.queue],
            }
        for mode, name in _MODES.items():
            state[f"waiting:{name}"] = [
                {**self._car(r.car), "wait": waits.get(r.queue_number)} for r in scheduler.waiting_line(mode)
            ]
            state[f"faultgroup:{name}"] = [
                {**self._car(r.car), "wait": waits.get(r.queue_number)} for r in scheduler.fault_queue(mode)
            ]
        session_wh = {(s.pile_no, s.port): s.delivered_wh for s in service.sessions.values()}
        for (pile, port), r in sorted(self.readings.items()):
            wh = session_wh.get((pile, port))
            state[f"port:{pile}-{port}"] = {
                "pile": pile,
                "port": port,
                "state": r.state,
                "kw": round(r.power_W / 1000, 2),
                "v": round(r.voltage_V, 1),
                "a": round(r.current_A, 1),
                "temp": round(r.temperature_C, 1),
                "fault": r.fault,
                "session_kwh": None if wh is None else round(wh / 1000, 2),
                "online": service.live.health.get(pile) == "online",
            }
        state["stats"] = self._extras["stats"]
        state["notes"] = self._extras["notes"]
        state["faults"] = list(self.faults)
        return state

    def _car(self, car: str) -> dict[str, Any]:
        service = self.service
        request = service.scheduler.requests[car]
        user_id = service.users.get(car)
        user = service.usernames.get(user_id, str(user_id)) if user_id is not None else None
        session = service.sessions.get(car)
        return {
            "no": request.queue_number,
            "user": user,
            "kwh": rounded(request.requested_kwh),
            "state": request.state.value,
            "charged": rounded(
                request.delivered_kwh + Fraction(session.delivered_wh if session else 0, 1000)
            ),
        }

    def driver_state(self, user_id: int) -> dict[str, Any]:
        """The driver's current (or last) request, and what it costs so far at today's rates."""
        service = self.service
        view = service.current_request(user_id)
        if view is None:
            return {"request": None}
        data = request_figures(view, self._zone())
        if view.current_status == "charging":
            tariff = Tariff.from_params(service.params)
            rate = tariff.rates[tariff.period_at(service.now())] + tariff.service_rate
            data["cost"] = rounded(rate * exact(view.current_amount))
        return {"request": data}

    def pile_power(self) -> dict[str, float]:
        """Each online pile's power now (kW, all ports); the chart's sample."""
        power: dict[str, float] = {}
        for (pile, _port), reading in self.readings.items():
            online = self.service.live.health.get(pile) == "online"
            power[pile] = round(power.get(pile, 0.0) + (reading.power_W / 1000 if online else 0.0), 2)
        return power


def request_figures(view: RequestView, zone: zoneinfo.ZoneInfo) -> dict[str, Any]:
    """What the driver page shows of a request (the figures of the request status endpoint)."""
    return {
        "id": view.request_id,
        "no": view.queue_number,
        "mode": view.charging_mode,
        "status": view.current_status,
        "kwh": rounded(view.requested_amount),
        "battery": None if view.battery_capacity is None else rounded(view.battery_capacity),
        "position": view.queue_position,
        "ahead": view.ahead_count,
        "wait": rounded(view.estimated_wait_time),
        "pile": view.charging_pile_id,
        "start": local_iso(view.start_time, zone),
        "charged": rounded(view.current_amount),
    }


class ObservedListener:
    """The ingest's listener: the charging service, with the live hub seeing readings go by."""

    def __init__(self, inner: IngestListener, hub: LiveHub) -> None:
        self.inner, self.hub = inner, hub

    def on_telemetry(self, pile_no: str, port: int, reading: Telemetry) -> None:
        self.hub.observe_telemetry(pile_no, port, reading)
        self.inner.on_telemetry(pile_no, port, reading)

    def on_pile_state(self, pile_no: str, state: str) -> None:
        self.hub.observe_pile_state(pile_no, state)
        self.inner.on_pile_state(pile_no, state)

    def on_command_result(self, pile_no: str, port: int, result: CommandResult) -> None:
        self.inner.on_command_result(pile_no, port, result)

    def on_pile_event(self, pile_no: str, event: PileEvent) -> None:
        self.inner.on_pile_event(pile_no, event)
