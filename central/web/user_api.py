"""The driver-facing REST API: auth, charging requests, queue, piles, bills, notifications and
parameters, in the envelope ``{"success", "message"?, "data"?}``.

Request bodies and response ``data`` are msgspec Structs (declared below, validated and documented
through :mod:`central.web.shapes`, every bad field named in ``details``); handlers call the account
functions of :mod:`central.adapters.users` and the queries of :mod:`central.adapters.driver_queries` through
the store, or the charging service, and render the shapes. Numbers are rounded to 0.01 (half up)
only here; datetimes are ISO 8601 in the station's time zone. :data:`USER_ROUTES` is the route
table (see :mod:`central.web.openapi`).
"""

from __future__ import annotations

import json
import math
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Annotated, Any, Literal

import msgspec
from aiohttp import web

from central.adapters import driver_queries, notifications, users
from central.adapters.database import Db
from central.application import auth
from central.application.views import RequestView
from central.domain.errors import DuplicateRequestError
from central.domain.units import QuantityError, display_number, exact
from central.web.errors import (
    DUPLICATE_REQUEST,
    QUEUE_FULL,
    RESOURCE_NOT_FOUND,
    VALIDATION_ERROR,
    not_found,
    ok,
    validation_error,
)
from central.web.keys import STATIONS
from central.web.middleware import (
    TOKEN_KEY,
    auth_settings,
    client_address,
    current_user,
    off_loop,
    station_of,
    station_zone,
    store_of,
)
from central.web.openapi import RouteSpec
from central.web.permissions import Access
from central.web.platform.stations import piles_status_with_registered
from central.web.sessions import login_with_password
from central.web.shapes import (
    Kwh,
    LocalTime,
    OptionalText,
    Password,
    Username,
    calendar_day,
    decode,
    json_object,
)
from central.web.station_runtime import STATION_NOT_RUNNING, StationRuntime

BILLS_PAGE_LIMIT = (1, 100)
NOTIFICATIONS_LIMIT = (1, 500)

# --- input -----------------------------------------------------------------------------------------


def query_int(
    query: Mapping[str, str], name: str, default: int, bounds: tuple[int, int], problems: dict[str, str]
) -> int:
    """An integer query parameter within ``bounds`` (inclusive)."""
    text = query.get(name)
    if text is None or text == "":
        return default
    low, high = bounds
    if not text.strip().lstrip("-").isdigit() or not low <= int(text) <= high:
        problems[name] = f"must be an integer from {low} to {high}, got {text!r}"
        return default
    return int(text)


def query_date(query: Mapping[str, str], name: str, problems: dict[str, str]) -> date | None:
    """A ``YYYY-MM-DD`` query parameter."""
    text = query.get(name)
    if text is None or text == "":
        return None
    try:
        return calendar_day(text)
    except ValueError as exc:
        problems[name] = str(exc)
        return None


def path_int(request: web.Request, name: str) -> int:
    """An integer path parameter; anything else cannot name a resource (404)."""
    text = request.match_info[name]
    if not text.isdigit() or len(text) > 18:
        raise not_found()
    return int(text)


# --- output ----------------------------------------------------------------------------------------


def rounded(value: float | int | Fraction | Decimal | str | None) -> float | None:
    """A number rounded half up to 0.01 for display (exact input stays exact until here)."""
    if value is None:
        return None
    try:
        return display_number(exact(value))
    except QuantityError:
        return None


def local_iso(value: datetime | str | None, zone: zoneinfo.ZoneInfo) -> str | None:
    """ISO 8601 with the station's UTC offset; naive or text values are read as UTC."""
    if value is None or value == "":
        return None
    at = datetime.fromisoformat(value) if isinstance(value, str) else value
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(zone).isoformat(timespec="seconds")


_TIME_KEYS = ("_at", "_time")


