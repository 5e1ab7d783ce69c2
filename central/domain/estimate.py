"""Wait estimates for the user API (queue_position, ahead_count, estimated_wait_time in minutes),
from the same completion-time model the scheduler dispatches with: a copy of the scheduler is run
forward with ideal piles and no new events, and each car's charging start is read off. A segment
already past its ideal end (its pile slower than rated, or unseen for a while) finishes at once.

Cost: one copy plus O(cars × points) per call — a query, not part of per-event scheduling.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction

from central.domain.events import ChargingStarted
from central.domain.ideal import next_completions
from central.domain.model import RequestState
from central.domain.scheduler import Scheduler, Standing
from central.domain.units import hours_between


@dataclass(frozen=True)
class WaitEstimate:
    """A car's standing plus when it should start charging (None: no working pile of its mode)."""

    standing: Standing
    starts_at: datetime | None
    wait_minutes: Fraction | None


def estimate_waits(
    scheduler: Scheduler, now: datetime, cars: Collection[str] | None = None
) -> dict[str, WaitEstimate]:
    """Estimates for ``cars`` (default: every active request), as of ``now``."""
    wanted = list(scheduler.requests) if cars is None else [c for c in cars if c in scheduler.requests]
    starts = _start_times(scheduler, now, set(wanted))
    out: dict[str, WaitEstimate] = {}
    for car in wanted:
        start = starts.get(car)
        minutes = None if start is None else hours_between(now, start) * 60
        out[car] = WaitEstimate(scheduler.standing(car), start, minutes)
    return out


def _start_times(scheduler: Scheduler, now: datetime, cars: set[str]) -> dict[str, datetime]:
    """Charging start of each car in ``cars`` when ideal piles run on with no new events."""
    starts = {c: now for c in cars if scheduler.requests[c].state is RequestState.CHARGING}
    pending = cars - set(starts)
    what_if = scheduler.clone()
    what_if.dispatch(max(now, scheduler.clock or now))
    _collect(what_if, pending, starts)
    while pending and (due := next_completions(what_if)) is not None:
        at, done = due
        if what_if.clock is not None and at < what_if.clock:
            at = what_if.clock  # a segment past its ideal end (a slow or unseen pile) finishes now
        for car in done:
            what_if.segment_finished(at, car, dispatch=False)
        what_if.dispatch(at)
        _collect(what_if, pending, starts)
    return starts


def _collect(what_if: Scheduler, pending: set[str], starts: dict[str, datetime]) -> None:
    for event in what_if.pop_events():
        if isinstance(event, ChargingStarted) and event.car in pending:
            starts[event.car] = event.at
            pending.discard(event.car)
