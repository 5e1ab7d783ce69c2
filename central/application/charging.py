"""The live charging service: the scheduler driven by drivers, operators and pile telemetry.

Every change goes the same way, under one lock: the pure scheduler (``central/domain``) is told
what happened at station time ``now``; the events it records become rows (requests, orders, bills,
notifications) written in ONE transaction together with the scheduler's new state; only after that
commit are commands sent to the piles. A kill -9 at any instant therefore restores a queue that
matches every record, and no segment is billed twice.

Live mode: a dispatched car gets a ``start`` command with its remaining energy as the pile's own
target (the safety net); its segment is measured from the pile's cumulative meter (``energy_Wh``
differences, 32-bit wrap handled) and billed from meter samples, interpolated at tariff period
boundaries. The central stops the port when the amount is reached; a pile that faults, goes
``comm_fault`` or loses its gateway ends the segment at its last reading and is a faulted pile for
the scheduler; its return to health is a recovery.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from fractions import Fraction
from typing import Any, Literal, Protocol
from zoneinfo import ZoneInfo

import sqlite_utils
import structlog

from central.adapters.storage import Store
from central.application.clock import StationClock
from central.domain.billing import Bill, DetailRecord
from central.domain.errors import (
    DomainError,
    DuplicateRequestError,
    NotChargingError,
    PileStateError,
    UnknownPileError,
    UnknownRequestError,
)
from central.domain.estimate import estimate_waits
from central.domain.events import (
    CarCalled,
    CarReturned,
    ChargingStarted,
    Event,
    PointStatusChanged,
    RequestCancelled,
    RequestChanged,
    RequestCompleted,
    SegmentEnded,
)
from central.domain.model import Mode, PointState, RequestState, multi_port_points
from central.domain.params import StationParams, params_from_mapping
from central.domain.scheduler import Scheduler
from central.domain.tariff import MeterSamples
from protocols.payloads import CommandResult, PileEvent, Telemetry

log = structlog.get_logger(__name__)

METER_WRAP = 2**32
SAMPLE_SPACING_S = 60.0  # station seconds between kept meter samples (more is no more exact)
UNKNOWN_PILE_GRACE_S = 3.0  # real seconds after start before a silent pile counts as faulted
COMMAND_FAULT_COOLDOWN_S = 30.0  # real seconds a pile whose command failed stays faulted
STOP_WAIT_S = 5.0  # real seconds to wait for a stopped port's final meter reading
API_MODES = {Mode.FAST: "fast", Mode.TRICKLE: "slow"}


class CommandPort(Protocol):
    """What the service needs to command piles (central.adapters.commands.CommandSender)."""

    async def send(
        self,
        pile_no: str,
        port: int,
        op: Literal["start", "stop", "limit"],
        params: Mapping[str, int],
        *,
        car: str | None = None,
        expires_in_s: float = 30.0,
    ) -> str: ...


@dataclass(frozen=True)
class RequestView:
    """A request as the user API shows it."""

    request_id: str
    user_id: int
    queue_number: str
    charging_mode: str  # fast | slow
    requested_amount: float
    battery_capacity: float | None
    current_status: str  # waiting | charging | completed | cancelled
    queue_position: int
    ahead_count: int
    estimated_wait_time: float  # minutes
    charging_pile_id: str | None
    start_time: datetime | None
    current_amount: float
    created_at: datetime


@dataclass(frozen=True)
class CompletionView:
    """What ``POST /complete/`` returns: the request's bill in brief."""

    bill_id: str
    total_amount: float  # kWh
    total_cost: float
    charging_duration: float  # minutes


@dataclass
class LiveSession:
    """A car's charging segment on a real port: commands sent, meter samples seen."""

    car: str
    point_id: str
    pile_no: str
    port: int
    target_kwh: Fraction
    order_id: str
    command_id: str | None = None
    started_ms: int | None = None  # when telemetry first said the port charges
    base_wh: int | None = None  # meter at the start of the segment (unwrapped)
    samples: list[tuple[int, int]] = field(default_factory=list)  # (wall ms, unwrapped Wh)
    stopping: bool = False  # a stop command was sent
    ending: str | None = None  # "complete" or "cancel": how the segment ends once the port stops
    port_stopped: bool = False  # the port reported it no longer charges
    last_raw_wh: int | None = None
    wraps: int = 0

    def unwrap(self, raw_wh: int) -> int:
        if self.last_raw_wh is not None and raw_wh < self.last_raw_wh - METER_WRAP // 2:
            self.wraps += 1
        self.last_raw_wh = raw_wh
        return raw_wh + self.wraps * METER_WRAP

    @property
    def delivered_wh(self) -> int:
        if self.base_wh is None or not self.samples:
            return 0
        return self.samples[-1][1] - self.base_wh

    def add_sample(self, ts_ms: int, wh: int, spacing_ms: float) -> None:
        """Keep a sample at most every ``spacing_ms``; the newest always replaces a close one."""
        if len(self.samples) >= 2 and ts_ms - self.samples[-2][0] < spacing_ms:
            self.samples[-1] = (ts_ms, wh)
        elif not self.samples or ts_ms > self.samples[-1][0]:
            self.samples.append((ts_ms, wh))

    def to_row(self) -> dict[str, Any]:
        state = {
            "target_kwh": str(self.target_kwh),
            "stopping": self.stopping,
            "ending": self.ending,
            "port_stopped": self.port_stopped,
            "last_raw_wh": self.last_raw_wh,
            "wraps": self.wraps,
            "point": self.point_id,
        }
        return {
            "car": self.car,
            "pile_no": self.pile_no,
            "port": self.port,
            "order_id": self.order_id,
            "command_id": self.command_id,
            "started_ms": self.started_ms,
            "start_meter_wh": self.base_wh,
            "last_ms": self.samples[-1][0] if self.samples else None,
            "last_meter_wh": self.samples[-1][1] if self.samples else None,
            "samples": json.dumps({"samples": self.samples, **state}),
        }

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> LiveSession:
        extra = json.loads(row["samples"])
        return cls(
            car=row["car"],
            point_id=extra["point"],
            pile_no=row["pile_no"],
            port=row["port"],
            target_kwh=Fraction(extra["target_kwh"]),
            order_id=row["order_id"],
            command_id=row["command_id"],
            started_ms=row["started_ms"],
            base_wh=row["start_meter_wh"],
            samples=[(int(t), int(e)) for t, e in extra["samples"]],
            stopping=extra["stopping"],
            ending=extra.get("ending"),
            port_stopped=extra.get("port_stopped", False),
            last_raw_wh=extra["last_raw_wh"],
            wraps=extra["wraps"],
        )


