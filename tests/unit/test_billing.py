"""Detail records and bills: fees by period, service fee, exact sums and display rounding."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from zoneinfo import ZoneInfo

import pytest

from central.domain.billing import Bill, DetailRecord, SegmentInfo, make_detail
from central.domain.params import Pricing, StationParams
from central.domain.tariff import ConstantPower, MeterSamples, Period, Tariff
from central.domain.units import display_number, exact, round_display

ZONE = ZoneInfo("Asia/Shanghai")


def at(hour: int, minute: int = 0, day: int = 1) -> datetime:
    return datetime(2024, 1, day, hour, minute, tzinfo=ZONE)


def detail(
    start: datetime, stop: datetime, kwh: Fraction | int, tariff: Tariff | None = None
) -> DetailRecord:
    tariff = tariff or Tariff.from_params(StationParams())
    info = SegmentInfo("D1", "V9", "F3", "F2", "F2", "completed")
    return make_detail(info, start, stop, ConstantPower(start, stop, Fraction(kwh)), tariff)


def test_design_example_detail_valley_and_normal():
    record = detail(at(6, 10), at(7, 10), 30)  # the replay format's example: 06:10-07:10, 30 kWh
    assert record.periods[Period.VALLEY].kwh == 25
    assert record.periods[Period.NORMAL].kwh == 5
    assert record.charge_fee == 14  # 25 * 0.4 + 5 * 0.8
    assert record.service_fee == 24
    assert record.total == 38
    assert record.duration.total_seconds() == 3600


def test_detail_carries_hours_and_money_per_period():
    record = detail(at(9), at(11), 60)
    assert record.periods[Period.NORMAL].hours == 1
    assert record.periods[Period.PEAK].hours == 1
    assert record.periods[Period.NORMAL].fee == 24
    assert record.periods[Period.PEAK].fee == 36
    assert record.periods[Period.VALLEY].fee == 0
    assert record.generated_at == record.stop


def test_custom_rates_are_applied():
    params = StationParams(pricing=Pricing(Decimal("2"), Decimal("1"), Decimal("0.5"), Decimal("0.1")))
    record = detail(at(22), at(23, 30), 15, Tariff.from_params(params))
    assert record.charge_fee == Fraction(10) * 1 + Fraction(5) * Fraction(1, 2)
    assert record.service_fee == Fraction(3, 2)


def test_fees_stay_exact_for_non_decimal_energy():
    record = detail(at(12), at(12, 0).replace(second=1), Fraction(1, 120))  # one second at 30 kW
    assert record.charge_fee == Fraction(1, 120) * Fraction(6, 5)
    assert record.total == Fraction(1, 120) * 2
    assert display_number(record.total) == 0.02  # 0.01666.. rounds up


def test_bill_sums_every_detail_exactly():
    thirds = [detail(at(12, i), at(12, i + 1), Fraction(1, 3)) for i in range(3)]
    bill = Bill("V9", "F3", "F", Fraction(1), "completed", tuple(thirds))
    assert bill.kwh == 1
    assert bill.charge_fee == Fraction(6, 5)
    assert bill.total == 2
    assert sum(display_number(d.total) for d in thirds) == pytest.approx(2.01)  # why rounding is display-only


def test_live_detail_from_meter_samples_uses_meter_difference():
    tariff = Tariff.from_params(StationParams())
    samples = MeterSamples([(at(9, 30), 100_000), (at(10, 30), 130_000)])
    info = SegmentInfo("D7", "V1", "F1", "F1-2", "F1", "completed")
    record = make_detail(info, at(9, 30), at(10, 30), samples, tariff)
    assert record.kwh == 30
    assert record.periods[Period.NORMAL].kwh == 15
    assert record.point_id == "F1-2"
    assert record.pile_id == "F1"


def test_detail_round_trips_through_json():
    record = detail(at(6, 10), at(7, 10), Fraction(61, 3))
    again = DetailRecord.from_dict(json.loads(json.dumps(record.to_dict())))
    assert again == record


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (Fraction(1, 200), Decimal("0.01")),
        (Fraction(3, 200), Decimal("0.02")),
        (Fraction(1, 3), Decimal("0.33")),
        (Fraction(2, 3), Decimal("0.67")),
        (Fraction(-1, 200), Decimal("-0.01")),
        (Fraction(12345, 1000), Decimal("12.35")),
        (Fraction(7), Decimal("7.00")),
    ],
)
def test_rounding_is_half_up_to_cents_for_display(value, shown):
    assert round_display(value) == shown
    assert display_number(value) == float(shown)


@pytest.mark.parametrize(
    ("text", "value"), [("1.2", Fraction(6, 5)), (0.8, Fraction(4, 5)), (3, Fraction(3))]
)
def test_exact_reads_decimals_without_binary_error(text, value):
    assert exact(text) == value


@pytest.mark.parametrize("bad", ["abc", "nan", "inf", True, ""])
def test_exact_refuses_non_numbers(bad):
    with pytest.raises(ValueError, match="number"):
        exact(bad)
