"""Time-of-use tariff: which period an instant falls in, and how a charging segment's energy and
time split over periods in the station's local time (across midnight, days and DST changes).

Energy comes from an :class:`EnergyProfile`, a cumulative energy curve: :class:`ConstantPower`
(ideal pile, replay) or :class:`MeterSamples` (live meter readings, linear between samples).
"""

from __future__ import annotations

import bisect
import zoneinfo
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as dt_time
from enum import StrEnum
from fractions import Fraction
from itertools import pairwise
from typing import Protocol

from central.domain.params import MINUTES_PER_DAY, StationParams
from central.domain.units import Quantity, exact, hours_between, utc

_ONE_US = timedelta(microseconds=1)


class Period(StrEnum):
    """Tariff periods."""

    PEAK = "peak"
    NORMAL = "normal"
    VALLEY = "valley"


class ProfileError(ValueError):
    """An energy profile is inconsistent (samples out of order, meter running backwards)."""


class EnergyProfile(Protocol):
    """Cumulative energy of one segment as a function of time; only differences matter."""

    def energy_kwh_at(self, at: datetime) -> Fraction:
        """Energy (kWh) delivered up to ``at``."""
        ...


@dataclass(frozen=True)
class ConstantPower:
    """Constant power from ``start`` to ``stop`` delivering exactly ``energy_kwh``."""

    start: datetime
    stop: datetime
    energy_kwh: Fraction

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", utc(self.start))
        object.__setattr__(self, "stop", utc(self.stop))
        if self.stop < self.start:
            raise ProfileError("constant-power profile stops before it starts")

    @classmethod
    def rated(cls, start: datetime, stop: datetime, power_kw: Quantity) -> ConstantPower:
        """An ideal pile at ``power_kw`` for the whole interval."""
        return cls(utc(start), utc(stop), exact(power_kw) * hours_between(start, stop))

    def energy_kwh_at(self, at: datetime) -> Fraction:
        if at <= self.start:
            return Fraction(0)
        if at >= self.stop:
            return self.energy_kwh
        return self.energy_kwh * hours_between(self.start, at) / hours_between(self.start, self.stop)


class MeterSamples:
    """Meter readings ``(timestamp, energy_Wh)``; linear between samples, flat outside them."""

    def __init__(self, samples: Iterable[tuple[datetime, Quantity]]) -> None:
        pairs = [(utc(at), exact(wh)) for at, wh in samples]
        if not pairs:
            raise ProfileError("no meter samples")
        for (t0, e0), (t1, e1) in pairwise(pairs):
            if t1 <= t0:
                raise ProfileError(f"meter samples out of time order at {t1.isoformat()}")
            if e1 < e0:
                raise ProfileError(f"meter energy decreases at {t1.isoformat()}")
        self.times = [t for t, _ in pairs]
        self.energy_Wh = [e for _, e in pairs]

    def energy_kwh_at(self, at: datetime) -> Fraction:
        at = utc(at)
        i = bisect.bisect_right(self.times, at)
        if i == 0:
            return self.energy_Wh[0] / 1000
        if i == len(self.times):
            return self.energy_Wh[-1] / 1000
        t0, t1, e0, e1 = self.times[i - 1], self.times[i], self.energy_Wh[i - 1], self.energy_Wh[i]
        return (e0 + (e1 - e0) * hours_between(t0, at) / hours_between(t0, t1)) / 1000


@dataclass(frozen=True)
class PeriodUsage:
    """Energy (kWh) and time (hours) that fell into one period."""

    kwh: Fraction = Fraction(0)
    hours: Fraction = Fraction(0)