def local_values(value: Any, zone: zoneinfo.ZoneInfo) -> Any:
    """Walk a service result: datetimes (and ISO strings under ``*_at`` / ``*_time`` keys) to local
    ISO, non-integer numbers rounded to 0.01."""
    if isinstance(value, datetime):
        return local_iso(value, zone)
    if isinstance(value, Mapping):
        return {
            k: local_iso(v, zone)
            if isinstance(v, str) and str(k).endswith(_TIME_KEYS)
            else local_values(v, zone)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [local_values(v, zone) for v in value]
    if isinstance(value, float | Fraction | Decimal) and not isinstance(value, bool):
        return rounded(value)
    if isinstance(value, date):
        return value.isoformat()
    return value


# --- shapes: request bodies and response data -----------------------------------------------------

Mode = Literal["fast", "slow"]
PERIODS = ("peak", "normal", "valley")
NotificationKind = Literal[
    # the four kinds of the driver API, and the kinds of notices written through the operator API
    "queue_update",
    "charging_start",
    "charging_complete",
    "pile_fault",
    "system",
    "order",
    "activity",
    "recharge",
]
Minutes = Annotated[float, msgspec.Meta(description="minutes")]
KwhFigure = Annotated[float, msgspec.Meta(description="kWh")]
TimeRange = Annotated[str, msgspec.Meta(pattern=r"^\d\d:\d\d-\d\d:\d\d$")]


class RegisterBody(msgspec.Struct):
    username: Username
    password: Password
    email: Annotated[OptionalText, msgspec.Meta(extra_json_schema={"format": "email"})] = None
    phone: OptionalText = None


class LoginBody(msgspec.Struct):
    username: str
    password: str


class Registered(msgspec.Struct):
    user_id: int
    username: str
    token: str


class LoggedIn(msgspec.Struct):
    user_id: int
    username: str
    token: str
    is_staff: bool


class Profile(msgspec.Struct):
    id: int
    username: str
    email: str | None
    phone: str | None
    is_staff: bool


StationCode = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[A-Za-z0-9_.:-]{1,64}$",
        description="the station's code (its MQTT {station}); the default station when omitted",
        extra={"hint": "must be a station code: 1-64 of A-Z a-z 0-9 _ . : -"},
    ),
]


class SubmitBody(msgspec.Struct):
    charging_mode: Mode
    requested_amount: Kwh
    battery_capacity: Kwh | None = None
    station: StationCode | None = None


class ChangeBody(msgspec.Struct):
    """At least one of the two."""

    charging_mode: Mode | None = None
    requested_amount: Kwh | None = None


class RequestStatus(msgspec.Struct):
    """A charging request's status (request_id: what PUT and cancel need)."""

    request_id: str
    queue_number: str
    charging_mode: Mode
    requested_amount: KwhFigure
    battery_capacity: KwhFigure | None
    current_status: Literal["waiting", "charging", "completed", "cancelled"]
    queue_position: int
    ahead_count: int
    estimated_wait_time: Annotated[
        float, msgspec.Meta(description="minutes; -1 when no working pile of the mode")
    ]
    charging_pile_id: str | None
    start_time: LocalTime
    current_amount: Annotated[float, msgspec.Meta(description="kWh so far")]
    created_at: LocalTime
    station: Annotated[str, msgspec.Meta(description="the code of the request's station")] | None = None


class Completion(msgspec.Struct):
    bill_id: str
    total_amount: KwhFigure
    total_cost: float
    charging_duration: Minutes


class QueuedCar(msgspec.Struct):
    queue_number: str
    estimated_wait_time: Minutes


class ModeQueue(msgspec.Struct):
    waiting_count: int
    queue_list: list[QueuedCar]


class WaitingArea(msgspec.Struct):
    current: int
    max: int


class QueueStatus(msgspec.Struct):
    fast_charging: ModeQueue
    slow_charging: ModeQueue
    waiting_area_capacity: WaitingArea


class PileStatus(msgspec.Struct):
    pile_id: str
    pile_type: Mode
    status: Literal["normal", "fault", "offline"]
    is_working: bool
    current_user: str | None
    queue: list[str]


class PilesStatus(msgspec.Struct):
    fast_piles: list[PileStatus]
    slow_piles: list[PileStatus]


class Pricing(msgspec.Struct):
    peak_rate: float
    normal_rate: float
    valley_rate: float
    service_rate: float


