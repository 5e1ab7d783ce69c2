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

The service is the facade the web layer and operator orders call: lifecycle, the change path,
driver and operator actions, and the API's queries (built by :mod:`central.application.views`).
What the piles report is handled by its :class:`~central.application.live.LiveInput` (``live``);
what each scheduler event becomes is :mod:`central.application.recording`.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo

import structlog

from central.application import views
from central.application.clock import StationClock
from central.application.live import LiveInput
from central.application.ports import CommandPort, Op, Repositories, UnitOfWork
from central.application.recording import Recording, record_events
from central.application.sessions import LiveSession, segment_samples
from central.application.unit_of_work import Changes
from central.application.views import CompletionView, RequestView
from central.domain.billing import Bill
from central.domain.errors import (
    DuplicateRequestError,
    NotChargingError,
    PileStateError,
    UnknownPileError,
    UnknownRequestError,
)
from central.domain.model import Mode, RequestState
from central.domain.params import StationParams, params_from_mapping
from central.domain.scheduler import Scheduler
from central.domain.tariff import MeterSamples

log = structlog.get_logger(__name__)

STOP_WAIT_S = 5.0  # real seconds to wait for a stopped port's final meter reading
FIXED_PARAMETERS = (
    "FastChargingPileNum",
    "TrickleChargingPileNum",
    "fast_power_kw",
    "slow_power_kw",
    "timezone",
)
"""Station parameters that apply only after a restart (they shape the piles)."""


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
        self.faulted_by: dict[str, set[str]] = {}  # pile_no -> reasons (health, declared, command)
        self.lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._dirty_sessions: set[str] = set()
        self.live = LiveInput(self)

    # ---- lifecycle ----------------------------------------------------------------------

    def now(self) -> datetime:
        return max(self.clock.now(), self.scheduler.clock or self.clock.now())

    async def start(self) -> None:
        """Restore the persisted queue and sessions, then start the background tasks."""
        await self.restore()
        self._tasks = [asyncio.get_running_loop().create_task(self._flush_sessions(), name="sessions-flush")]
        self.live.start()
        log.info(
            "charging service started", requests=len(self.scheduler.requests), sessions=len(self.sessions)
        )

    async def restore(self) -> None:
        """Load the persisted queue, live sessions, active requests and usernames: all a restart
        (or another central's read-only view of the station) starts from; nothing runs yet."""

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

    async def close(self) -> None:
        tasks = [*self._tasks, *self.live.tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._persist_sessions()

    # ---- the one path for every change -----------------------------------------------------

    async def apply(self, action: Callable[[datetime], Any], changes: Changes | None = None) -> Any:
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
            await self.command(command.pile_no, command.port, command.op, command.params, command.car)
        return result

    def mark_dirty(self, car: str) -> None:
        """The car's live session changed: the next change or flush saves it."""
        self._dirty_sessions.add(car)

    def _recording(self) -> Recording:
        """The working state a change's events update (the copies :meth:`apply` swaps in)."""
        return Recording(
            self.sessions,
            self.bills,
            self.created,
            self.last_request,
            self.users,
            self.battery,
            self.live.last_reading,
            self._dirty_sessions,
        )

    def _memory(self) -> _Memory:
        return _Memory(self.scheduler, self.sessions, self.bills, self.created, self.last_request)

    def _restore(self, memory: _Memory) -> None:
        self.scheduler, self.sessions, self.bills = memory.scheduler, memory.sessions, memory.bills
        self.created, self.last_request = memory.created, memory.last_request

    async def command(
        self, pile_no: str, port: int, op: Op, params: Mapping[str, int], car: str | None
    ) -> None:
        """Send a driver session's command; a failure to send is logged (its outcome follows). A
        segment's start waits while its port has not obeyed its last stop (``LiveInput.hold_start``)."""
        if op == "stop":
            self.live.stop_sent(pile_no, port)
        session = self.sessions.get(car) if car else None
        if op == "start" and session is not None and (session.start_held or self.live.hold_start(session)):
            return
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
        async with self.lock:
            if any(u == user_id and c in self.scheduler.requests for c, u in self.users.items()):
                raise DuplicateRequestError("you already have an active charging request")
            car = uuid.uuid4().hex
            amount = Fraction(str(kwh))
            if user_id not in self.usernames:
                self.usernames.update(await self.uow.read(lambda repos: repos.charging.usernames(user_id)))
            changes = Changes()
            self.users[car], self.battery[car] = user_id, battery_capacity
            try:
                number = await self.apply(
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
        async with self.lock:
            self._owned(user_id, request_id)
            new_mode = Mode.parse(mode) if mode is not None else None
            amount = Fraction(str(kwh)) if kwh is not None else None
            await self.apply(lambda now: self.scheduler.change(now, request_id, new_mode, amount))
            return self._view(request_id)

    async def cancel(self, user_id: int, request_id: str) -> RequestView:
        """Cancel in any state; a charging car is stopped and billed for what the meter says."""
        async with self.lock:
            self._owned(user_id, request_id)
        await self._end(request_id, "cancel")
        return self.last_request[user_id]

    async def complete(self, user_id: int) -> CompletionView:
        """End the user's charging now: stop the port, bill what the meter says."""
        async with self.lock:
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
        async with self.lock:
            session = self.sessions.get(car)
            live = session is not None and session.meter.started and not session.port_stopped
            if session is not None and live:
                session.ending, session.stopping = how, True
                self._dirty_sessions.add(car)
                await self.command(session.pile_no, session.port, "stop", {}, car)
        if live:
            deadline = asyncio.get_running_loop().time() + STOP_WAIT_S
            while car in self.scheduler.requests and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)  # the stopped reading finalizes via on_telemetry
        async with self.lock:
            if car in self.scheduler.requests:
                await self.apply(lambda now: self.finalize(now, car, how))

    def finalize(self, now: datetime, car: str, how: str) -> Bill:
        if how == "cancel":
            return self.scheduler.cancel(now, car, reading=self._reading_for(car))
        return self.scheduler.segment_finished(now, car, **self._finish_reading(car))

    def _reading_for(self, car: str) -> MeterSamples | Fraction | None:
        session = self.sessions.get(car)
        request = self.scheduler.get(car)
        if request is None or request.state is not RequestState.CHARGING:
            return None
        return self.profile(session) if session is not None else Fraction(0)

    def _finish_reading(self, car: str) -> dict[str, Any]:
        profile = self._reading_for(car)
        if isinstance(profile, MeterSamples):
            return {"profile": profile}
        return {"delivered_kwh": profile if profile is not None else 0}

    def profile(self, session: LiveSession) -> MeterSamples | Fraction:
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
        return views.piles_status(self.scheduler, self.live.health, self._username)

    def _username(self, car: str | None) -> str | None:
        user = self.users.get(car) if car else None
        return self.usernames.get(user, str(user)) if user is not None else None

    def parameters(self) -> dict[str, Any]:
        return views.public_parameters(self.params)

    async def update_parameters(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Prices, periods, strategies and sizes; pile counts and powers need a restart."""
        async with self.lock:
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
        async with self.lock:
            self._pile_points(pile_no)
            if in_service:
                await self.apply(lambda now: self.scheduler.pile_enable(now, pile_no))
            else:
                await self.apply(
                    lambda now: self.scheduler.pile_disable(now, pile_no, readings=self._readings_at(pile_no))
                )

    async def declare_fault(self, pile_no: str, faulted: bool) -> None:
        async with self.lock:
            self._pile_points(pile_no)
            await self.set_fault(pile_no, "declared", faulted)

    async def set_fault(self, pile_no: str, reason: str, faulted: bool) -> None:
        reasons = self.faulted_by.setdefault(pile_no, set())
        was = bool(reasons)
        before = set(reasons)
        (reasons.add if faulted else reasons.discard)(reason)
        if bool(reasons) == was:
            return
        try:
            if faulted:
                await self.apply(
                    lambda now: self.scheduler.pile_fault(now, pile_no, readings=self._readings_at(pile_no))
                )
            else:
                await self.apply(lambda now: self.scheduler.pile_recover(now, pile_no))
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
                readings[car] = self.profile(session) if session else Fraction(0)
        return readings

    # ---- what operator orders use: a port outside the queue ------------------------------------

    async def reserve_port(self, pile_no: str, port: int) -> None:
        """Take a port's charging point out of the queue for an operator order.

        Refused (PileStateError) while a queued car is charging there or the pile is not healthy;
        cars queued behind it are re-placed as when a pile is taken out of service.
        """
        async with self.lock:
            point_id = self._point_id(pile_no, port)
            state = self.scheduler.point(point_id)
            assert state is not None
            if state.queue and self.scheduler.requests[state.queue[0]].state is RequestState.CHARGING:
                raise PileStateError(f"{point_id} is charging a queued car")
            if not state.working:
                raise PileStateError(f"{point_id} is {state.status}")
            await self.apply(lambda now: self.scheduler.pile_disable(now, point_id))

    async def release_port(self, pile_no: str, port: int) -> None:
        """Give a reserved port back to the queue."""
        async with self.lock:
            point_id = self._point_id(pile_no, port)
            state = self.scheduler.point(point_id)
            if state is not None and state.disabled:
                await self.apply(lambda now: self.scheduler.pile_enable(now, point_id))

    def _point_id(self, pile_no: str, port: int) -> str:
        for candidate in (f"{pile_no}-{port}", pile_no if port == 1 else ""):
            if self.scheduler.point(candidate) is not None:
                return candidate
        raise UnknownPileError(f"no charging point for pile {pile_no} port {port}")

    async def send_command(
        self, pile_no: str, port: int, op: Op, params: Mapping[str, int], *, tag: str | None = None
    ) -> str:
        """A command through the one command path (ids, expiry, retries, outcome)."""
        if op == "stop":
            self.live.stop_sent(pile_no, port)
        return await self.commands.send(pile_no, port, op, dict(params), car=tag)

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
                async with self.lock:
                    self._dirty_sessions.clear()
                    await self._persist_sessions()
