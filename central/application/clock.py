"""The station clock: real time, or simulated time running ``scale`` times faster (the demo).

Station time = anchor_station + (wall - anchor_wall) * scale. The service sets a new anchor at each
start: at scale 1 station time is wall time; at another scale the station's time continues from where
it stopped, at the scale of this run, so neither a stop nor a changed scale makes it jump (after a
crash at an unchanged scale the clock has run on, as the gateways' buffered timestamps assume). Gateway
timestamps (wall-clock milliseconds) map onto the same station time line: an instant before this
run's start maps through the earlier run it fell in (the meter samples of a session that spans a
restart keep their station times), and an instant while the station was stopped maps to the moment
it stopped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass(frozen=True)
class ClockAnchor:
    """A wall-clock instant and the station instant it corresponds to (both Unix seconds)."""

    wall_s: float
    station_s: float


@dataclass(frozen=True)
class ClockRun:
    """An earlier run of the station clock: from ``wall_s`` (station ``station_s``) at ``scale``,
    its time line ending at ``until_wall_s`` (where the station's time stopped, or where the next
    run takes over without a break)."""

    wall_s: float
    station_s: float
    scale: float
    until_wall_s: float

    def station_at(self, wall_s: float) -> float:
        return self.station_s + (min(wall_s, self.until_wall_s) - self.wall_s) * self.scale


class StationClock:
    """Maps wall-clock time to station time; time zone handling is the caller's (UTC here).

    ``earlier`` are the clock's earlier runs, oldest first, for instants before ``anchor``.
    """

    def __init__(
        self,
        scale: float = 1.0,
        anchor: ClockAnchor | None = None,
        wall: Callable[[], float] = time.time,
        earlier: Sequence[ClockRun] = (),
    ) -> None:
        if scale <= 0:
            raise ValueError(f"time scale must be positive, got {scale}")
        self.scale = scale
        self._wall = wall
        now = wall()
        self.anchor = anchor or ClockAnchor(now, now)
        self.earlier = tuple(earlier)

    def now(self) -> datetime:
        """The station's current instant (timezone-aware, UTC)."""
        return self.at_wall(self._wall())

    def at_wall(self, wall_s: float) -> datetime:
        """The station instant of a wall-clock instant."""
        station_s = self.anchor.station_s + (wall_s - self.anchor.wall_s) * self.scale
        if wall_s < self.anchor.wall_s:
            run = next((r for r in reversed(self.earlier) if r.wall_s <= wall_s), None)
            if run is not None:
                station_s = run.station_at(wall_s)
        return datetime.fromtimestamp(station_s, UTC)

    def at_ms(self, wall_ms: int) -> datetime:
        """The station instant of a gateway timestamp (wall-clock milliseconds)."""
        return self.at_wall(wall_ms / 1000)

    def real_seconds(self, station_seconds: float) -> float:
        """How long ``station_seconds`` of station time take in real time."""
        return station_seconds / self.scale
