"""Station parameters: one frozen dataclass, parsed from a mapping (a TOML document or an API body)
and validated whole.

Names follow the user API (``FastChargingPileNum`` ...). Every problem is collected and reported by
key in one :class:`StationParamsError`, so an operator fixes a file in one pass. ``SETTINGS`` is the
single table of keys, defaults and help lines (the example config mirrors it).
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import time
from decimal import Decimal
from enum import StrEnum
from typing import Any

from central.domain.units import QuantityError, exact

PERIOD_NAMES = ("peak", "normal", "valley")
MINUTES_PER_DAY = 24 * 60


class FaultStrategy(StrEnum):
    """How the cars of a faulted pile are re-placed: interrupted cars always lead the fault group;
    ``priority`` then keeps the group and appends the faulted pile's queued cars, ``time_order`` puts
    every waiting car of the mode in queue-number order."""

    PRIORITY = "priority"
    TIME_ORDER = "time_order"


class DispatchPolicy(StrEnum):
    """Which piles a called car may go to."""

    BEST_OR_WAIT = "best_or_wait"
    BEST_FREE = "best_free"


class StationParamsError(ValueError):
    """Station parameters are invalid; ``problems`` lists (key, what is wrong)."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        lines = "; ".join(f"{key}: {what}" for key, what in problems)
        super().__init__(f"invalid station parameters: {lines}")


@dataclass(frozen=True)
class Setting:
    """One station parameter: its key as written in TOML / the API, default and help line."""

    key: str
    default: object
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting("FastChargingPileNum", 2, "number of fast piles, named F1..Fn"),
    Setting("TrickleChargingPileNum", 3, "number of trickle piles, named T1..Tn"),
    Setting("WaitingAreaSize", 6, "cars the waiting area holds; one more is refused (QUEUE_FULL)"),
    Setting("ChargingQueueLen", 2, "cars per pile including the charging one"),
    Setting("fast_power_kw", 30, "rated power of a fast pile, kW"),
    Setting("slow_power_kw", 10, "rated power of a trickle pile, kW"),
    Setting("fault_strategy", "priority", "priority | time_order"),
    Setting("dispatch_policy", "best_or_wait", "best_or_wait | best_free"),
    Setting("timezone", "Asia/Shanghai", "station time zone (IANA name); tariffs use local time"),
    Setting("start_time", None, "replay only: virtual clock start HH:MM (default: first event)"),
    Setting("pricing.peak_rate", "1.2", "charging fee per kWh in peak periods"),
    Setting("pricing.normal_rate", "0.8", "charging fee per kWh in normal periods"),
    Setting("pricing.valley_rate", "0.4", "charging fee per kWh in valley periods"),
    Setting("pricing.service_rate", "0.8", "service fee per kWh"),
    Setting("time_periods.peak", ("10:00-15:00", "18:00-21:00"), "peak periods, HH:MM-HH:MM"),
    Setting(
        "time_periods.normal",
        ("07:00-10:00", "15:00-18:00", "21:00-23:00"),
        "normal periods; the three lists must cover the 24 h exactly once",
    ),
    Setting("time_periods.valley", ("23:00-07:00",), "valley periods (may wrap midnight)"),
)
_DEFAULTS = {s.key: s.default for s in SETTINGS}
_TOP_KEYS = {s.key for s in SETTINGS if "." not in s.key} | {"pricing", "time_periods"}
_PRICING_KEYS = ("peak_rate", "normal_rate", "valley_rate", "service_rate")
POWER_RANGE_KW = (Decimal("0.1"), Decimal(10_000))
"""Pile power bounds: keeps ideal completion instants within datetime's range."""
RATE_RANGE = (Decimal(0), Decimal(100))
"""Rates per kWh (currency units): above 100 is a typo, and bills must stay finite and exact."""
SIZE_MAX = 1000
"""Upper bound of pile counts and the charging queue length."""
WAITING_AREA_MAX = 1_000_000
"""Upper bound of the waiting area (the scheduler is benchmarked with 100 000 waiting cars)."""


@dataclass(frozen=True)
class Pricing:
    """Rates per kWh (currency units), exact decimals."""

    peak_rate: Decimal = Decimal("1.2")
    normal_rate: Decimal = Decimal("0.8")
    valley_rate: Decimal = Decimal("0.4")
    service_rate: Decimal = Decimal("0.8")

    def rate(self, period: str) -> Decimal:
        """The charging rate of a period name (peak / normal / valley)."""
        return {"peak": self.peak_rate, "normal": self.normal_rate, "valley": self.valley_rate}[period]


@dataclass(frozen=True)
class TimePeriods:
    """Local-time ranges ``HH:MM-HH:MM`` per period; together they cover the day exactly once."""

    peak: tuple[str, ...] = ("10:00-15:00", "18:00-21:00")
    normal: tuple[str, ...] = ("07:00-10:00", "15:00-18:00", "21:00-23:00")
    valley: tuple[str, ...] = ("23:00-07:00",)

    def ranges(self) -> list[tuple[str, str, int, int]]:
        """(period, text, start minute, end minute), end > start; wrapping ranges are split."""
        out: list[tuple[str, str, int, int]] = []
        for name in PERIOD_NAMES:
            for text in getattr(self, name):
                start, end = parse_range(text)
                pieces = [(start, MINUTES_PER_DAY), (0, end)] if end <= start else [(start, end)]
                out.extend((name, text, a, b) for a, b in pieces if a < b)
        return out


