"""Detail records (详单) and bills: what one charging segment cost, and what one request cost.

A request's bill holds one detail record per charging segment (a pile fault splits a session).
Charging fee = Σ period kWh × period rate; service fee = kWh × service rate. Values are exact
Fractions; ``to_dict`` keeps them exact as strings ("3/2"), rounding is the display's business.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from fractions import Fraction
from typing import Any

from central.domain.tariff import EnergyProfile, Period, Tariff
from central.domain.units import utc

REQUEUE_REASONS = ("stopped_short", "not_started")
"""Why a segment ended with no fault and its car's rest went back to the head of the queue: the
port stopped by itself well short of the amount, or never ran the segment."""
ABNORMAL_REASONS = ("fault", *REQUEUE_REASONS)
"""Segments whose order is closed ``abnormal`` rather than ``completed``."""


@dataclass(frozen=True)
class PeriodCharge:
    """One period's share of a segment: kWh, hours and charging fee."""

    kwh: Fraction
    hours: Fraction
    fee: Fraction


@dataclass(frozen=True)
class DetailRecord:
    """One charging segment at one charging point, priced."""

    detail_id: str
    car: str
    queue_number: str
    point_id: str
    pile_id: str
    start: datetime
    stop: datetime
    generated_at: datetime
    periods: Mapping[Period, PeriodCharge]
    service_fee: Fraction
    reason: str  # completed | cancelled | fault | disabled | stopped_short | not_started

    @property
    def kwh(self) -> Fraction:
        """Energy of the segment."""
        return sum((c.kwh for c in self.periods.values()), Fraction(0))

    @property
    def duration(self) -> timedelta:
        """Charging time of the segment."""
        return self.stop - self.start

    @property
    def charge_fee(self) -> Fraction:
        """Σ period fees (the time-of-use charging fee)."""
        return sum((c.fee for c in self.periods.values()), Fraction(0))

    @property
    def total(self) -> Fraction:
        """Charging fee + service fee."""
        return self.charge_fee + self.service_fee

    def to_dict(self) -> dict[str, Any]:
        """Exact, JSON-able form; :meth:`from_dict` restores it."""
        return {
            "id": self.detail_id,
            "car": self.car,
            "queue_number": self.queue_number,
            "point": self.point_id,
            "pile": self.pile_id,
            "start": self.start.isoformat(),
            "stop": self.stop.isoformat(),
            "generated_at": self.generated_at.isoformat(),
            "periods": {p.value: [str(c.kwh), str(c.hours), str(c.fee)] for p, c in self.periods.items()},
            "service_fee": str(self.service_fee),
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DetailRecord:
        """Inverse of :meth:`to_dict`."""
        periods = {
            Period(name): PeriodCharge(*(Fraction(v) for v in values))
            for name, values in data["periods"].items()
        }
        return cls(
            data["id"],
            data["car"],
            data["queue_number"],
            data["point"],
            data["pile"],
            datetime.fromisoformat(data["start"]),
            datetime.fromisoformat(data["stop"]),
            datetime.fromisoformat(data["generated_at"]),
            periods,
            Fraction(data["service_fee"]),
            data["reason"],
        )


@dataclass(frozen=True)
class SegmentInfo:
    """Who charged where: the non-priced fields of a detail record."""

    detail_id: str
    car: str
    queue_number: str
    point_id: str
    pile_id: str
    reason: str


def make_detail(
    info: SegmentInfo, start: datetime, stop: datetime, profile: EnergyProfile, tariff: Tariff
) -> DetailRecord:
    """Price one segment: split its energy by period, apply rates and the service rate."""
    usage = tariff.split_by_period(start, stop, profile)
    periods = {p: PeriodCharge(u.kwh, u.hours, u.kwh * tariff.rates[p]) for p, u in usage.items()}
    kwh = sum((u.kwh for u in usage.values()), Fraction(0))
    return DetailRecord(
        info.detail_id,
        info.car,
        info.queue_number,
        info.point_id,
        info.pile_id,
        utc(start),
        utc(stop),
        utc(stop),
        periods,
        kwh * tariff.service_rate,
        info.reason,
    )


@dataclass(frozen=True)
class Bill:
    """Everything one request was charged: its detail records in time order."""

    car: str
    queue_number: str
    mode: str
    requested_kwh: Fraction
    status: str  # completed | cancelled | open
    details: tuple[DetailRecord, ...] = field(default_factory=tuple)

    @property
    def kwh(self) -> Fraction:
        """Energy over all segments."""
        return sum((d.kwh for d in self.details), Fraction(0))

    @property
    def charge_fee(self) -> Fraction:
        """Charging fee over all segments."""
        return sum((d.charge_fee for d in self.details), Fraction(0))

    @property
    def service_fee(self) -> Fraction:
        """Service fee over all segments."""
        return sum((d.service_fee for d in self.details), Fraction(0))

    @property
    def total(self) -> Fraction:
        """Everything the driver pays for this request."""
        return self.charge_fee + self.service_fee
