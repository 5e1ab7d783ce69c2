"""The one meter-session rule for a port's charging segment, shared by driver sessions and operator
orders: unwrapping the pile's 32-bit cumulative meter, the segment's baseline, delivered energy and
sample keeping. Pure: readings come in as (wall ms, raw Wh, charging?) and nothing is stored here.

Rules:

* the meter is a 32-bit Wh counter: a reading more than half the range below the previous one is a
  wrap (2**32 Wh are added from then on);
* any other reading below the previous one is a meter reset (the pile rebooted or its meter was
  replaced): it is reported as :class:`MeterReset` and never raised. The segment keeps what it
  measured up to the last good reading and the reset reading becomes the new baseline: the kept
  samples and the baseline are shifted down by the drop, so delivered energy carries on from the
  new meter (what the pile delivered between the last good reading and the reset is not known
  and is not billed);
* a reading whose rise over the previous one is more than ``max_wh_per_ms`` (the pile's rating)
  allows for the elapsed time, with a margin, is implausible (a forged or corrupt message): it is
  rejected and changes nothing, so a later good reading of the cumulative meter loses nothing.
  ``REBASE_AFTER`` implausible readings in a row, with no good one between, are a meter that
  really jumped (replaced by one further on): the last of them is taken as a reset, the new
  baseline;
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
RATE_MARGIN = 1.5
"""How much faster than its rating a pile's meter may rise before a reading is implausible."""
RATE_SLACK_WH = 50
"""Wh a reading may rise beyond the rated rise (meter resolution, timestamp jitter)."""
REBASE_AFTER = 5
"""Implausible readings in a row after which the meter is taken as replaced (a new baseline)."""


@dataclass(frozen=True)
class MeterReset:
    """A reading that went backwards and is not a wrap: the counter was reset or replaced."""

    previous_wh: int  # the previous reading, unwrapped
    wh: int  # this reading, unwrapped with the wraps seen so far

    def text(self) -> str:
        """For a person: what the meter did."""
        return f"meter went back from {self.previous_wh} Wh to {self.wh} Wh: new baseline"


def implausible_text(raw_wh: int, last_wh: int | None) -> str:
    """For a person: a reading rejected because the pile's rating cannot explain its rise."""
    since = "" if last_wh is None else f" after {last_wh} Wh"
    return f"implausible meter reading {raw_wh} Wh{since} rejected"


class Step(enum.Enum):
    """What one reading did to a meter session."""

    STALE = "stale"  # not newer than the last sample: ignored
    IMPLAUSIBLE = "implausible"  # a rise the pile's rating cannot explain: rejected, nothing changed
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
    rejected: int = 0  # implausible readings since the last good one

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
        self.wraps, outcome = self._unwrapped(raw_wh)
        self.last_raw_wh = raw_wh
        return outcome

    def _unwrapped(self, raw_wh: int) -> tuple[int, int | MeterReset]:
        """(wraps, outcome) of a reading, without taking it."""
        previous, wraps = self.last_raw_wh, self.wraps
        if previous is not None and raw_wh < previous - METER_WRAP // 2:
            wraps += 1
        wh = raw_wh + wraps * METER_WRAP
        if previous is not None and previous > raw_wh >= previous - METER_WRAP // 2:
            return wraps, MeterReset(previous + wraps * METER_WRAP, wh)
        return wraps, wh

    def _implausible(self, ts_ms: int, raw_wh: int, max_wh_per_ms: float | None) -> bool:
        """The reading rises more than the rating allows since the latest reading."""
        if max_wh_per_ms is None or not self.samples or self.last_raw_wh is None:
            return False
        _, outcome = self._unwrapped(raw_wh)
        if isinstance(outcome, MeterReset):
            return False
        last_ms, last_wh = self.samples[-1]
        allowed = max_wh_per_ms * max(ts_ms - last_ms, 0) * RATE_MARGIN + RATE_SLACK_WH
        return outcome - last_wh > allowed

    def _rebase(self, drop: int) -> None:
        """Shift the baseline and samples down by ``drop``: the segment carries on from a new meter."""
        self.samples = [(ms, wh - drop) for ms, wh in self.samples]
        if self.base_wh is not None:
            self.base_wh -= drop

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

    def observe(
        self,
        ts_ms: int,
        raw_wh: int,
        charging: bool,
        spacing_ms: float,
        max_wh_per_ms: float | None = None,
    ) -> MeterUpdate:
        """Apply one reading of the port (see the module rules); ``max_wh_per_ms`` is the most
        the pile's rating lets its meter rise per wall millisecond (None: no plausibility check)."""
        if self.samples and ts_ms <= self.samples[-1][0]:
            return MeterUpdate(Step.STALE)  # a replayed reading older than what was seen
        jumped = False
        if self._implausible(ts_ms, raw_wh, max_wh_per_ms):
            self.rejected += 1
            if self.rejected < REBASE_AFTER:
                return MeterUpdate(Step.IMPLAUSIBLE)
            jumped = True  # the meter really moved on: its new value is the new baseline
        self.rejected = 0
        previous = self.last_wh
        outcome = self.unwrap(raw_wh)
        reset, wh = (outcome if isinstance(outcome, MeterReset) else None), _value(outcome)
        if jumped and previous is not None:
            reset = MeterReset(previous, wh)
        if reset is not None and previous is not None:
            self._rebase(previous - wh)
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
    """The unwrapped Wh of an unwrap outcome (a reset's is the new meter's reading)."""
    return outcome.wh if isinstance(outcome, MeterReset) else outcome
