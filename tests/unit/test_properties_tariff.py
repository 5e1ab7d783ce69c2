"""Time-of-use split properties, exact in Fractions: a segment's period parts add up to the whole
(energy, hours and money), cutting a segment anywhere changes no period's share, and the hours of
each period are what the station's local clock shows, across midnight, days and DST changes."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from itertools import pairwise
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from central.domain.billing import Bill, DetailRecord, SegmentInfo, make_detail
from central.domain.params import PERIOD_NAMES, Pricing, StationParams, TimePeriods, coverage_problems
from central.domain.tariff import ConstantPower, EnergyProfile, MeterSamples, Period, PeriodUsage, Tariff
from central.domain.units import hours_between

# Offsets of whole hours, half and quarter hours, DST in both hemispheres, a 30-minute DST shift.
ZONES = (
    "Asia/Shanghai", "UTC", "Europe/Berlin", "America/New_York", "Australia/Sydney",
    "Asia/Kathmandu", "Australia/Lord_Howe", "America/St_Johns",
)  # fmt: skip
INFO = SegmentInfo("D1", "V1", "F1", "F1", "F1", "completed")
FAST = settings(max_examples=30, deadline=None)


def hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def offset_changes(zone: ZoneInfo) -> list[datetime]:
    """The instants in 2023-2026 at which the zone's UTC offset changes (DST starts and ends)."""

    def offset(at: datetime) -> timedelta | None:
        return at.astimezone(zone).utcoffset()

    days = [datetime(2023, 1, 1, tzinfo=UTC) + timedelta(days=n) for n in range(4 * 366)]
    changes = []
    for lo, hi in pairwise(days):
        if offset(lo) == offset(hi):
            continue
        while hi - lo > timedelta(minutes=1):  # offsets change on whole minutes
            mid = (lo + (hi - lo) / 2).replace(second=0, microsecond=0)
            lo, hi = (mid, hi) if offset(mid) == offset(lo) else (lo, mid)
        changes.append(hi)
    return changes


CHANGES = {name: offset_changes(ZoneInfo(name)) for name in ZONES}
DST_ZONES = tuple(name for name in ZONES if CHANGES[name])
NO_DST_ZONES = tuple(name for name in ZONES if not CHANGES[name])


@st.composite
def time_periods(draw: st.DrawFn, cut_in_dst_hour: bool = False) -> TimePeriods:
    """The day cut at 1-6 local minutes into ranges, each given a period (a range may wrap midnight).

    ``cut_in_dst_hour``: one period changes to another inside 02:00-03:00, the hour that DST skips
    or repeats in the zones above.
    """
    cuts = draw(st.sets(st.integers(0, 24 * 60 - 1), min_size=1, max_size=6))
    forced = draw(st.integers(2 * 60 + 1, 3 * 60 - 1)) if cut_in_dst_hour else None
    if forced is not None:
        cuts |= {0, forced}
    ordered = sorted(cuts)
    lists: dict[str, list[str]] = {name: [] for name in PERIOD_NAMES}
    if len(ordered) == 1:
        lists[draw(st.sampled_from(PERIOD_NAMES))].append("00:00-24:00")
        return TimePeriods(*(tuple(lists[name]) for name in PERIOD_NAMES))
    pieces = [*pairwise(ordered), (ordered[-1], ordered[0])]
    names = [draw(st.sampled_from(PERIOD_NAMES)) for _ in pieces]
    if forced is not None:
        k = ordered.index(forced)  # piece k starts at the forced cut, piece k - 1 ends there
        if names[k] == names[k - 1]:
            names[k] = draw(st.sampled_from([n for n in PERIOD_NAMES if n != names[k - 1]]))
    for (start, end), name in zip(pieces, names, strict=True):
        lists[name].append(f"{hhmm(start)}-{hhmm(end)}")
    periods = TimePeriods(*(tuple(lists[name]) for name in PERIOD_NAMES))
    assert coverage_problems(periods) == []
    return periods


