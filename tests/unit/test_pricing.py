"""Operator order pricing by billing mode (time-of-use energy fee, service fee by kWh or by time)."""

from __future__ import annotations

from datetime import datetime
from fractions import Fraction
from zoneinfo import ZoneInfo

from central.domain.params import StationParams
from central.domain.pricing import BillingMode, price_order
from central.domain.tariff import ConstantPower, Period, Tariff

SHANGHAI = ZoneInfo("Asia/Shanghai")
TARIFF = Tariff.from_params(StationParams())  # peak 1.2, normal 0.8, valley 0.4, service 0.8
START = datetime(2024, 1, 1, 9, 0, tzinfo=SHANGHAI)  # one normal hour, then peak from 10:00
STOP = datetime(2024, 1, 1, 11, 0, tzinfo=SHANGHAI)
PROFILE = ConstantPower(START, STOP, Fraction(20))  # 10 kWh per hour
POWER = Fraction(30)


def test_energy_and_energy_fee_is_the_time_of_use_fee_plus_kwh_times_service_rate():
    figures = price_order(BillingMode.ENERGY_AND_ENERGY_FEE, START, STOP, PROFILE, TARIFF, POWER)
    assert figures.kwh == 20
    assert figures.amount == 10 * Fraction("0.8") + 10 * Fraction("1.2")
    assert figures.service_fee == 20 * Fraction("0.8")
    assert figures.total == figures.amount + figures.service_fee
    assert {p for p, u in figures.periods.items() if u.kwh} == {Period.NORMAL, Period.PEAK}


def test_energy_and_time_fee_charges_the_service_by_hours_and_pile_power():
    figures = price_order(BillingMode.ENERGY_AND_TIME_FEE, START, STOP, PROFILE, TARIFF, POWER)
    assert figures.amount == 10 * Fraction("0.8") + 10 * Fraction("1.2")
    assert figures.service_fee == 2 * Fraction("0.8") * POWER


def test_by_time_charges_hours_at_the_normal_rate_and_pile_power_and_no_service_fee():
    figures = price_order(BillingMode.BY_TIME, START, STOP, PROFILE, TARIFF, POWER)
    assert figures.amount == 2 * Fraction("0.8") * POWER
    assert figures.service_fee == 0
    assert figures.seconds == 7200


def test_nothing_keeps_the_interval_and_charges_nothing():
    figures = price_order(BillingMode.ENERGY_AND_ENERGY_FEE, START, STOP, PROFILE, TARIFF, POWER).nothing()
    assert (figures.kwh, figures.total, figures.seconds) == (Fraction(0), Fraction(0), 7200)