class TimePeriods(msgspec.Struct):
    peak: list[TimeRange]
    normal: list[TimeRange]
    valley: list[TimeRange]


class Parameters(msgspec.Struct):
    FastChargingPileNum: int
    TrickleChargingPileNum: int
    WaitingAreaSize: int
    ChargingQueueLen: int
    pricing: Pricing
    time_periods: TimePeriods
    fast_power_kw: float
    slow_power_kw: float
    fault_strategy: Literal["priority", "time_order"]
    dispatch_policy: Literal["best_or_wait", "best_free"]
    timezone: str


class BillCosts(msgspec.Struct):
    peak_cost: float
    normal_cost: float
    valley_cost: float
    service_cost: float
    total_cost: float


class BillHours(msgspec.Struct):
    peak_hours: float
    normal_hours: float
    valley_hours: float


class BillEntry(msgspec.Struct):
    """A bill in the list: its figures and costs."""

    bill_id: str
    generated_time: LocalTime
    pile_id: str
    charging_amount: KwhFigure
    charging_duration: Minutes
    start_time: LocalTime
    end_time: LocalTime
    peak_cost: float
    normal_cost: float
    valley_cost: float
    service_cost: float
    total_cost: float
    station: Annotated[str, msgspec.Meta(description="the code of the bill's station")] | None = None


class BillDetail(msgspec.Struct):
    """One bill with its cost and time breakdowns."""

    bill_id: str
    generated_time: LocalTime
    pile_id: str
    charging_amount: KwhFigure
    charging_duration: Minutes
    start_time: LocalTime
    end_time: LocalTime
    cost_breakdown: BillCosts
    time_breakdown: BillHours
    station: Annotated[str, msgspec.Meta(description="the code of the bill's station")] | None = None


class Pagination(msgspec.Struct):
    current_page: int
    total_pages: int
    total_count: int


class BillList(msgspec.Struct):
    bills: list[BillEntry]
    pagination: Pagination


class Notification(msgspec.Struct):
    id: int
    type: NotificationKind
    message: str
    timestamp: LocalTime
    read: bool


class NotificationRead(msgspec.Struct):
    id: int
    read: bool


# --- auth ------------------------------------------------------------------------------------------


async def register(request: web.Request) -> web.StreamResponse:
    """POST /api/auth/register/: create a driver account and log it in."""

    def account_rules(v: Mapping[str, Any]) -> Mapping[str, str]:
        return auth.registration_problems(
            v.get("username"), v.get("password"), v.get("email"), v.get("phone")
        )

    settings, address = auth_settings(request.app), client_address(request)
    settings.limiter.check_registration(address)
    body = decode(await json_object(request), RegisterBody, rules=account_rules)
    settings.limiter.record_registration(address)  # a valid attempt costs a hash: count it, taken or not
    password_hash = await off_loop(request, auth.hash_password, body.password)
    now = settings.clock()

    def create(db: Db) -> tuple[int, str]:
        user_id = users.insert_user(
            db, body.username, password_hash, email=body.email, phone=body.phone, now=now
        )
        return user_id, users.issue_token(db, user_id, now=now, ttl=settings.token_ttl)

    user_id, token = await store_of(request).write(create)
    return ok(Registered(user_id, body.username, token), "注册成功", status=201)


async def login(request: web.Request) -> web.StreamResponse:
    """POST /api/auth/login/: exchange username + password for a token (throttled on failures)."""
    body = decode(await json_object(request), LoginBody)
    user, token = await login_with_password(request, body.username, body.password)
    return ok(LoggedIn(user.id, user.username, token, user.is_staff), "登录成功")


async def logout(request: web.Request) -> web.StreamResponse:
    """POST /api/auth/logout/: revoke the token this request carried."""
    token = request[TOKEN_KEY]
    await store_of(request).write(lambda db: users.revoke_token(db, token))
    return ok(message="登出成功", with_data=False)


async def profile(request: web.Request) -> web.StreamResponse:
    """GET /api/auth/profile/: the caller's account."""
    user_id = current_user(request).id
    data = await store_of(request).read(lambda db: users.get_profile(db, user_id))
    if data is None:
        raise not_found("用户不存在")
    return ok(msgspec.convert(data, Profile))


