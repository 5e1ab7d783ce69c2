"""Scheduler rules for pile faults (priority / time_order), recovery, taking piles out of service
and multi-port piles (docs/rules.md), driven by a fake clock."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from fractions import Fraction
from zoneinfo import ZoneInfo

import pytest

from central.domain.errors import PileStateError, UnknownPileError
from central.domain.events import CarReturned, PointStatusChanged, SegmentEnded
from central.domain.ideal import complete_all, complete_until
from central.domain.model import ChargingPoint, Mode, RequestState, multi_port_points
from central.domain.params import FaultStrategy, StationParams
from central.domain.scheduler import Scheduler

ZONE = ZoneInfo("Asia/Shanghai")
PARAMS = StationParams(fast_pile_num=2, trickle_pile_num=1, waiting_area_size=6, charging_queue_len=3)


def at(hour: int, minute: int = 0) -> datetime:
    return datetime(2024, 1, 1, hour, minute, tzinfo=ZONE)


def queues(s: Scheduler) -> dict[str, list[str]]:
    return {pid: list(p.queue) for pid, p in s.points.items()}


def fault_queue(s: Scheduler) -> list[str]:
    return [r.car for r in s.fault_queue()]


def six_cars(strategy: FaultStrategy) -> Scheduler:
    """F1: V1 (charging 30), V3, V4; F2: V2 (charging 45), V5, V6; as in scenario 03."""
    s = Scheduler(replace(PARAMS, fault_strategy=strategy))
    for car, kwh in (("V1", 30), ("V2", 45), ("V3", 15), ("V4", 15), ("V5", 6), ("V6", 9)):
        s.arrive(at(10), car, "F", kwh)
    assert queues(s)["F1"] == ["V1", "V3", "V4"]
    assert queues(s)["F2"] == ["V2", "V5", "V6"]
    s.pop_events()
    return s


def test_fault_bills_the_segment_and_requeues_the_rest_at_the_head_keeping_its_number():
    s = six_cars(FaultStrategy.PRIORITY)
    s.pile_fault(at(10, 20), "F1")
    ended = [e for e in s.pop_events() if isinstance(e, SegmentEnded)]
    assert [(e.car, e.detail.kwh, e.detail.reason) for e in ended] == [("V1", Fraction(10), "fault")]
    assert ended[0].detail.total == 10 * Fraction(12, 10) + 10 * Fraction(8, 10)
    v1 = s.requests["V1"]
    assert v1.queue_number == "F1"
    assert v1.remaining_kwh == 20
    assert fault_queue(s)[0] == "V1"


def test_priority_fault_group_holds_only_the_faulted_piles_cars():
    s = six_cars(FaultStrategy.PRIORITY)
    s.pile_fault(at(10, 20), "F1")
    assert queues(s)["F2"] == ["V2", "V5", "V6"]  # F2's queued cars keep their places
    assert fault_queue(s) == ["V1", "V3", "V4"]
    assert all(s.requests[c].state is RequestState.FAULT_QUEUE for c in ("V1", "V3", "V4"))


def test_time_order_regroups_all_not_yet_charging_cars_by_number():
    s = six_cars(FaultStrategy.TIME_ORDER)
    s.pile_fault(at(10, 20), "F1")
    # V1 interrupted at the head; V3 V4 (F1) and V5 V6 (taken off F2) sorted by number, then placed.
    assert queues(s)["F2"] == ["V2", "V1", "V3"]
    assert fault_queue(s) == ["V4", "V5", "V6"]
    returned = [e.car for e in s.pop_events() if isinstance(e, CarReturned)]
    assert sorted(returned) == ["V1", "V3", "V4", "V5", "V6"]


def test_recovery_merges_not_yet_charging_cars_and_replaces_them_by_number():
    s = six_cars(FaultStrategy.TIME_ORDER)
    s.pile_fault(at(10, 20), "F1")
    s.pile_recover(at(10, 40), "F1")
    assert queues(s)["F1"] == ["V1", "V3", "V5"]
    assert queues(s)["F2"] == ["V2", "V4", "V6"]
    assert fault_queue(s) == []
    assert s.requests["V1"].segment_start == at(10, 40)


def test_priority_recovery_also_rebalances_by_number():
    s = six_cars(FaultStrategy.PRIORITY)
    s.pile_fault(at(10, 20), "F1")
    s.pile_recover(at(10, 40), "F1")
    assert queues(s)["F1"] == ["V1", "V3", "V5"]
    assert queues(s)["F2"] == ["V2", "V4", "V6"]


def test_priority_pauses_waiting_area_calls_for_the_faulted_mode_only():
    # Unequal powers make the pause visible: a small waiting car's best pile differs from the
    # fault-group head's best pile.
    points = [
        ChargingPoint("F1", "F1", Mode.FAST, Fraction(60)),
        ChargingPoint("F2", "F2", Mode.FAST, Fraction(60)),
        ChargingPoint("F3", "F3", Mode.FAST, Fraction(6)),
        ChargingPoint("T1", "T1", Mode.TRICKLE, Fraction(10)),
    ]
    s = Scheduler(replace(PARAMS, charging_queue_len=2), points)
    for car, kwh in (("V1", 60), ("V2", 60), ("V3", 3), ("V4", 60), ("V5", 60)):
        s.arrive(at(8), car, "F", kwh)
    assert queues(s) == {"F1": ["V1", "V4"], "F2": ["V2", "V5"], "F3": ["V3"], "T1": []}
    s.pile_fault(at(8, 20), "F1")
    assert fault_queue(s) == ["V1", "V4"]  # V1's best pile F2 is full: the group waits
    s.arrive(at(8, 21), "V6", "F", 1)  # its best pile F3 has room, but fast calling is paused
    s.arrive(at(8, 21), "V7", "T", 5)  # trickle calling goes on
    assert [r.car for r in s.waiting_cars()] == ["V6"]
    assert queues(s)["T1"] == ["V7"]
    complete_until(s, at(9, 30))  # V2 done at 09:00: V1 placed at F2, V4 still waits for F2
    assert fault_queue(s) == ["V4"]
    assert s.requests["V6"].state is RequestState.WAITING
    complete_until(s, at(10, 0))
    s.dispatch(at(10, 0))  # V5 done: V4 placed, the group is empty, calling resumes
    assert fault_queue(s) == []
    assert queues(s)["F3"] == ["V6"]


def test_fault_of_the_only_pile_of_a_mode_keeps_the_group_until_recovery():
    s = Scheduler(replace(PARAMS, fast_pile_num=1, charging_queue_len=2))
    s.arrive(at(8), "V1", "F", 30)
    s.arrive(at(8), "V2", "F", 10)
    s.arrive(at(8), "V3", "F", 10)
    s.pile_fault(at(8, 30), "F1")
    assert complete_all(s) is None
    assert fault_queue(s) == ["V1", "V2"]
    assert [r.car for r in s.waiting_cars()] == ["V3"]
    s.pile_recover(at(9), "F1")
    assert queues(s)["F1"] == ["V1", "V2"]
    assert s.requests["V1"].remaining_kwh == 15


def test_fault_on_an_empty_pile_moves_nobody():
    s = six_cars(FaultStrategy.TIME_ORDER)
    s.pile_fault(at(10, 5), "T1")
    assert fault_queue(s) == []
    assert queues(s)["F2"] == ["V2", "V5", "V6"]


def test_car_finishing_at_the_fault_instant_completes_instead_of_requeueing():
    s = Scheduler(PARAMS)
    s.arrive(at(8), "V1", "F", 15)  # ideal completion 08:30
    complete_until(s, at(8, 30))  # completions first ...
    s.pile_fault(at(8, 30), "F1")  # ... then the fault
    assert s.get("V1") is None
    assert fault_queue(s) == []


def test_live_fault_bills_the_meter_reading():
    s = Scheduler(PARAMS)
    s.arrive(at(8), "V1", "F", 30)
    s.pile_fault(at(8, 30), "F1", readings={"V1": 12})  # the car drew less than rated power
    assert s.requests["V1"].delivered_kwh == 12
    assert s.requests["V1"].remaining_kwh == 18


def test_fault_twice_and_recovering_a_working_pile_are_conflicts():
    s = Scheduler(PARAMS)
    s.pile_fault(at(8), "F1")
    with pytest.raises(PileStateError):
        s.pile_fault(at(8), "F1")
    with pytest.raises(PileStateError):
        s.pile_recover(at(8), "F2")


def test_unknown_pile_is_reported():
    with pytest.raises(UnknownPileError):
        Scheduler(PARAMS).pile_fault(at(8), "F9")


def test_taking_a_pile_out_of_service_replaces_its_cars_like_a_fault():
    s = six_cars(FaultStrategy.PRIORITY)
    s.pile_disable(at(10, 20), "F1")
    assert s.points["F1"].status == "offline"
    assert fault_queue(s) == ["V1", "V3", "V4"]
    assert s.requests["V1"].details[0].reason == "disabled"
    s.pile_enable(at(10, 40), "F1")
    assert s.points["F1"].status == "working"
    assert queues(s)["F1"] == ["V1", "V3", "V5"]


def test_a_disabled_pile_stays_out_after_its_fault_clears():
    s = Scheduler(PARAMS)
    s.pile_disable(at(8), "F1")
    s.pile_fault(at(8, 1), "F1")
    s.pile_recover(at(8, 2), "F1")
    assert s.points["F1"].status == "offline"
    s.arrive(at(8, 3), "V1", "F", 10)
    s.arrive(at(8, 3), "V2", "F", 10)
    assert queues(s)["F1"] == []
    assert queues(s)["F2"] == ["V1", "V2"]


def test_cancel_from_the_fault_group_keeps_earlier_details():
    s = Scheduler(replace(PARAMS, fast_pile_num=1))
    s.arrive(at(8), "V1", "F", 30)
    s.pile_fault(at(8, 20), "F1")
    bill = s.cancel(at(8, 30), "V1")
    assert [d.kwh for d in bill.details] == [10]
    assert fault_queue(s) == []


def test_multi_port_pile_offers_each_port_as_a_charging_point():
    points = multi_port_points([("F1", Mode.FAST, 2, Fraction(30)), ("T1", Mode.TRICKLE, 1, Fraction(7))])
    assert [p.point_id for p in points] == ["F1-1", "F1-2", "T1"]
    s = Scheduler(replace(PARAMS, charging_queue_len=1), points)
    s.arrive(at(8), "V1", "F", 30)
    s.arrive(at(8), "V2", "F", 30)
    assert queues(s) == {"F1-1": ["V1"], "F1-2": ["V2"], "T1": []}
    s.pile_fault(at(8, 10), "F1-2")  # one port
    assert s.points["F1-1"].status == "working"
    assert fault_queue(s) == ["V2"]
    s.pile_fault(at(8, 20), "F1")  # the whole pile: its remaining working port
    statuses = [e.status for e in s.pop_events() if isinstance(e, PointStatusChanged)]
    assert statuses == ["fault", "fault"]
    assert fault_queue(s) == ["V1", "V2"]  # the newly interrupted car goes to the head
    assert s.requests["V1"].details[0].pile_id == "F1"
    assert s.requests["V1"].details[0].point_id == "F1-1"


@pytest.mark.parametrize("reason", ["stopped_short", "not_started"])
@pytest.mark.parametrize("strategy", list(FaultStrategy))
def test_a_requeue_settles_the_segment_and_moves_only_that_car(strategy, reason):
    """A port that stopped by itself short of the amount (or never ran the segment) is no fault:
    the segment is settled with its reason, the car's rest heads the fault group and is called
    again, the point's next car starts, and nobody else moves (a fault and recovery of the point
    would have re-placed the queued cars of every fast pile)."""
    s = six_cars(strategy)
    s.requeue(at(10, 20), "V1", reason)
    events = s.pop_events()
    ended = [e for e in events if isinstance(e, SegmentEnded)]
    assert [(e.car, e.detail.kwh, e.detail.reason) for e in ended] == [("V1", Fraction(10), reason)]
    returned = [(e.car, e.reason) for e in events if isinstance(e, CarReturned)]
    assert returned == [("V1", reason)]
    assert not any(isinstance(e, PointStatusChanged) for e in events)  # the point never faulted
    # V3 charges at F1 now; V1 (20 kWh left, its number kept) was called back behind V4 there
    assert queues(s) == {"F1": ["V3", "V4", "V1"], "F2": ["V2", "V5", "V6"], "T1": []}
    v1 = s.requests["V1"]
    assert (v1.queue_number, v1.remaining_kwh, v1.state) == ("F1", Fraction(20), RequestState.QUEUED)
    assert s.requests["V3"].state is RequestState.CHARGING
    assert fault_queue(s) == []


def test_a_requeue_of_a_car_that_got_its_amount_completes_it():
    s = six_cars(FaultStrategy.PRIORITY)
    s.requeue(at(11), "V1", "stopped_short")  # an hour at 30 kW: the 30 kWh are in
    assert "V1" not in s.requests
    assert queues(s)["F1"] == ["V3", "V4"]


def test_a_requeue_needs_a_charging_car_and_a_known_reason():
    s = six_cars(FaultStrategy.PRIORITY)
    with pytest.raises(ValueError, match="requeue reason"):
        s.requeue(at(10, 20), "V1", "fault")
    with pytest.raises(Exception, match="not charging"):
        s.requeue(at(10, 20), "V3", "stopped_short")
