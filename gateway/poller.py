"""Per-bus polling: drift-free deadlines while a bus keeps up, back to back while it cannot.

Deadlines are ``start + k * period`` (plus a per-bus phase so a thousand buses do not all fire at
once); they never drift with how long a cycle took. A cycle that takes longer than the period means
the line cannot read every pile once per period (a serial line with more piles than it carries per
period is normal on a site): the bus is *saturated*, and the poller starts the next cycle as soon as
one ends (queued to the bus owner before the previous cycle's results are handled), so the line
never idles waiting for a grid point or for the gateway's own work. Every cycle still reads each pile once,
in the bus's order, so each pile's readings are one cycle apart and no pile waits longer than
another; commands still go ahead of polls in the bus owner's queue. After ``RECOVER_CYCLES`` cycles
in a row that fit in the period the poller is back on the grid. Both changes are logged once.

The poller also measures what the bus achieves over a sliding window (:class:`BusRates`): cycles,
Modbus transactions and, when the line speed is known, line utilisation (the wire time the
successful reads need at that speed, per second); per pile, readings per second and the age of the
last good reading. The gateway's ``/status`` and ``/metrics`` report them.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from drivers.bus import PollResult
from drivers.health import DeviceHealth
from drivers.plan import ReadPlan
from drivers.specs import BusSpec, SerialTransport

log = structlog.get_logger(__name__)

RECOVER_CYCLES = 3  # cycles in a row that fit in the period before a saturated bus is on the grid again
RATE_WINDOW_S = 10.0  # rates are measured over about this many seconds of recent cycles


def next_deadline(deadline: float, now: float, period_s: float) -> tuple[float, int]:
    """The grid point after ``deadline`` that is not behind ``now``, and how many were skipped."""
    following = deadline + period_s
    if now <= following:
        return following, 0
    skipped = math.ceil((now - following) / period_s)
    return following + skipped * period_s, skipped


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class PolledBus(Protocol):
    """What the poller needs of a bus owner (:class:`drivers.bus.Bus`)."""

    @property
    def spec(self) -> BusSpec: ...

    async def poll_cycle(self) -> list[PollResult]: ...

    def health(self, pile_id: str) -> DeviceHealth: ...

    def plan(self, pile_id: str) -> ReadPlan: ...


@dataclass
class PollerStats:
    """Lifetime counters of one poller (part of ``/status``)."""

    cycles: int = 0
    overruns: int = 0  # cycles that took longer than the period
    saturations: int = 0  # times the bus became saturated
    saturated: bool = False
    last_cycle_s: float = 0.0
    max_cycle_s: float = 0.0


@dataclass(frozen=True, slots=True)
class _Sample:
    at_s: float
    cycles: int
    transactions: int
    line_s: float
    readings: dict[str, int]


_NO_SAMPLE = _Sample(0.0, 0, 0, 0.0, {})


@dataclass(frozen=True, slots=True)
class _Cycle:
    started: float
    task: asyncio.Future[list[PollResult]]


@dataclass
class BusRates:
    """Cumulative counts at the end of each recent cycle; rates are differences over the window."""

    window_s: float = RATE_WINDOW_S
    transactions: int = 0
    line_s: float = 0.0  # wire time the successful reads need at the line's speed
    readings: dict[str, int] = field(default_factory=dict)  # good readings per pile
    last_ok_ms: dict[str, int] = field(default_factory=dict)  # per pile: when its last good reading was taken
    samples: deque[_Sample] = field(default_factory=deque)

    def record(self, at_s: float, cycles: int) -> None:
        """Close a cycle at ``at_s``; keep just enough samples to span the window."""
        samples = self.samples
        samples.append(_Sample(at_s, cycles, self.transactions, self.line_s, dict(self.readings)))
        while len(samples) > 2 and at_s - samples[1].at_s >= self.window_s:
            samples.popleft()

    def as_dict(self, line_known: bool, now_ms: int) -> dict[str, object]:
        """Rates over the window (``None`` before two cycles), and each pile's reading age."""
        first, last = (self.samples[0], self.samples[-1]) if self.samples else (_NO_SAMPLE, _NO_SAMPLE)
        span_s = last.at_s - first.at_s

        def per_s(delta: float) -> float | None:
            return round(delta / span_s, 3) if span_s > 0 else None

        return {
            "window_s": round(span_s, 3),
            "cycles_per_s": per_s(last.cycles - first.cycles),
            "transactions_per_s": per_s(last.transactions - first.transactions),
            "line_utilisation": per_s(last.line_s - first.line_s) if line_known else None,
            "piles": {
                pile: {
                    "readings_per_s": per_s(last.readings.get(pile, 0) - first.readings.get(pile, 0)),
                    "last_reading_age_s": self._age_s(pile, now_ms),
                }
                for pile in self.readings
            },
        }

    def _age_s(self, pile: str, now_ms: int) -> float | None:
        last_ms = self.last_ok_ms.get(pile)
        return None if last_ms is None else round(max(0, now_ms - last_ms) / 1000, 3)