@dataclass(frozen=True)
class StationParams:
    """Everything the scheduler and billing need to know about one station."""

    fast_pile_num: int = 2
    trickle_pile_num: int = 3
    waiting_area_size: int = 6
    charging_queue_len: int = 2
    fast_power_kw: Decimal = Decimal(30)
    slow_power_kw: Decimal = Decimal(10)
    pricing: Pricing = field(default_factory=Pricing)
    time_periods: TimePeriods = field(default_factory=TimePeriods)
    fault_strategy: FaultStrategy = FaultStrategy.PRIORITY
    dispatch_policy: DispatchPolicy = DispatchPolicy.BEST_OR_WAIT
    timezone: str = "Asia/Shanghai"
    start_time: time | None = None

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        """The station time zone."""
        return zoneinfo.ZoneInfo(self.timezone)

    def to_mapping(self) -> dict[str, Any]:
        """JSON-able mapping in the user API's shape; ``params_from_mapping`` reads it back."""
        out: dict[str, Any] = {
            "FastChargingPileNum": self.fast_pile_num,
            "TrickleChargingPileNum": self.trickle_pile_num,
            "WaitingAreaSize": self.waiting_area_size,
            "ChargingQueueLen": self.charging_queue_len,
            "fast_power_kw": float(self.fast_power_kw),
            "slow_power_kw": float(self.slow_power_kw),
            "pricing": {k: float(getattr(self.pricing, k)) for k in _PRICING_KEYS},
            "time_periods": {n: list(getattr(self.time_periods, n)) for n in PERIOD_NAMES},
            "fault_strategy": str(self.fault_strategy),
            "dispatch_policy": str(self.dispatch_policy),
            "timezone": self.timezone,
        }
        if self.start_time is not None:
            out["start_time"] = self.start_time.strftime("%H:%M")
        return out

    def updated(self, changes: Mapping[str, Any]) -> StationParams:
        """A validated copy with ``changes`` applied; ``pricing`` / ``time_periods`` merge by key."""
        merged = self.to_mapping()
        for key, value in changes.items():
            if key in ("pricing", "time_periods") and isinstance(value, Mapping):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
        return params_from_mapping(merged)


def parse_hhmm(text: str, *, allow_24: bool = False) -> int:
    """Minutes after midnight of ``HH:MM``; ValueError names the problem."""
    hours, sep, minutes = text.strip().partition(":")
    if not sep or not hours.isdigit() or not minutes.isdigit() or len(minutes) != 2:
        raise ValueError(f"{text!r} is not HH:MM")
    value = int(hours) * 60 + int(minutes)
    if int(minutes) > 59 or value > MINUTES_PER_DAY or (value == MINUTES_PER_DAY and not allow_24):
        raise ValueError(f"{text!r} is not a time of day")
    return value


def parse_range(text: str) -> tuple[int, int]:
    """(start, end) minutes of ``HH:MM-HH:MM``; end <= start means the range wraps midnight."""
    if not isinstance(text, str) or text.count("-") != 1:
        raise ValueError(f"{text!r} is not HH:MM-HH:MM")
    first, second = text.split("-")
    start, end = parse_hhmm(first), parse_hhmm(second, allow_24=True)
    if start == end % MINUTES_PER_DAY and end != MINUTES_PER_DAY:
        raise ValueError(f"{text!r} is empty (use 00:00-24:00 for the whole day)")
    return start, end


def params_from_mapping(data: Mapping[str, Any]) -> StationParams:
    """Validate a mapping (TOML document or API body) completely; raise every problem at once."""
    checker = _Checker(data)
    params = checker.build()
    if checker.problems:
        raise StationParamsError(checker.problems)
    assert params is not None
    return params


