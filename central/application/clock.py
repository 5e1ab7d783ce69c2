"""The station clock: real time, or simulated time running ``scale`` times faster (the demo).

Station time = anchor_station + (wall - anchor_wall) * scale. The service sets a new anchor at each
start: at scale 1 station time is wall time; at another scale the station's time continues from where
it stopped, at the scale of this run, so neither a stop nor a changed scale makes it jump. Gateway
timestamps (wall-clock milliseconds) map onto the same station time line.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass(frozen=True)
class ClockAnchor:
    """A wall-clock instant and the station instant it corresponds to (both Unix seconds)."""

    wall_s: float
    station_s: float


class StationClock:
    """Maps wall-clock time to station time; time zone handling is the caller's (UTC here)."""

    def __init__(
        self, scale: float = 1.0, anchor: ClockAnchor | None = None, wall: Callable[[], float] = time.time
    ) -> None:
        if scale <= 0:
            raise ValueError(f"time scale must be positive, got {scale}")
        self.scale = scale
        self._wall = wall
        now = wall()
        self.anchor = anchor or ClockAnchor(now, now)

    def now(self) -> datetime:
        """The station's current instant (timezone-aware, UTC)."""
        return self.at_wall(self._wall())

    def at_wall(self, wall_s: float) -> datetime:
        """The station instant of a wall-clock instant."""
        station_s = self.anchor.station_s + (wall_s - self.anchor.wall_s) * self.scale
        return datetime.fromtimestamp(station_s, UTC)

    def at_ms(self, wall_ms: int) -> datetime:
        """The station instant of a gateway timestamp (wall-clock milliseconds)."""
        return self.at_wall(wall_ms / 1000)

    def real_seconds(self, station_seconds: float) -> float:
        """How long ``station_seconds`` of station time take in real time."""
        return station_seconds / self.scale
