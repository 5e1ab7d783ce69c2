"""The charging-queue scheduler: a pure state machine of the station's charging queue rules.

Every operation takes ``now`` (an aware datetime), changes state and records events in
``self.events`` (drain them with :meth:`Scheduler.pop_events`). Nothing decides on its own when a
car is done: live, the service reports it (:meth:`segment_finished`) from meter readings; in
replay, :mod:`central.domain.ideal` computes ideal constant-power completion instants and feeds
them in. Same-instant order (completions, then the event, then calling) is kept by passing
``dispatch=False`` to everything but the last operation of an instant, or by calling
:meth:`dispatch` at the end.

Cost per event: the waiting area is one insertion-ordered map per mode (queue numbers only grow,
so arrival order is number order): calling, cancelling and changing are O(1) in its size. Piles
are few and scanned.
"""

from __future__ import annotations

import copy
import heapq
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any

from central.domain.billing import REQUEUE_REASONS, Bill, DetailRecord, SegmentInfo, make_detail
from central.domain.errors import (
    ChangeNotAllowedError,
    DuplicateRequestError,
    InvalidRequestError,
    NotChargingError,
    PileStateError,
    QueueFullError,
    SchedulerStateError,
    TimeWentBackwardsError,
    UnknownPileError,
    UnknownRequestError,
)
from central.domain.events import (
    CarCalled,
    CarReturned,
    ChargingStarted,
    Event,
    PointStatusChanged,
    QueueChanged,
    RequestCancelled,
    RequestChanged,
    RequestCompleted,
    RequestQueued,
    SegmentEnded,
)
from central.domain.model import (
    ChargingPoint,
    Mode,
    PointState,
    Request,
    RequestState,
    by_number,
    points_from_params,
)
from central.domain.params import DispatchPolicy, FaultStrategy, StationParams
from central.domain.tariff import ConstantPower, EnergyProfile, Tariff
from central.domain.units import Quantity, QuantityError, exact, hours_between, utc

Reading = EnergyProfile | Fraction | Decimal | int | str
"""What a charging segment delivered: a kWh amount or a meter profile; None = ideal pile."""
STATE_VERSION = 1
MAX_REQUEST_KWH = 10_000
"""Largest amount one request may ask for (no vehicle holds more; keeps time arithmetic bounded)."""


@dataclass(frozen=True)
class Standing:
    """Where a request stands, in the user API's terms."""

    car: str
    queue_number: str
    mode: Mode
    status: str  # waiting | charging
    queue_position: int  # 0 while charging, else cars ahead + 1
    ahead_count: int
    point_id: str | None


