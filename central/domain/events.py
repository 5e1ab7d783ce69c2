"""Domain events the scheduler records; handlers outside the domain turn them into I/O
(MQTT commands, notifications, storage). Every event carries the instant it happened."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction

from central.domain.billing import Bill, DetailRecord


@dataclass(frozen=True)
class Event:
    """Base of all scheduler events."""

    at: datetime


@dataclass(frozen=True)
class RequestQueued(Event):
    """A car got a queue number and entered the waiting area."""

    car: str
    queue_number: str
    mode: str
    kwh: Fraction


@dataclass(frozen=True)
class RequestChanged(Event):
    """A waiting car changed amount and/or mode (a mode change gives a new number)."""

    car: str
    old_queue_number: str
    queue_number: str
    mode: str
    kwh: Fraction


@dataclass(frozen=True)
class CarCalled(Event):
    """A car was assigned to a charging point's queue; position 0 means it charges now."""

    car: str
    point_id: str
    position: int


@dataclass(frozen=True)
class CarReturned(Event):
    """A car was taken off a point's queue: ``unavailable`` (fault, out of service, re-placement),
    or its segment ended short with no fault (:data:`REQUEUE_REASONS`, :meth:`Scheduler.requeue`)."""

    car: str
    point_id: str
    reason: str = "unavailable"


@dataclass(frozen=True)
class ChargingStarted(Event):
    """Start charging this car at this point, up to ``target_kwh`` (its remaining amount)."""

    car: str
    point_id: str
    target_kwh: Fraction


@dataclass(frozen=True)
class SegmentEnded(Event):
    """A charging segment ended and was priced; ``detail.reason`` says why."""

    car: str
    point_id: str
    detail: DetailRecord


@dataclass(frozen=True)
class RequestCompleted(Event):
    """The car got what it asked for (or stopped and left); its bill is final."""

    car: str
    bill: Bill


@dataclass(frozen=True)
class RequestCancelled(Event):
    """The car cancelled; it is billed for what it charged."""

    car: str
    bill: Bill


@dataclass(frozen=True)
class PointStatusChanged(Event):
    """A charging point became working, fault or offline (out of service)."""

    point_id: str
    status: str


@dataclass(frozen=True)
class QueueChanged(Event):
    """The waiting line or fault group of a mode changed (order, members or amounts)."""

    mode: str