RATES = st.integers(0, 500).map(lambda cents: Decimal(cents) / 100)


@st.composite
def tariffs(draw: st.DrawFn, zones: tuple[str, ...] = ZONES, cut_in_dst_hour: bool = False) -> Tariff:
    periods = time_periods(cut_in_dst_hour)
    params = StationParams(
        timezone=draw(st.sampled_from(zones)),
        time_periods=draw(periods if cut_in_dst_hour else periods | st.just(TimePeriods())),
        pricing=Pricing(draw(RATES), draw(RATES), draw(RATES), draw(RATES)),
    )
    return Tariff.from_params(params)


ANY_TARIFF = tariffs() | tariffs(DST_ZONES, cut_in_dst_hour=True)


# Instants in 2023-2026, to the microsecond.
INSTANTS = st.datetimes(datetime(2023, 1, 1), datetime(2026, 12, 31)).map(lambda d: d.replace(tzinfo=UTC))
DURATIONS = st.one_of(
    st.timedeltas(timedelta(0), timedelta(hours=6)),
    st.timedeltas(timedelta(0), timedelta(days=4)),
    st.integers(0, 4 * 24 * 60).map(lambda m: timedelta(minutes=m)),
)


def spans_in(
    zone: ZoneInfo, durations: st.SearchStrategy[timedelta] = DURATIONS
) -> st.SearchStrategy[tuple[datetime, datetime]]:
    """(start, stop) anywhere, or around one of the zone's DST changes (up to a day either side)."""
    anywhere = st.tuples(INSTANTS, durations).map(lambda pair: (pair[0], pair[0] + pair[1]))
    changes = CHANGES[str(zone)]
    if not changes:
        return anywhere
    day = st.timedeltas(timedelta(0), timedelta(days=1))
    around = st.tuples(st.sampled_from(changes), day, day).map(lambda t: (t[0] - t[1], t[0] + t[2]))
    return anywhere | around


ENERGY = st.fractions(0, 500, max_denominator=1000)


@st.composite
def profiles(draw: st.DrawFn, start: datetime, stop: datetime) -> EnergyProfile:
    """A constant-power profile, or meter samples (some outside the segment) rising unevenly."""
    if draw(st.booleans()):
        return ConstantPower(start, stop, draw(ENERGY))
    span = stop - start + timedelta(hours=2)
    offsets = sorted(draw(st.sets(st.timedeltas(timedelta(0), span), min_size=1, max_size=6)))
    increments = draw(st.lists(st.integers(0, 50_000), min_size=len(offsets), max_size=len(offsets)))
    origin, meter, samples = start - timedelta(hours=1), 10_000_000, []
    for offset, increment in zip(offsets, increments, strict=True):
        meter += increment
        samples.append((origin + offset, meter))
    return MeterSamples(samples)


@st.composite
def segments(draw: st.DrawFn) -> tuple[Tariff, datetime, datetime, EnergyProfile]:
    tariff = draw(ANY_TARIFF)
    start, stop = draw(spans_in(tariff.zone))
    return tariff, start, stop, draw(profiles(start, stop))


def total(usage: dict[Period, PeriodUsage]) -> PeriodUsage:
    return PeriodUsage(
        sum((u.kwh for u in usage.values()), Fraction(0)), sum((u.hours for u in usage.values()), Fraction(0))
    )


def sums(bill: Bill) -> tuple[Fraction, Fraction, Fraction, Fraction]:
    return bill.kwh, bill.charge_fee, bill.service_fee, bill.total


def added(a: dict[Period, PeriodUsage], b: dict[Period, PeriodUsage]) -> dict[Period, PeriodUsage]:
    return {p: PeriodUsage(a[p].kwh + b[p].kwh, a[p].hours + b[p].hours) for p in Period}


