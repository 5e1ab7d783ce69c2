"""Scheduler rules for queue numbers, the waiting area, calling, pile choice, changes and cancels
(docs/rules.md), driven by a fake clock."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from central.domain.errors import (
    ChangeNotAllowedError,
    DuplicateRequestError,
    InvalidRequestError,
    NotChargingError,
    QueueFullError,
    TimeWentBackwardsError,
    UnknownRequestError,
)
from central.domain.estimate import estimate_waits
from central.domain.events import (
    CarCalled,
    ChargingStarted,
    QueueChanged,
    RequestCancelled,
    RequestCompleted,
    RequestQueued,
    SegmentEnded,
)
from central.domain.ideal import complete_all, complete_until
from central.domain.model import Mode, RequestState
from central.domain.params import DispatchPolicy, StationParams
from central.domain.scheduler import Scheduler
from central.domain.tariff import MeterSamples

ZONE = ZoneInfo("Asia/Shanghai")
PARAMS = StationParams(fast_pile_num=2, trickle_pile_num=1, waiting_area_size=3, charging_queue_len=2)


def at(hour: int, minute: int = 0) -> datetime:
    return datetime(2024, 1, 1, hour, minute, tzinfo=ZONE)


def scheduler(**changes: Any) -> Scheduler:
    return Scheduler(replace(PARAMS, **changes))


def queues(s: Scheduler) -> dict[str, list[str]]:
    return {pid: list(p.queue) for pid, p in s.points.items()}


def waiting(s: Scheduler) -> list[str]:
    return [r.car for r in s.waiting_cars()]


def test_queue_numbers_are_counted_per_mode():
    s = scheduler(waiting_area_size=10)
    numbers = [
        s.arrive(at(8), car, mode, 10)
        for car, mode in [("V1", "F"), ("V2", "T"), ("V3", "F"), ("V4", "slow"), ("V5", "fast")]
    ]
    assert numbers == ["F1", "T1", "F2", "T2", "F3"]


def test_full_waiting_area_refuses_with_queue_full():
    s = scheduler(fast_pile_num=1, charging_queue_len=1)
    s.arrive(at(8), "V1", "F", 30)  # charging, not in the waiting area
    for car in ("V2", "V3", "V4"):
        s.arrive(at(8), car, "F", 10)
    with pytest.raises(QueueFullError) as info:
        s.arrive(at(8), "V5", "T", 10)
    assert info.value.code == "QUEUE_FULL"
    assert s.get("V5") is None
    assert s.waiting_count == 3


def test_a_car_cannot_hold_two_requests():
    s = scheduler()
    s.arrive(at(8), "V1", "F", 10)
    with pytest.raises(DuplicateRequestError):
        s.arrive(at(8), "V1", "T", 10)


@pytest.mark.parametrize("kwh", [0, -5, "abc", 10_001, "1e400"])
def test_non_positive_or_malformed_amount_is_refused(kwh):
    with pytest.raises(InvalidRequestError):
        scheduler().arrive(at(8), "V1", "F", kwh)


def test_unknown_mode_is_refused():
    with pytest.raises(InvalidRequestError, match="mode"):
        scheduler().arrive(at(8), "V1", "X", 10)


def test_waiting_cars_are_called_in_queue_number_order():
    s = scheduler(fast_pile_num=1, charging_queue_len=1)
    for car in ("V1", "V2", "V3"):
        s.arrive(at(8), car, "F", 10)
    s.pop_events()
    complete_all(s)
    started = [e.car for e in s.pop_events() if isinstance(e, ChargingStarted)]
    assert started == ["V2", "V3"]


def test_car_goes_to_the_pile_finishing_it_first_counting_remaining_kwh():
    s = scheduler()
    s.arrive(at(8), "V1", "F", 60)  # F1, 08:00-10:00
    s.arrive(at(9), "V2", "F", 40)  # F1 30 + 40 = 70 vs F2 40 -> F2, 09:00-10:20
    # 09:30: F1's car asked more (60 vs 40) but has less left (15 vs 25 kWh) -> F1.
    s.arrive(at(9, 30), "V3", "F", 10)
    assert queues(s)["F1"] == ["V1", "V3"]
    assert queues(s)["F2"] == ["V2"]


def test_completion_ties_go_to_the_lower_pile_number():
    s = scheduler()
    s.arrive(at(8), "V1", "F", 20)
    s.arrive(at(8), "V2", "F", 20)  # F1: 40 vs F2: 20 -> F2
    s.arrive(at(8), "V3", "F", 10)  # F1: 30 vs F2: 30 -> tie -> F1
    assert queues(s)["F1"] == ["V1", "V3"]
    assert queues(s)["F2"] == ["V2"]


def test_best_or_wait_keeps_a_car_waiting_when_its_best_pile_is_full():
    s = scheduler()
    s.arrive(at(8), "V1", "F", 10)
    s.arrive(at(8), "V2", "F", 60)
    s.arrive(at(8), "V3", "F", 10)  # F1: 20 vs F2: 70 -> F1 (now full)
    s.arrive(at(8), "V4", "F", 10)  # F1 best (30 vs 70) but full -> waits; F2 has room
    assert queues(s)["F2"] == ["V2"]
    assert waiting(s) == ["V4"]


def test_best_or_wait_holds_only_the_blocked_mode():
    s = scheduler()
    for car, kwh in (("V1", 10), ("V2", 60), ("V3", 10), ("V4", 10)):
        s.arrive(at(8), car, "F", kwh)
    s.arrive(at(8), "V5", "T", 5)
    assert queues(s)["T1"] == ["V5"]
    assert waiting(s) == ["V4"]


def test_best_free_takes_the_best_pile_with_a_free_slot():
    s = scheduler(dispatch_policy=DispatchPolicy.BEST_FREE)
    s.arrive(at(8), "V1", "F", 10)
    s.arrive(at(8), "V2", "F", 60)
    s.arrive(at(8), "V3", "F", 10)
    s.arrive(at(8), "V4", "F", 10)
    assert queues(s)["F2"] == ["V2", "V4"]
    assert waiting(s) == []
    s.arrive(at(8), "V5", "F", 10)  # no free slot anywhere -> waits
    assert waiting(s) == ["V5"]


def test_charging_queue_len_includes_the_charging_car():
    s = scheduler(fast_pile_num=1, charging_queue_len=1)
    s.arrive(at(8), "V1", "F", 10)
    s.arrive(at(8), "V2", "F", 10)
    assert queues(s)["F1"] == ["V1"]
    assert waiting(s) == ["V2"]


def test_queued_car_starts_when_the_charging_car_finishes():
    s = scheduler()
    s.arrive(at(8), "V1", "F", 30)
    s.arrive(at(8), "V2", "F", 60)
    s.arrive(at(8), "V3", "F", 10)
    s.pop_events()
    complete_until(s, at(9))
    events = s.pop_events()
    assert [type(e) for e in events[:3]] == [SegmentEnded, ChargingStarted, RequestCompleted]
    started = events[1]
    assert isinstance(started, ChargingStarted)
    assert (started.car, started.at) == ("V3", at(9))
    assert s.requests["V3"].state is RequestState.CHARGING


def test_same_instant_completion_first_then_event_then_calling():
    s = scheduler(fast_pile_num=1, charging_queue_len=1, waiting_area_size=1)
    s.arrive(at(8), "V1", "F", 15)  # done at 08:30
    s.arrive(at(8), "V2", "F", 10)  # waits (waiting area now full)
    complete_until(s, at(8, 30))  # V1 completes, calling deferred
    assert waiting(s) == ["V2"]
    s.change(at(8, 30), "V2", kwh=20, dispatch=False)  # still a waiting-area change
    with pytest.raises(QueueFullError):
        s.arrive(at(8, 30), "V3", "F", 5)  # the completion freed no waiting-area place yet
    s.dispatch(at(8, 30))
    assert queues(s)["F1"] == ["V2"]
    assert s.requests["V2"].requested_kwh == 20


def test_amount_change_keeps_the_queue_number_and_place():
    s = scheduler(fast_pile_num=1, charging_queue_len=1)
    for car in ("V1", "V2", "V3"):
        s.arrive(at(8), car, "F", 10)
    assert s.change(at(8, 1), "V2", kwh=25) == "F2"
    assert waiting(s) == ["V2", "V3"]
    assert s.requests["V2"].requested_kwh == 25


def test_mode_change_gets_a_new_number_at_the_back_of_the_other_queue():
    s = scheduler(fast_pile_num=1, trickle_pile_num=1, charging_queue_len=1)
    s.arrive(at(8), "V1", "F", 10)
    s.arrive(at(8), "V2", "T", 10)
    s.arrive(at(8), "V3", "T", 10)
    s.arrive(at(8), "V4", "F", 10)
    assert s.change(at(8, 1), "V4", mode="T") == "T3"
    assert [r.car for r in s.waiting_line(Mode.TRICKLE)] == ["V3", "V4"]
    assert waiting(s) == ["V3", "V4"]


@pytest.mark.parametrize("where", ["charging", "queued", "fault_queue"])
def test_changes_are_refused_in_the_charging_area(where):
    s = scheduler(fast_pile_num=1)
    s.arrive(at(8), "V1", "F", 30)
    s.arrive(at(8), "V2", "F", 10)
    if where == "fault_queue":
        s.pile_fault(at(8, 10), "F1")
    car = "V1" if where == "charging" else "V2"
    assert s.requests[car].state.value == where
    with pytest.raises(ChangeNotAllowedError):
        s.change(at(8, 20), car, kwh=5)


def test_cancel_from_the_waiting_area_leaves_no_detail():
    s = scheduler(fast_pile_num=1, charging_queue_len=1)
    s.arrive(at(8), "V1", "F", 10)
    s.arrive(at(8), "V2", "F", 10)
    bill = s.cancel(at(8, 5), "V2")
    assert bill.details == ()
    assert bill.status == "cancelled"
    assert waiting(s) == []


def test_cancel_of_a_queued_car_frees_its_slot_for_calling():
    s = scheduler(fast_pile_num=1)
    s.arrive(at(8), "V1", "F", 30)
    s.arrive(at(8), "V2", "F", 10)
    s.arrive(at(8), "V3", "F", 10)
    s.cancel(at(8, 5), "V2")
    assert queues(s)["F1"] == ["V1", "V3"]


def test_cancel_while_charging_bills_what_was_charged_and_starts_the_next_car():
    s = scheduler(fast_pile_num=1)
    s.arrive(at(12), "V1", "F", 30)
    s.arrive(at(12), "V2", "F", 10)
    s.pop_events()
    bill = s.cancel(at(12, 40), "V1")
    assert [d.kwh for d in bill.details] == [20]
    assert bill.total == 20 * Fraction(12, 10) + 20 * Fraction(8, 10)
    assert queues(s)["F1"] == ["V2"]
    kinds = [type(e) for e in s.pop_events()]
    assert kinds[:3] == [SegmentEnded, ChargingStarted, RequestCancelled]


def test_unknown_car_is_reported():
    with pytest.raises(UnknownRequestError) as info:
        scheduler().cancel(at(8), "V404")
    assert info.value.code == "RESOURCE_NOT_FOUND"


def test_time_going_backwards_is_refused():
    s = scheduler()
    s.arrive(at(9), "V1", "F", 10)
    with pytest.raises(TimeWentBackwardsError):
        s.arrive(at(8), "V2", "F", 10)


def test_live_completion_bills_the_meter_profile():
    s = scheduler()
    s.arrive(at(9, 30), "V1", "F", 50)
    samples = MeterSamples([(at(9, 30), 1_000_000), (at(10), 1_012_000), (at(10, 30), 1_020_000)])
    bill = s.segment_finished(at(10, 30), "V1", profile=samples)
    (record,) = bill.details
    assert record.kwh == 20  # the car stopped early; the meter decides
    assert record.charge_fee == 12 * Fraction(8, 10) + 8 * Fraction(12, 10)
    assert bill.status == "completed"


def test_segment_finished_needs_a_charging_car():
    s = scheduler(fast_pile_num=1, charging_queue_len=1)
    s.arrive(at(8), "V1", "F", 10)
    s.arrive(at(8), "V2", "F", 10)
    with pytest.raises(NotChargingError):
        s.segment_finished(at(8, 5), "V2", 5)


def test_progress_readings_feed_display_and_completion_estimates():
    s = scheduler()
    s.arrive(at(8), "V1", "F", 30)
    s.report_progress(at(8, 30), "V1", 5)  # the car draws less than rated power
    assert s.charged_kwh(at(8, 30), "V1") == 5
    assert s.charged_kwh(at(8, 40), "V1") == 10  # extrapolated at rated power from the reading
    preview = s.segment_preview(at(8, 40), "V1")
    assert preview.kwh == 10


def test_events_tell_handlers_what_to_do():
    s = scheduler()
    s.arrive(at(8), "V1", "F", 10)
    events = s.pop_events()
    assert [type(e) for e in events] == [RequestQueued, CarCalled, ChargingStarted, QueueChanged]
    called, started = events[1], events[2]
    assert isinstance(called, CarCalled)
    assert isinstance(started, ChargingStarted)
    assert started.target_kwh == 10
    assert called.point_id == "F1"
    assert s.pop_events() == []


def test_estimates_follow_the_completion_model():
    s = scheduler(fast_pile_num=1, waiting_area_size=5)
    s.arrive(at(8), "V1", "F", 30)  # charging until 09:00
    s.arrive(at(8), "V2", "F", 15)  # queued, starts 09:00
    s.arrive(at(8), "V3", "F", 10)  # waiting, starts 09:30
    s.arrive(at(8), "V4", "T", 10)  # trickle pile free: charging now
    estimates = estimate_waits(s, at(8, 10))
    assert estimates["V1"].wait_minutes == 0
    assert estimates["V2"].wait_minutes == 50
    assert estimates["V3"].wait_minutes == 80
    assert estimates["V4"].wait_minutes == 0
    assert (estimates["V2"].standing.queue_position, estimates["V2"].standing.ahead_count) == (2, 1)
    assert (estimates["V3"].standing.queue_position, estimates["V3"].standing.ahead_count) == (1, 0)
    assert estimates["V3"].standing.status == "waiting"
    assert estimates["V1"].standing.status == "charging"
    assert s.requests["V3"].state is RequestState.WAITING  # estimating changed nothing
    assert s.pop_events()[-1].at == at(8)


def test_estimate_without_a_working_pile_is_unknown():
    s = scheduler(trickle_pile_num=1)
    s.pile_fault(at(8), "T1")
    s.arrive(at(8), "V1", "T", 10)
    assert estimate_waits(s, at(8), ["V1"])["V1"].wait_minutes is None


def test_an_overdue_segment_finishes_now_in_the_estimate():
    """A segment past its ideal end (a slow pile, or one nobody could see for a while) is taken to
    finish now: the estimate of the car behind it is its start now, not an error."""
    s = scheduler(fast_pile_num=1, waiting_area_size=5, charging_queue_len=2)
    s.arrive(at(8), "V1", "F", 30)  # ideally done at 09:00
    s.arrive(at(9, 30), "V2", "F", 15)  # the scheduler's clock is past V1's ideal end
    estimate = estimate_waits(s, at(9, 40), ["V2"])["V2"]
    assert estimate.starts_at == at(9, 40)
    assert estimate.wait_minutes == 0
