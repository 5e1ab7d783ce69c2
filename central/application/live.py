"""The live input of the charging service: what the piles report, turned into changes.

:class:`LiveInput` is the ingest's listener. It keeps what the piles said that the scheduler does not
hold (each pile's health, each port's last meter reading, anomaly counts, who watches a port) and
feeds the readings of live segments to their meter sessions. What changes the queue (a segment
started or ended, a pile faulted, recovered, registered or re-ported, a lost segment re-queued) goes
through the service's one change path, under its lock; :class:`ChargingCore` names exactly what of
the service it uses.

Meter anomalies and reconciliation: a meter that goes backwards keeps the segment up to its last
good reading and carries on from the new baseline (the car keeps charging where it is); a reading
that rises faster than the pile's rating allows is rejected; both are logged, counted
(:meth:`LiveInput.meter_anomalies`, the central's /metrics) and shown to whoever watches them
(:meth:`LiveInput.watch_anomalies`: the operator dashboard's recent faults). A dispatched port
that still reports idle ``START_GRACE_S`` after dispatch (the start was lost, or the pile restarted
while the central was away) has its segment closed at its last reading and the car re-queued at
the head of its mode without any other car moving (``Scheduler.requeue``); a port that charges with
no session or operator order at the central is stopped and reported once.

Segments: what belongs to an earlier segment never acts on the car's current one. Updates a
reading sets going carry the segment (its order id) and do nothing once it has ended; only the
current segment's own start outcome (by command id) can fault its pile; a segment's start waits
until its port has obeyed its last stop (:meth:`LiveInput.hold_start`); and a pile back from being
away takes cars only once it has been read again (its meter may have run on unseen). A port that
stops short of its amount by itself re-queues the rest once; the second time the request completes
with what was delivered and the driver is told.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from fractions import Fraction
from typing import Any, Protocol

import structlog

from central.application import notices
from central.application.clock import StationClock
from central.application.ports import Op, PileRecord, UnitOfWork
from central.application.recording import point_port
from central.application.sessions import LiveSession
from central.application.unit_of_work import Changes
from central.domain.billing import Bill
from central.domain.errors import DomainError
from central.domain.metering import MeterSession, Step, implausible_text
from central.domain.model import ChargingPoint, RequestState, multi_port_points
from central.domain.scheduler import Scheduler
from central.domain.tariff import MeterSamples
from protocols.payloads import CommandResult, PileEvent, Telemetry

log = structlog.get_logger(__name__)

SAMPLE_SPACING_S = 60.0  # station seconds between kept meter samples (more is no more exact)
UNKNOWN_PILE_GRACE_S = 3.0  # real seconds after start before a silent pile counts as faulted
COMMAND_FAULT_COOLDOWN_S = 30.0  # real seconds a pile whose command failed stays faulted
START_GRACE_S = 15.0  # real seconds a dispatched port may stay idle before its session counts as lost
SHORTFALL_TOLERANCE_WH = 50  # a port stopping this close to its amount has finished it
STOP_GRACE_S = 10.0  # real seconds a stopped port may still report charging before that is a fault

PortWatcher = Callable[[Telemetry], None]
OutcomeWatcher = Callable[[str, str, str | None, str, str | None], None]
"""(pile_no, op, tag, status, reason) of a command's final outcome."""
AnomalyWatcher = Callable[[str, str, str], None]
"""(where: ``pile-port``, kind, what happened for a person) of a meter anomaly."""


class ChargingCore(Protocol):
    """What the live input uses of the charging service: its state and its one change path."""

    lock: asyncio.Lock
    scheduler: Scheduler
    sessions: dict[str, LiveSession]
    users: dict[str, int]
    faulted_by: dict[str, set[str]]
    clock: StationClock
    uow: UnitOfWork

    async def apply(self, action: Callable[[datetime], Any], changes: Changes | None = None) -> Any: ...
    async def command(
        self, pile_no: str, port: int, op: Op, params: Mapping[str, int], car: str | None
    ) -> None: ...
    async def set_fault(self, pile_no: str, reason: str, faulted: bool) -> None: ...
    def mark_dirty(self, car: str) -> None: ...
    def profile(self, session: LiveSession) -> MeterSamples | Fraction: ...
    def finalize(self, now: datetime, car: str, how: str) -> Bill: ...


