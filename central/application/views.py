"""What the user and operator APIs show of the driver queue: request views, the completion summary,
queue and pile status, the piles' queues and the per-pile report. Built from the scheduler, the
service's per-car facts and rows already read; no I/O."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from fractions import Fraction
from typing import Any

from central.application.ports import PileTotals
from central.domain.billing import Bill
from central.domain.estimate import estimate_waits
from central.domain.model import Mode, RequestState
from central.domain.params import StationParams
from central.domain.scheduler import Scheduler

API_MODES = {Mode.FAST: "fast", Mode.TRICKLE: "slow"}
PUBLIC_PARAMETERS = (
    "FastChargingPileNum",
    "TrickleChargingPileNum",
    "WaitingAreaSize",
    "ChargingQueueLen",
    "pricing",
    "time_periods",
    "fast_power_kw",
    "slow_power_kw",
    "fault_strategy",
    "dispatch_policy",
    "timezone",
)


@dataclass(frozen=True)
class RequestView:
    """A request as the user API shows it."""

    request_id: str
    user_id: int
    queue_number: str
    charging_mode: str  # fast | slow
    requested_amount: float
    battery_capacity: float | None
    current_status: str  # waiting | charging | completed | cancelled
    queue_position: int
    ahead_count: int
    estimated_wait_time: float  # minutes
    charging_pile_id: str | None
    start_time: datetime | None
    current_amount: float
    created_at: datetime


@dataclass(frozen=True)
class CompletionView:
    """What ``POST /complete/`` returns: the request's bill in brief."""

    bill_id: str
    total_amount: float  # kWh
    total_cost: float
    charging_duration: float  # minutes


def as_float(value: Fraction) -> float:
    return float(round(value, 6))


def minutes(value: Fraction | None) -> float:
    """A wait in minutes for the API; -1 when no working pile of the mode can take the car."""
    return -1.0 if value is None else float(round(value, 2))


def active_view(
    scheduler: Scheduler,
    now: datetime,
    car: str,
    user_id: int,
    battery_capacity: float | None,
    session_kwh: Fraction,
) -> RequestView:
    """An active request; ``session_kwh`` is what its live segment delivered so far."""
    request = scheduler.get(car)
    assert request is not None
    wait = estimate_waits(scheduler, now, [car])[car]
    standing = wait.standing
    charging = request.state is RequestState.CHARGING
    current = request.delivered_kwh + (session_kwh if charging else Fraction(0))
    point = scheduler.point(standing.point_id or "")
    return RequestView(
        request_id=car,
        user_id=user_id,
        queue_number=request.queue_number,
        charging_mode=API_MODES[request.mode],
        requested_amount=as_float(request.requested_kwh),
        battery_capacity=battery_capacity,
        current_status=standing.status,
        queue_position=standing.queue_position,
        ahead_count=standing.ahead_count,
        estimated_wait_time=minutes(wait.wait_minutes),
        charging_pile_id=point.point.pile_id if point else None,
        start_time=request.segment_start if charging else None,
        current_amount=as_float(current),
        created_at=request.created_at,
    )


def finished_view(
    car: str, user_id: int, bill: Bill, status: str, battery_capacity: float | None, created_at: datetime
) -> RequestView:
    """A request that completed or was cancelled, from its bill."""
    return RequestView(
        request_id=car,
        user_id=user_id,
        queue_number=bill.queue_number,
        charging_mode=API_MODES[Mode(bill.mode)] if bill.mode in ("F", "T") else bill.mode,
        requested_amount=as_float(bill.requested_kwh),
        battery_capacity=battery_capacity,
        current_status=status,
        queue_position=0,
        ahead_count=0,
        estimated_wait_time=0.0,
        charging_pile_id=bill.details[-1].pile_id if bill.details else None,
        start_time=bill.details[0].start if bill.details else None,
        current_amount=as_float(bill.kwh),
        created_at=created_at,
    )


def completion_view(car: str, bill: Bill) -> CompletionView:
    return CompletionView(
        bill_id=car,
        total_amount=as_float(bill.kwh),
        total_cost=float(round(bill.total, 2)),
        charging_duration=as_float(
            sum((Fraction((d.stop - d.start).total_seconds()) / 60 for d in bill.details), Fraction(0))
        ),
    )


