"""Pricing of an operator order by its billing mode, beside the time-of-use tariff (pure).

* :attr:`BillingMode.ENERGY_AND_ENERGY_FEE` (1, 电量+电量服务费): amount = the time-of-use charging
  fee (Σ kWh in each tariff period × that period's rate, as driver bills), service fee = kWh ×
  service rate;
* :attr:`BillingMode.ENERGY_AND_TIME_FEE` (2, 电量+时间服务费): amount as mode 1, service fee =
  hours × service rate × pile kW;
* :attr:`BillingMode.BY_TIME` (0, 按时间): amount = hours × normal rate × pile kW, no service fee.

Drivers are billed by :data:`DRIVER_BILLING_MODE`; a driver's own order is capped at the energy its
budget pays for at the dearest kWh (:func:`energy_cap_wh`).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from typing import Any

from central.domain.limits import MAX_KWH
from central.domain.tariff import EnergyProfile, Period, PeriodUsage, Tariff
from central.domain.units import hours_between


class BillingMode(enum.IntEnum):
    """How an order is priced (the operator API's ``billingMode``)."""

    BY_TIME = 0
    ENERGY_AND_ENERGY_FEE = 1
    ENERGY_AND_TIME_FEE = 2


DRIVER_BILLING_MODE = BillingMode.ENERGY_AND_ENERGY_FEE
"""The station's billing mode for drivers (their queue sessions and their own orders)."""


@dataclass(frozen=True)
class OrderFigures:
    """What one order charged: energy, fees, and the period split the amount came from."""

    start: datetime
    stop: datetime
    kwh: Fraction
    amount: Fraction
    service_fee: Fraction
    periods: Mapping[Period, PeriodUsage]

    @property
    def total(self) -> Fraction:
        return self.amount + self.service_fee

    @property
    def seconds(self) -> int:
        return int((self.stop - self.start).total_seconds())

    def nothing(self) -> OrderFigures:
        """The same interval with nothing delivered and nothing to pay (a cancelled order)."""
        return OrderFigures(self.start, self.stop, Fraction(0), Fraction(0), Fraction(0), {})

    def detail(self, billing_mode: int, power_kw: Fraction, tariff: Tariff) -> dict[str, Any]:
        """The audit record of these figures (exact values as strings)."""
        return {
            "billing_mode": billing_mode,
            "power_kw": str(power_kw),
            "rates": {p.value: str(r) for p, r in tariff.rates.items()},
            "service_rate": str(tariff.service_rate),
            "periods": {
                p.value: [str(u.kwh), str(u.hours), str(u.kwh * tariff.rates[p])]
                for p, u in self.periods.items()
            },
            "amount": str(self.amount),
            "service_fee": str(self.service_fee),
        }


def price_order(
    billing_mode: int,
    start: datetime,
    stop: datetime,
    profile: EnergyProfile,
    tariff: Tariff,
    power_kw: Fraction,
) -> OrderFigures:
    """Price ``[start, stop]`` of ``profile`` by billing mode (see the module docstring); an unknown
    mode is priced as :attr:`BillingMode.ENERGY_AND_ENERGY_FEE`."""
    usage = tariff.split_by_period(start, stop, profile)
    kwh = sum((u.kwh for u in usage.values()), Fraction(0))
    hours = hours_between(start, stop)
    if billing_mode == BillingMode.BY_TIME:
        amount, service = hours * tariff.rates[Period.NORMAL] * power_kw, Fraction(0)
    elif billing_mode == BillingMode.ENERGY_AND_TIME_FEE:
        amount, service = tariff.charge_fee(usage), hours * tariff.service_rate * power_kw
    else:
        amount, service = tariff.charge_fee(usage), kwh * tariff.service_rate
    return OrderFigures(start, stop, kwh, amount, service, usage)


def energy_cap_wh(budget: Fraction, tariff: Tariff) -> int:
    """The whole Wh ``budget`` pays for by :data:`DRIVER_BILLING_MODE` whatever the period: at the
    dearest period rate plus the service rate, rounded down so the bill never exceeds the budget
    (0 without a budget; at most :data:`~central.domain.limits.MAX_KWH` when energy is free)."""
    if budget <= 0:
        return 0
    dearest = max(tariff.rates.values()) + tariff.service_rate
    most = int(MAX_KWH * 1000)
    return most if dearest <= 0 else min(most, math.floor(budget * 1000 / dearest))
