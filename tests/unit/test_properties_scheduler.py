"""The charging-queue scheduler as a hypothesis state machine: drivers arrive, change, cancel and
finish, piles fault, recover and go out of service, and time passes (ideal piles finish cars), for
both dispatch policies and both fault strategies. After every step every car is in exactly one place,
no pile queue and no waiting area overflows, queue numbers are never reused, and every accepted
request ends exactly once (at the end, with every pile back, all of them do)."""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from datetime import datetime, timedelta
from fractions import Fraction
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from central.domain.billing import REQUEUE_REASONS, Bill
from central.domain.errors import (
    ChangeNotAllowedError,
    DuplicateRequestError,
    PileStateError,
    QueueFullError,
)
from central.domain.events import RequestCancelled, RequestChanged, RequestCompleted, RequestQueued
from central.domain.ideal import complete_all, complete_until
from central.domain.model import Mode, PointState, RequestState, multi_port_points
from central.domain.params import DispatchPolicy, FaultStrategy, StationParams
from central.domain.scheduler import Scheduler, iter_charging

START = datetime(2024, 1, 1, 8, 0, tzinfo=ZoneInfo("Asia/Shanghai"))
AMOUNTS = st.integers(5, 60) | st.fractions(Fraction(1, 7), 60, max_denominator=7)
MODE_WORDS = {Mode.FAST: ["F", "fast"], Mode.TRICKLE: ["T", "slow", "trickle"]}
PICK = st.integers(0, 10**6)  # index into the current candidates, taken modulo their number


def piles(prefix: str, powers: list[int]) -> st.SearchStrategy[list[tuple[str, int, int]]]:
    """1-2 piles (id, ports, power kW) of one mode; a pile may have two ports."""
    pile = st.tuples(st.integers(1, 2), st.sampled_from(powers))
    return st.lists(pile, min_size=1, max_size=2).map(
        lambda specs: [(f"{prefix}{i}", ports, power) for i, (ports, power) in enumerate(specs, 1)]
    )


