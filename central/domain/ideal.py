"""Ideal constant-power piles: when each charging car would finish, and a driver that feeds those
completions into the scheduler in time order. The replay and the wait estimates both use it.

A completion instant is rounded up to the next microsecond (datetime's resolution); the car is
then credited with exactly its remaining kWh.
"""

from __future__ import annotations

from datetime import datetime
from fractions import Fraction

from central.domain.scheduler import Scheduler, iter_charging
from central.domain.units import after_hours


def completion_time(scheduler: Scheduler, car: str) -> datetime:
    """When the charging ``car`` finishes at rated power (from its last progress reading)."""
    request = scheduler.requests[car]
    assert request.progress_at is not None
    assert request.point_id is not None
    power_kw = scheduler.points[request.point_id].point.power_kw
    left_kwh = max(request.remaining_kwh - request.progress_kwh, Fraction(0))
    return after_hours(request.progress_at, left_kwh / power_kw)


def next_completions(scheduler: Scheduler) -> tuple[datetime, list[str]] | None:
    """The earliest completion instant and every car finishing then, in point order."""
    best: datetime | None = None
    cars: list[str] = []
    for _, request in iter_charging(scheduler):
        at = completion_time(scheduler, request.car)
        if best is None or at < best:
            best, cars = at, [request.car]
        elif at == best:
            cars.append(request.car)
    return None if best is None else (best, cars)


def complete_until(scheduler: Scheduler, until: datetime) -> None:
    """Finish every ideal segment due at or before ``until``.

    After each earlier instant the scheduler calls waiting cars; at ``until`` itself it does not
    (same-instant order: completions, then the incoming event, then calling).
    """
    while (due := next_completions(scheduler)) is not None and due[0] <= until:
        at, cars = due
        for car in cars:
            scheduler.segment_finished(at, car, dispatch=False)
        if at < until:
            scheduler.dispatch(at)


def complete_all(scheduler: Scheduler) -> datetime | None:
    """Run ideal piles until nothing charges; the instant of the last completion, if any."""
    last: datetime | None = None
    while (due := next_completions(scheduler)) is not None:
        last, cars = due
        for car in cars:
            scheduler.segment_finished(last, car, dispatch=False)
        scheduler.dispatch(last)
    return last
