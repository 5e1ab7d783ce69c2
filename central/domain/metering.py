"""The one meter-session rule for a port's charging segment, shared by driver sessions and operator
orders: unwrapping the pile's 32-bit cumulative meter, the segment's baseline, delivered energy and
sample keeping. Pure: readings come in as (wall ms, raw Wh, charging?) and nothing is stored here.

Rules:

* the meter is a 32-bit Wh counter: a reading more than half the range below the previous one is a
  wrap (2**32 Wh are added from then on);
* any other reading below the previous one is a meter reset (the pile was replaced or reset): it is
  reported as :class:`MeterReset` and never raised, so the live path keeps running;
* before the segment starts, each idle reading becomes the baseline (the meter just before the
  start); the segment starts at the first reading that says the port charges, or whose meter moved
  past the baseline (it may already be done);
* at most one sample is kept per ``spacing_ms``; the newest always replaces a close one, so the
  last sample is always the latest reading.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace

METER_WRAP = 2**32
"""The pile meter's range in Wh (a 32-bit counter)."""


@dataclass(frozen=True)
class MeterReset:
    """A reading that went backwards and is not a wrap: the counter was reset or replaced."""

    previous_wh: int  # the previous reading, unwrapped
    wh: int  # this reading, unwrapped with the wraps seen so far


class Step(enum.Enum):
    """What one reading did to a meter session."""

    STALE = "stale"  # not newer than the last sample: ignored
    IDLE = "idle"  # before the start: it is the new baseline
    STARTED = "started"  # the segment started with this reading (which is also a sample)
    SAMPLE = "sample"  # a reading of a started segment


@dataclass(frozen=True)
class MeterUpdate:
    """The outcome of :meth:`MeterSession.observe`."""

    step: Step
    kept: bool = False  # a new sample was appended (not only the newest replaced)
    reset: MeterReset | None = None


@dataclass
class MeterSession:
    """One port's meter over one segment: baseline, samples (wall ms, unwrapped Wh), wraps."""

    started_ms: int | None = None  # when a reading first said the port charges (or the meter moved)
    base_wh: int | None = None  # the meter at the start of the segment (unwrapped)
    samples: list[tuple[int, int]] = field(default_factory=list)
    last_raw_wh: int | None = None
    wraps: int = 0

    @classmethod
    def from_idle(cls, last: tuple[int, int] | None) -> MeterSession:
        """A session whose baseline is the port's last idle reading (wall ms, raw Wh), if known."""
        session = cls()
        if last is not None:
            wh = _value(session.unwrap(last[1]))
            session.samples, session.base_wh = [(last[0], wh)], wh
        return session

    def copy(self) -> MeterSession:
        return replace(self, samples=list(self.samples))

    def unwrap(self, raw_wh: int) -> int | MeterReset:
        """The reading on the unwrapped scale, or a :class:`MeterReset` if it went backwards."""
        previous = self.last_raw_wh
        if previous is not None and raw_wh < previous - METER_WRAP // 2:
            self.wraps += 1
        self.last_raw_wh = raw_wh
        wh = raw_wh + self.wraps * METER_WRAP
        if previous is not None and raw_wh < previous and raw_wh >= previous - METER_WRAP // 2:
            return MeterReset(previous + self.wraps * METER_WRAP, wh)
        return wh

    @property
    def started(self) -> bool:
        return self.started_ms is not None

    @property
    def delivered_wh(self) -> int:
        """Wh delivered since the baseline (0 before the first sample)."""
        if self.base_wh is None or not self.samples:
            return 0
        return self.samples[-1][1] - self.base_wh

    @property
    def last_wh(self) -> int | None:
        """The latest kept meter value (unwrapped), if any."""
        return self.samples[-1][1] if self.samples else None

    def add_sample(self, ts_ms: int, wh: int, spacing_ms: float) -> None:
        """Keep a sample at most every ``spacing_ms``; the newest always replaces a close one."""
        if len(self.samples) >= 2 and ts_ms - self.samples[-2][0] < spacing_ms:
            self.samples[-1] = (ts_ms, wh)
        elif not self.samples or ts_ms > self.samples[-1][0]:
            self.samples.append((ts_ms, wh))

    def observe(self, ts_ms: int, raw_wh: int, charging: bool, spacing_ms: float) -> MeterUpdate:
        """Apply one reading of the port (see the module rules)."""
        if self.samples and ts_ms <= self.samples[-1][0]:
            return MeterUpdate(Step.STALE)  # a replayed reading older than what was seen
        outcome = self.unwrap(raw_wh)
        reset, wh = (outcome if isinstance(outcome, MeterReset) else None), _value(outcome)
        step = Step.SAMPLE
        if self.started_ms is None:
            moved = self.base_wh is not None and wh > self.base_wh
            if not charging and not moved:
                self.samples, self.base_wh = [(ts_ms, wh)], wh
                return MeterUpdate(Step.IDLE, reset=reset)
            self.started_ms, step = ts_ms, Step.STARTED
            if self.base_wh is None:
                self.samples, self.base_wh = [(ts_ms, wh)], wh
        kept = len(self.samples)
        self.add_sample(ts_ms, wh, spacing_ms)
        return MeterUpdate(step, kept=len(self.samples) > kept, reset=reset)


def _value(outcome: int | MeterReset) -> int:
    """The unwrapped Wh of an unwrap outcome (a reset reading keeps its value: today's rule)."""
    return outcome.wh if isinstance(outcome, MeterReset) else outcome