class Tariff:
    """Rates and the local-time period table of one station."""

    def __init__(
        self,
        zone: zoneinfo.ZoneInfo,
        rates: Mapping[Period, Fraction],
        service_rate: Fraction,
        ranges: Sequence[tuple[Period, int, int]],
    ) -> None:
        self.zone = zone
        self.rates = dict(rates)
        self.service_rate = service_rate
        self._by_minute: list[Period] = [Period.NORMAL] * MINUTES_PER_DAY
        for period, start, end in ranges:
            self._by_minute[start:end] = [period] * (end - start)
        self._boundaries = sorted({start for _, start, _ in ranges} | {0})
        self._day_cache: dict[date, tuple[datetime, ...]] = {}

    @classmethod
    def from_params(cls, params: StationParams) -> Tariff:
        """The tariff of validated station parameters."""
        rates = {p: exact(params.pricing.rate(p.value)) for p in Period}
        ranges = [(Period(n), a, b) for n, _, a, b in params.time_periods.ranges()]
        return cls(params.zone, rates, exact(params.pricing.service_rate), ranges)

    def period_at(self, at: datetime) -> Period:
        """The period of an instant, by its local wall-clock minute."""
        local = utc(at).astimezone(self.zone)
        return self._by_minute[local.hour * 60 + local.minute]

    def split_by_period(
        self, start: datetime, stop: datetime, profile: EnergyProfile
    ) -> dict[Period, PeriodUsage]:
        """kWh and hours of ``[start, stop]`` per period, from the profile's energy curve."""
        start, stop = utc(start), utc(stop)
        if stop < start:
            raise ProfileError(f"segment stops ({stop.isoformat()}) before it starts")
        kwh = dict.fromkeys(Period, Fraction(0))
        hours = dict.fromkeys(Period, Fraction(0))
        for a, b in pairwise(self._cuts(start, stop)):
            period = self.period_at(a + (b - a) / 2)
            kwh[period] += profile.energy_kwh_at(b) - profile.energy_kwh_at(a)
            hours[period] += hours_between(a, b)
        return {p: PeriodUsage(kwh[p], hours[p]) for p in Period}

    def _cuts(self, start: datetime, stop: datetime) -> list[datetime]:
        """start, stop and every instant between where the period may change, in order."""
        cuts = {start, stop}
        day = start.astimezone(self.zone).date() - timedelta(days=1)
        last = stop.astimezone(self.zone).date() + timedelta(days=1)
        while day <= last:
            cuts.update(at for at in self._day_boundaries(day) if start < at < stop)
            day += timedelta(days=1)
        ordered = sorted(cuts)
        return sorted(ordered + [t for a, b in pairwise(ordered) if (t := self._shift(a, b))])

    def _day_boundaries(self, day: date) -> tuple[datetime, ...]:
        """Period starts of one local day as UTC instants (both folds, for repeated hours)."""
        cached = self._day_cache.get(day)
        if cached is None:
            if len(self._day_cache) > 1024:
                self._day_cache.clear()
            cached = self._day_cache[day] = tuple(
                datetime.combine(day, dt_time(m // 60, m % 60), self.zone).replace(fold=fold).astimezone(UTC)
                for m in self._boundaries
                for fold in (0, 1)
            )
        return cached

    def _shift(self, a: datetime, b: datetime) -> datetime | None:
        """The instant in (a, b) where the UTC offset changes (DST), if it does."""
        offset = a.astimezone(self.zone).utcoffset()
        last = b - _ONE_US
        if last <= a or last.astimezone(self.zone).utcoffset() == offset:
            return None
        lo, hi = a, last
        while hi - lo > _ONE_US:
            mid = lo + (hi - lo) // 2
            lo, hi = (mid, hi) if mid.astimezone(self.zone).utcoffset() == offset else (lo, mid)
        return hi

    def charge_fee(self, usage: Mapping[Period, PeriodUsage]) -> Fraction:
        """Σ period kWh × period rate."""
        return sum((u.kwh * self.rates[p] for p, u in usage.items()), Fraction(0))


def split_by_period(
    start: datetime, stop: datetime, profile: EnergyProfile, tariff: Tariff
) -> dict[Period, PeriodUsage]:
    """kWh and hours charged in each tariff period between ``start`` and ``stop``."""
    return tariff.split_by_period(start, stop, profile)
