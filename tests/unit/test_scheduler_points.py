"""The scheduler's API for charging points: adding a recorded pile, removing a deleted one, lookups."""

from __future__ import annotations

from datetime import datetime
from fractions import Fraction
from zoneinfo import ZoneInfo

import pytest

from central.domain.errors import PileStateError
from central.domain.model import Mode, multi_port_points
from central.domain.params import StationParams
from central.domain.scheduler import Scheduler

ZONE = ZoneInfo("Asia/Shanghai")
PARAMS = StationParams(fast_pile_num=1, trickle_pile_num=1)


def test_added_points_start_faulted_and_survive_a_state_round_trip():
    s = Scheduler(PARAMS)
    s.add_points(multi_port_points([("E5", Mode.FAST, 2, Fraction(60))]), faulted=True)
    assert [p.point.point_id for p in s.points_of("E5")] == ["E5-1", "E5-2"]
    assert all(p.faulted for p in s.points_of("E5"))
    assert s.pile_ids() == {"F1", "T1", "E5"}
    restored = Scheduler.from_dict(s.to_dict(), PARAMS)
    point = restored.point("E5-2")
    assert point is not None and point.faulted and point.point.power_kw == 60


def test_adding_a_point_id_twice_is_refused():
    s = Scheduler(PARAMS)
    with pytest.raises(PileStateError):
        s.add_points(multi_port_points([("F1", Mode.FAST, 1, Fraction(30))]))


def test_a_pile_is_removed_with_all_its_points_unless_cars_are_queued():
    s = Scheduler(PARAMS)
    s.add_points(multi_port_points([("E5", Mode.TRICKLE, 2, Fraction(7))]))
    assert s.remove_pile("E5") == ["E5-1", "E5-2"]
    assert s.point("E5-1") is None and s.remove_pile("E5") == []
    s.arrive(datetime(2024, 1, 1, 10, tzinfo=ZONE), "V1", "F", 10)
    with pytest.raises(PileStateError):
        s.remove_pile("F1")
    assert s.point("F1") is not None


def test_point_states_are_in_layout_order():
    assert [p.point.point_id for p in Scheduler(PARAMS).point_states()] == ["F1", "T1"]