class _Checker:
    """Reads one mapping, collecting (key, problem) pairs instead of stopping at the first."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.data = data
        self.problems: list[tuple[str, str]] = []

    def build(self) -> StationParams | None:
        if not isinstance(self.data, Mapping):
            self.problems.append(("parameters", "must be a table / object"))
            return None
        self.problems.extend((k, "unknown key") for k in self.data if k not in _TOP_KEYS)
        sizes = self._sizes()
        powers = self._number("fast_power_kw", POWER_RANGE_KW), self._number("slow_power_kw", POWER_RANGE_KW)
        pricing, periods = self._pricing(), self._time_periods()
        strategy = self._choice("fault_strategy", FaultStrategy)
        policy = self._choice("dispatch_policy", DispatchPolicy)
        zone, start = self._timezone(), self._start_time()
        if self.problems:
            return None
        return StationParams(*sizes, *powers, pricing, periods, strategy, policy, zone, start)

    def _get(self, key: str, table: Mapping[str, Any] | None = None, prefix: str = "") -> Any:
        source = self.data if table is None else table
        return source[key] if key in source else _DEFAULTS[prefix + key]

    def _sizes(self) -> tuple[int, int, int, int]:
        fast = self._int("FastChargingPileNum", minimum=0)
        trickle = self._int("TrickleChargingPileNum", minimum=0)
        if fast + trickle == 0 and not self.problems:
            self.problems.append(("FastChargingPileNum", "the station needs at least one pile"))
        waiting = self._int("WaitingAreaSize", 1, WAITING_AREA_MAX)
        return fast, trickle, waiting, self._int("ChargingQueueLen", 1)

    def _int(self, key: str, minimum: int, maximum: int = SIZE_MAX) -> int:
        value = self._get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            self.problems.append((key, f"must be an integer, got {value!r}"))
            return 0
        if not minimum <= value <= maximum:
            self.problems.append((key, f"must be between {minimum} and {maximum}, got {value}"))
        return value

    def _number(
        self,
        key: str,
        bounds: tuple[Decimal, Decimal | None],
        table: Mapping[str, Any] | None = None,
        prefix: str = "",
    ) -> Decimal:
        value = self._get(key, table, prefix)
        try:
            number = Decimal(str(value)) if not isinstance(value, float) else Decimal(repr(value))
            exact(number)
        except (QuantityError, ArithmeticError, ValueError):
            self.problems.append((prefix + key, f"must be a number, got {value!r}"))
            return Decimal(0)
        low, high = bounds
        if number < low or (high is not None and number > high):
            limits = f">= {low}" if high is None else f"between {low} and {high}"
            self.problems.append((prefix + key, f"must be {limits}, got {value!r}"))
        return number

    def _table(self, key: str, allowed: tuple[str, ...]) -> Mapping[str, Any] | None:
        table = self.data.get(key, {})
        if not isinstance(table, Mapping):
            self.problems.append((key, "must be a table / object"))
            return None
        self.problems.extend((f"{key}.{k}", "unknown key") for k in table if k not in allowed)
        return table

    def _pricing(self) -> Pricing:
        table = self._table("pricing", _PRICING_KEYS)
        if table is None:
            return Pricing()
        rates = [self._number(k, RATE_RANGE, table, "pricing.") for k in _PRICING_KEYS]
        return Pricing(*rates)

    def _time_periods(self) -> TimePeriods:
        """A given [time_periods] table replaces the defaults whole: a missing name has no hours."""
        table = self._table("time_periods", PERIOD_NAMES)
        if table is None or "time_periods" not in self.data:
            return TimePeriods()
        lists = [self._period_list(n, table.get(n, ())) for n in PERIOD_NAMES]
        periods = TimePeriods(*lists)
        if not any(k.startswith("time_periods") for k, _ in self.problems):
            self.problems.extend(("time_periods", p) for p in coverage_problems(periods))
        return periods

    def _period_list(self, name: str, value: Any) -> tuple[str, ...]:
        key = f"time_periods.{name}"
        if isinstance(value, str) or not isinstance(value, list | tuple):
            self.problems.append((key, "must be a list of HH:MM-HH:MM strings"))
            return ()
        for text in value:
            try:
                parse_range(text)
            except ValueError as exc:
                self.problems.append((key, str(exc)))
        return tuple(value)

    def _choice(self, key: str, enum: type[FaultStrategy] | type[DispatchPolicy]) -> Any:
        value = self._get(key)
        try:
            return enum(value)
        except ValueError:
            options = " | ".join(e.value for e in enum)
            self.problems.append((key, f"must be one of {options}, got {value!r}"))
            return next(iter(enum))

    def _timezone(self) -> str:
        value = self._get("timezone")
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
            self.problems.append(("timezone", f"unknown time zone {value!r}"))
        return str(value)

    def _start_time(self) -> time | None:
        value = self._get("start_time")
        if value is None:
            return None
        try:
            minute = parse_hhmm(value) if isinstance(value, str) else -1
        except ValueError:
            minute = -1
        if minute < 0:
            self.problems.append(("start_time", f"must be HH:MM, got {value!r}"))
            return None
        return time(minute // 60, minute % 60)


def coverage_problems(periods: TimePeriods) -> list[str]:
    """Overlaps and gaps of the three period lists over one day, as readable sentences."""
    ranges = periods.ranges()
    problems: list[str] = []
    for i, (name_a, text_a, start_a, end_a) in enumerate(ranges):
        for name_b, text_b, start_b, end_b in ranges[i + 1 :]:
            if max(start_a, start_b) < min(end_a, end_b):
                problems.append(f"{name_a} {text_a} overlaps {name_b} {text_b}")
    covered = [False] * MINUTES_PER_DAY
    for _, _, start, end in ranges:
        covered[start:end] = [True] * (end - start)
    gap_start: int | None = None
    for minute, is_covered in enumerate([*covered, True]):
        if not is_covered and gap_start is None:
            gap_start = minute
        elif is_covered and gap_start is not None:
            problems.append(f"{_hhmm(gap_start)}-{_hhmm(minute)} is in no period")
            gap_start = None
    return list(dict.fromkeys(problems))


def _hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"