# --- charging requests -----------------------------------------------------------------------------


def request_data(view: RequestView, zone: zoneinfo.ZoneInfo, station: str | None = None) -> RequestStatus:
    """The request status shape of a service view (of the station ``station``)."""
    data = {
        "station": station,
        "request_id": view.request_id,
        "queue_number": view.queue_number,
        "charging_mode": view.charging_mode,
        "requested_amount": rounded(view.requested_amount),
        "battery_capacity": rounded(view.battery_capacity),
        "current_status": view.current_status,
        "queue_position": view.queue_position,
        "ahead_count": view.ahead_count,
        "estimated_wait_time": rounded(view.estimated_wait_time),
        "charging_pile_id": view.charging_pile_id,
        "start_time": local_iso(view.start_time, zone),
        "current_amount": rounded(view.current_amount),
        "created_at": local_iso(view.created_at, zone),
    }
    return msgspec.convert(data, RequestStatus)


async def submit_request(request: web.Request) -> web.StreamResponse:
    """POST /api/charging/request/: join the waiting area."""

    def within_battery(v: Mapping[str, Any]) -> Mapping[str, str]:
        kwh, battery = v.get("requested_amount"), v.get("battery_capacity")
        if kwh is not None and battery is not None and kwh > battery:
            return {"requested_amount": f"must not exceed battery_capacity ({battery:g}), got {kwh:g}"}
        return {}

    body = decode(await json_object(request), SubmitBody, rules=within_battery)
    runtime, user_id = await station_of(request, body.station), current_user(request).id
    active = await store_of(request).read(lambda db: driver_queries.active_request(db, user_id))
    if active is not None and active[1] != runtime.code:
        raise DuplicateRequestError(f"you already have an active charging request at station {active[1]}")
    view = await runtime.actions.submit(
        user_id, body.charging_mode, body.requested_amount, body.battery_capacity
    )
    zone = station_zone(request, runtime.code)
    return ok(request_data(view, zone, runtime.code), "充电请求提交成功", status=201)


async def runtime_with_request(request: web.Request, user_id: int, request_id: str) -> StationRuntime:
    """The station where the caller's request ``request_id`` is: a running one that has it, else
    the one the database names (its read view when another central runs it; 503 if it runs
    nowhere), else the request's station (which answers "no such request")."""
    stations = request.app[STATIONS]
    for runtime in stations.runtimes():
        if runtime.service.users.get(request_id) == user_id:
            return runtime
    code = await store_of(request).read(lambda db: driver_queries.request_station(db, user_id, request_id))
    return await stations.find(code) if code is not None else await station_of(request)


async def runtime_of_driver(request: web.Request, user_id: int) -> StationRuntime:
    """The station where the caller's request is active (here, else the one the database names),
    else the one of their latest finished request seen here, else the request's station
    (``?station=`` or the default)."""
    code = request.query.get("station")
    runtimes = [await station_of(request)] if code is not None else request.app[STATIONS].runtimes()
    active = [
        r
        for r in runtimes
        if any(u == user_id and c in r.service.scheduler.requests for c, u in r.service.users.items())
    ]
    if active:
        return active[0]
    if code is None:
        found = await store_of(request).read(lambda db: driver_queries.active_request(db, user_id))
        if found is not None and found[1] not in request.app[STATIONS].running:
            return await request.app[STATIONS].find(found[1])  # another central runs it
        runtimes += [v for _, v in request.app[STATIONS].views.values()]
    finished = [
        (r.service.last_request[user_id].created_at, r) for r in runtimes if user_id in r.service.last_request
    ]
    if finished:
        return max(finished, key=lambda pair: pair[0])[1]
    return await station_of(request)


async def change_request(request: web.Request) -> web.StreamResponse:
    """PUT /api/charging/request/{request_id}/: change mode and/or amount while waiting."""
    data = await json_object(request)

    def something_to_change(_valid: Mapping[str, Any]) -> Mapping[str, str]:
        if all(data.get(name) is None for name in ChangeBody.__struct_fields__):
            return {"body": "give charging_mode and/or requested_amount"}
        return {}

    body = decode(data, ChangeBody, rules=something_to_change)
    user_id, request_id = current_user(request).id, request.match_info["request_id"]
    runtime = await runtime_with_request(request, user_id, request_id)
    view = await runtime.actions.change(
        user_id, request_id, mode=body.charging_mode, kwh=body.requested_amount
    )
    return ok(request_data(view, station_zone(request, runtime.code), runtime.code), "充电请求修改成功")


