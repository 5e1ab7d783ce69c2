"""Per-bus polling on drift-free deadlines.

Deadlines are ``start + k * period`` (plus a per-bus phase so a thousand buses do not all fire at
once); they never drift with how long a cycle took. A cycle that overruns its period makes the
poller skip the deadlines it missed, and counts them, rather than polling back to back.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import structlog

from drivers.bus import Bus, PollResult

log = structlog.get_logger(__name__)


def next_deadline(deadline: float, now: float, period_s: float) -> tuple[float, int]:
    """The deadline after ``deadline`` that is still ahead of ``now``, and how many were skipped."""
    following = deadline + period_s
    if now <= following:
        return following, 0
    skipped = math.ceil((now - following) / period_s)
    return following + skipped * period_s, skipped


@dataclass
class PollerStats:
    cycles: int = 0
    overruns: int = 0  # deadlines skipped because a cycle took too long
    last_cycle_s: float = 0.0
    max_cycle_s: float = 0.0


class Poller:
    """Polls one bus every ``period_s`` and hands each cycle's results to ``on_results``."""

    def __init__(
        self,
        bus: Bus,
        period_s: float,
        on_results: Callable[[Sequence[PollResult]], None],
        *,
        phase_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.bus, self.period_s, self.phase_s = bus, period_s, phase_s
        self._on_results, self._clock, self._sleep = on_results, clock, sleep
        self.stats = PollerStats()

    async def run(self) -> None:
        deadline = self._clock() + self.phase_s
        while True:
            delay = deadline - self._clock()
            if delay > 0:
                await self._sleep(delay)
            await self.cycle()
            deadline, skipped = next_deadline(deadline, self._clock(), self.period_s)
            if skipped:
                self.stats.overruns += skipped
                log.warning(
                    "poll cycle overran",
                    bus=self.bus.spec.name,
                    skipped=skipped,
                    cycle_s=round(self.stats.last_cycle_s, 3),
                )

    async def cycle(self) -> None:
        started = self._clock()
        results = await self.bus.poll_cycle()
        elapsed = self._clock() - started
        self.stats.cycles += 1
        self.stats.last_cycle_s = elapsed
        self.stats.max_cycle_s = max(self.stats.max_cycle_s, elapsed)
        try:
            self._on_results(results)
        except Exception:  # one bad reading must not stop the bus
            log.exception("handling poll results failed", bus=self.bus.spec.name)
