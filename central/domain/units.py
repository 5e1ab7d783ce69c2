"""Exact quantities (kWh, money, hours) as Fractions, UTC time arithmetic, and display rounding.

kWh and money are never floats inside the domain: an ideal 30 kW pile charging for one second
delivers 1/120 kWh, which neither float nor Decimal holds exactly. Rounding to 0.01 happens only
when a value is shown.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from fractions import Fraction

Quantity = Fraction | Decimal | int | str
US_PER_HOUR = 3_600_000_000
_ONE_US = timedelta(microseconds=1)


class NaiveTimeError(ValueError):
    """A datetime without a time zone was given where an instant is required."""


class QuantityError(ValueError):
    """A value is not a finite number."""


def exact(value: Quantity | float) -> Fraction:
    """Convert a number (or a numeric string) exactly; floats are read by their shortest repr."""
    if isinstance(value, bool):
        raise QuantityError(f"not a number: {value!r}")
    if isinstance(value, Fraction):
        return value
    try:
        if isinstance(value, float | str):
            value = Decimal(repr(value) if isinstance(value, float) else value.strip())
        if isinstance(value, Decimal) and not value.is_finite():
            raise QuantityError(f"not a finite number: {value!r}")
        return Fraction(value)
    except (InvalidOperation, ValueError, TypeError) as exc:
        raise QuantityError(f"not a number: {value!r}") from exc


def utc(at: datetime) -> datetime:
    """The same instant in UTC; arithmetic on ZoneInfo-aware datetimes would use wall-clock time."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise NaiveTimeError(f"datetime {at.isoformat()} has no time zone")
    return at.astimezone(UTC)


def hours_between(start: datetime, stop: datetime) -> Fraction:
    """Elapsed hours from ``start`` to ``stop`` (both aware), exact to the microsecond."""
    return Fraction((utc(stop) - utc(start)) // _ONE_US, US_PER_HOUR)


def after_hours(start: datetime, hours: Fraction) -> datetime:
    """The first microsecond at or after ``start + hours`` (UTC)."""
    return utc(start) + timedelta(microseconds=math.ceil(hours * US_PER_HOUR))


def _rounded_units(value: Fraction, places: int) -> int:
    """``value`` in units of 10**-places, rounded half away from zero (integer arithmetic)."""
    numerator, denominator = abs(value.numerator) * int(10**places), value.denominator
    whole = (2 * numerator + denominator) // (2 * denominator)
    return whole if value >= 0 else -whole


def round_display(value: Fraction, places: int = 2) -> Decimal:
    """Round half away from zero to ``places`` decimals, for display only."""
    return Decimal(_rounded_units(value, places)).scaleb(-places)


def display_number(value: Fraction, places: int = 2) -> float:
    """A rounded value as a JSON number (the float nearest the rounded decimal)."""
    return _rounded_units(value, places) / int(10**places)