class SchedulerMachine(RuleBasedStateMachine):
    """One station driven by random operations; the subclasses below fix the policy and strategy."""

    policy = DispatchPolicy.BEST_OR_WAIT
    strategy = FaultStrategy.PRIORITY

    def __init__(self) -> None:
        super().__init__()
        self.s = Scheduler(StationParams())  # replaced by the initialize rule
        self.now = START
        self.cars = 0
        self.accepted: set[str] = set()
        self.ended: dict[str, str] = {}  # car -> completed | cancelled
        self.numbers: set[str] = set()  # every queue number ever given out
        self.stopped_early: set[str] = set()  # cars that left before their amount was charged

    @initialize(
        fast=piles("F", [30, 60, 7]),
        trickle=piles("T", [7, 10]),
        waiting=st.integers(1, 4),
        queue_len=st.integers(1, 3),
    )
    def build_station(self, fast, trickle, waiting, queue_len):
        params = StationParams(
            waiting_area_size=waiting,
            charging_queue_len=queue_len,
            dispatch_policy=self.policy,
            fault_strategy=self.strategy,
        )
        layout = [(pid, Mode.FAST, ports, Fraction(kw)) for pid, ports, kw in fast]
        layout += [(pid, Mode.TRICKLE, ports, Fraction(kw)) for pid, ports, kw in trickle]
        self.s = Scheduler(params, multi_port_points(layout))

    # ---- helpers ---------------------------------------------------------------------------

    def pick(self, cars: list[str], index: int) -> str:
        return sorted(cars)[index % len(cars)]

    def active(self) -> list[str]:
        return list(self.s.requests)

    def charging(self) -> list[str]:
        return [r.car for _, r in iter_charging(self.s)]

    def targets(self) -> list[str]:
        """Every pile id and every point id (a pile id means all of its points)."""
        return sorted({p.point.pile_id for p in self.s.points.values()} | set(self.s.points))

    def points_of(self, target: str) -> list[PointState]:
        if target in self.s.points:
            return [self.s.points[target]]
        return [p for p in self.s.points.values() if p.point.pile_id == target]

    def drain(self) -> None:
        """Check the recorded events: fresh queue numbers, and one terminal event per request."""
        for event in self.s.pop_events():
            if isinstance(event, RequestQueued | RequestChanged):
                old = event.old_queue_number if isinstance(event, RequestChanged) else None
                if event.queue_number != old:
                    assert event.queue_number not in self.numbers, f"{event.queue_number} given out twice"
                    self.numbers.add(event.queue_number)
            elif isinstance(event, RequestCompleted | RequestCancelled):
                assert event.car in self.accepted, f"{event.car} ended without being accepted"
                assert event.car not in self.ended, f"{event.car} ended twice"
                status = "completed" if isinstance(event, RequestCompleted) else "cancelled"
                assert event.bill.status == status
                self.ended[event.car] = status
                self.check_bill(
                    event.bill, full=status == "completed" and event.car not in self.stopped_early
                )

    def check_bill(self, bill: Bill, full: bool) -> None:
        """Segments in time order without overlap; never more energy than asked, all of it when
        ideal piles charged the car to the end."""
        for detail in bill.details:
            assert detail.start < detail.stop
        for earlier, later in pairwise(bill.details):
            assert earlier.stop <= later.start
        assert bill.kwh <= bill.requested_kwh
        if full:
            assert bill.kwh == bill.requested_kwh

    # ---- drivers ---------------------------------------------------------------------------

    @rule(arrivals=st.lists(st.tuples(st.sampled_from(Mode), PICK, AMOUNTS), min_size=1, max_size=4))
    def arrive(self, arrivals):
        """One to four cars ask at the same instant; a full waiting area refuses the rest."""
        for mode, word, kwh in arrivals:
            self.cars += 1
            car, words = f"V{self.cars}", MODE_WORDS[mode]
            if self.s.waiting_count >= self.s.params.waiting_area_size:
                with pytest.raises(QueueFullError):
                    self.s.arrive(self.now, car, words[word % len(words)], kwh)
                continue
            assert self.s.arrive(self.now, car, words[word % len(words)], kwh).startswith(mode.value)
            self.accepted.add(car)
            self.drain()

    @precondition(lambda self: self.s.requests)
    @rule(index=PICK)
    def arrive_again(self, index):
        with pytest.raises(DuplicateRequestError):
            self.s.arrive(self.now, self.pick(self.active(), index), "F", 10)

    @precondition(lambda self: self.s.waiting_count)
    @rule(index=PICK, mode=st.none() | st.sampled_from(Mode), kwh=st.none() | AMOUNTS)
    def change(self, index, mode, kwh):
        """A waiting car changes its amount (same number) and/or mode (new number if it differs)."""
        car = self.pick([r.car for r in self.s.waiting_cars()], index)
        before = self.s.requests[car].queue_number
        after = self.s.change(self.now, car, mode=mode, kwh=kwh)
        if mode is None or mode is Mode(before[0]):
            assert after == before
        else:
            assert after.startswith(mode.value)
        if kwh is not None:
            assert self.s.requests[car].requested_kwh == kwh
        self.drain()

    @precondition(lambda self: len(self.s.requests) > self.s.waiting_count)
    @rule(index=PICK, mode=st.sampled_from(Mode), kwh=AMOUNTS)
    def change_in_the_charging_area(self, index, mode, kwh):
        """Queued, charging and fault-group cars may only cancel."""
        cars = [c for c, r in self.s.requests.items() if r.state is not RequestState.WAITING]
        car = self.pick(cars, index)
        with pytest.raises(ChangeNotAllowedError):
            self.s.change(self.now, car, mode=mode, kwh=kwh)

    @precondition(lambda self: self.s.requests)
    @rule(index=PICK)
    def cancel(self, index):
        car = self.pick(self.active(), index)
        assert self.s.cancel(self.now, car).status == "cancelled"
        self.drain()
        assert self.ended[car] == "cancelled"

    @precondition(lambda self: any(True for _ in iter_charging(self.s)))
    @rule(index=PICK)
    def car_leaves(self, index):
        """The service reports a charging car done with what its meter shows (it may leave early);
        ideal piles finishing cars is ``time_passes``."""
        car = self.pick(self.charging(), index)
        delivered = self.s.charged_kwh(self.now, car)
        if delivered < self.s.requests[car].remaining_kwh:
            self.stopped_early.add(car)
        assert self.s.segment_finished(self.now, car, delivered).status == "completed"
        self.drain()
        assert self.ended[car] == "completed"

    @precondition(lambda self: any(True for _ in iter_charging(self.s)))
    @rule(index=PICK, reason=st.sampled_from(REQUEUE_REASONS))
    def port_stops_by_itself(self, index, reason):
        """A port stops short with no fault (or never ran the segment): the rest of the car is
        called again first, or it completes if nothing is left; no other car moves."""
        car = self.pick(self.charging(), index)
        others = {
            c: (r.state, r.point_id)
            for c, r in self.s.requests.items()
            if c != car and r.state is RequestState.QUEUED
        }
        point, number = self.s.requests[car].point_id, self.s.requests[car].queue_number
        self.s.requeue(self.now, car, reason)
        self.drain()
        if car in self.s.requests:
            assert self.s.requests[car].queue_number == number  # it keeps its place in the order
        for other, (state, at) in others.items():  # queued cars stay; the next at its point may start
            request = self.s.requests[other]
            assert request.point_id == at, other
            assert request.state is state or (at == point and request.state is RequestState.CHARGING)

    # ---- piles and time ---------------------------------------------------------------------

    @rule(index=PICK, flag=st.sampled_from(["faulted", "disabled"]))
    def take_out(self, index, flag):
        target = self.pick(self.targets(), index)
        act = self.s.pile_fault if flag == "faulted" else self.s.pile_disable
        if all(getattr(p, flag) for p in self.points_of(target)):
            with pytest.raises(PileStateError):
                act(self.now, target)
            return
        act(self.now, target)
        self.drain()
        assert all(getattr(p, flag) and not p.queue for p in self.points_of(target))

    @rule(index=PICK, flag=st.sampled_from(["faulted", "disabled"]))
    def bring_back(self, index, flag):
        target = self.pick(self.targets(), index)
        act = self.s.pile_recover if flag == "faulted" else self.s.pile_enable
        if not any(getattr(p, flag) for p in self.points_of(target)):
            with pytest.raises(PileStateError):
                act(self.now, target)
            return
        act(self.now, target)
        self.drain()
        assert not any(getattr(p, flag) for p in self.points_of(target))

    @rule(minutes=st.integers(0, 30))
    def time_passes(self, minutes):
        """Ideal piles finish the cars due by then; calling follows."""
        self.now += timedelta(minutes=minutes)
        complete_until(self.s, self.now)
        self.s.dispatch(self.now)
        self.drain()

    # ---- invariants -------------------------------------------------------------------------

    @invariant()
    def every_car_is_in_exactly_one_place(self):
        places: Counter[str] = Counter()
        for mode in Mode:
            for car in self.s.waiting[mode]:
                assert self.s.requests[car].state is RequestState.WAITING
                assert self.s.requests[car].mode is mode
            for car in self.s.fault_groups[mode]:
                assert self.s.requests[car].state is RequestState.FAULT_QUEUE
                assert self.s.requests[car].mode is mode
            places.update(list(self.s.waiting[mode]))
            places.update(self.s.fault_groups[mode])
        for point_id, point in self.s.points.items():
            if not point.working:
                assert point.queue == [], f"{point_id} is out of service but holds {point.queue}"
            for position, car in enumerate(point.queue):
                request = self.s.requests[car]
                assert request.point_id == point_id
                assert request.mode is point.point.mode
                assert request.state is (RequestState.CHARGING if position == 0 else RequestState.QUEUED)
            places.update(point.queue)
        assert set(places) == set(self.s.requests)
        assert all(n == 1 for n in places.values()), f"cars in two places: {places}"

    @invariant()
    def only_accepted_requests_are_active_and_none_after_it_ended(self):
        assert set(self.s.requests) == self.accepted - set(self.ended)

    @invariant()
    def no_pile_queue_and_no_waiting_area_overflows(self):
        """Fault-group cars are in the charging area: they do not count toward WaitingAreaSize."""
        params = self.s.params
        assert all(len(p.queue) <= params.charging_queue_len for p in self.s.points.values())
        assert self.s.waiting_count <= params.waiting_area_size

    @invariant()
    def waiting_cars_have_not_charged_and_nobody_charged_too_much(self):
        for request in self.s.requests.values():
            assert request.delivered_kwh <= request.requested_kwh
            if request.state is RequestState.WAITING:
                assert request.delivered_kwh == 0
                assert request.details == []

    @invariant()
    def a_car_waits_only_while_its_pile_choice_is_full(self):
        """best_free: every working pile of the mode is full; best_or_wait: its best one is."""
        size = self.s.params.charging_queue_len
        for mode in Mode:
            if not (self.s.waiting[mode] or self.s.fault_groups[mode]):
                continue
            working = [p for p in self.s.points.values() if p.point.mode is mode and p.working]
            full = [len(p.queue) >= size for p in working]
            if self.policy is DispatchPolicy.BEST_FREE:
                assert all(full)
            elif working:
                assert any(full)

    @invariant()
    def state_survives_a_json_round_trip(self):
        state = json.loads(json.dumps(self.s.to_dict()))
        assert Scheduler.from_dict(state, self.s.params).to_dict() == state

    @invariant()
    def a_clone_is_the_same_queue_and_a_what_if_on_it_changes_nothing_here(self):
        """What a change or an estimate does to a clone never reaches the scheduler it came from."""
        before, events = self.s.to_dict(), list(self.s.events)
        what_if = self.s.clone()
        assert what_if.to_dict() == before and what_if.events == []
        for point_id, point in what_if.points.items():
            if point.working and point.queue:
                what_if.pile_fault(self.now, point_id)
                break
        with contextlib.suppress(QueueFullError):
            what_if.arrive(self.now, "what-if-car", Mode.FAST, 5)
        complete_all(what_if)
        assert self.s.to_dict() == before and self.s.events == events

    def teardown(self):
        """With every pile back in service and ideal piles running on, every request ends."""
        for point_id, point in self.s.points.items():
            if point.faulted:
                self.s.pile_recover(self.now, point_id)
            if point.disabled:
                self.s.pile_enable(self.now, point_id)
        self.s.dispatch(self.now)
        complete_all(self.s)
        self.drain()
        assert self.s.requests == {}
        assert set(self.ended) == self.accepted