class Poller:
    """Polls one bus every ``period_s`` (back to back while saturated); hands results to ``on_results``."""

    def __init__(
        self,
        bus: PolledBus,
        period_s: float,
        on_results: Callable[[Sequence[PollResult]], None],
        *,
        phase_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        wall_ms: Callable[[], int] = _wall_ms,
        rate_window_s: float = RATE_WINDOW_S,
    ) -> None:
        self.bus, self.period_s, self.phase_s = bus, period_s, phase_s
        self._on_results, self._clock, self._sleep, self._wall_ms = on_results, clock, sleep, wall_ms
        self.stats = PollerStats()
        self.rates = BusRates(rate_window_s, readings={d.pile_id: 0 for d in bus.spec.devices})
        self._fitting = 0  # cycles in a row that fit in the period, while saturated
        self._line_times: dict[str, tuple[ReadPlan, float]] = {}
        self._log = log.bind(bus=bus.spec.name)

    async def run(self) -> None:
        grid = start = self._clock() + self.phase_s
        ahead: _Cycle | None = None  # the next cycle, already queued to the bus owner
        try:
            while True:
                if ahead is None:
                    delay = start - self._clock()
                    if delay > 0:
                        await self._sleep(delay)
                    ahead = self._begin()
                results = await ahead.task
                ended = self._clock()
                self._record_cycle(ended - ahead.started)
                if start == grid or grid < ended:  # this grid point is used or passed: take the next one
                    grid, _ = next_deadline(grid, ended, self.period_s)
                start, ahead = grid, None
                if self.stats.saturated:  # queue the next cycle before handling this one's results
                    start, ahead = ended, self._begin()
                    await asyncio.sleep(0)  # let it reach the owner's queue
                self._handle(results, ended)
        finally:
            if ahead is not None:
                ahead.task.cancel()

    def _begin(self) -> _Cycle:
        return _Cycle(self._clock(), asyncio.ensure_future(self.bus.poll_cycle()))

    def _record_cycle(self, elapsed_s: float) -> None:
        stats = self.stats
        stats.cycles += 1
        stats.last_cycle_s = elapsed_s
        stats.max_cycle_s = max(stats.max_cycle_s, elapsed_s)
        overran = elapsed_s > self.period_s
        if overran:
            stats.overruns += 1
        self._update_saturation(overran)

    def _update_saturation(self, overran: bool) -> None:
        stats = self.stats
        if overran:
            self._fitting = 0
            if not stats.saturated:
                stats.saturated, stats.saturations = True, stats.saturations + 1
                self._log.warning(
                    "bus saturated: polling back to back",
                    cycle_s=round(stats.last_cycle_s, 3),
                    period_s=self.period_s,
                )
        elif stats.saturated:
            self._fitting += 1
            if self._fitting >= RECOVER_CYCLES:
                stats.saturated = False
                self._log.info(
                    "bus keeps up again: polling on the period",
                    cycle_s=round(stats.last_cycle_s, 3),
                    period_s=self.period_s,
                )

    def _handle(self, results: Sequence[PollResult], ended: float) -> None:
        self._count(results, ended)
        try:
            self._on_results(results)
        except Exception:  # one bad reading must not stop the bus
            self._log.exception("handling poll results failed")

    def _count(self, results: Sequence[PollResult], ended: float) -> None:
        rates = self.rates
        for r in results:
            if r.ok:
                rates.readings[r.pile_id] = rates.readings.get(r.pile_id, 0) + 1
                rates.last_ok_ms[r.pile_id] = r.ts_ms
                rates.line_s += self._line_time_s(r.pile_id)
        rates.transactions = sum(self.bus.health(d.pile_id).counters.requests for d in self.bus.spec.devices)
        rates.record(ended, self.stats.cycles)

    def _line_time_s(self, pile_id: str) -> float:
        """Wire time of one poll of ``pile_id`` at the line's speed (0 when the speed is unknown)."""
        transport = self.bus.spec.transport
        if not isinstance(transport, SerialTransport):
            return 0.0
        plan = self.bus.plan(pile_id)
        cached = self._line_times.get(pile_id)
        if cached is None or cached[0] is not plan:
            cached = (plan, transport.plan_time_s(plan))
            self._line_times[pile_id] = cached
        return cached[1]

    def snapshot(self) -> dict[str, object]:
        """JSON-able counters and achieved rates of this bus and its piles."""
        line_known = isinstance(self.bus.spec.transport, SerialTransport)
        return {
            "period_s": self.period_s,
            **vars(self.stats),
            **self.rates.as_dict(line_known, self._wall_ms()),
        }
