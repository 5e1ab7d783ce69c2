"""The live charging service: the scheduler driven by drivers, operators and pile telemetry.

Every change goes the same way, under one lock: a copy of the pure scheduler (``central/domain``)
and of the live sessions is told what happened at station time ``now``; the events it records
become rows (requests, orders, bills, notifications) written in ONE transaction together with the
scheduler's new state; only after that commit is the copy swapped in and are commands sent to the
piles. A change is therefore all or nothing (a failure leaves memory and database as they were),
readers see a change only once it is stored, a kill -9 at any instant restores a queue that
matches every record, and no segment is billed twice.

Live mode: a dispatched car gets a ``start`` command with its remaining energy as the pile's own
target (the safety net); its segment is measured from the pile's cumulative meter (``energy_Wh``
differences, 32-bit wrap handled) and billed from meter samples, interpolated at tariff period
boundaries. The central stops the port when the amount is reached; a pile that faults, goes
``comm_fault`` or loses its gateway ends the segment at its last reading and is a faulted pile for
the scheduler; its return to health is a recovery. Whenever the central ends a segment, the port
gets a ``stop``.

Meter anomalies and reconciliation: a meter that goes backwards keeps the segment up to its last
good reading and carries on from the new baseline (the car keeps charging where it is); a reading
that rises faster than the pile's rating allows is rejected; both are logged and counted
(:meth:`ChargingService.meter_anomalies`, the central's /metrics). A dispatched port that still
reports idle ``START_GRACE_S`` after dispatch (the start was lost, or the pile restarted while the
central was away) has its segment closed at its last reading and the car re-queued at the head of
its mode, as after a fault; a port that charges with no session or operator order at the central
is stopped and reported once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo

import structlog

from central.application import notices, views
from central.application.clock import StationClock
from central.application.ports import CommandPort, Op, PileRecord, Repositories, UnitOfWork
from central.application.recording import Recording, point_port, record_events
from central.application.sessions import LiveSession, segment_samples
from central.application.unit_of_work import Changes
from central.application.views import CompletionView, RequestView
from central.domain.billing import Bill
from central.domain.errors import (
    DomainError,
    DuplicateRequestError,
    NotChargingError,
    PileStateError,
    UnknownPileError,
    UnknownRequestError,
)
from central.domain.metering import Step
from central.domain.model import ChargingPoint, Mode, RequestState, multi_port_points
from central.domain.params import StationParams, params_from_mapping
from central.domain.scheduler import Scheduler
from central.domain.tariff import MeterSamples
from protocols.payloads import CommandResult, PileEvent, Telemetry

log = structlog.get_logger(__name__)

SAMPLE_SPACING_S = 60.0  # station seconds between kept meter samples (more is no more exact)
UNKNOWN_PILE_GRACE_S = 3.0  # real seconds after start before a silent pile counts as faulted
COMMAND_FAULT_COOLDOWN_S = 30.0  # real seconds a pile whose command failed stays faulted
STOP_WAIT_S = 5.0  # real seconds to wait for a stopped port's final meter reading
START_GRACE_S = 15.0  # real seconds a dispatched port may stay idle before its session counts as lost
STOP_GRACE_S = 10.0  # real seconds a stopped port may still report charging before that is a fault
FIXED_PARAMETERS = (
    "FastChargingPileNum",
    "TrickleChargingPileNum",
    "fast_power_kw",
    "slow_power_kw",
    "timezone",
)
"""Station parameters that apply only after a restart (they shape the piles)."""

PortWatcher = Callable[[Telemetry], None]
OutcomeWatcher = Callable[[str, str, str | None, str, str | None], None]
"""(pile_no, op, tag, status, reason) of a command's final outcome."""


def _port_points(pile_no: str, record: PileRecord) -> list[ChargingPoint]:
    """The charging points of a recorded pile's existing ports (named by its capacity)."""
    points = multi_port_points([(pile_no, record.mode, record.ports, record.power_kw)])
    return [p for p in points if point_port(p.point_id)[1] in record.port_nos]


@dataclass(frozen=True)
class _Memory:
    """The in-memory state one change replaces whole: scheduler, live sessions, recent bills."""

    scheduler: Scheduler
    sessions: dict[str, LiveSession]
    bills: dict[str, Bill]
    created: dict[str, datetime]
    last_request: dict[int, RequestView]