async def cancel_request(request: web.Request) -> web.StreamResponse:
    """DELETE /api/charging/request/{request_id}/cancel/: leave the queue, or stop and pay."""
    user_id, request_id = current_user(request).id, request.match_info["request_id"]
    runtime = await runtime_with_request(request, user_id, request_id)
    view = await runtime.actions.cancel(user_id, request_id)
    return ok(request_data(view, station_zone(request, runtime.code), runtime.code), "充电请求已取消")


async def request_status(request: web.Request) -> web.StreamResponse:
    """GET /api/charging/request/status/[?station=]: the caller's active (or most recent) request,
    in whichever station it is, or null."""
    runtime = await runtime_of_driver(request, current_user(request).id)
    view = runtime.service.current_request(current_user(request).id)
    if view is None:
        return ok(None, "当前没有充电请求")
    return ok(request_data(view, station_zone(request, runtime.code), runtime.code))


async def complete(request: web.Request) -> web.StreamResponse:
    """POST /api/charging/complete/: end the caller's charging now (in whichever station) and bill it."""
    runtime = await runtime_of_driver(request, current_user(request).id)
    done = await runtime.actions.complete(current_user(request).id)
    data = {
        "bill_id": done.bill_id,
        "total_amount": rounded(done.total_amount),
        "total_cost": rounded(done.total_cost),
        "charging_duration": rounded(done.charging_duration),
    }
    return ok(msgspec.convert(data, Completion), "充电已结束")


async def queue_status(request: web.Request) -> web.StreamResponse:
    """GET /api/charging/queue/status/."""
    status = local_values((await station_of(request)).service.queue_status(), station_zone(request))
    return ok(msgspec.convert(status, QueueStatus))


async def piles_status(request: web.Request) -> web.StreamResponse:
    """GET /api/charging/piles/status/."""
    status = local_values(await piles_status_with_registered(request), station_zone(request))
    return ok(msgspec.convert(status, PilesStatus))


async def get_parameters(request: web.Request) -> web.StreamResponse:
    """GET /api/charging/config/parameters/."""
    return ok(msgspec.convert((await station_of(request)).service.parameters(), Parameters))


# --- bills -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BillQuery:
    """A validated bill-list query; local dates become a UTC [since, until) range."""

    page: int
    limit: int
    since: datetime | None
    until: datetime | None
    station: str | None = None

    @classmethod
    def parse(cls, query: Mapping[str, str], zone: zoneinfo.ZoneInfo) -> BillQuery:
        problems: dict[str, str] = {}
        page = query_int(query, "page", 1, (1, 10**9), problems)
        limit = query_int(query, "limit", 20, BILLS_PAGE_LIMIT, problems)
        start, end = query_date(query, "start_date", problems), query_date(query, "end_date", problems)
        if start and end and start > end:
            problems["end_date"] = f"must not be before start_date ({start.isoformat()})"
        if problems:
            raise validation_error(problems)
        since = datetime.combine(start, time(), zone) if start else None
        until = datetime.combine(end + timedelta(days=1), time(), zone) if end else None
        return cls(page, limit, since, until, query.get("station") or None)

    def rows(self, db: Db, user_id: int) -> tuple[int, list[dict[str, Any]]]:
        """(total count, rows of this page) of the user's bills."""
        offset = (self.page - 1) * self.limit
        return driver_queries.bill_page(
            db,
            user_id,
            since=self.since,
            until=self.until,
            limit=self.limit,
            offset=offset,
            station=self.station,
        )


def _instant(text: str | None) -> datetime:
    at = datetime.fromisoformat(text) if text else datetime.min
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