class Scheduler:
    """Queue numbers, waiting area, pile queues, fault groups and billing of segments."""

    def __init__(self, params: StationParams, points: Sequence[ChargingPoint] | None = None):
        self.params = params
        self.tariff = Tariff.from_params(params)
        layout = list(points) if points is not None else points_from_params(params)
        self.points: dict[str, PointState] = {p.point_id: PointState(p) for p in layout}
        if len(self.points) != len(layout):
            raise ValueError("charging point ids must be unique")
        self.requests: dict[str, Request] = {}
        self.waiting: dict[Mode, OrderedDict[str, None]] = {m: OrderedDict() for m in Mode}
        self.fault_groups: dict[Mode, list[str]] = {m: [] for m in Mode}
        self.next_number = dict.fromkeys(Mode, 1)
        self.next_seq = 1
        self.next_detail = 1
        self.clock: datetime | None = None
        self.events: list[Event] = []
        self._touched: set[Mode] = set()

    # ---- driver requests -------------------------------------------------------------------

    def arrive(
        self, now: datetime, car: str, mode: Mode | str, kwh: Quantity, *, dispatch: bool = True
    ) -> str:
        """A new request enters the waiting area; returns its queue number."""
        now = self._tick(now)
        mode, amount = _mode(mode), _amount(kwh)
        if car in self.requests:
            raise DuplicateRequestError(f"car {car} already has request {self.requests[car].queue_number}")
        if self.waiting_count >= self.params.waiting_area_size:
            raise QueueFullError(f"waiting area is full ({self.params.waiting_area_size} cars)")
        request = Request(car, mode, self._take_number(mode), amount, now)
        self.requests[car] = request
        self._enter_waiting(request)
        self.events.append(RequestQueued(now, car, request.queue_number, mode.value, amount))
        self._close(now, dispatch)
        return request.queue_number

    def change(
        self,
        now: datetime,
        car: str,
        mode: Mode | str | None = None,
        kwh: Quantity | None = None,
        *,
        dispatch: bool = True,
    ) -> str:
        """Change amount (keeps the number) and/or mode (new number at the back); waiting only."""
        now = self._tick(now)
        request = self._get(car)
        if request.state is not RequestState.WAITING:
            raise ChangeNotAllowedError(f"car {car} is in the charging area; it can only cancel")
        new_mode = request.mode if mode is None else _mode(mode)
        amount = request.requested_kwh if kwh is None else _amount(kwh)
        old_number, request.requested_kwh = request.queue_number, amount
        self._touched.add(request.mode)
        if new_mode is not request.mode:
            del self.waiting[request.mode][car]
            request.mode, request.number = new_mode, self._take_number(new_mode)
            self._enter_waiting(request)
        self.events.append(RequestChanged(now, car, old_number, request.queue_number, new_mode.value, amount))
        self._close(now, dispatch)
        return request.queue_number

    def cancel(
        self, now: datetime, car: str, *, reading: Reading | None = None, dispatch: bool = True
    ) -> Bill:
        """Cancel in any state; a charging car's segment ends and is billed (``reading`` or ideal)."""
        now = self._tick(now)
        request = self._get(car)
        if request.state is RequestState.CHARGING:
            self._end_segment(now, request, "cancelled", reading)
        self._detach(now, request)
        bill = self._finish(now, request, "cancelled")
        self._close(now, dispatch)
        return bill

    # ---- charging progress (live: from meter readings; replay: ideal piles) -----------------

    def segment_finished(
        self,
        now: datetime,
        car: str,
        delivered_kwh: Quantity | None = None,
        *,
        profile: EnergyProfile | None = None,
        dispatch: bool = True,
    ) -> Bill:
        """The car is done: its segment ends at ``now`` and the request completes.

        Energy: ``profile`` (meter samples) if given, else ``delivered_kwh``, else the
        remaining amount (an ideal pile delivered everything).
        """
        now = self._tick(now)
        request = self._charging(car)
        reading: Reading = (
            profile
            if profile is not None
            else exact(delivered_kwh)
            if delivered_kwh is not None
            else request.remaining_kwh
        )
        self._end_segment(now, request, "completed", reading)
        self._detach(now, request)
        bill = self._finish(now, request, "completed")
        self._close(now, dispatch)
        return bill

    def report_progress(self, now: datetime, car: str, segment_kwh: Quantity) -> None:
        """Live meter progress of the charging car's current segment (for estimates and display)."""
        now = self._tick(now)
        request = self._charging(car)
        request.progress_kwh, request.progress_at = exact(segment_kwh), now

    # ---- piles ------------------------------------------------------------------------------

    def pile_fault(
        self,
        now: datetime,
        pile: str,
        *,
        readings: Mapping[str, Reading] | None = None,
        dispatch: bool = True,
    ) -> None:
        """A pile (all its points) or one point faults; its cars go to the fault group."""
        self._take_out(self._tick(now), pile, "faulted", readings or {}, dispatch)

    def pile_recover(self, now: datetime, pile: str, *, dispatch: bool = True) -> None:
        """A faulted pile or point works again: its mode's queued cars are re-placed by number."""
        self._bring_back(self._tick(now), pile, "faulted", dispatch)

    def requeue(
        self, now: datetime, car: str, reason: str, reading: Reading | None = None, *, dispatch: bool = True
    ) -> None:
        """A charging car's segment ended with no fault at its point: the port stopped by itself well
        short of the amount (``stopped_short``) or never ran the segment (``not_started``). The
        segment is settled with that reason; the rest of the car heads its mode's fault group, to
        be called before anyone else. No other car moves: the point's next queued car starts."""
        if reason not in REQUEUE_REASONS:
            raise ValueError(f"requeue reason must be one of {', '.join(REQUEUE_REASONS)}, got {reason!r}")
        now = self._tick(now)
        request = self._charging(car)
        assert request.point_id is not None
        point = self.points[request.point_id]
        self._end_segment(now, request, reason, reading)
        self._detach(now, request)  # off its point, whose next car starts
        if request.remaining_kwh <= 0:
            self._finish(now, request, "completed")
        else:
            self._return(now, request, point, reason)
            self.fault_groups[request.mode].insert(0, car)
        self._close(now, dispatch)

    def pile_disable(
        self,
        now: datetime,
        pile: str,
        *,
        readings: Mapping[str, Reading] | None = None,
        dispatch: bool = True,
    ) -> None:
        """Operator takes a pile out of service; its cars are re-placed as after a fault."""
        self._take_out(self._tick(now), pile, "disabled", readings or {}, dispatch)

    def pile_enable(self, now: datetime, pile: str, *, dispatch: bool = True) -> None:
        """Operator puts a pile back in service; re-placement as after a recovery."""
        self._bring_back(self._tick(now), pile, "disabled", dispatch)

    def dispatch(self, now: datetime) -> None:
        """Calling: place fault-group cars, then waiting cars, while a pile can take one."""
        now = self._tick(now)
        for mode in Mode:
            while self._call_next(now, mode):
                pass
        self._flush(now)

    def pop_events(self) -> list[Event]:
        """Recorded events, oldest first; the list is emptied."""
        events, self.events = self.events, []
        return events

    # ---- charging points ----------------------------------------------------------------------

    def add_points(self, points: Sequence[ChargingPoint], *, faulted: bool = False) -> None:
        """Add charging points (a pile recorded after start-up); ``faulted`` until it is healthy."""
        if any(p.point_id in self.points for p in points):
            raise PileStateError("charging point ids must be unique")
        for point in points:
            self.points[point.point_id] = PointState(point, faulted=faulted)

    def remove_pile(self, pile: str) -> list[str]:
        """Remove every charging point of ``pile`` (refused while cars are queued at one). The ids."""
        points = [p for p in self.points.values() if p.point.pile_id == pile]
        if any(p.queue for p in points):
            raise PileStateError(f"pile {pile} still has cars queued")
        for p in points:
            del self.points[p.point.point_id]
        return [p.point.point_id for p in points]

    # ---- queries ----------------------------------------------------------------------------

    def point_states(self) -> list[PointState]:
        """Every charging point in layout order (treat as read-only)."""
        return list(self.points.values())

    def point(self, point_id: str) -> PointState | None:
        """One charging point by id (treat as read-only)."""
        return self.points.get(point_id)

    def points_of(self, pile: str) -> list[PointState]:
        """The charging points of a pile id (all its ports), or the one point of that id."""
        return [p for p in self.points.values() if p.point.pile_id == pile or p.point.point_id == pile]

    def pile_ids(self) -> set[str]:
        """The piles the scheduler has charging points of."""
        return {p.point.pile_id for p in self.points.values()}

    @property
    def waiting_count(self) -> int:
        """Cars in the waiting area (both modes)."""
        return sum(len(line) for line in self.waiting.values())

    def get(self, car: str) -> Request | None:
        """The car's active request, if any (treat as read-only)."""
        return self.requests.get(car)

    def waiting_line(self, mode: Mode) -> list[Request]:
        """Waiting cars of one mode in calling (queue-number) order."""
        return [self.requests[c] for c in self.waiting[mode]]

    def waiting_cars(self) -> list[Request]:
        """All waiting cars in the order they entered the waiting line (arrival order)."""
        lines = [self.waiting_line(m) for m in Mode]
        return list(heapq.merge(*lines, key=lambda r: r.seq))

    def fault_queue(self, mode: Mode | None = None) -> list[Request]:
        """Fault-group cars in placement order (fast group first when ``mode`` is None)."""
        modes = list(Mode) if mode is None else [mode]
        return [self.requests[c] for m in modes for c in self.fault_groups[m]]

    def charged_kwh(self, now: datetime, car: str) -> Fraction:
        """Energy of the charging car's current segment at ``now`` (last reading + rated power)."""
        request = self._charging(car)
        assert request.progress_at is not None
        assert request.point_id is not None
        power = self.points[request.point_id].point.power_kw
        elapsed = hours_between(request.progress_at, max(utc(now), request.progress_at))
        return min(request.remaining_kwh, request.progress_kwh + power * elapsed)

    def segment_preview(self, now: datetime, car: str) -> DetailRecord:
        """The charging car's current segment priced as if it ended at ``now`` (not recorded)."""
        request = self._charging(car)
        return self._price(now, request, "preview", None, detail_id="")

    def standing(self, car: str) -> Standing:
        """Queue position and cars ahead (waiting: fault group + earlier numbers of its mode)."""
        request = self._get(car)
        ahead = self._ahead(request)
        position = 0 if request.state is RequestState.CHARGING else ahead + 1
        return Standing(
            car,
            request.queue_number,
            request.mode,
            request.state.api_status,
            position,
            ahead,
            request.point_id,
        )

    def clone(self) -> Scheduler:
        """An independent copy (for what-if estimates, and the copy every change of the charging
        service works on); pending events are not copied.

        Parameters, tariff and the charging points themselves never change and are shared; what
        changes (point states and their queues, requests, the waiting lines, the counters) is
        copied. By hand rather than by ``copy.deepcopy``: a station of 100 points costs a
        deep copy about 1-3 ms of the event loop, and every change and every queue-status read makes
        one (``tests/unit/test_properties_scheduler.py`` checks that a clone shares nothing that
        changes)."""
        new = copy.copy(self)
        new.points = {
            point_id: PointState(state.point, state.faulted, state.disabled, list(state.queue))
            for point_id, state in self.points.items()
        }
        new.requests = copy.deepcopy(self.requests)
        new.waiting = {mode: OrderedDict(line) for mode, line in self.waiting.items()}
        new.fault_groups = {mode: list(group) for mode, group in self.fault_groups.items()}
        new.next_number = dict(self.next_number)
        new.events = []
        new._touched = set(self._touched)
        return new

    # ---- persistence ------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able state; :meth:`from_dict` restores exactly this queue."""
        return {
            "version": STATE_VERSION,
            "clock": None if self.clock is None else self.clock.isoformat(),
            "points": [p.to_dict() for p in self.points.values()],
            "requests": [r.to_dict() for r in self.requests.values()],
            "waiting": {m.value: list(self.waiting[m]) for m in Mode},
            "fault_groups": {m.value: list(self.fault_groups[m]) for m in Mode},
            "next_number": {m.value: self.next_number[m] for m in Mode},
            "next_seq": self.next_seq,
            "next_detail": self.next_detail,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], params: StationParams) -> Scheduler:
        """Restore a :meth:`to_dict` state; SchedulerStateError if it is malformed."""
        try:
            scheduler = cls._restore(data, params)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise SchedulerStateError(f"cannot restore scheduler state: {exc!r}") from exc
        scheduler._check_consistent()
        return scheduler

    @classmethod
    def _restore(cls, data: Mapping[str, Any], params: StationParams) -> Scheduler:
        if data["version"] != STATE_VERSION:
            raise ValueError(f"unknown state version {data['version']!r}")
        points = [PointState.from_dict(p) for p in data["points"]]
        scheduler = cls(params, [p.point for p in points])
        scheduler.points = {p.point.point_id: p for p in points}
        scheduler.requests = {r.car: r for r in map(Request.from_dict, data["requests"])}
        for m in Mode:
            scheduler.waiting[m] = OrderedDict.fromkeys(str(c) for c in data["waiting"][m.value])
            scheduler.fault_groups[m] = [str(c) for c in data["fault_groups"][m.value]]
            scheduler.next_number[m] = int(data["next_number"][m.value])
        scheduler.next_seq, scheduler.next_detail = int(data["next_seq"]), int(data["next_detail"])
        clock = data["clock"]
        scheduler.clock = None if clock is None else datetime.fromisoformat(clock)
        return scheduler

    def _check_consistent(self) -> None:
        """Every request is in exactly the place its state says."""
        where: dict[str, tuple[RequestState, str | None]] = {}
        for m in Mode:
            where.update((c, (RequestState.WAITING, None)) for c in self.waiting[m])
            where.update((c, (RequestState.FAULT_QUEUE, None)) for c in self.fault_groups[m])
        for p in self.points.values():
            for i, c in enumerate(p.queue):
                state = RequestState.CHARGING if i == 0 and p.working else RequestState.QUEUED
                where[c] = (state, p.point.point_id)
        located = (
            sum(len(x) for x in self.waiting.values())
            + sum(len(x) for x in self.fault_groups.values())
            + sum(len(p.queue) for p in self.points.values())
        )
        actual = {c: (r.state, r.point_id) for c, r in self.requests.items()}
        unstarted = [
            r.car
            for r in self.requests.values()
            if (r.state is RequestState.CHARGING) != (r.segment_start is not None)
        ]
        if where != actual or located != len(actual) or unstarted:
            raise SchedulerStateError(
                "scheduler state is inconsistent: request states do not "
                "match the waiting area, fault groups and pile queues"
            )

    # ---- internals: requests ----------------------------------------------------------------

    def _tick(self, now: datetime) -> datetime:
        now = utc(now)
        if self.clock is not None and now < self.clock:
            raise TimeWentBackwardsError(f"{now.isoformat()} is before {self.clock.isoformat()}")
        self.clock = now
        return now

    def _get(self, car: str) -> Request:
        try:
            return self.requests[car]
        except KeyError:
            raise UnknownRequestError(f"car {car} has no active charging request") from None

    def _charging(self, car: str) -> Request:
        request = self._get(car)
        if request.state is not RequestState.CHARGING:
            raise NotChargingError(f"car {car} is not charging ({request.state.value})")
        return request

    def _take_number(self, mode: Mode) -> int:
        number = self.next_number[mode]
        self.next_number[mode] += 1
        return number

    def _enter_waiting(self, request: Request) -> None:
        request.state, request.point_id = RequestState.WAITING, None
        request.seq, self.next_seq = self.next_seq, self.next_seq + 1
        self.waiting[request.mode][request.car] = None
        self._touched.add(request.mode)

    def _detach(self, now: datetime, request: Request) -> None:
        """Take the request out of wherever it is (a charging car's segment is already closed)."""
        if request.state is RequestState.WAITING:
            del self.waiting[request.mode][request.car]
        elif request.state is RequestState.FAULT_QUEUE:
            self.fault_groups[request.mode].remove(request.car)
        else:
            assert request.point_id is not None
            point = self.points[request.point_id]
            point.queue.remove(request.car)
            request.point_id = None
            self._start_head(now, point)
        self._touched.add(request.mode)

    def _finish(self, now: datetime, request: Request, status: str) -> Bill:
        del self.requests[request.car]
        bill = request.bill(status)
        event = RequestCompleted if status == "completed" else RequestCancelled
        self.events.append(event(now, request.car, bill))
        return bill

    def _ahead(self, request: Request) -> int:
        if request.state is RequestState.WAITING:
            line = self.waiting[request.mode]
            rank = next(i for i, c in enumerate(line) if c == request.car)
            return len(self.fault_groups[request.mode]) + rank
        if request.state is RequestState.FAULT_QUEUE:
            return self.fault_groups[request.mode].index(request.car)
        assert request.point_id is not None
        return self.points[request.point_id].queue.index(request.car)

    def _close(self, now: datetime, dispatch: bool) -> None:
        if dispatch:
            self.dispatch(now)
        else:
            self._flush(now)

    def _flush(self, now: datetime) -> None:
        self.events.extend(QueueChanged(now, m.value) for m in Mode if m in self._touched)
        self._touched.clear()

    # ---- internals: segments ----------------------------------------------------------------

    def _start_head(self, now: datetime, point: PointState) -> None:
        """Whenever a working point has a car at its head that is not charging, it starts."""
        if not (point.working and point.queue):
            return
        head = self.requests[point.queue[0]]
        if head.state is RequestState.QUEUED:
            head.state, head.segment_start = RequestState.CHARGING, now
            head.progress_kwh, head.progress_at = Fraction(0), now
            self.events.append(ChargingStarted(now, head.car, point.point.point_id, head.remaining_kwh))

    def _end_segment(self, now: datetime, request: Request, reason: str, reading: Reading | None) -> None:
        """Close the charging segment: price it (if it lasted), count its energy."""
        assert request.segment_start is not None
        assert request.point_id is not None
        if now > request.segment_start:
            detail = self._price(now, request, reason, reading, f"D{self.next_detail}")
            self.next_detail += 1
            request.details.append(detail)
            request.delivered_kwh += detail.kwh
            self.events.append(SegmentEnded(now, request.car, request.point_id, detail))
        request.state = RequestState.QUEUED
        request.segment_start = request.progress_at = None
        request.progress_kwh = Fraction(0)

    def _price(
        self, now: datetime, request: Request, reason: str, reading: Reading | None, detail_id: str
    ) -> DetailRecord:
        assert request.segment_start is not None
        assert request.point_id is not None
        point = self.points[request.point_id].point
        info = SegmentInfo(
            detail_id, request.car, request.queue_number, point.point_id, point.pile_id, reason
        )
        profile = self._profile(now, request, reading)
        return make_detail(info, request.segment_start, utc(now), profile, self.tariff)

    def _profile(self, now: datetime, request: Request, reading: Reading | None) -> EnergyProfile:
        assert request.segment_start is not None
        if reading is None:
            reading = self.charged_kwh(now, request.car)
        if isinstance(reading, Fraction | Decimal | int | str):
            return ConstantPower(request.segment_start, utc(now), exact(reading))
        return reading

    # ---- internals: calling -----------------------------------------------------------------

    def _call_next(self, now: datetime, mode: Mode) -> bool:
        """Place the next car of ``mode`` (fault group first); False when nobody can move."""
        group, line = self.fault_groups[mode], self.waiting[mode]
        car = group[0] if group else next(iter(line), None)
        if car is None:
            return False
        request = self.requests[car]
        point = self._choose_point(now, request)
        if point is None:
            return False
        if group:
            group.pop(0)
        else:
            line.popitem(last=False)
        self._touched.add(mode)
        self._place(now, request, point)
        return True

    def _choose_point(self, now: datetime, request: Request) -> PointState | None:
        """Shortest completion among same-mode working points (ties: lower number), per policy."""
        size = self.params.charging_queue_len
        candidates = [p for p in self.points.values() if p.point.mode is request.mode and p.working]
        if self.params.dispatch_policy is DispatchPolicy.BEST_FREE:
            candidates = [p for p in candidates if len(p.queue) < size]
        best = min(candidates, key=lambda p: self._completion_hours(now, p, request), default=None)
        return best if best is not None and len(best.queue) < size else None

    def _completion_hours(self, now: datetime, point: PointState, request: Request) -> Fraction:
        """Hours until ``request`` would finish at ``point`` (charging car by remaining kWh)."""
        queued = sum((self._left_kwh(now, self.requests[c]) for c in point.queue), Fraction(0))
        return (queued + request.remaining_kwh) / point.point.power_kw

    def _left_kwh(self, now: datetime, request: Request) -> Fraction:
        if request.state is RequestState.CHARGING:
            return request.remaining_kwh - self.charged_kwh(now, request.car)
        return request.remaining_kwh

    def _place(self, now: datetime, request: Request, point: PointState) -> None:
        point.queue.append(request.car)
        request.state, request.point_id = RequestState.QUEUED, point.point.point_id
        self.events.append(CarCalled(now, request.car, point.point.point_id, len(point.queue) - 1))
        self._start_head(now, point)

    # ---- internals: faults and service ------------------------------------------------------

    def _resolve(self, pile: str) -> list[PointState]:
        """A point id, or a pile id meaning all its points."""
        if pile in self.points:
            return [self.points[pile]]
        points = [p for p in self.points.values() if p.point.pile_id == pile]
        if not points:
            raise UnknownPileError(f"no pile or charging point {pile!r}")
        return points

    def _take_out(
        self, now: datetime, pile: str, flag: str, readings: Mapping[str, Reading], dispatch: bool
    ) -> None:
        """Set ``faulted``/``disabled``; cars of points that stop working go to the fault group."""
        points = [p for p in self._resolve(pile) if not getattr(p, flag)]
        if not points:
            raise PileStateError(f"{pile} is already {flag}")
        stopping = [p for p in points if p.working]
        for p in points:
            setattr(p, flag, True)
            self.events.append(PointStatusChanged(now, p.point.point_id, p.status))
        for mode in Mode:
            stopped = [p for p in stopping if p.point.mode is mode]
            if stopped:
                self._regroup_after_fault(now, mode, stopped, readings)
        self._close(now, dispatch)

    def _bring_back(self, now: datetime, pile: str, flag: str, dispatch: bool) -> None:
        """Clear ``faulted``/``disabled``; points that work again trigger re-placement."""
        points = [p for p in self._resolve(pile) if getattr(p, flag)]
        if not points:
            raise PileStateError(f"{pile} is not {flag}")
        for p in points:
            setattr(p, flag, False)
            self.events.append(PointStatusChanged(now, p.point.point_id, p.status))
        for mode in dict.fromkeys(p.point.mode for p in points if p.working):
            group = self.fault_groups[mode]
            group[:] = [r.car for r in by_number(self._group_requests(group) + self._pull_queued(now, mode))]
            self._touched.add(mode)
        self._close(now, dispatch)

    def _regroup_after_fault(
        self, now: datetime, mode: Mode, points: list[PointState], readings: Mapping[str, Reading]
    ) -> None:
        """Interrupted cars go to the head of the fault group; the rest per fault strategy."""
        interrupted: list[Request] = []
        displaced: list[Request] = []
        for point in points:
            cut, rest = self._evacuate(now, point, readings)
            interrupted += cut
            displaced += rest
        if not (interrupted or displaced):
            return
        group = self.fault_groups[mode]
        heads = [r.car for r in interrupted]
        if self.params.fault_strategy is FaultStrategy.PRIORITY:
            group[:] = heads + group + [r.car for r in displaced]
        else:
            others = self._group_requests(group) + displaced + self._pull_queued(now, mode)
            group[:] = heads + [r.car for r in by_number(others)]
        self._touched.add(mode)

    def _evacuate(
        self, now: datetime, point: PointState, readings: Mapping[str, Reading]
    ) -> tuple[list[Request], list[Request]]:
        """Empty a point that stopped working: (interrupted charging cars, queued cars)."""
        interrupted: list[Request] = []
        displaced: list[Request] = []
        cars, point.queue = point.queue, []
        for car in cars:
            request = self.requests[car]
            if request.state is RequestState.CHARGING:
                reason = "fault" if point.faulted else "disabled"
                self._end_segment(now, request, reason, readings.get(car))
                if request.remaining_kwh <= 0:
                    request.point_id = None
                    self._finish(now, request, "completed")
                    continue
                interrupted.append(request)
            else:
                displaced.append(request)
            self._return(now, request, point)
        return interrupted, displaced

    def _pull_queued(self, now: datetime, mode: Mode) -> list[Request]:
        """Take the not-yet-charging cars off every working point of ``mode``."""
        pulled: list[Request] = []
        for point in self.points.values():
            if point.point.mode is mode and point.working and len(point.queue) > 1:
                for car in point.queue[1:]:
                    pulled.append(self.requests[car])
                    self._return(now, self.requests[car], point)
                del point.queue[1:]
        return pulled

    def _return(
        self, now: datetime, request: Request, point: PointState, reason: str = "unavailable"
    ) -> None:
        request.state, request.point_id = RequestState.FAULT_QUEUE, None
        self.events.append(CarReturned(now, request.car, point.point.point_id, reason))

    def _group_requests(self, group: list[str]) -> list[Request]:
        return [self.requests[c] for c in group]


def _mode(mode: Mode | str) -> Mode:
    try:
        return mode if isinstance(mode, Mode) else Mode.parse(mode)
    except ValueError as exc:
        raise InvalidRequestError(str(exc)) from None


def _amount(kwh: Quantity) -> Fraction:
    try:
        amount = exact(kwh)
    except QuantityError as exc:
        raise InvalidRequestError(str(exc)) from None
    if not 0 < amount <= MAX_REQUEST_KWH:
        raise InvalidRequestError(f"requested amount must be > 0 and <= {MAX_REQUEST_KWH} kWh, got {kwh}")
    return amount


def iter_charging(scheduler: Scheduler) -> Iterator[tuple[PointState, Request]]:
    """(point, charging request) for every point that is charging a car, in point order."""
    for point in scheduler.points.values():
        if point.working and point.queue:
            yield point, scheduler.requests[point.queue[0]]
