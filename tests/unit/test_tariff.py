"""Tariff periods and the split of a segment's energy and time by period, in local time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from fractions import Fraction
from zoneinfo import ZoneInfo

import pytest

from central.domain.params import StationParams, TimePeriods
from central.domain.tariff import ConstantPower, MeterSamples, Period, ProfileError, Tariff

SHANGHAI = ZoneInfo("Asia/Shanghai")
BERLIN = ZoneInfo("Europe/Berlin")


def local(day: int, hour: int, minute: int = 0, zone: ZoneInfo = SHANGHAI, month: int = 1) -> datetime:
    return datetime(2024, month, day, hour, minute, tzinfo=zone)


def split_rated(
    tariff: Tariff, start: datetime, stop: datetime, power_kw: int
) -> dict[str, tuple[Fraction, Fraction]]:
    usage = tariff.split_by_period(start, stop, ConstantPower.rated(start, stop, power_kw))
    return {p.value: (u.kwh, u.hours) for p, u in usage.items()}


@pytest.fixture
def tariff() -> Tariff:
    return Tariff.from_params(StationParams())


@pytest.mark.parametrize(
    ("hour", "before", "after"),
    [
        (7, "valley", "normal"),
        (10, "normal", "peak"),
        (15, "peak", "normal"),
        (18, "normal", "peak"),
        (21, "peak", "normal"),
        (23, "normal", "valley"),
    ],
)
def test_every_period_boundary_splits_energy_at_local_time(tariff, hour, before, after):
    start, stop = local(2, hour - 1, 30), local(2, hour, 30)
    split = split_rated(tariff, start, stop, 10)
    assert split[before] == (Fraction(5), Fraction(1, 2))
    assert split[after] == (Fraction(5), Fraction(1, 2))
    assert sum(kwh for kwh, _ in split.values()) == 10


def test_valley_rate_applies_across_midnight(tariff):
    split = split_rated(tariff, local(1, 22, 30), local(2, 1, 30), 10)
    assert split["normal"] == (Fraction(5), Fraction(1, 2))
    assert split["valley"] == (Fraction(25), Fraction(5, 2))
    assert split["peak"] == (Fraction(0), Fraction(0))


def test_multi_day_session_gets_eight_hours_of_each_period_per_day(tariff):
    split = split_rated(tariff, local(1, 6), local(4, 6), 1)
    for period in ("peak", "normal", "valley"):
        assert split[period] == (Fraction(24), Fraction(24))


def test_instants_in_utc_are_classified_by_station_local_time(tariff):
    # 02:00 UTC is 10:00 in Shanghai: the start of the peak period.
    assert tariff.period_at(datetime(2024, 1, 1, 2, 0, tzinfo=UTC)) is Period.PEAK
    assert tariff.period_at(datetime(2024, 1, 1, 1, 59, tzinfo=UTC)) is Period.NORMAL
    assert tariff.period_at(datetime(2024, 1, 1, 15, 0, tzinfo=UTC)) is Period.VALLEY  # 23:00 local


def test_meter_samples_are_interpolated_linearly_at_a_period_boundary(tariff):
    samples = MeterSamples([(local(1, 9, 50), 1_000), (local(1, 10, 5), 3_000), (local(1, 10, 10), 11_000)])
    usage = tariff.split_by_period(local(1, 9, 50), local(1, 10, 10), samples)
    # 10:00 lies 10 of 15 minutes into the first interval: 1000 + 2000 * 2/3 Wh.
    assert usage[Period.NORMAL].kwh == Fraction(4, 3)
    assert usage[Period.PEAK].kwh == Fraction(10) - Fraction(4, 3)
    assert usage[Period.NORMAL].hours == Fraction(1, 6)


def test_meter_samples_outside_the_segment_are_clamped(tariff):
    samples = MeterSamples([(local(1, 12), 5_000), (local(1, 13), 15_000)])
    assert samples.energy_kwh_at(local(1, 11)) == 5
    assert samples.energy_kwh_at(local(1, 14)) == 15
    usage = tariff.split_by_period(local(1, 11), local(1, 14), samples)
    assert usage[Period.PEAK].kwh == 10
    assert usage[Period.PEAK].hours == 3


def test_dst_spring_forward_night_counts_real_hours_berlin():
    tariff = Tariff.from_params(StationParams(timezone="Europe/Berlin"))
    start, stop = local(30, 22, zone=BERLIN, month=3), local(31, 8, zone=BERLIN, month=3)
    split = split_rated(tariff, start, stop, 1)  # 9 real hours: 02:00-03:00 does not exist
    assert split["normal"] == (Fraction(2), Fraction(2))
    assert split["valley"] == (Fraction(7), Fraction(7))


def test_dst_fall_back_night_counts_the_repeated_hour_berlin():
    tariff = Tariff.from_params(StationParams(timezone="Europe/Berlin"))
    start, stop = local(26, 22, zone=BERLIN, month=10), local(27, 8, zone=BERLIN, month=10)
    split = split_rated(tariff, start, stop, 1)  # 11 real hours: 02:00-03:00 happens twice
    assert split["valley"] == (Fraction(9), Fraction(9))
    assert split["normal"] == (Fraction(2), Fraction(2))


def test_boundary_inside_dst_gap_and_repeat_is_handled_berlin():
    periods = TimePeriods(peak=(), normal=("02:30-24:00",), valley=("00:00-02:30",))
    tariff = Tariff.from_params(StationParams(timezone="Europe/Berlin", time_periods=periods))
    spring = split_rated(tariff, local(31, 0, zone=BERLIN, month=3), local(31, 4, zone=BERLIN, month=3), 1)
    assert spring["valley"][1] == 2  # 00:00-02:00 CET, then the clock jumps to 03:00 (normal)
    assert spring["normal"][1] == 1
    autumn = split_rated(tariff, local(27, 0, zone=BERLIN, month=10), local(27, 4, zone=BERLIN, month=10), 1)
    # 00:00-02:30 CEST valley, 02:30-03:00 CEST normal, 02:00-02:30 CET valley again, then normal.
    assert autumn["valley"][1] == 3
    assert autumn["normal"][1] == 2


def test_zero_length_segment_has_no_energy(tariff):
    split = split_rated(tariff, local(1, 12), local(1, 12), 30)
    assert all(v == (Fraction(0), Fraction(0)) for v in split.values())


def test_segment_that_stops_before_it_starts_is_refused(tariff):
    with pytest.raises(ProfileError, match="before it starts"):
        tariff.split_by_period(local(1, 12), local(1, 11), MeterSamples([(local(1, 11), 0)]))


@pytest.mark.parametrize(
    ("samples", "message"),
    [
        ([], "no meter samples"),
        ([(local(1, 12), 0), (local(1, 11), 10)], "out of time order"),
        ([(local(1, 11), 10), (local(1, 12), 5)], "decreases"),
    ],
)
def test_inconsistent_meter_samples_are_refused(samples, message):
    with pytest.raises(ProfileError, match=message):
        MeterSamples(samples)


def test_naive_datetimes_are_refused(tariff):
    naive = datetime(2024, 1, 1, 12)
    with pytest.raises(ValueError, match="no time zone"):
        tariff.period_at(naive)


def test_constant_power_rated_energy_is_power_times_time():
    profile = ConstantPower.rated(local(1, 12), local(1, 12) + timedelta(seconds=1), 30)
    assert profile.energy_kwh == Fraction(1, 120)