@dataclass(frozen=True)
class BillFigures:
    """A bill's exact figures (one detail record, or the sum of a request's records)."""

    bill_id: str
    station: str | None
    generated_time: str | None
    pile_id: str
    kwh: Fraction
    seconds: int
    start_time: str | None
    end_time: str | None
    hours: Mapping[str, Fraction]
    fees: Mapping[str, Fraction]
    service_fee: Fraction
    total: Fraction

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> BillFigures:
        detail = json.loads(row["detail"]) if row["detail"] else {}
        periods = detail.get("periods", {})
        split = {name: periods.get(name, ("0", "0", "0")) for name in PERIODS}
        return cls(
            row["id"],
            row["station"],
            row["generated_time"],
            detail.get("point") or row["pile_no"] or "",
            Fraction(row["electricity"]),
            int(row["duration"] or 0),
            row["start_time"],
            row["end_time"],
            {name: Fraction(v[1]) for name, v in split.items()},
            {name: Fraction(v[2]) for name, v in split.items()},
            Fraction(row["service_fee"]),
            Fraction(row["total_amount"]),
        )

    @classmethod
    def combine(cls, bill_id: str, parts: list[BillFigures]) -> BillFigures:
        """One bill of several detail records (a fault split the session): sums, first start, last end."""
        if len(parts) == 1 and parts[0].bill_id == bill_id:
            return parts[0]
        piles = list(dict.fromkeys(p.pile_id for p in parts))
        return cls(
            bill_id,
            parts[0].station,
            max((p.generated_time for p in parts), key=_instant),
            ",".join(piles),
            sum((p.kwh for p in parts), Fraction(0)),
            sum(p.seconds for p in parts),
            min((p.start_time for p in parts), key=_instant),
            max((p.end_time for p in parts), key=_instant),
            {n: sum((p.hours[n] for p in parts), Fraction(0)) for n in PERIODS},
            {n: sum((p.fees[n] for p in parts), Fraction(0)) for n in PERIODS},
            sum((p.service_fee for p in parts), Fraction(0)),
            sum((p.total for p in parts), Fraction(0)),
        )

    def common(self, zone: zoneinfo.ZoneInfo) -> dict[str, Any]:
        """The fields of both the list entry and the detail."""
        return {
            "bill_id": self.bill_id,
            "station": self.station,
            "generated_time": local_iso(self.generated_time, zone),
            "pile_id": self.pile_id,
            "charging_amount": rounded(self.kwh),
            "charging_duration": rounded(Fraction(self.seconds, 60)),
            "start_time": local_iso(self.start_time, zone),
            "end_time": local_iso(self.end_time, zone),
        }

    def costs(self) -> dict[str, float | None]:
        """peak/normal/valley/service/total costs, rounded."""
        costs = {f"{name}_cost": rounded(self.fees[name]) for name in PERIODS}
        return {**costs, "service_cost": rounded(self.service_fee), "total_cost": rounded(self.total)}

    def entry(self, zone: zoneinfo.ZoneInfo) -> BillEntry:
        """The bill as a list entry."""
        return msgspec.convert({**self.common(zone), **self.costs()}, BillEntry)

    def detail(self, zone: zoneinfo.ZoneInfo) -> BillDetail:
        """The bill with its breakdowns."""
        hours = {f"{name}_hours": rounded(self.hours[name]) for name in PERIODS}
        data = {**self.common(zone), "cost_breakdown": self.costs(), "time_breakdown": hours}
        return msgspec.convert(data, BillDetail)


async def list_bills(request: web.Request) -> web.StreamResponse:
    """GET /api/charging/bills/[?station=]: the caller's detail records (of every station, or of the
    one named), newest first, paged; times in each bill's station's time zone."""
    zone, user_id = station_zone(request), current_user(request).id
    query = BillQuery.parse(request.query, zone)
    if query.station is not None:
        runtime_known(request, query.station)
    total, rows = await store_of(request).read(lambda db: query.rows(db, user_id))
    bills = [BillFigures.from_row(row).entry(station_zone(request, row["station"])) for row in rows]
    pages = math.ceil(total / query.limit)
    return ok(BillList(bills, Pagination(query.page, pages, total)))