@FAST
@given(segment=segments())
def test_period_parts_add_up_to_the_whole_segment(segment):
    tariff, start, stop, profile = segment
    usage = tariff.split_by_period(start, stop, profile)
    energy = profile.energy_kwh_at(stop) - profile.energy_kwh_at(start)
    assert total(usage) == PeriodUsage(energy, hours_between(start, stop))
    assert all(u.kwh >= 0 and u.hours >= 0 for u in usage.values())
    detail = make_detail(INFO, start, stop, profile, tariff)
    assert detail.kwh == energy
    assert detail.charge_fee == sum((usage[p].kwh * tariff.rates[p] for p in Period), Fraction(0))
    assert detail.charge_fee == tariff.charge_fee(usage)
    assert detail.service_fee == energy * tariff.service_rate
    assert detail.total == detail.charge_fee + detail.service_fee
    assert DetailRecord.from_dict(detail.to_dict()) == detail


@FAST
@given(segment=segments())
def test_constant_power_shares_energy_in_proportion_to_hours(segment):
    tariff, start, stop, _ = segment
    profile = ConstantPower.rated(start, stop, 7)
    for usage in tariff.split_by_period(start, stop, profile).values():
        assert usage.kwh == 7 * usage.hours


@FAST
@given(segment=segments(), cut=st.floats(0, 1))
def test_cutting_a_segment_anywhere_changes_no_period_share_nor_the_bill(segment, cut):
    tariff, start, stop, profile = segment
    middle = start + (stop - start) * cut
    whole = tariff.split_by_period(start, stop, profile)
    parts = added(
        tariff.split_by_period(start, middle, profile), tariff.split_by_period(middle, stop, profile)
    )
    assert parts == whole
    first = make_detail(INFO, start, middle, profile, tariff)
    second = make_detail(INFO, middle, stop, profile, tariff)
    one = make_detail(INFO, start, stop, profile, tariff)
    split_bill = Bill("V1", "F1", "F", Fraction(1), "completed", (first, second))
    whole_bill = Bill("V1", "F1", "F", Fraction(1), "completed", (one,))
    assert sums(split_bill) == sums(whole_bill)


MINUTES = (st.integers(0, 120) | st.integers(20 * 60, 2 * 24 * 60)).map(lambda m: timedelta(minutes=m))


@settings(max_examples=30, deadline=None)
@given(tariff=ANY_TARIFF, data=st.data())
def test_period_hours_match_the_local_clock_minute_by_minute(tariff, data):
    """Each whole UTC minute lies in one local minute (offsets are whole minutes), so counting the
    periods of the minutes of a segment is an independent measure of its split."""
    start, stop = data.draw(spans_in(tariff.zone, MINUTES))
    start, stop = start.replace(second=0, microsecond=0), stop.replace(second=0, microsecond=0)
    counted = dict.fromkeys(Period, 0)
    for m in range((stop - start) // timedelta(minutes=1)):
        counted[tariff.period_at(start + timedelta(minutes=m))] += 1
    usage = tariff.split_by_period(start, stop, ConstantPower(start, stop, Fraction(0)))
    assert {p: u.hours for p, u in usage.items()} == {p: Fraction(n, 60) for p, n in counted.items()}


@settings(max_examples=20, deadline=None)
@given(
    tariff=tariffs(NO_DST_ZONES), day=st.dates(date(2023, 1, 1), date(2026, 12, 1)), days=st.integers(1, 5)
)
def test_whole_local_days_hold_each_period_for_its_daily_hours(tariff, day, days):
    start = datetime.combine(day, datetime.min.time(), tariff.zone)
    stop = start + timedelta(days=days)  # no DST here: N local days are N x 24 real hours
    usage = tariff.split_by_period(start, stop, ConstantPower(start, stop, Fraction(days)))
    daily = dict.fromkeys(Period, 0)
    for minute in range(24 * 60):
        daily[tariff.period_at(start + timedelta(minutes=minute))] += 1
    for period, u in usage.items():
        assert u.hours == Fraction(days * daily[period], 60)
        assert u.kwh == Fraction(daily[period], 24 * 60) * days
