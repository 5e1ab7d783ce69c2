"""The station clock across restarts: it continues where it stopped, whatever the new time scale, and
gateway timestamps of before a restart keep their station times."""

from __future__ import annotations

from pathlib import Path

import pytest

from central.adapters.charging import clock_anchor, clock_seen
from central.adapters.database import Db
from central.adapters.schema import migrations
from central.adapters.storage import connect
from central.application.clock import StationClock


@pytest.fixture
def db(tmp_path: Path) -> Db:
    db = connect(tmp_path / "clock.db")
    migrations.apply(db)
    return db


def station_s(clock: StationClock, wall_s: float) -> float:
    return clock.at_wall(wall_s).timestamp()


def test_a_restart_continues_the_station_time_where_it_stopped_at_the_new_scale(
    db: Db,
) -> None:
    first = clock_anchor(db, 1_000.0, 60, station="s1")
    assert station_s(first, 1_000.0) == 1_000.0  # the first start begins at wall time
    clock_seen(
        db, 1_100.0, station="s1", stopped=True
    )  # stopped after 100 s at x60: station time 1000 + 6000
    second = clock_anchor(db, 50_000.0, 60, station="s1")  # much later, at the same scale
    assert station_s(second, 50_000.0) == 7_000.0
    clock_seen(db, 50_010.0, station="s1", stopped=True)
    third = clock_anchor(db, 90_000.0, 10, station="s1")  # at another scale
    assert station_s(third, 90_000.0) == 7_600.0
    assert station_s(third, 90_001.0) == 7_610.0
    # a crash with a changed scale: the last saved instant is where the next start continues
    clock_seen(db, 90_030.0, station="s1")
    fourth = clock_anchor(db, 99_000.0, 60, station="s1")
    assert station_s(fourth, 99_000.0) == 7_900.0


def test_after_a_crash_at_the_same_scale_the_clock_has_run_on(db: Db) -> None:
    clock_anchor(db, 1_000.0, 60, station="s1")
    clock_seen(db, 1_100.0, station="s1")  # the last save before a kill -9
    clock = clock_anchor(db, 1_105.0, 60, station="s1")
    assert station_s(clock, 1_103.0) == 1_000.0 + 103 * 60  # buffered while down: as it ran
    assert station_s(clock, 1_105.0) == 1_000.0 + 105 * 60


def test_timestamps_of_before_a_restart_keep_their_station_times(db: Db) -> None:
    clock_anchor(db, 1_000.0, 60, station="s1")
    clock_seen(db, 1_100.0, station="s1", stopped=True)
    clock = clock_anchor(db, 1_105.0, 60, station="s1")  # 5 s down
    assert station_s(clock, 1_050.0) == 1_000.0 + 50 * 60  # as the first run saw it
    assert station_s(clock, 1_102.0) == 7_000.0  # while stopped: the instant it stopped
    assert station_s(clock, 1_106.0) == 7_060.0
    # monotone across the restart
    walls = [1_000.0 + n / 2 for n in range(240)]
    assert [station_s(clock, w) for w in walls] == sorted(station_s(clock, w) for w in walls)


def test_at_scale_one_the_station_clock_is_the_wall_clock(db: Db) -> None:
    clock_anchor(db, 1_000.0, 60, station="s1")
    clock_seen(db, 1_100.0, station="s1")
    wall = clock_anchor(db, 2_000.0, 1, station="s1")
    assert station_s(wall, 2_000.0) == 2_000.0
    clock_seen(db, 2_500.0, station="s1")
    again = clock_anchor(db, 3_000.0, 1, station="s1")
    assert station_s(again, 3_000.0) == 3_000.0
    assert station_s(again, 2_700.0) == 2_700.0  # buffered while the central was down: wall time
    assert station_s(again, 1_050.0) == 4_000.0  # the x60 run keeps its times