async def get_bill(request: web.Request) -> web.StreamResponse:
    """GET /api/charging/bills/{bill_id}/: one detail record (or a request's bill) with breakdowns."""
    user_id, bill_id = current_user(request).id, request.match_info["bill_id"]
    rows = await store_of(request).read(lambda db: driver_queries.bill_rows(db, user_id, bill_id))
    if not rows:
        raise not_found("详单不存在")
    figures = BillFigures.combine(bill_id, [BillFigures.from_row(row) for row in rows])
    return ok(figures.detail(station_zone(request, figures.station)))


def runtime_known(request: web.Request, code: str) -> None:
    """404 unless a station has the code ``code`` (a filter of a list; the station need not run here)."""
    if code not in request.app[STATIONS].known:
        raise not_found(f"充电站 {code!r} 不存在 (no station has code {code!r})")


# --- notifications ---------------------------------------------------------------------------------


async def list_notifications(request: web.Request) -> web.StreamResponse:
    """GET /api/charging/notifications/: the caller's notifications, newest first."""
    problems: dict[str, str] = {}
    limit = query_int(request.query, "limit", 100, NOTIFICATIONS_LIMIT, problems)
    if problems:
        raise validation_error(problems)
    zone, user_id = station_zone(request), current_user(request).id
    rows = await store_of(request).read(lambda db: notifications.newest_of_user(db, user_id, limit))
    data = [
        {
            "id": r["id"],
            "type": r["kind"],
            "message": r["content"],
            "timestamp": local_iso(r["create_time"], zone),
            "read": bool(r["is_read"]),
        }
        for r in rows
    ]
    return ok(msgspec.convert(data, list[Notification]))


async def mark_notification_read(request: web.Request) -> web.StreamResponse:
    """PUT /api/charging/notifications/{notification_id}/read/: mark one of the caller's as read."""
    notification_id, user_id = path_int(request, "notification_id"), current_user(request).id
    now = auth_settings(request.app).clock()

    def mark(db: Db) -> bool:
        return notifications.mark_read_if_owner(db, user_id, notification_id, now)

    if not await store_of(request).write(mark):
        raise not_found("通知不存在")
    return ok(NotificationRead(notification_id, True), "通知已标记为已读")


# --- the route table -------------------------------------------------------------------------------