@dataclass
class Changes:
    """Rows one operation writes, and the commands to send once they are committed."""

    writes: list[Callable[[sqlite_utils.Database], object]] = field(default_factory=list)
    commands: list[tuple[str, int, str, dict[str, int], str | None]] = field(default_factory=list)


def iso(at: datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


def _float(value: Fraction) -> float:
    return float(round(value, 6))


def _minutes(value: Fraction | None) -> float:
    """A wait in minutes for the API; -1 when no working pile of the mode can take the car."""
    return -1.0 if value is None else float(round(value, 2))


class ChargingService:
    """The scheduler, its persistence, and its live link to the piles."""

    def __init__(
        self,
        store: Store,
        params: StationParams,
        clock: StationClock,
        commands: CommandPort,
        *,
        station: str = "station1",
    ) -> None:
        self.store, self.params, self.clock = store, params, clock
        self.commands = commands
        self.station = station
        self.tz = ZoneInfo(params.timezone)
        self.scheduler = Scheduler(params)
        self.sessions: dict[str, LiveSession] = {}
        self.users: dict[str, int] = {}  # car (request id) -> user id
        self.battery: dict[str, float | None] = {}
        self.created: dict[str, datetime] = {}  # car -> when the request was made
        self.last_request: dict[int, RequestView] = {}  # finished requests, per user
        self.bills: dict[str, Bill] = {}  # recently finished requests' bills
        self.usernames: dict[int, str] = {}
        self.health: dict[str, str] = {}  # pile_no -> online|faulted|comm_fault|offline
        self.faulted_by: dict[str, set[str]] = {}  # pile_no -> reasons (health, declared, command)
        self.last_reading: dict[tuple[str, int], tuple[int, int]] = {}  # (pile, port) -> ms, raw Wh
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._dirty_sessions: set[str] = set()
        self.port_watchers: dict[tuple[str, int], Callable[[Telemetry], None]] = {}
        self.outcome_watchers: list[Callable[[str, str, str | None, str, str | None], None]] = []

    # ---- lifecycle ----------------------------------------------------------------------

    def now(self) -> datetime:
        return max(self.clock.now(), self.scheduler.clock or self.clock.now())

    async def start(self) -> None:
        """Restore the persisted queue and sessions, then start the background tasks."""
        state, sessions, requests, users = await self.store.read(_load_state)
        if state is not None:
            self.scheduler = Scheduler.from_dict(state["scheduler"], self.params)
            self.faulted_by = {p: set(r) for p, r in state["faulted_by"].items()}
        self.usernames = users
        for row in sessions:
            session = LiveSession.from_row(row)
            self.sessions[session.car] = session
        for row in requests:
            self.users[row["id"]] = row["user_id"]
            self.battery[row["id"]] = row["battery_capacity"]
            self.created[row["id"]] = datetime.fromisoformat(row["created_at"])
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._flush_sessions(), name="sessions-flush"),
            loop.create_task(self._fault_silent_piles(), name="silent-piles"),
        ]
        log.info(
            "charging service started", requests=len(self.scheduler.requests), sessions=len(self.sessions)
        )

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._persist_sessions()

    # ---- the one path for every change -----------------------------------------------------

    async def _apply(self, action: Callable[[datetime], Any], changes: Changes | None = None) -> Any:
        """Run ``action(now)`` on the scheduler, persist what it caused, then send commands."""
        changes = changes or Changes()
        now = self.now()
        snapshot = self.scheduler.to_dict()
        try:
            result = action(now)
            self._handle_events(self.scheduler.pop_events(), changes)
        except BaseException:
            self.scheduler = Scheduler.from_dict(snapshot, self.params)
            raise
        state = {
            "scheduler": self.scheduler.to_dict(),
            "faulted_by": {p: sorted(r) for p, r in self.faulted_by.items() if r},
        }
        sessions = [self.sessions[c].to_row() for c in self._dirty_sessions if c in self.sessions]
        gone = [c for c in self._dirty_sessions if c not in self.sessions]
        self._dirty_sessions.clear()

        def write(db: sqlite_utils.Database) -> None:
            for fn in changes.writes:
                fn(db)
            db.table("scheduler_state").upsert(
                {"id": 1, "state": json.dumps(state), "updated_at": iso(now)}, pk="id"
            )
            for row in sessions:
                db.table("live_sessions").upsert(row, pk="car")
            for car in gone:
                db.execute("DELETE FROM live_sessions WHERE car = ?", [car])

        try:
            await self.store.write(write)
        except BaseException:
            self.scheduler = Scheduler.from_dict(snapshot, self.params)
            raise
        for pile_no, port, op, params, car in changes.commands:
            await self._command(pile_no, port, op, params, car)
        return result

    async def _command(
        self, pile_no: str, port: int, op: str, params: dict[str, int], car: str | None
    ) -> None:
        try:
            command_id = await self.commands.send(
                pile_no,
                port,
                op,  # type: ignore[arg-type]
                params,
                car=car,
            )
        except Exception as exc:  # the command layer reports final failures via on_outcome
            log.warning("command not sent", pile=pile_no, port=port, op=op, error=str(exc))
            return
        if car and car in self.sessions and op == "start":
            self.sessions[car].command_id = command_id
            self._dirty_sessions.add(car)

    # ---- driver actions -------------------------------------------------------------------

    async def submit(
        self, user_id: int, mode: str, kwh: float, battery_capacity: float | None
    ) -> RequestView:
        async with self._lock:
            if any(u == user_id and c in self.scheduler.requests for c, u in self.users.items()):
                raise DuplicateRequestError("you already have an active charging request")
            car = uuid.uuid4().hex
            amount = Fraction(str(kwh))
            if user_id not in self.usernames:
                self.usernames.update(
                    await self.store.read(
                        lambda db: {
                            r["id"]: r["username"]
                            for r in db.query("SELECT id, username FROM users WHERE id = ?", [user_id])
                        }
                    )
                )
            changes = Changes()
            self.users[car], self.battery[car] = user_id, battery_capacity
            try:
                number = await self._apply(
                    lambda now: self.scheduler.arrive(now, car, Mode.parse(mode), amount), changes
                )
            except BaseException:
                del self.users[car], self.battery[car]
                raise
            log.info("request", car=car, user=user_id, number=number, mode=mode, kwh=kwh)
            return self._view(car)

    def _owned(self, user_id: int, request_id: str) -> None:
        if self.users.get(request_id) != user_id or request_id not in self.scheduler.requests:
            raise UnknownRequestError(f"no active request {request_id}")

    async def change(
        self, user_id: int, request_id: str, *, mode: str | None, kwh: float | None
    ) -> RequestView:
        async with self._lock:
            self._owned(user_id, request_id)
            new_mode = Mode.parse(mode) if mode is not None else None
            amount = Fraction(str(kwh)) if kwh is not None else None
            await self._apply(lambda now: self.scheduler.change(now, request_id, new_mode, amount))
            return self._view(request_id)

    async def cancel(self, user_id: int, request_id: str) -> RequestView:
        """Cancel in any state; a charging car is stopped and billed for what the meter says."""
        async with self._lock:
            self._owned(user_id, request_id)
        await self._end(request_id, "cancel")
        return self.last_request[user_id]

    async def complete(self, user_id: int) -> CompletionView:
        """End the user's charging now: stop the port, bill what the meter says."""
        async with self._lock:
            car = next(
                (
                    c
                    for c, u in self.users.items()
                    if u == user_id
                    and (r := self.scheduler.get(c)) is not None
                    and r.state is RequestState.CHARGING
                ),
                None,
            )
            if car is None:
                raise NotChargingError("you have no car charging")
        await self._end(car, "complete")
        bill = self.bills[car]
        return CompletionView(
            bill_id=car,
            total_amount=_float(bill.kwh),
            total_cost=float(round(bill.total, 2)),
            charging_duration=_float(
                sum((Fraction((d.stop - d.start).total_seconds()) / 60 for d in bill.details), Fraction(0))
            ),
        )

    async def _end(self, car: str, how: str) -> None:
        """Stop a charging port and let its final reading end the segment; else end it now."""
        async with self._lock:
            session = self.sessions.get(car)
            live = session is not None and session.started_ms is not None and not session.port_stopped
            if session is not None and live:
                session.ending, session.stopping = how, True
                self._dirty_sessions.add(car)
                await self._command(session.pile_no, session.port, "stop", {}, car)
        if live:
            deadline = asyncio.get_running_loop().time() + STOP_WAIT_S
            while car in self.scheduler.requests and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)  # the stopped reading finalizes via on_telemetry
        async with self._lock:
            if car in self.scheduler.requests:
                await self._apply(lambda now: self._finalize(now, car, how))

    def _finalize(self, now: datetime, car: str, how: str) -> Bill:
        if how == "cancel":
            return self.scheduler.cancel(now, car, reading=self._reading_for(car))
        return self.scheduler.segment_finished(now, car, **self._finish_reading(car))

    def _reading_for(self, car: str) -> MeterSamples | None:
        session = self.sessions.get(car)
        request = self.scheduler.get(car)
        if request is None or request.state is not RequestState.CHARGING:
            return None
        return self._profile(session) if session is not None else Fraction(0)  # type: ignore[return-value]

    def _finish_reading(self, car: str) -> dict[str, Any]:
        profile = self._reading_for(car)
        if isinstance(profile, MeterSamples):
            return {"profile": profile}
        return {"delivered_kwh": profile if profile is not None else 0}

    def _profile(self, session: LiveSession) -> MeterSamples | Fraction:
        """The segment's meter samples in station time, from its start.

        The pile cannot deliver before it was dispatched, so the idle reading taken before the
        segment started stands at the segment start: none of the meter's difference is lost.
        """
        request = self.scheduler.get(session.car)
        if session.base_wh is None or not session.samples or request is None or request.segment_start is None:
            return Fraction(0)
        start = request.segment_start
        samples = [(start, Fraction(0))]
        for ms, wh in session.samples:
            at = self.clock.at_ms(ms)
            if at > start:
                samples.append((at, Fraction(wh - session.base_wh)))
            else:  # at or before the start: the meter then is the segment's base
                samples[0] = (start, Fraction(wh - session.base_wh))
        return MeterSamples(samples)

    # ---- queries for the API ------------------------------------------------------------------

    def current_request(self, user_id: int) -> RequestView | None:
        car = next((c for c, u in self.users.items() if u == user_id and c in self.scheduler.requests), None)
        return self._view(car) if car else self.last_request.get(user_id)

    def _view(self, car: str) -> RequestView:
        request = self.scheduler.get(car)
        if request is None:
            return next(v for v in self.last_request.values() if v.request_id == car)
        now = self.now()
        wait = estimate_waits(self.scheduler, now, [car])[car]
        standing = wait.standing
        session = self.sessions.get(car)
        charging = request.state is RequestState.CHARGING
        current = request.delivered_kwh + (
            Fraction(session.delivered_wh, 1000) if charging and session else Fraction(0)
        )
        point = self.scheduler.points.get(standing.point_id or "")
        return RequestView(
            request_id=car,
            user_id=self.users.get(car, 0),
            queue_number=request.queue_number,
            charging_mode=API_MODES[request.mode],
            requested_amount=_float(request.requested_kwh),
            battery_capacity=self.battery.get(car),
            current_status=standing.status,
            queue_position=standing.queue_position,
            ahead_count=standing.ahead_count,
            estimated_wait_time=_minutes(wait.wait_minutes),
            charging_pile_id=point.point.pile_id if point else None,
            start_time=request.segment_start if charging else None,
            current_amount=_float(current),
            created_at=request.created_at,
        )

    def queue_status(self) -> dict[str, Any]:
        now = self.now()
        waits = estimate_waits(self.scheduler, now)

        def line(mode: Mode) -> dict[str, Any]:
            cars = [r.car for r in self.scheduler.fault_queue(mode)] + [
                r.car for r in self.scheduler.waiting_line(mode)
            ]
            return {
                "waiting_count": len(cars),
                "queue_list": [
                    {
                        "queue_number": self.scheduler.requests[c].queue_number,
                        "estimated_wait_time": _minutes(waits[c].wait_minutes),
                    }
                    for c in cars
                ],
            }

        return {
            "fast_charging": line(Mode.FAST),
            "slow_charging": line(Mode.TRICKLE),
            "waiting_area_capacity": {
                "current": self.scheduler.waiting_count,
                "max": self.params.waiting_area_size,
            },
        }

    def piles_status(self) -> dict[str, Any]:
        fast: list[dict[str, Any]] = []
        slow: list[dict[str, Any]] = []
        for point in self.scheduler.points.values():
            pile = point.point.pile_id
            health = self.health.get(pile)
            unreachable = health in (None, "offline") and not point.queue
            status = "offline" if point.disabled or unreachable else "fault" if point.faulted else "normal"
            head = point.queue[0] if point.queue else None
            charging = head is not None and self.scheduler.requests[head].state is RequestState.CHARGING
            entry = {
                "pile_id": point.point.point_id,
                "pile_type": API_MODES[point.point.mode],
                "status": status,
                "is_working": charging,
                "current_user": self._username(head) if charging else None,
                "queue": [self.scheduler.requests[c].queue_number for c in point.queue],
            }
            (fast if point.point.mode is Mode.FAST else slow).append(entry)
        return {"fast_piles": fast, "slow_piles": slow}

    def _username(self, car: str | None) -> str | None:
        user = self.users.get(car) if car else None
        return self.usernames.get(user, str(user)) if user is not None else None

    def parameters(self) -> dict[str, Any]:
        p = self.params.to_mapping()
        return {
            "FastChargingPileNum": p["FastChargingPileNum"],
            "TrickleChargingPileNum": p["TrickleChargingPileNum"],
            "WaitingAreaSize": p["WaitingAreaSize"],
            "ChargingQueueLen": p["ChargingQueueLen"],
            "pricing": p["pricing"],
            "time_periods": p["time_periods"],
            "fast_power_kw": p["fast_power_kw"],
            "slow_power_kw": p["slow_power_kw"],
            "fault_strategy": p["fault_strategy"],
            "dispatch_policy": p["dispatch_policy"],
            "timezone": p["timezone"],
        }

    async def update_parameters(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Prices, periods, strategies and sizes; pile counts and powers need a restart."""
        async with self._lock:
            merged = {**self.params.to_mapping(), **changes}
            for table in ("pricing", "time_periods"):
                if isinstance(changes.get(table), Mapping):
                    merged[table] = {**self.params.to_mapping()[table], **changes[table]}
            params = params_from_mapping(merged)
            fixed = (
                "FastChargingPileNum",
                "TrickleChargingPileNum",
                "fast_power_kw",
                "slow_power_kw",
                "timezone",
            )
            restart = [k for k in fixed if merged[k] != self.params.to_mapping()[k]]
            state = self.scheduler.to_dict()
            self.params = params
            self.scheduler = Scheduler.from_dict(state, params)
            mapping = params.to_mapping()
            await self.store.write(
                lambda db: db.table("params").upsert(
                    {"key": "station", "value": json.dumps(mapping), "updated_at": iso(self.now())}, pk="key"
                )
            )
            if restart:
                log.warning("parameters saved; they apply after a restart", keys=restart)
            return self.parameters()

    def pile_queues(self) -> list[dict[str, Any]]:
        now = self.now()
        out = []
        for point in self.scheduler.points.values():
            cars = []
            for car in point.queue:
                r = self.scheduler.requests[car]
                cars.append(
                    {
                        "user_id": self.users.get(car),
                        "username": self._username(car),
                        "request_id": car,
                        "queue_number": r.queue_number,
                        "battery_capacity": self.battery.get(car),
                        "requested_amount": _float(r.requested_kwh),
                        "queued_at": iso(r.created_at),
                        "waited_minutes": round((now - r.created_at).total_seconds() / 60, 2),
                    }
                )
            out.append({"pile_id": point.point.point_id, "cars": cars})
        return out

    async def pile_report(self, period: str, day: date | None) -> list[dict[str, Any]]:
        """Per pile for the day/week/month containing ``day``: sessions, time, kWh, fees."""
        day = day or self.now().astimezone(self.tz).date()
        start, end = _period_bounds(period, day)
        lo = datetime.combine(start, datetime.min.time(), self.tz)
        hi = datetime.combine(end, datetime.min.time(), self.tz)
        rows = await self.store.read(
            lambda db: list(
                db.query(
                    "SELECT pile_no, duration, electricity, amount, service_fee, total_amount FROM orders "
                    "WHERE request_id IS NOT NULL AND status IN (2, 4) AND start_time >= ? "
                    "AND start_time < ?",
                    [iso(lo), iso(hi)],
                )
            )
        )
        report: dict[str, dict[str, Any]] = {
            p.point.point_id: {
                "sessions": 0,
                "seconds": 0,
                "kwh": Fraction(0),
                "charge": Fraction(0),
                "service": Fraction(0),
            }
            for p in self.scheduler.points.values()
        }
        for row in rows:
            r = report.setdefault(
                row["pile_no"],
                {
                    "sessions": 0,
                    "seconds": 0,
                    "kwh": Fraction(0),
                    "charge": Fraction(0),
                    "service": Fraction(0),
                },
            )
            r["sessions"] += 1
            r["seconds"] += row["duration"]
            r["kwh"] += Fraction(row["electricity"])
            r["charge"] += Fraction(row["amount"])
            r["service"] += Fraction(row["service_fee"])
        return [
            {
                "pile_id": pile,
                "period": period,
                "from": start.isoformat(),
                "to": (end - timedelta(days=1)).isoformat(),
                "sessions": r["sessions"],
                "charging_minutes": round(r["seconds"] / 60, 2),
                "kwh": _float(r["kwh"]),
                "charging_fee": float(round(r["charge"], 2)),
                "service_fee": float(round(r["service"], 2)),
                "total": float(round(r["charge"] + r["service"], 2)),
            }
            for pile, r in sorted(report.items())
        ]

    # ---- operator actions --------------------------------------------------------------------

    def _pile_points(self, pile_no: str) -> list[str]:
        points = [
            p.point.point_id
            for p in self.scheduler.points.values()
            if p.point.pile_id == pile_no or p.point.point_id == pile_no
        ]
        if not points:
            raise UnknownPileError(f"no pile {pile_no}")
        return points

    async def set_pile_in_service(self, pile_no: str, in_service: bool) -> None:
        async with self._lock:
            self._pile_points(pile_no)
            if in_service:
                await self._apply(lambda now: self.scheduler.pile_enable(now, pile_no))
            else:
                await self._apply(
                    lambda now: self.scheduler.pile_disable(now, pile_no, readings=self._readings_at(pile_no))
                )

    async def declare_fault(self, pile_no: str, faulted: bool) -> None:
        async with self._lock:
            self._pile_points(pile_no)
            await self._set_fault(pile_no, "declared", faulted)

    async def _set_fault(self, pile_no: str, reason: str, faulted: bool) -> None:
        reasons = self.faulted_by.setdefault(pile_no, set())
        was = bool(reasons)
        (reasons.add if faulted else reasons.discard)(reason)
        if bool(reasons) == was:
            return
        if faulted:
            await self._apply(
                lambda now: self.scheduler.pile_fault(now, pile_no, readings=self._readings_at(pile_no))
            )
        else:
            await self._apply(lambda now: self.scheduler.pile_recover(now, pile_no))

    def _readings_at(self, pile_no: str) -> dict[str, Any]:
        readings: dict[str, Any] = {}
        for point in self.scheduler.points.values():
            if point.point.pile_id != pile_no or not point.queue:
                continue
            car = point.queue[0]
            if self.scheduler.requests[car].state is RequestState.CHARGING:
                session = self.sessions.get(car)  # readings are keyed by car
                readings[car] = self._profile(session) if session else Fraction(0)
        return readings

    # ---- hooks for operator orders (central.application.orders): a port outside the queue ----

    async def reserve_port(self, pile_no: str, port: int) -> None:
        """Take a port's charging point out of the queue for an operator order.

        Refused (PileStateError) while a queued car is charging there or the pile is not healthy;
        cars queued behind it are re-placed as when a pile is taken out of service.
        """
        async with self._lock:
            point_id = self._point_id(pile_no, port)
            state = self.scheduler.points[point_id]
            if state.queue and self.scheduler.requests[state.queue[0]].state is RequestState.CHARGING:
                raise PileStateError(f"{point_id} is charging a queued car")
            if not state.working:
                raise PileStateError(f"{point_id} is {state.status}")
            await self._apply(lambda now: self.scheduler.pile_disable(now, point_id))

    async def release_port(self, pile_no: str, port: int) -> None:
        """Give a reserved port back to the queue."""
        async with self._lock:
            point_id = self._point_id(pile_no, port)
            if self.scheduler.points[point_id].disabled:
                await self._apply(lambda now: self.scheduler.pile_enable(now, point_id))

    def _point_id(self, pile_no: str, port: int) -> str:
        for candidate in (f"{pile_no}-{port}", pile_no if port == 1 else ""):
            if candidate in self.scheduler.points:
                return candidate
        raise UnknownPileError(f"no charging point for pile {pile_no} port {port}")

    def last_meter(self, pile_no: str, port: int) -> tuple[int, int] | None:
        """(wall ms, Wh) of the port's latest reading, if the central has seen one."""
        return self.last_reading.get((pile_no, port))

    async def send_command(
        self, pile_no: str, port: int, op: str, params: Mapping[str, int], *, tag: str | None = None
    ) -> str:
        """A command through the one command path (ids, expiry, retries, outcome)."""
        return await self.commands.send(pile_no, port, op, dict(params), car=tag)  # type: ignore[arg-type]

    # ---- live input: telemetry, pile states, command outcomes ---------------------------------

    def on_telemetry(self, pile_no: str, port: int, reading: Telemetry) -> None:
        """Meter progress of a session; the end of a segment when the port stops charging."""
        key = (pile_no, port)
        watcher = self.port_watchers.get(key)
        if watcher is not None:
            try:
                watcher(reading)
            except Exception:
                log.exception("port watcher failed", pile=pile_no, port=port)
        previous = self.last_reading.get(key)
        if previous is None or reading.ts >= previous[0]:
            self.last_reading[key] = (reading.ts, reading.energy_Wh)
        if previous is None and self.health.get(pile_no) == "online":
            self._schedule(self._health_changed(pile_no, "online"))  # its meter is known now
        session = next((s for s in self.sessions.values() if s.pile_no == pile_no and s.port == port), None)
        if session is None:
            return
        if session.samples and reading.ts <= session.samples[-1][0]:
            return  # a replayed reading older than what the session has seen
        wh = session.unwrap(reading.energy_Wh)
        if session.started_ms is None:
            moved = session.base_wh is not None and wh > session.base_wh
            if reading.state != "charging" and not moved:
                session.samples, session.base_wh = [(reading.ts, wh)], wh  # idle meter
                self._dirty_sessions.add(session.car)
                return
            session.started_ms = reading.ts  # charging (or already done: the meter moved)
            if session.base_wh is None:
                session.samples, session.base_wh = [(reading.ts, wh)], wh
            self._schedule(self._session_started(session))
        session.add_sample(reading.ts, wh, SAMPLE_SPACING_S * 1000 / self.clock.scale)
        self._dirty_sessions.add(session.car)
        if reading.state != "charging":
            session.port_stopped = True
            if reading.state == "faulted":
                return  # the pile state handler ends the segment as a fault
            self._schedule(self._segment_done(session.car))
        elif session.delivered_wh >= session.target_kwh * 1000 and not session.stopping:
            session.stopping = True
            self._schedule(self._command(session.pile_no, session.port, "stop", {}, session.car))

    def on_pile_state(self, pile_no: str, state: str) -> None:
        self.health[pile_no] = state
        self._schedule(self._health_changed(pile_no, state))

    def on_pile_event(self, pile_no: str, event: PileEvent) -> None:
        log.debug("pile event", pile=pile_no, type=event.type, port=event.port)

    def on_command_result(self, pile_no: str, port: int, result: CommandResult) -> None:
        log.debug("command result", pile=pile_no, port=port, id=result.id, status=result.status)

    def on_command_outcome(
        self, pile_no: str, op: str, car: str | None, status: str, reason: str | None
    ) -> None:
        """A command's final outcome; a start that never took makes the pile faulted for a while."""
        for watch in self.outcome_watchers:
            watch(pile_no, op, car, status, reason)
        if status == "done" or op != "start" or car not in self.sessions:
            return
        log.warning(
            "start command failed; pile treated as faulted",
            pile=pile_no,
            car=car,
            status=status,
            reason=reason,
        )
        self._schedule(self._command_failed(pile_no))

    async def _command_failed(self, pile_no: str) -> None:
        async with self._lock:
            await self._set_fault(pile_no, "command", True)
        await asyncio.sleep(COMMAND_FAULT_COOLDOWN_S)
        async with self._lock:
            await self._set_fault(pile_no, "command", False)

    async def _health_changed(self, pile_no: str, state: str) -> None:
        """A pile can take cars when it is online and the central knows its meter."""
        async with self._lock:
            known = any(p.point.pile_id == pile_no for p in self.scheduler.points.values())
            if not known and (state != "online" or not await self._register_pile(pile_no)):
                return
            healthy = state == "online" and self._meter_known(pile_no)
            await self._set_fault(pile_no, "health", not healthy)

    async def _register_pile(self, pile_no: str) -> bool:
        """Add a recorded pile the scheduler does not know (operator-created, or first reported
        by a gateway) as charging points; they start faulted until healthy. False: no record."""
        rows = await self.store.read(
            lambda db: list(
                db.query("SELECT pile_type, power_rate, total_ports FROM piles WHERE pile_no = ?", [pile_no])
            )
        )
        if not rows:
            return False
        row = rows[0]
        mode = Mode.FAST if row["pile_type"] == 1 else Mode.TRICKLE
        for point in multi_port_points(
            [(pile_no, mode, int(row["total_ports"]), Fraction(str(row["power_rate"])))]
        ):
            state = PointState(point)
            state.faulted = True
            self.scheduler.points[point.point_id] = state
        self.faulted_by.setdefault(pile_no, set()).add("health")
        await self._apply(lambda now: None)  # persist the new points with the queue
        log.info(
            "pile registered with the scheduler",
            pile=pile_no,
            mode=mode.value,
            ports=row["total_ports"],
            power_kw=row["power_rate"],
        )
        return True

    async def unregister_pile(self, pile_no: str) -> None:
        """Remove a deleted pile's charging points (refused while cars are at them)."""
        async with self._lock:
            points = [p for p in self.scheduler.points.values() if p.point.pile_id == pile_no]
            if any(p.queue for p in points):
                raise PileStateError(f"pile {pile_no} still has cars queued")
            for p in points:
                del self.scheduler.points[p.point.point_id]
            self.faulted_by.pop(pile_no, None)
            self.health.pop(pile_no, None)
            if points:
                await self._apply(lambda now: None)

    def _meter_known(self, pile_no: str) -> bool:
        return any(p == pile_no for p, _ in self.last_reading) or any(
            s.pile_no == pile_no and s.base_wh is not None for s in self.sessions.values()
        )

    async def _session_started(self, session: LiveSession) -> None:
        async with self._lock:
            changes = Changes()
            user = self.users.get(session.car)
            started = self.clock.at_ms(session.started_ms or 0)
            changes.writes.append(
                lambda db: db.execute(
                    "UPDATE orders SET status = 1, start_meter_wh = ?, update_time = ? WHERE id = ?",
                    [session.base_wh, iso(started), session.order_id],
                )
            )
            if user is not None:
                changes.writes.append(
                    _notify(
                        user,
                        "charging_start",
                        "开始充电",
                        f"您的车辆已在充电桩 {session.point_id} 开始充电",
                        session.car,
                        started,
                    )
                )
            await self._apply(lambda now: None, changes)

    async def _segment_done(self, car: str) -> None:
        async with self._lock:
            request = self.scheduler.get(car)
            if request is None or request.state is not RequestState.CHARGING:
                return
            session = self.sessions.get(car)
            how = session.ending if session is not None and session.ending else "complete"
            await self._apply(lambda now: self._finalize(now, car, how))

    def _schedule(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(self._guard(coro))
        self._tasks.append(task)
        task.add_done_callback(lambda t: self._tasks.remove(t) if t in self._tasks else None)

    async def _guard(self, coro: Any) -> None:
        try:
            await coro
        except DomainError as exc:
            log.info("live update refused", error=str(exc), code=exc.code)
        except Exception:
            log.exception("live update failed")

    # ---- events -> rows, notifications and commands -------------------------------------------

    def _handle_events(self, events: Sequence[Event], changes: Changes) -> None:
        for event in events:
            handler = getattr(self, f"_on_{type(event).__name__}", None)
            if handler is not None:
                handler(event, changes)

    def _point(self, point_id: str) -> tuple[str, int]:
        pile, _, port = point_id.partition("-")
        return pile, int(port) if port else 1

    def _on_RequestQueued(self, event: Any, changes: Changes) -> None:
        car = event.car
        self.created[car] = event.at
        row = {
            "id": car,
            "user_id": self.users[car],
            "queue_number": event.queue_number,
            "charging_mode": API_MODES[Mode(event.mode)],
            "requested_amount": str(event.kwh),
            "battery_capacity": self.battery.get(car),
            "current_status": "waiting",
            "created_at": iso(event.at),
            "updated_at": iso(event.at),
        }
        changes.writes.append(lambda db: db.table("charging_requests").insert(row))

    def _on_RequestChanged(self, event: RequestChanged, changes: Changes) -> None:
        changes.writes.append(
            lambda db: db.execute(
                "UPDATE charging_requests SET queue_number = ?, charging_mode = ?, "
                "requested_amount = ?, updated_at = ? WHERE id = ?",
                [event.queue_number, API_MODES[Mode(event.mode)], str(event.kwh), iso(event.at), event.car],
            )
        )

    def _on_CarCalled(self, event: CarCalled, changes: Changes) -> None:
        user = self.users.get(event.car)
        if user is not None:
            place = "开始充电" if event.position == 0 else f"在充电区排第 {event.position} 位"
            changes.writes.append(
                _notify(
                    user,
                    "queue_update",
                    "叫号",
                    f"请前往充电桩 {event.point_id}，{place}",
                    event.car,
                    event.at,
                )
            )

    def _on_CarReturned(self, event: CarReturned, changes: Changes) -> None:
        user = self.users.get(event.car)
        if user is not None:
            changes.writes.append(
                _notify(
                    user,
                    "queue_update",
                    "重新排队",
                    f"充电桩 {event.point_id} 不可用，您的车辆将重新调度",
                    event.car,
                    event.at,
                )
            )

    def _on_ChargingStarted(self, event: ChargingStarted, changes: Changes) -> None:
        pile_no, port = self._point(event.point_id)
        order_id = uuid.uuid4().hex
        session = LiveSession(event.car, event.point_id, pile_no, port, event.target_kwh, order_id)
        last = self.last_reading.get((pile_no, port))
        if last is not None:  # the idle meter just before the start
            wh = session.unwrap(last[1])
            session.samples, session.base_wh = [(last[0], wh)], wh
        self.sessions[event.car] = session
        self._dirty_sessions.add(event.car)
        order = {
            "id": order_id,
            "order_no": _order_no(event.at, order_id),
            "user_id": self.users.get(event.car),
            "request_id": event.car,
            "pile_no": pile_no,
            "port_no": str(port),
            "status": 1,
            "billing_mode": 1,
            "start_time": iso(event.at),
            "create_time": iso(event.at),
            "update_time": iso(event.at),
        }
        changes.writes.append(lambda db: _insert_order(db, order))
        changes.writes.append(
            lambda db: db.execute(
                "UPDATE charging_requests SET current_status = 'charging', updated_at = ? WHERE id = ?",
                [iso(event.at), event.car],
            )
        )
        energy_Wh = math.ceil(event.target_kwh * 1000)
        changes.commands.append((pile_no, port, "start", {"energy_Wh": energy_Wh}, event.car))

    def _on_SegmentEnded(self, event: SegmentEnded, changes: Changes) -> None:
        session = self.sessions.pop(event.car, None)
        self._dirty_sessions.add(event.car)
        detail = event.detail
        pile_no, port = self._point(event.point_id)
        if session is not None:
            order_id, end_wh = session.order_id, (session.samples[-1][1] if session.samples else None)
            pile_no, port = session.pile_no, session.port
            if not (session.stopping or session.port_stopped or detail.reason == "fault"):
                changes.commands.append((pile_no, port, "stop", {}, event.car))
        else:
            order_id, end_wh = uuid.uuid4().hex, None
        changes.writes.append(
            lambda db: _finish_order(
                db, order_id, detail, event, pile_no, port, self.users.get(event.car), end_wh
            )
        )
        if detail.reason == "fault":
            user = self.users.get(event.car)
            if user is not None:
                changes.writes.append(
                    _notify(
                        user,
                        "pile_fault",
                        "充电桩故障",
                        f"充电桩 {event.point_id} 故障，已为您结算 {float(round(detail.kwh, 2))} kWh，"
                        "剩余电量将优先重新调度",
                        event.car,
                        event.at,
                    )
                )

    def _on_RequestCompleted(self, event: RequestCompleted, changes: Changes) -> None:
        self._finish_request(event.car, event.bill, "completed", event.at, changes)

    def _on_RequestCancelled(self, event: RequestCancelled, changes: Changes) -> None:
        self._finish_request(event.car, event.bill, "cancelled", event.at, changes)

    def _finish_request(self, car: str, bill: Bill, status: str, at: datetime, changes: Changes) -> None:
        user = self.users.get(car)
        self.bills[car] = bill
        self._close_open_segment(car, at, changes)
        seconds = int(sum((d.stop - d.start).total_seconds() for d in bill.details))
        bill_row = {
            "id": car,
            "request_id": car,
            "user_id": user,
            "generated_time": iso(at),
            "electricity": str(bill.kwh),
            "total_amount": str(bill.total),
            "duration": seconds,
        }

        def write(db: sqlite_utils.Database) -> None:
            db.table("bills").insert(bill_row)
            db.execute(
                "UPDATE charging_requests SET current_status = ?, bill_id = ?, "
                "finished_at = ?, updated_at = ? WHERE id = ?",
                [status, car, iso(at), iso(at), car],
            )
            db.execute("UPDATE orders SET bill_id = ? WHERE request_id = ?", [car, car])

        changes.writes.append(write)
        if user is not None:
            text = (
                f"充电完成，共 {float(round(bill.kwh, 2))} kWh，费用 {float(round(bill.total, 2))} 元"
                if status == "completed"
                else f"充电请求已取消，已充 {float(round(bill.kwh, 2))} kWh，费用 "
                f"{float(round(bill.total, 2))} 元"
            )
            changes.writes.append(
                _notify(
                    user,
                    "charging_complete",
                    "充电完成" if status == "completed" else "已取消",
                    text,
                    car,
                    at,
                )
            )
            self.last_request[user] = RequestView(
                request_id=car,
                user_id=user,
                queue_number=bill.queue_number,
                charging_mode=API_MODES[Mode(bill.mode)] if bill.mode in ("F", "T") else bill.mode,
                requested_amount=_float(bill.requested_kwh),
                battery_capacity=self.battery.get(car),
                current_status=status,
                queue_position=0,
                ahead_count=0,
                estimated_wait_time=0.0,
                charging_pile_id=bill.details[-1].pile_id if bill.details else None,
                start_time=bill.details[0].start if bill.details else None,
                current_amount=_float(bill.kwh),
                created_at=self.created.pop(car, at),
            )

    def _close_open_segment(self, car: str, at: datetime, changes: Changes) -> None:
        """A request that ended with a segment never billed (cancelled in the instant it was
        dispatched): its order is cancelled with nothing delivered and its port stopped."""
        session = self.sessions.pop(car, None)
        if session is None:
            return
        self._dirty_sessions.add(car)

        def cancel_order(db: sqlite_utils.Database) -> None:
            db.execute(
                "UPDATE orders SET status = 3, end_time = ?, update_time = ? WHERE id = ? AND status = 1",
                [iso(at), iso(at), session.order_id],
            )
            db.execute(
                "UPDATE ports SET current_order_id = NULL, last_order_id = ? WHERE current_order_id = ?",
                [session.order_id, session.order_id],
            )

        changes.writes.append(cancel_order)
        if not (session.stopping or session.port_stopped):
            changes.commands.append((session.pile_no, session.port, "stop", {}, car))

    def _on_PointStatusChanged(self, event: PointStatusChanged, changes: Changes) -> None:
        log.info("point status", point=event.point_id, status=event.status)

    # ---- background ---------------------------------------------------------------------------

    async def _persist_sessions(self) -> None:
        rows = [s.to_row() for s in self.sessions.values()]

        def write(db: sqlite_utils.Database) -> None:
            for row in rows:
                db.table("live_sessions").upsert(row, pk="car")

        if rows:
            await self.store.write(write)

    async def _flush_sessions(self) -> None:
        """Meter samples reach the database every few seconds (a restart keeps them)."""
        while True:
            await asyncio.sleep(2.0)
            if self._dirty_sessions:
                async with self._lock:
                    self._dirty_sessions.clear()
                    await self._persist_sessions()

    async def _fault_silent_piles(self) -> None:
        """Piles that never reported after start-up are faulted, so nobody is sent to them."""
        await asyncio.sleep(UNKNOWN_PILE_GRACE_S)
        for pile_no in sorted({p.point.pile_id for p in self.scheduler.points.values()}):
            if pile_no not in self.health:
                async with self._lock:
                    with contextlib.suppress(DomainError):
                        await self._set_fault(pile_no, "health", True)


def _notify(
    user_id: int, kind: str, title: str, content: str, related: str | None, at: datetime
) -> Callable[[sqlite_utils.Database], object]:
    row = {
        "user_id": user_id,
        "kind": kind,
        "type": 2,
        "title": title,
        "content": content,
        "related_id": related,
        "is_read": 0,
        "create_time": iso(at),
    }
    return lambda db: db.table("notifications").insert(row)


def _order_no(at: datetime, order_id: str) -> str:
    return at.strftime("%Y%m%d%H%M%S") + order_id[:6].upper()


def _insert_order(db: sqlite_utils.Database, order: dict[str, Any]) -> None:
    piles = list(db.query("SELECT id FROM piles WHERE pile_no = ?", [order["pile_no"]]))
    if piles:
        order["pile_id"] = piles[0]["id"]
        ports = list(
            db.query(
                "SELECT id FROM ports WHERE pile_id = ? AND port_no = ?", [piles[0]["id"], order["port_no"]]
            )
        )
        if ports:
            order["port_id"] = ports[0]["id"]
            db.execute("UPDATE ports SET current_order_id = ? WHERE id = ?", [order["id"], ports[0]["id"]])
    db.table("orders").insert(order)


def _finish_order(
    db: sqlite_utils.Database,
    order_id: str,
    detail: DetailRecord,
    event: Any,
    pile_no: str,
    port: int,
    user: int | None,
    end_wh: int | None,
) -> None:
    kwh, charge, service = detail.kwh, detail.charge_fee, detail.service_fee
    row = {
        "status": 4 if detail.reason == "fault" else 2,
        "start_time": iso(detail.start),
        "end_time": iso(detail.stop),
        "duration": int((detail.stop - detail.start).total_seconds()),
        "electricity": str(kwh),
        "electricity_num": float(kwh),
        "amount": str(charge),
        "amount_num": float(charge),
        "service_fee": str(service),
        "service_fee_num": float(service),
        "total_amount": str(charge + service),
        "total_amount_num": float(charge + service),
        "detail": json.dumps(detail.to_dict()),
        "end_meter_wh": end_wh,
        "generated_time": iso(event.at),
        "update_time": iso(event.at),
    }
    if db.table("orders").count_where("id = ?", [order_id]):
        db.table("orders").update(order_id, row)
    else:
        db.table("orders").insert(
            {
                "id": order_id,
                "order_no": _order_no(event.at, order_id),
                "user_id": user,
                "request_id": event.car,
                "pile_no": pile_no,
                "port_no": str(port),
                "billing_mode": 1,
                "create_time": iso(event.at),
                **row,
            }
        )
    db.execute(
        "UPDATE ports SET current_order_id = NULL, last_order_id = ?, "
        "total_charging_times = total_charging_times + 1, "
        "total_charging_duration = total_charging_duration + ?, "
        "total_power_consumption = total_power_consumption + ? "
        "WHERE current_order_id = ?",
        [order_id, row["duration"], float(kwh), order_id],
    )


def _load_state(
    db: sqlite_utils.Database,
) -> tuple[dict[str, Any] | None, list[dict[str, Any]], list[dict[str, Any]], dict[int, str]]:
    rows = list(db.query("SELECT state FROM scheduler_state WHERE id = 1"))
    state = json.loads(rows[0]["state"]) if rows else None
    sessions = list(db.query("SELECT * FROM live_sessions"))
    requests = list(
        db.query(
            "SELECT id, user_id, battery_capacity, created_at "
            "FROM charging_requests "
            "WHERE current_status IN ('waiting', 'charging')"
        )
    )
    users = {r["id"]: r["username"] for r in db.query("SELECT id, username FROM users")}
    return state, sessions, requests, users


def _period_bounds(period: str, day: date) -> tuple[date, date]:
    if period == "day":
        return day, day + timedelta(days=1)
    if period == "week":
        start = day - timedelta(days=day.weekday())
        return start, start + timedelta(days=7)
    if period == "month":
        start = day.replace(day=1)
        following = (start + timedelta(days=32)).replace(day=1)
        return start, following
    raise ValueError(f"period must be day, week or month, got {period!r}")
