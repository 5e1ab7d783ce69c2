"""The station clock across restarts: it continues where it stopped, whatever the new time scale."""

from __future__ import annotations

from pathlib import Path

from central.adapters.charging import clock_anchor, clock_seen
from central.adapters.schema import migrations
from central.adapters.storage import connect
from central.application.clock import ClockAnchor, StationClock


def station_s(anchor: ClockAnchor, scale: float, wall_s: float) -> float:
    return StationClock(scale, anchor, wall=lambda: wall_s).now().timestamp()


def test_a_restart_continues_the_station_time_where_it_stopped_at_the_new_scale(tmp_path: Path) -> None:
    db = connect(tmp_path / "clock.db")
    migrations.apply(db)
    first = clock_anchor(db, 1_000.0, 60)
    assert first == ClockAnchor(1_000.0, 1_000.0)  # the first start begins at wall time
    clock_seen(db, 1_100.0)  # stopped after 100 s at x60: station time 1000 + 6000
    second = clock_anchor(db, 50_000.0, 10)  # much later, at another scale
    assert station_s(second, 10, 50_000.0) == 7_000.0
    assert station_s(second, 10, 50_001.0) == 7_010.0
    # a crash: the last saved instant is where the next start continues
    clock_seen(db, 50_030.0)
    third = clock_anchor(db, 90_000.0, 60)
    assert station_s(third, 60, 90_000.0) == 7_300.0


def test_at_scale_one_the_station_clock_is_the_wall_clock(tmp_path: Path) -> None:
    db = connect(tmp_path / "clock.db")
    migrations.apply(db)
    clock_anchor(db, 1_000.0, 60)
    clock_seen(db, 1_100.0)
    assert clock_anchor(db, 2_000.0, 1) == ClockAnchor(2_000.0, 2_000.0)
    assert clock_anchor(db, 3_000.0, 1) == ClockAnchor(3_000.0, 3_000.0)