def queue_status(scheduler: Scheduler, now: datetime, params: StationParams) -> dict[str, Any]:
    """Both waiting lines (fault group first) with estimated waits, and the waiting area's fill."""
    waits = estimate_waits(scheduler, now)

    def line(mode: Mode) -> dict[str, Any]:
        cars = [r.car for r in scheduler.fault_queue(mode)] + [r.car for r in scheduler.waiting_line(mode)]
        return {
            "waiting_count": len(cars),
            "queue_list": [
                {
                    "queue_number": scheduler.requests[c].queue_number,
                    "estimated_wait_time": minutes(waits[c].wait_minutes),
                }
                for c in cars
            ],
        }

    return {
        "fast_charging": line(Mode.FAST),
        "slow_charging": line(Mode.TRICKLE),
        "waiting_area_capacity": {"current": scheduler.waiting_count, "max": params.waiting_area_size},
    }


def piles_status(
    scheduler: Scheduler, health: Mapping[str, str], username: Callable[[str | None], str | None]
) -> dict[str, Any]:
    """Every charging point: status (normal | fault | offline), who charges, its queue."""
    fast: list[dict[str, Any]] = []
    slow: list[dict[str, Any]] = []
    for point in scheduler.point_states():
        pile = point.point.pile_id
        unreachable = health.get(pile) in (None, "offline") and not point.queue
        status = "offline" if point.disabled or unreachable else "fault" if point.faulted else "normal"
        head = point.queue[0] if point.queue else None
        charging = head is not None and scheduler.requests[head].state is RequestState.CHARGING
        entry = {
            "pile_id": point.point.point_id,
            "pile_type": API_MODES[point.point.mode],
            "status": status,
            "is_working": charging,
            "current_user": username(head) if charging else None,
            "queue": [scheduler.requests[c].queue_number for c in point.queue],
        }
        (fast if point.point.mode is Mode.FAST else slow).append(entry)
    return {"fast_piles": fast, "slow_piles": slow}


def public_parameters(params: StationParams) -> dict[str, Any]:
    """The station parameters the APIs show (not the replay-only ones)."""
    p = params.to_mapping()
    return {key: p[key] for key in PUBLIC_PARAMETERS}


def pile_queues(
    scheduler: Scheduler,
    now: datetime,
    users: Mapping[str, int],
    battery: Mapping[str, float | None],
    username: Callable[[str | None], str | None],
) -> list[dict[str, Any]]:
    """Every charging point's cars (the charging one first) with who they are and how long they waited."""
    out = []
    for point in scheduler.point_states():
        cars = []
        for car in point.queue:
            r = scheduler.requests[car]
            cars.append(
                {
                    "user_id": users.get(car),
                    "username": username(car),
                    "request_id": car,
                    "queue_number": r.queue_number,
                    "battery_capacity": battery.get(car),
                    "requested_amount": as_float(r.requested_kwh),
                    "queued_at": r.created_at.isoformat(),
                    "waited_minutes": round((now - r.created_at).total_seconds() / 60, 2),
                }
            )
        out.append({"pile_id": point.point.point_id, "cars": cars})
    return out


def period_bounds(period: str, day: date) -> tuple[date, date]:
    """The first day of the day, week (from Monday) or month containing ``day``, and the day after it."""
    if period == "day":
        return day, day + timedelta(days=1)
    if period == "week":
        start = day - timedelta(days=day.weekday())
        return start, start + timedelta(days=7)
    if period == "month":
        start = day.replace(day=1)
        following = (start + timedelta(days=32)).replace(day=1)
        return start, following
    raise ValueError(f"period must be day, week or month, got {period!r}")


def pile_report(
    point_ids: Sequence[str], rows: Sequence[PileTotals], period: str, start: date, end: date
) -> list[dict[str, Any]]:
    """Per pile from ``start`` to the day before ``end``: sessions, charging time, kWh and fees.
    Every current charging point has a line, with zeros when it billed nothing."""

    def empty() -> dict[str, Any]:
        return {
            "sessions": 0,
            "seconds": 0,
            "kwh": Fraction(0),
            "charge": Fraction(0),
            "service": Fraction(0),
        }

    report = {point_id: empty() for point_id in point_ids}
    for row in rows:
        r = report.setdefault(row.pile_no, empty())
        r["sessions"] += 1
        r["seconds"] += row.seconds
        r["kwh"] += row.kwh
        r["charge"] += row.charge_fee
        r["service"] += row.service_fee
    return [
        {
            "pile_id": pile,
            "period": period,
            "from": start.isoformat(),
            "to": (end - timedelta(days=1)).isoformat(),
            "sessions": r["sessions"],
            "charging_minutes": round(r["seconds"] / 60, 2),
            "kwh": as_float(r["kwh"]),
            "charging_fee": float(round(r["charge"], 2)),
            "service_fee": float(round(r["service"], 2)),
            "total": float(round(r["charge"] + r["service"], 2)),
        }
        for pile, r in sorted(report.items())
    ]
