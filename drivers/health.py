"""Per-device communication health: online / comm_fault state, counters and retry backoff.

Pure state machine, driven by the bus owner with its clock (monotonic seconds) and random source,
so tests drive it with a fake clock and a seeded ``random.Random``. A device becomes
``comm_fault`` after ``fail_after_cycles`` consecutive failed poll cycles; from then on it is only
tried when due, with capped, jittered doubling between attempts, so a dead device cannot eat its
bus-mates' time. The first success makes it ``online`` again.
"""

from __future__ import annotations

import dataclasses
import enum
import random
from dataclasses import dataclass, field
from typing import Literal

from drivers.errors import DriverError

HealthState = Literal["online", "comm_fault", "unknown"]


class Transition(enum.Enum):
    """What a recorded cycle outcome did to the device, so the bus logs each change once."""

    OK = "ok"  # success, was already fine
    RECOVERED = "recovered"  # success after one or more failed cycles (log INFO)
    FAILED = "failed"  # first failed cycle of a streak (log ERROR)
    STILL_FAILED = "still_failed"  # another failed cycle (log DEBUG)


@dataclass
class HealthCounters:
    """Lifetime counts of requests sent to the device and of how they failed."""

    requests: int = 0
    timeouts: int = 0
    errors: int = 0  # failures other than timeouts
    skipped_cycles: int = 0  # cycles not tried because the device was in backoff


def backoff_delay_s(attempt: int, base_s: float, max_s: float, rng: random.Random) -> float:
    """Delay before retry ``attempt`` (0-based): min(max, base * 2**attempt), jittered to 50-100 %."""
    ceiling_s = min(max_s, base_s * 2.0 ** min(attempt, 62))
    return ceiling_s * rng.uniform(0.5, 1.0)


@dataclass
class DeviceHealth:
    """Communication health of one device, as the bus owner last saw it."""

    pile_id: str
    fail_after_cycles: int = 2
    backoff_base_s: float = 1.0
    backoff_max_s: float = 30.0
    state: HealthState = "unknown"
    consecutive_failures: int = 0
    last_ok_ms: int | None = None
    last_latency_s: float | None = None
    counters: HealthCounters = field(default_factory=HealthCounters)
    next_attempt_at: float = 0.0  # clock seconds; the device is skipped until then
    last_error: DriverError | None = None

    def due(self, now: float) -> bool:
        """Whether a poll cycle at ``now`` should try the device (False while backing off)."""
        return now >= self.next_attempt_at

    def count_request(self, error: DriverError | None) -> None:
        """Count one request sent to the device, and its failure if any."""
        self.counters.requests += 1
        if error is None:
            return
        if error.kind == "timeout":
            self.counters.timeouts += 1
        else:
            self.counters.errors += 1

    def record_success(self, now: float, wall_ms: int, latency_s: float) -> Transition:
        """A poll cycle of the device succeeded at ``now``."""
        recovered = self.consecutive_failures > 0
        self.state = "online"
        self.consecutive_failures = 0
        self.last_ok_ms = wall_ms
        self.last_latency_s = latency_s
        self.next_attempt_at = now
        self.last_error = None
        return Transition.RECOVERED if recovered else Transition.OK

    def record_failure(self, now: float, error: DriverError, rng: random.Random) -> Transition:
        """A poll cycle of the device failed at ``now``; schedule the next attempt."""
        self.consecutive_failures += 1
        self.last_error = error
        beyond = self.consecutive_failures - self.fail_after_cycles
        if beyond >= 0:
            self.state = "comm_fault"
            delay_s = backoff_delay_s(beyond, self.backoff_base_s, self.backoff_max_s, rng)
            self.next_attempt_at = now + delay_s
        else:
            self.next_attempt_at = now
        return Transition.FAILED if self.consecutive_failures == 1 else Transition.STILL_FAILED

    def record_skip(self) -> None:
        """A poll cycle passed the device by because it is backing off."""
        self.counters.skipped_cycles += 1

    def copy(self) -> DeviceHealth:
        """An independent copy, safe to hand out of the bus owner."""
        return dataclasses.replace(self, counters=dataclasses.replace(self.counters))

    def as_dict(self, now: float) -> dict[str, object]:
        """JSON-able status; ``retry_in_s`` is how long until the next attempt (0 = due)."""
        return {
            "pile_id": self.pile_id,
            "state": self.state,
            "consecutive_failures": self.consecutive_failures,
            "last_ok_ms": self.last_ok_ms,
            "last_latency_s": self.last_latency_s,
            "counters": dataclasses.asdict(self.counters),
            "retry_in_s": round(max(0.0, self.next_attempt_at - now), 3),
            "last_error": self.last_error.as_dict() if self.last_error else None,
        }