class ChargingService:
    """The scheduler, its persistence, and its live link to the piles."""

    def __init__(
        self,
        uow: UnitOfWork,
        params: StationParams,
        clock: StationClock,
        commands: CommandPort,
        *,
        station: str = "station1",
    ) -> None:
        self.uow, self.params, self.clock = uow, params, clock
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
        self._port_watchers: dict[tuple[str, int], PortWatcher] = {}
        self._outcome_watchers: list[OutcomeWatcher] = []
        self.anomalies = {"meter_resets": 0, "implausible_readings": 0, "unordered_charging": 0}
        self._reconciling: set[str] = set()  # cars whose lost segment is being closed
        self._unordered: set[tuple[str, int]] = set()  # ports found charging without an order
        self._stopped_at: dict[tuple[str, int], float] = {}  # monotonic time of the last stop sent

    # ---- lifecycle ----------------------------------------------------------------------

    def now(self) -> datetime:
        return max(self.clock.now(), self.scheduler.clock or self.clock.now())

    async def start(self) -> None:
        """Restore the persisted queue and sessions, then start the background tasks."""

        def load(repos: Repositories) -> tuple[Any, ...]:
            rows = repos.charging
            return rows.scheduler_state(), rows.live_sessions(), rows.active_requests(), rows.usernames()

        state, sessions, requests, users = await self.uow.read(load)
        if state is not None:
            self.scheduler = Scheduler.from_dict(state["scheduler"], self.params)
            self.faulted_by = {p: set(r) for p, r in state["faulted_by"].items()}
        self.usernames = users
        for session in sessions:
            self.sessions[session.car] = session
        for request in requests:
            self.users[request.car] = request.user_id
            self.battery[request.car] = request.battery_capacity
            self.created[request.car] = request.created_at
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
        """Run ``action(now)`` on a copy of the scheduler and of the live state, commit what it
        caused, and only then swap the copy in and send the commands.

        All or nothing: if building the rows or the commit fails, the live state stays as it was
        and the error goes to the caller. Readers (the APIs) see a change only once it is
        committed, so a "completed" request always has its bill in the database.
        """
        changes = changes or Changes()
        now = self.now()
        committed = self._memory()
        self.scheduler = committed.scheduler.clone()
        self.sessions, self.bills = dict(committed.sessions), dict(committed.bills)
        self.created, self.last_request = dict(committed.created), dict(committed.last_request)
        try:
            result = action(now)
            record_events(self.scheduler.pop_events(), self._recording(), changes)
            state = {
                "scheduler": self.scheduler.to_dict(),
                "faulted_by": {p: sorted(r) for p, r in self.faulted_by.items() if r},
            }
            dirty = set(self._dirty_sessions)
            sessions = [self.sessions[c].snapshot() for c in dirty if c in self.sessions]
            gone = [c for c in dirty if c not in self.sessions]
        finally:
            applied = self._memory()
            self._restore(committed)  # until the commit, everyone sees the committed state
        try:
            await changes.commit(self.uow, state, sessions, gone, now)
        except BaseException:
            log.warning("change not committed; live state kept as it was", exc_info=True)
            raise
        self._restore(applied)
        self._dirty_sessions -= dirty
        for command in changes.commands:
            await self._command(command.pile_no, command.port, command.op, command.params, command.car)
        return result

    def _recording(self) -> Recording:
        """The working state a change's events update (the copies :meth:`_apply` swaps in)."""
        return Recording(
            self.sessions,
            self.bills,
            self.created,
            self.last_request,
            self.users,
            self.battery,
            self.last_reading,
            self._dirty_sessions,
        )

    def _memory(self) -> _Memory:
        return _Memory(self.scheduler, self.sessions, self.bills, self.created, self.last_request)

    def _restore(self, memory: _Memory) -> None:
        self.scheduler, self.sessions, self.bills = memory.scheduler, memory.sessions, memory.bills
        self.created, self.last_request = memory.created, memory.last_request

    async def _command(
        self, pile_no: str, port: int, op: Op, params: Mapping[str, int], car: str | None
    ) -> None:
        if op == "stop":
            self._stopped_at[(pile_no, port)] = time.monotonic()
        try:
            command_id = await self.commands.send(pile_no, port, op, dict(params), car=car)
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
                self.usernames.update(await self.uow.read(lambda repos: repos.charging.usernames(user_id)))
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
        return views.completion_view(car, self.bills[car])

    async def _end(self, car: str, how: str) -> None:
        """Stop a charging port and let its final reading end the segment; else end it now."""
        async with self._lock:
            session = self.sessions.get(car)
            live = session is not None and session.meter.started and not session.port_stopped
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

    def _reading_for(self, car: str) -> MeterSamples | Fraction | None:
        session = self.sessions.get(car)
        request = self.scheduler.get(car)
        if request is None or request.state is not RequestState.CHARGING:
            return None
        return self._profile(session) if session is not None else Fraction(0)

    def _finish_reading(self, car: str) -> dict[str, Any]:
        profile = self._reading_for(car)
        if isinstance(profile, MeterSamples):
            return {"profile": profile}
        return {"delivered_kwh": profile if profile is not None else 0}

    def _profile(self, session: LiveSession) -> MeterSamples | Fraction:
        """The segment's meter samples in station time, from its start (0 before any sample)."""
        request = self.scheduler.get(session.car)
        if request is None or request.segment_start is None:
            return Fraction(0)
        samples = segment_samples(session.meter, request.segment_start, self.clock.at_ms)
        return samples if samples is not None else Fraction(0)

    # ---- queries for the API ------------------------------------------------------------------

    def current_request(self, user_id: int) -> RequestView | None:
        car = next((c for c, u in self.users.items() if u == user_id and c in self.scheduler.requests), None)
        return self._view(car) if car else self.last_request.get(user_id)

    def _view(self, car: str) -> RequestView:
        if self.scheduler.get(car) is None:
            return next(v for v in self.last_request.values() if v.request_id == car)
        session = self.sessions.get(car)
        session_kwh = Fraction(session.delivered_wh, 1000) if session else Fraction(0)
        return views.active_view(
            self.scheduler, self.now(), car, self.users.get(car, 0), self.battery.get(car), session_kwh
        )

    def queue_status(self) -> dict[str, Any]:
        return views.queue_status(self.scheduler, self.now(), self.params)

    def piles_status(self) -> dict[str, Any]:
        return views.piles_status(self.scheduler, self.health, self._username)

    def _username(self, car: str | None) -> str | None:
        user = self.users.get(car) if car else None
        return self.usernames.get(user, str(user)) if user is not None else None

    def parameters(self) -> dict[str, Any]:
        return views.public_parameters(self.params)

    async def update_parameters(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Prices, periods, strategies and sizes; pile counts and powers need a restart."""
        async with self._lock:
            merged = {**self.params.to_mapping(), **changes}
            for table in ("pricing", "time_periods"):
                if isinstance(changes.get(table), Mapping):
                    merged[table] = {**self.params.to_mapping()[table], **changes[table]}
            params = params_from_mapping(merged)
            restart = [k for k in FIXED_PARAMETERS if merged[k] != self.params.to_mapping()[k]]
            scheduler = Scheduler.from_dict(self.scheduler.to_dict(), params)
            mapping, at = params.to_mapping(), self.now()
            await self.uow.write(lambda repos: repos.charging.save_params(mapping, at))
            self.params, self.scheduler = params, scheduler  # only once they are stored
            if restart:
                log.warning("parameters saved; they apply after a restart", keys=restart)
            return self.parameters()

    def pile_queues(self) -> list[dict[str, Any]]:
        return views.pile_queues(self.scheduler, self.now(), self.users, self.battery, self._username)

    async def pile_report(self, period: str, day: date | None) -> list[dict[str, Any]]:
        """Per pile for the day/week/month containing ``day``: sessions, time, kWh, fees."""
        day = day or self.now().astimezone(self.tz).date()
        start, end = views.period_bounds(period, day)
        lo = datetime.combine(start, datetime.min.time(), self.tz)
        hi = datetime.combine(end, datetime.min.time(), self.tz)
        rows = await self.uow.read(lambda repos: repos.reports.pile_totals(lo, hi))
        points = [p.point.point_id for p in self.scheduler.point_states()]
        return views.pile_report(points, rows, period, start, end)

    # ---- operator actions --------------------------------------------------------------------

    def _pile_points(self, pile_no: str) -> list[str]:
        points = [p.point.point_id for p in self.scheduler.points_of(pile_no)]
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
        before = set(reasons)
        (reasons.add if faulted else reasons.discard)(reason)
        if bool(reasons) == was:
            return
        try:
            if faulted:
                await self._apply(
                    lambda now: self.scheduler.pile_fault(now, pile_no, readings=self._readings_at(pile_no))
                )
            else:
                await self._apply(lambda now: self.scheduler.pile_recover(now, pile_no))
        except BaseException:
            self.faulted_by[pile_no] = before  # all or nothing
            raise

    def _readings_at(self, pile_no: str) -> dict[str, Any]:
        readings: dict[str, Any] = {}
        for point in self.scheduler.point_states():
            if point.point.pile_id != pile_no or not point.queue:
                continue
            car = point.queue[0]
            if self.scheduler.requests[car].state is RequestState.CHARGING:
                session = self.sessions.get(car)  # readings are keyed by car
                readings[car] = self._profile(session) if session else Fraction(0)
        return readings

    # ---- what operator orders use: a port outside the queue ------------------------------------

    def pile_health(self, pile_no: str) -> str | None:
        """online | faulted | comm_fault | offline, or None before the pile reported."""
        return self.health.get(pile_no)

    async def reserve_port(self, pile_no: str, port: int) -> None:
        """Take a port's charging point out of the queue for an operator order.

        Refused (PileStateError) while a queued car is charging there or the pile is not healthy;
        cars queued behind it are re-placed as when a pile is taken out of service.
        """
        async with self._lock:
            point_id = self._point_id(pile_no, port)
            state = self.scheduler.point(point_id)
            assert state is not None
            if state.queue and self.scheduler.requests[state.queue[0]].state is RequestState.CHARGING:
                raise PileStateError(f"{point_id} is charging a queued car")
            if not state.working:
                raise PileStateError(f"{point_id} is {state.status}")
            await self._apply(lambda now: self.scheduler.pile_disable(now, point_id))

    async def release_port(self, pile_no: str, port: int) -> None:
        """Give a reserved port back to the queue."""
        async with self._lock:
            point_id = self._point_id(pile_no, port)
            state = self.scheduler.point(point_id)
            if state is not None and state.disabled:
                await self._apply(lambda now: self.scheduler.pile_enable(now, point_id))

    def _point_id(self, pile_no: str, port: int) -> str:
        for candidate in (f"{pile_no}-{port}", pile_no if port == 1 else ""):
            if self.scheduler.point(candidate) is not None:
                return candidate
        raise UnknownPileError(f"no charging point for pile {pile_no} port {port}")

    def last_meter(self, pile_no: str, port: int) -> tuple[int, int] | None:
        """(wall ms, Wh) of the port's latest reading, if the central has seen one."""
        return self.last_reading.get((pile_no, port))

    async def send_command(
        self, pile_no: str, port: int, op: Op, params: Mapping[str, int], *, tag: str | None = None
    ) -> str:
        """A command through the one command path (ids, expiry, retries, outcome)."""
        if op == "stop":
            self._stopped_at[(pile_no, port)] = time.monotonic()
        return await self.commands.send(pile_no, port, op, dict(params), car=tag)

    def watch_port(self, pile_no: str, port: int, watcher: PortWatcher) -> None:
        """Give every reading of the port to ``watcher`` (one watcher per port; the last wins)."""
        self._port_watchers[(pile_no, port)] = watcher

    def unwatch_port(self, pile_no: str, port: int, watcher: PortWatcher) -> None:
        """Stop giving the port's readings to ``watcher`` (if it is still the port's watcher)."""
        if self._port_watchers.get((pile_no, port)) is watcher:
            del self._port_watchers[(pile_no, port)]

    def watch_outcomes(self, watcher: OutcomeWatcher) -> None:
        """Give every command's final outcome to ``watcher``."""
        self._outcome_watchers.append(watcher)

    # ---- live input: telemetry, pile states, command outcomes ---------------------------------

    def spacing_ms(self) -> float:
        """Wall milliseconds between kept meter samples (``SAMPLE_SPACING_S`` of station time)."""
        return SAMPLE_SPACING_S * 1000 / self.clock.scale

    def count_anomaly(self, kind: str) -> None:
        """One more meter reset, implausible reading or unordered charging (see the counts)."""
        self.anomalies[kind] += 1

    def meter_anomalies(self) -> dict[str, int]:
        """Counts since start: meter resets, rejected implausible readings, charging nobody ordered."""
        return dict(self.anomalies)

    def max_wh_per_ms(self, pile_no: str, port: int) -> float | None:
        """The most a port's meter can rise per wall millisecond at its pile's rated power."""
        point = next(
            (p.point for p in self.scheduler.points_of(pile_no) if point_port(p.point.point_id)[1] == port),
            None,
        )
        if point is None:
            return None
        return float(point.power_kw) * 1000 / 3_600_000 * self.clock.scale

    def on_telemetry(self, pile_no: str, port: int, reading: Telemetry) -> None:
        """Meter progress of a session; the end of a segment when the port stops charging."""
        key = (pile_no, port)
        watcher = self._port_watchers.get(key)
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
            if reading.state == "charging" and watcher is None:
                self._unordered_charging(pile_no, port, reading)
            else:
                self._unordered.discard(key)
            return
        update = session.meter.observe(
            reading.ts,
            reading.energy_Wh,
            reading.state == "charging",
            self.spacing_ms(),
            self.max_wh_per_ms(pile_no, port),
        )
        if update.step is Step.IMPLAUSIBLE:
            self.count_anomaly("implausible_readings")
            log.warning(
                "implausible meter reading rejected",
                pile=pile_no,
                port=port,
                car=session.car,
                energy_Wh=reading.energy_Wh,
                last_wh=session.meter.last_raw_wh,
            )
            return
        if update.reset is not None:
            self.count_anomaly("meter_resets")
            log.warning(
                "meter went backwards: segment kept up to the last good reading, new baseline",
                pile=pile_no,
                port=port,
                car=session.car,
                previous_wh=update.reset.previous_wh,
                new_wh=update.reset.wh,
            )
        if update.step is Step.STALE:
            return
        self._dirty_sessions.add(session.car)
        if update.step is Step.IDLE:
            if self._start_overdue(session, reading.ts) and session.car not in self._reconciling:
                self._reconciling.add(session.car)  # reconciled once
                self._schedule(self._requeue_lost(session.car))
            return
        if update.step is Step.STARTED:
            self._schedule(self._session_started(session))
        if reading.state != "charging":
            session.port_stopped = True
            if reading.state == "faulted":
                return  # the pile state handler ends the segment as a fault
            self._schedule(self._segment_done(session.car))
        elif session.delivered_wh >= session.target_kwh * 1000 and not session.stopping:
            session.stopping = True
            self._schedule(self._command(session.pile_no, session.port, "stop", {}, session.car))

    def _start_overdue(self, session: LiveSession, ts_ms: int) -> bool:
        """The port still reports idle ``START_GRACE_S`` after its segment was dispatched."""
        request = self.scheduler.get(session.car)
        if request is None or request.segment_start is None:
            return False
        grace = timedelta(seconds=START_GRACE_S * self.clock.scale)
        return self.clock.at_ms(ts_ms) - request.segment_start > grace

    async def _requeue_lost(self, car: str) -> None:
        """A dispatched segment the pile does not run (the start was lost, or the pile restarted
        idle while the central was away): it ends at its last reading and the car's remaining
        amount goes back to the head of the queue, as when a pile faults."""
        try:
            async with self._lock:
                await self._requeue_locked(car)
        finally:
            self._reconciling.discard(car)

    async def _requeue_locked(self, car: str) -> None:
        session = self.sessions.get(car)
        request = self.scheduler.get(car)
        if session is None or request is None or request.state is not RequestState.CHARGING:
            return
        point_id, reading = session.point_id, self._profile(session)
        log.warning(
            "port idle after dispatch: segment closed at its last reading, remainder re-queued",
            pile=session.pile_no,
            port=session.port,
            car=car,
            kwh=str(session.delivered_wh / 1000),
        )

        def requeue(now: datetime) -> None:
            self.scheduler.pile_fault(now, point_id, readings={car: reading}, dispatch=False)
            self.scheduler.pile_recover(now, point_id)

        await self._apply(requeue)

    def _unordered_charging(self, pile_no: str, port: int, reading: Telemetry) -> None:
        """A port charging with no session or operator order here (someone published a start):
        stopped, and reported once per episode (log and count)."""
        key = (pile_no, port)
        stopped = self._stopped_at.get(key)
        if stopped is not None and time.monotonic() - stopped < STOP_GRACE_S:
            return  # a port the central just stopped may report charging a little longer
        if key not in self._unordered:
            self._unordered.add(key)
            self.count_anomaly("unordered_charging")
            log.error(
                "port charging without an order at the central: stopping it",
                pile=pile_no,
                port=port,
                energy_Wh=reading.energy_Wh,
            )
        self._schedule(self._command(pile_no, port, "stop", {}, None))

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
        for watch in self._outcome_watchers:
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
            known = pile_no in self.scheduler.pile_ids()
            if not known and (state != "online" or not await self._register_pile(pile_no)):
                return
            if known and state == "online":
                await self._sync_ports(pile_no)  # a gateway may report ports the pile did not have
            healthy = state == "online" and self._meter_known(pile_no)
            await self._set_fault(pile_no, "health", not healthy)

    async def _register_pile(self, pile_no: str) -> bool:
        """Add a recorded pile the scheduler does not know (operator-created, or first reported
        by a gateway) as charging points; they start faulted until healthy. False: no record."""
        record = await self.uow.read(lambda repos: repos.charging.pile_record(pile_no))
        if record is None:
            return False
        points = _port_points(pile_no, record)
        self.faulted_by.setdefault(pile_no, set()).add("health")
        await self._apply(lambda now: self.scheduler.add_points(points, faulted=True))
        log.info(
            "pile registered with the scheduler",
            pile=pile_no,
            mode=record.mode.value,
            ports=record.port_nos,
            power_kw=str(record.power_kw),
        )
        return True

    async def pile_ports_changed(self, pile_no: str) -> None:
        """A pile's ports were added, removed or renumbered, or its capacity changed: its charging
        points follow its port rows. Points with cars at them stay until the cars leave."""
        async with self._lock:
            if pile_no in self.scheduler.pile_ids():  # else it joins with its ports once healthy
                await self._sync_ports(pile_no)

    async def _sync_ports(self, pile_no: str) -> None:
        record = await self.uow.read(lambda repos: repos.charging.pile_record(pile_no))
        if record is None:
            return  # a deleted pile leaves through unregister_pile
        wanted = _port_points(pile_no, record)
        have = {p.point.point_id for p in self.scheduler.points_of(pile_no)}
        if {p.point_id for p in wanted} == have:
            return
        faulted = bool(self.faulted_by.get(pile_no))
        if any(p.queue for p in self.scheduler.points_of(pile_no)):
            new = [p for p in wanted if p.point_id not in have]
            if new:
                await self._apply(lambda now: self.scheduler.add_points(new, faulted=faulted))
            return

        def rebuild(now: datetime) -> None:
            self.scheduler.remove_pile(pile_no)
            if wanted:
                self.scheduler.add_points(wanted, faulted=faulted)

        await self._apply(rebuild)
        log.info("charging points follow the pile's ports", pile=pile_no, points=[p.point_id for p in wanted])

    async def unregister_pile(self, pile_no: str) -> None:
        """Remove a deleted pile's charging points (refused while cars are at them)."""
        async with self._lock:
            if self.scheduler.points_of(pile_no):
                await self._apply(lambda now: self.scheduler.remove_pile(pile_no))
            self.faulted_by.pop(pile_no, None)
            self.health.pop(pile_no, None)

    def _meter_known(self, pile_no: str) -> bool:
        return any(p == pile_no for p, _ in self.last_reading) or any(
            s.pile_no == pile_no and s.meter.base_wh is not None for s in self.sessions.values()
        )

    async def _session_started(self, session: LiveSession) -> None:
        async with self._lock:
            changes = Changes()
            user = self.users.get(session.car)
            started = self.clock.at_ms(session.meter.started_ms or 0)
            base_wh = session.meter.base_wh
            changes.write(
                lambda repos: repos.charging.session_order_started(session.order_id, base_wh, started)
            )
            if user is not None:
                changes.notify(notices.charging_started(user, session.car, session.point_id, started))
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

    # ---- background ---------------------------------------------------------------------------

    async def _persist_sessions(self) -> None:
        sessions = [s.snapshot() for s in self.sessions.values()]

        def write(repos: Repositories) -> None:
            for session in sessions:
                repos.charging.save_live_session(session)

        if sessions:
            await self.uow.write(write)

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
        for pile_no in sorted(self.scheduler.pile_ids()):
            if pile_no not in self.health:
                async with self._lock:
                    with contextlib.suppress(DomainError):
                        await self._set_fault(pile_no, "health", True)