SETTINGS = settings(max_examples=20, stateful_step_count=30, deadline=None)


@SETTINGS
class BestOrWaitPriority(SchedulerMachine):
    policy, strategy = DispatchPolicy.BEST_OR_WAIT, FaultStrategy.PRIORITY


@SETTINGS
class BestOrWaitTimeOrder(SchedulerMachine):
    policy, strategy = DispatchPolicy.BEST_OR_WAIT, FaultStrategy.TIME_ORDER


@SETTINGS
class BestFreePriority(SchedulerMachine):
    policy, strategy = DispatchPolicy.BEST_FREE, FaultStrategy.PRIORITY


@SETTINGS
class BestFreeTimeOrder(SchedulerMachine):
    policy, strategy = DispatchPolicy.BEST_FREE, FaultStrategy.TIME_ORDER


TestBestOrWaitPriority = BestOrWaitPriority.TestCase
TestBestOrWaitTimeOrder = BestOrWaitTimeOrder.TestCase
TestBestFreePriority = BestFreePriority.TestCase
TestBestFreeTimeOrder = BestFreeTimeOrder.TestCase


def test_clone_copies_every_attribute_of_the_scheduler():
    """``Scheduler.clone`` copies by hand: an attribute added to the scheduler must be added there."""
    assert set(vars(Scheduler(StationParams()))) == {
        "params",
        "tariff",
        "points",
        "requests",
        "waiting",
        "fault_groups",
        "next_number",
        "next_seq",
        "next_detail",
        "clock",
        "events",
        "_touched",
    }