def _query(name: str, schema: Mapping[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": dict(schema),
        "description": description,
    }


_DATE = {"type": "string", "format": "date"}
_STATION_QUERY = _query(
    "station", {"type": "string", "maxLength": 64}, "the station's code (default: the default station)"
)

_NOT_FOUND = ((404, RESOURCE_NOT_FOUND),)
_STATION = ((404, RESOURCE_NOT_FOUND), (503, STATION_NOT_RUNNING))  # ?station= / body station
_CONFLICT = ((409, VALIDATION_ERROR),)
_AUTH, _CHARGING = "auth", "charging"

USER_ROUTES: tuple[RouteSpec, ...] = (
    RouteSpec(
        "POST",
        "/api/auth/register/",
        register,
        "用户注册: create an account and get a token",
        Access.PUBLIC,
        _AUTH,
        request_body=RegisterBody,
        status=201,
        response=Registered,
        errors=((429, "AUTH_INVALID"),),
        description="A taken username (case-insensitively) is VALIDATION_ERROR {username: already taken}. "
        "Registrations are slowed per client address: after a few, each waits longer (429 AUTH_INVALID "
        "with details.retry_after_s and a Retry-After header).",
    ),
    RouteSpec(
        "POST",
        "/api/auth/login/",
        login,
        "用户登录",
        Access.PUBLIC,
        _AUTH,
        request_body=LoginBody,
        response=LoggedIn,
        errors=((401, "AUTH_INVALID"), (429, "AUTH_INVALID")),
        description="Failures slow the client that makes them, never the account's owner elsewhere: after "
        "a few failures for one account from one client address, or many from one address across "
        "accounts, that address waits a delay that doubles with each further failure (up to 5 "
        "minutes); an attempt within the delay is refused with 429 AUTH_INVALID "
        "(details.retry_after_s, Retry-After header). Tokens are valid for 7 days unless configured "
        "otherwise.",
    ),
    RouteSpec("POST", "/api/auth/logout/", logout, "用户登出: revoke this token", tag=_AUTH),
    RouteSpec(
        "GET",
        "/api/auth/profile/",
        profile,
        "获取用户信息",
        tag=_AUTH,
        response=Profile,
    ),
    RouteSpec(
        "POST",
        "/api/charging/request/",
        submit_request,
        "提交充电请求",
        request_body=SubmitBody,
        response=RequestStatus,
        status=201,
        errors=(*_STATION, (409, QUEUE_FULL), (409, DUPLICATE_REQUEST)),
    ),
    RouteSpec(
        "PUT",
        "/api/charging/request/{request_id}/",
        change_request,
        "修改充电请求 (waiting area only)",
        request_body=ChangeBody,
        response=RequestStatus,
        errors=(*_STATION, *_NOT_FOUND, *_CONFLICT, (409, QUEUE_FULL)),
        description="409 VALIDATION_ERROR with details.reason CHANGE_NOT_ALLOWED once in the charging area.",
    ),
    RouteSpec(
        "DELETE",
        "/api/charging/request/{request_id}/cancel/",
        cancel_request,
        "取消充电请求",
        response=RequestStatus,
        errors=_STATION,
    ),
    RouteSpec(
        "GET",
        "/api/charging/request/status/",
        request_status,
        "查看当前充电请求状态",
        parameters=(_STATION_QUERY,),
        errors=_STATION,
        response=RequestStatus | None,
        description="data is null (with a message) when the caller has never made a request.",
    ),
    RouteSpec(
        "POST",
        "/api/charging/complete/",
        complete,
        "结束充电",
        response=Completion,
        errors=(*_STATION, *_NOT_FOUND, *_CONFLICT),
        description="409 VALIDATION_ERROR with details.reason NOT_CHARGING when the caller is not charging.",
    ),
    RouteSpec(
        "GET",
        "/api/charging/queue/status/",
        queue_status,
        "查看排队状态 (token required)",
        parameters=(_STATION_QUERY,),
        errors=_STATION,
        response=QueueStatus,
    ),
    RouteSpec(
        "GET",
        "/api/charging/piles/status/",
        piles_status,
        "查看充电桩状态 (token required)",
        parameters=(_STATION_QUERY,),
        errors=_STATION,
        response=PilesStatus,
    ),
    RouteSpec(
        "GET",
        "/api/charging/bills/",
        list_bills,
        "查看充电详单列表 (newest first)",
        errors=_STATION,
        response=BillList,
        parameters=(
            _query("page", {"type": "integer", "minimum": 1, "default": 1}, "页码"),
            _query("limit", {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}, "每页数量"),
            _query("start_date", _DATE, "first station-local date (inclusive) of generated_time"),
            _query("end_date", _DATE, "last station-local date (inclusive) of generated_time"),
            _query(
                "station", {"type": "string", "maxLength": 64}, "only the bills of this station (its code)"
            ),
        ),
    ),
    RouteSpec(
        "GET",
        "/api/charging/bills/{bill_id}/",
        get_bill,
        "查看单个详单",
        response=BillDetail,
        errors=_NOT_FOUND,
    ),
    RouteSpec(
        "GET",
        "/api/charging/notifications/",
        list_notifications,
        "获取用户通知 (newest first)",
        response=list[Notification],
        parameters=(
            _query(
                "limit",
                {"type": "integer", "minimum": 1, "maximum": 500, "default": 100},
                "at most this many (pilegate extension)",
            ),
        ),
    ),
    RouteSpec(
        "PUT",
        "/api/charging/notifications/{notification_id}/read/",
        mark_notification_read,
        "标记通知已读",
        parameters=(
            {"name": "notification_id", "in": "path", "required": True, "schema": {"type": "integer"}},
        ),
        response=NotificationRead,
        errors=_NOT_FOUND,
    ),
    RouteSpec(
        "GET",
        "/api/charging/config/parameters/",
        get_parameters,
        "获取系统参数 (token required)",
        parameters=(_STATION_QUERY,),
        errors=_STATION,
        response=Parameters,
    ),
)