def port_points(pile_no: str, record: PileRecord) -> list[ChargingPoint]:
    """The charging points of a recorded pile's existing ports (named by its capacity)."""
    points = multi_port_points([(pile_no, record.mode, record.ports, record.power_kw)])
    return [p for p in points if point_port(p.point_id)[1] in record.port_nos]


class LiveInput:
    """Telemetry, pile states and command outcomes for one charging service."""

    def __init__(self, core: ChargingCore) -> None:
        self.core = core
        self.health: dict[str, str] = {}  # pile_no -> online|faulted|comm_fault|offline
        self.last_reading: dict[tuple[str, int], tuple[int, int]] = {}  # (pile, port) -> ms, raw Wh
        self.tasks: list[asyncio.Task[None]] = []
        self.anomalies = {"meter_resets": 0, "implausible_readings": 0, "unordered_charging": 0}
        self._port_watchers: dict[tuple[str, int], PortWatcher] = {}
        self._outcome_watchers: list[OutcomeWatcher] = []
        self._anomaly_watchers: list[AnomalyWatcher] = []
        self._reconciling: set[str] = set()  # cars whose lost segment is being closed
        self._short_retried: set[str] = set()  # cars whose segment stopped short once (re-queued)
        self._unordered: set[tuple[str, int]] = set()  # ports found charging without an order
        self._stopped_at: dict[tuple[str, int], float] = {}  # monotonic time of the last stop sent
        self._returning: dict[str, set[int]] = {}  # pile -> ports read live since it was last away
        self._away_at: dict[str, float] = {}  # monotonic time a pile last went away
        self._unsettled: set[tuple[str, int]] = set()  # ports sent a stop, not yet seen stopped

    def start(self) -> None:
        """Start watching for piles that stay silent after start-up, and end the cool-down of every
        restored failed-command fault (its timer ended with the process that started it)."""
        self.tasks.append(
            asyncio.get_running_loop().create_task(self._fault_silent_piles(), name="silent-piles")
        )
        for pile_no, reasons in self.core.faulted_by.items():
            if "command" in reasons:
                self._schedule(self._command_fault_expires(pile_no))

    # ---- what operator orders use: a port's readings and commands ------------------------------

    def pile_health(self, pile_no: str) -> str | None:
        """online | faulted | comm_fault | offline, or None before the pile reported."""
        return self.health.get(pile_no)

    def last_meter(self, pile_no: str, port: int) -> tuple[int, int] | None:
        """(wall ms, Wh) of the port's latest reading, if the central has seen one."""
        return self.last_reading.get((pile_no, port))

    def stop_sent(self, pile_no: str, port: int) -> None:
        """A stop went to the port: it may report charging a little longer without being unordered,
        and the next segment's start waits until it reports it stopped (see :meth:`hold_start`)."""
        self._stopped_at[(pile_no, port)] = time.monotonic()
        self._unsettled.add((pile_no, port))

    def hold_start(self, session: LiveSession) -> bool:
        """Hold the segment's start if its port was sent a stop it has not yet been seen to obey.

        The port may still be running the last segment's charge (the stop is on its way, or was
        lost with the gateway). Started now, the pile would refuse, or count that charge's tail as
        this segment's; and a stop arriving after the start would end this segment. So the segment
        waits: each reading until the port reports it is not charging only moves its baseline
        (that tail belongs to no segment), the stop is sent again if it seems lost, and the first
        reading of the stopped port sends the start, with the segment's whole amount."""
        if (session.pile_no, session.port) not in self._unsettled:
            return False
        session.start_held = True
        self.core.mark_dirty(session.car)
        log.info(
            "start held until the port reports it stopped",
            pile=session.pile_no,
            port=session.port,
            car=session.car,
        )
        return True

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

    def spacing_ms(self) -> float:
        """Wall milliseconds between kept meter samples (``SAMPLE_SPACING_S`` of station time)."""
        return SAMPLE_SPACING_S * 1000 / self.core.clock.scale

    def watch_anomalies(self, watcher: AnomalyWatcher) -> None:
        """Show every meter anomaly to ``watcher``: (where, kind, what happened)."""
        self._anomaly_watchers.append(watcher)

    def count_anomaly(self, kind: str, where: str, what: str) -> None:
        """One more meter reset, implausible reading or unordered charging (see the counts), at
        ``where`` (``pile-port``); ``what`` says it for a person."""
        self.anomalies[kind] += 1
        for watch in self._anomaly_watchers:
            try:
                watch(where, kind, what)
            except Exception:
                log.exception("anomaly watcher failed", kind=kind, where=where)

    def meter_anomalies(self) -> dict[str, int]:
        """Counts since start: meter resets, rejected implausible readings, charging nobody ordered."""
        return dict(self.anomalies)

    def max_wh_per_ms(self, pile_no: str, port: int) -> float | None:
        """The most a port's meter can rise per wall millisecond at its pile's rated power."""
        point = next(
            (
                p.point
                for p in self.core.scheduler.points_of(pile_no)
                if point_port(p.point.point_id)[1] == port
            ),
            None,
        )
        if point is None:
            return None
        return float(point.power_kw) * 1000 / 3_600_000 * self.core.clock.scale

    # ---- telemetry ---------------------------------------------------------------------------

    def on_telemetry(self, pile_no: str, port: int, reading: Telemetry) -> None:
        """Meter progress of a session; the end of a segment when the port stops charging."""
        key = (pile_no, port)
        watcher = self._port_watchers.get(key)
        if pile_no in self._returning and not reading.replayed:
            self._seen_back(pile_no, port, reading, watcher is not None)
        if watcher is not None:
            try:
                watcher(reading)
            except Exception:
                log.exception("port watcher failed", pile=pile_no, port=port)
        previous = self.last_reading.get(key)
        if previous is None or reading.ts >= previous[0]:
            self.last_reading[key] = (reading.ts, reading.energy_Wh)
        if not reading.replayed and reading.state != "charging":
            self._unsettled.discard(key)  # the port obeyed its stop (or stopped by itself)
        if previous is None and self.health.get(pile_no) == "online":
            self._schedule(self._health_changed(pile_no, "online"))  # its meter is known now
        session = next(
            (s for s in self.core.sessions.values() if s.pile_no == pile_no and s.port == port), None
        )
        if session is None:
            if reading.state == "charging" and watcher is None:
                self._unordered_charging(pile_no, port, reading)
            else:
                self._unordered.discard(key)
            return
        if session.start_held:
            self._held_reading(session, reading)
            return
        update = session.meter.observe(
            reading.ts,
            reading.energy_Wh,
            reading.state == "charging",
            self.spacing_ms(),
            self.max_wh_per_ms(pile_no, port),
        )
        if update.step is Step.IMPLAUSIBLE:
            self.count_anomaly(
                "implausible_readings",
                f"{pile_no}-{port}",
                implausible_text(reading.energy_Wh, session.meter.last_raw_wh),
            )
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
            self.count_anomaly("meter_resets", f"{pile_no}-{port}", update.reset.text())
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
        self.core.mark_dirty(session.car)
        if update.step is Step.IDLE:
            if self._start_overdue(session, reading.ts) and session.car not in self._reconciling:
                self._reconciling.add(session.car)  # reconciled once
                self._schedule(self._requeue_lost(session.car, session.order_id))
            return
        if update.step is Step.STARTED:
            self._schedule(self._session_started(session))
        if reading.state != "charging":
            session.port_stopped = True
            if reading.state == "faulted":
                return  # the pile state handler ends the segment as a fault
            self._schedule(self._segment_done(session.car, session.order_id))
        elif session.delivered_wh >= session.target_kwh * 1000 and not session.stopping:
            session.stopping = True
            self._schedule(self.core.command(session.pile_no, session.port, "stop", {}, session.car))

    def _held_reading(self, session: LiveSession, reading: Telemetry) -> None:
        """A reading of a port whose segment's start is held (see :meth:`hold_start`)."""
        last = session.meter.samples[-1][0] if session.meter.samples else None
        if reading.replayed or (last is not None and reading.ts <= last):
            return  # older than the baseline: it changes nothing
        session.meter = MeterSession.from_idle((reading.ts, reading.energy_Wh))
        self.core.mark_dirty(session.car)
        key = (session.pile_no, session.port)
        if reading.state == "charging":
            stopped = self._stopped_at.get(key)
            if stopped is None or time.monotonic() - stopped >= STOP_GRACE_S:
                log.warning("port still charging its last charge: stop sent again", pile=key[0], port=key[1])
                self._schedule(self.core.command(session.pile_no, session.port, "stop", {}, None))
            return
        session.start_held = False
        session.released_ms = reading.ts
        energy_wh = math.ceil(session.target_kwh * 1000)
        log.info(
            "port stopped: held start sent", pile=key[0], port=key[1], car=session.car, energy_Wh=energy_wh
        )
        self._schedule(
            self.core.command(session.pile_no, session.port, "start", {"energy_Wh": energy_wh}, session.car)
        )

    def _seen_back(self, pile_no: str, port: int, reading: Telemetry, watched: bool) -> None:
        """A live reading of a pile that was away (offline, comm_fault, faulted): once every port
        has one and none charges for nobody, the pile can take cars again (see :meth:`_meter_known`).

        While the pile was away its meter may have run on (a pile keeps charging to its own target
        after the central closed the segment), so a reading from before is no baseline for the next
        segment. A port found charging without a session or an order is stopped now: the stop sent
        when its segment was closed may have been lost with the gateway."""
        charging_for_nobody = (
            reading.state == "charging"
            and not watched
            and not any(s.pile_no == pile_no and s.port == port for s in self.core.sessions.values())
        )
        if charging_for_nobody:
            stopped = self._stopped_at.get((pile_no, port))
            if stopped is not None and stopped <= self._away_at.get(pile_no, 0.0):
                del self._stopped_at[(pile_no, port)]  # no grace for a stop sent before it went away
            return
        seen = self._returning[pile_no]
        seen.add(port)
        if seen >= self._ports_of(pile_no) and self.health.get(pile_no) == "online":
            del self._returning[pile_no]
            self._schedule(self._health_changed(pile_no, "online"))

    def _ports_of(self, pile_no: str) -> set[int]:
        return {point_port(p.point.point_id)[1] for p in self.core.scheduler.points_of(pile_no)}

    def _start_overdue(self, session: LiveSession, ts_ms: int) -> bool:
        """The port still reports idle ``START_GRACE_S`` after its segment was dispatched (or after
        its held start was sent)."""
        released_ms = session.released_ms
        if released_ms is not None and ts_ms - released_ms <= START_GRACE_S * 1000:
            return False
        request = self.core.scheduler.get(session.car)
        if request is None or request.segment_start is None:
            return False
        grace = timedelta(seconds=START_GRACE_S * self.core.clock.scale)
        return self.core.clock.at_ms(ts_ms) - request.segment_start > grace

    def _current(self, car: str, segment: str) -> LiveSession | None:
        """The car's live session if it is still segment ``segment`` (its order id) and charging.

        What a reading started (closing a segment, re-queueing it) runs later, under the lock; by
        then that segment may have ended and the car been dispatched again: a task of an earlier
        segment must never act on the current one."""
        session = self.core.sessions.get(car)
        request = self.core.scheduler.get(car)
        if session is None or request is None or request.state is not RequestState.CHARGING:
            return None
        if session.order_id != segment:
            log.info("stale segment update ignored", car=car, segment=segment, current=session.order_id)
            return None
        return session

    async def _requeue_lost(self, car: str, segment: str) -> None:
        """A dispatched segment the pile does not run (the start was lost, or the pile restarted
        idle while the central was away): it ends at its last reading and the car's remaining
        amount goes back to the head of the queue, as when a pile faults."""
        try:
            async with self.core.lock:
                session = self._current(car, segment)
                if session is not None:
                    log.warning(
                        "port idle after dispatch: segment closed at its last reading, remainder re-queued",
                        pile=session.pile_no,
                        port=session.port,
                        car=car,
                        kwh=str(session.delivered_wh / 1000),
                    )
                    await self._requeue_locked(session, "not_started")
        finally:
            self._reconciling.discard(car)

    async def _requeue_locked(self, session: LiveSession, reason: str) -> None:
        """End the session's segment at its last reading; the car's rest heads its mode's queue
        (``Scheduler.requeue``: no other car moves)."""
        core, car = self.core, session.car
        reading = core.profile(session)
        await core.apply(lambda now: core.scheduler.requeue(now, car, reason, reading))

    def _unordered_charging(self, pile_no: str, port: int, reading: Telemetry) -> None:
        """A port charging with no session or operator order here (someone published a start):
        stopped, and reported once per episode (log and count)."""
        key = (pile_no, port)
        stopped = self._stopped_at.get(key)
        if stopped is not None and time.monotonic() - stopped < STOP_GRACE_S:
            return  # a port the central just stopped may report charging a little longer
        if key not in self._unordered:
            self._unordered.add(key)
            self.count_anomaly(
                "unordered_charging", f"{pile_no}-{port}", "charging without an order at the central: stopped"
            )
            log.error(
                "port charging without an order at the central: stopping it",
                pile=pile_no,
                port=port,
                energy_Wh=reading.energy_Wh,
            )
        self._schedule(self.core.command(pile_no, port, "stop", {}, None))

    async def _session_started(self, session: LiveSession) -> None:
        core = self.core
        async with core.lock:
            changes = Changes()
            user = core.users.get(session.car)
            started = core.clock.at_ms(session.meter.started_ms or 0)
            base_wh = session.meter.base_wh
            changes.write(
                lambda repos: repos.charging.session_order_started(session.order_id, base_wh, started)
            )
            if user is not None:
                changes.notify(notices.charging_started(user, session.car, session.point_id, started))
            await core.apply(lambda now: None, changes)

    async def _segment_done(self, car: str, segment: str) -> None:
        """The port of segment ``segment`` stopped charging: the request is complete, unless the
        port stopped on its own well short of the amount (see :meth:`_stopped_short`)."""
        core = self.core
        async with core.lock:
            session = self._current(car, segment)
            if session is None:
                return
            if self._stopped_short(session) and car not in self._short_retried:
                self._short_retried.add(car)  # once: a car that stops taking energy is then complete
                log.warning(
                    "port stopped short by itself: segment closed, remainder re-queued once",
                    pile=session.pile_no,
                    port=session.port,
                    car=car,
                    kwh=str(session.delivered_wh / 1000),
                    target_kwh=str(session.target_kwh),
                )
                await self._requeue_locked(session, "stopped_short")  # the rest waits
                return
            short = self._stopped_short(session)
            self._short_retried.discard(car)
            how = session.ending or "complete"
            changes = Changes()
            user = core.users.get(car)
            if short and user is not None:
                changes.notify(
                    notices.stopped_short(user, car, session.point_id, session.delivered_wh, core.clock.now())
                )
            await core.apply(lambda now: core.finalize(now, car, how), changes)

    @staticmethod
    def _stopped_short(session: LiveSession) -> bool:
        """The port stopped on its own well before the segment's amount, and nobody asked it to
        (not the driver, not the central at the amount): a stale stop or a pile that gave up.
        Completing would close the request short of what the driver asked for."""
        if session.ending or session.stopping:
            return False
        target_wh = session.target_kwh * 1000
        tolerance_wh = max(Fraction(SHORTFALL_TOLERANCE_WH), target_wh / 100)  # or 1 % of the amount
        return bool(target_wh - session.delivered_wh > tolerance_wh)

    # ---- pile states, events and command outcomes ------------------------------------------------

    def on_pile_state(self, pile_no: str, state: str) -> None:
        if state != "online" and pile_no in self.health:
            self._returning[pile_no] = set()  # its meter must be read again before it takes cars
            self._away_at[pile_no] = time.monotonic()
        self.health[pile_no] = state
        self._schedule(self._health_changed(pile_no, state))

    def on_pile_event(self, pile_no: str, event: PileEvent) -> None:
        log.debug("pile event", pile=pile_no, type=event.type, port=event.port)

    def on_command_result(self, pile_no: str, port: int, result: CommandResult) -> None:
        log.debug("command result", pile=pile_no, port=port, id=result.id, status=result.status)

    def on_command_outcome(
        self,
        pile_no: str,
        op: str,
        car: str | None,
        status: str,
        reason: str | None,
        command_id: str | None = None,
    ) -> None:
        """A command's final outcome; a start of the car's current segment that never took makes
        the pile faulted for a while. The start of an earlier segment of the car (``command_id``
        is not the one its session sent), or of a segment whose port already charges for it or is
        being stopped, changes nothing."""
        for watch in self._outcome_watchers:
            watch(pile_no, op, car, status, reason)
        session = self.core.sessions.get(car) if car else None
        if status == "done" or op != "start" or session is None:
            return
        if command_id is not None and command_id != session.command_id:
            log.info("outcome of an earlier segment's start ignored", pile=pile_no, car=car, id=command_id)
            return
        if session.meter.started or session.stopping or session.ending:
            log.info("failed start of a segment already charging or ending ignored", pile=pile_no, car=car)
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
        async with self.core.lock:
            await self.core.set_fault(pile_no, "command", True)
        await self._command_fault_expires(pile_no)

    async def _command_fault_expires(self, pile_no: str) -> None:
        """Clear a failed command's fault after the cool-down."""
        await asyncio.sleep(COMMAND_FAULT_COOLDOWN_S)
        async with self.core.lock:
            await self.core.set_fault(pile_no, "command", False)

    async def _health_changed(self, pile_no: str, state: str) -> None:
        """A pile can take cars when it is online and the central knows its meter."""
        async with self.core.lock:
            known = pile_no in self.core.scheduler.pile_ids()
            if not known and (state != "online" or not await self._register_pile(pile_no)):
                return
            if known and state == "online":
                await self._sync_ports(pile_no)  # a gateway may report ports the pile did not have
            healthy = state == "online" and self._meter_known(pile_no)
            await self.core.set_fault(pile_no, "health", not healthy)

    def _meter_known(self, pile_no: str) -> bool:
        """The central has a reading of the pile's meter it can take as a baseline: one read since
        the pile last came back, if it was away."""
        if pile_no in self._returning:
            return False
        return any(p == pile_no for p, _ in self.last_reading) or any(
            s.pile_no == pile_no and s.meter.base_wh is not None for s in self.core.sessions.values()
        )

    # ---- piles joining, changing and leaving the scheduler -------------------------------------

    async def _register_pile(self, pile_no: str) -> bool:
        """Add a recorded pile the scheduler does not know (operator-created, or first reported
        by a gateway) as charging points; they start faulted until healthy. False: no record."""
        core = self.core
        record = await core.uow.read(lambda repos: repos.charging.pile_record(pile_no))
        if record is None:
            return False
        points = port_points(pile_no, record)
        core.faulted_by.setdefault(pile_no, set()).add("health")
        await core.apply(lambda now: core.scheduler.add_points(points, faulted=True))
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
        async with self.core.lock:
            if pile_no in self.core.scheduler.pile_ids():  # else it joins with its ports once healthy
                await self._sync_ports(pile_no)

    async def _sync_ports(self, pile_no: str) -> None:
        core = self.core
        record = await core.uow.read(lambda repos: repos.charging.pile_record(pile_no))
        if record is None:
            return  # a deleted pile leaves through unregister_pile
        wanted = port_points(pile_no, record)
        have = {p.point.point_id for p in core.scheduler.points_of(pile_no)}
        if {p.point_id for p in wanted} == have:
            return
        faulted = bool(core.faulted_by.get(pile_no))
        if any(p.queue for p in core.scheduler.points_of(pile_no)):
            new = [p for p in wanted if p.point_id not in have]
            if new:
                await core.apply(lambda now: core.scheduler.add_points(new, faulted=faulted))
            return

        def rebuild(now: datetime) -> None:
            core.scheduler.remove_pile(pile_no)
            if wanted:
                core.scheduler.add_points(wanted, faulted=faulted)

        await core.apply(rebuild)
        log.info("charging points follow the pile's ports", pile=pile_no, points=[p.point_id for p in wanted])

    async def unregister_pile(self, pile_no: str) -> None:
        """Remove a deleted pile's charging points (refused while cars are at them)."""
        core = self.core
        async with core.lock:
            if core.scheduler.points_of(pile_no):
                await core.apply(lambda now: core.scheduler.remove_pile(pile_no))
            core.faulted_by.pop(pile_no, None)
            self.health.pop(pile_no, None)
            self._returning.pop(pile_no, None)
            self._away_at.pop(pile_no, None)

    # ---- tasks -----------------------------------------------------------------------------------

    def _schedule(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(self._guard(coro))
        self.tasks.append(task)
        task.add_done_callback(lambda t: self.tasks.remove(t) if t in self.tasks else None)

    async def _guard(self, coro: Any) -> None:
        try:
            await coro
        except DomainError as exc:
            log.info("live update refused", error=str(exc), code=exc.code)
        except Exception:
            log.exception("live update failed")

    async def _fault_silent_piles(self) -> None:
        """Piles that never reported after start-up are faulted, so nobody is sent to them."""
        await asyncio.sleep(UNKNOWN_PILE_GRACE_S)
        for pile_no in sorted(self.core.scheduler.pile_ids()):
            if pile_no not in self.health:
                async with self.core.lock:
                    with contextlib.suppress(DomainError):
                        await self.core.set_fault(pile_no, "health", True)
