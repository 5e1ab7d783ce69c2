"""The driver-facing REST API: auth, charging requests, queue, piles, bills,
notifications and parameters, in the spec's envelope.

Handlers validate input (every bad field named in ``details``), call the account functions of
:mod:`central.adapters.users` through the store, or the charging service, and render
the spec's shapes. Numbers are rounded to 0.01 (half up) only here; datetimes are ISO 8601 in the
station's time zone. :data:`USER_ROUTES` is the route table (see :mod:`central.web.openapi`).
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
from typing import TYPE_CHECKING, Any

import sqlite_utils
from aiohttp import web

from central.adapters import users
from central.application import auth
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
from central.web.jsonbody import json_object, json_type
from central.web.middleware import (
    TOKEN_KEY,
    auth_settings,
    current_user,
    off_loop,
    service_of,
    station_zone,
    store_of,
)
from central.web.openapi import OPENAPI_SPEC, RouteSpec, register_routes
from central.web.permissions import Access
from central.web.platform.stations import piles_status_with_registered
from central.web.sessions import login_with_password

if TYPE_CHECKING:
    from central.application.views import RequestView

MODES = ("fast", "slow")
MAX_KWH = 1000.0  # a request or battery above this is a typo, not a car
MIN_KWH = 0.01  # below this a request is noise: piles meter in whole Wh
BILLS_PAGE_LIMIT = (1, 100)
NOTIFICATIONS_LIMIT = (1, 500)
PERIODS = ("peak", "normal", "valley")

# --- input -----------------------------------------------------------------------------------------


class Fields:
    """Reads the fields of a decoded JSON object, collecting one problem per bad field."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.data = data
        self.problems: dict[str, str] = {}

    def _absent(self, name: str, required: bool) -> bool:
        if self.data.get(name) is None:
            if required:
                self.problems[name] = "required"
            return True
        return False

    def text(self, name: str, *, required: bool = True, blank_is_none: bool = False) -> str | None:
        """A string field (``""`` read as absent when ``blank_is_none``)."""
        if blank_is_none and self.data.get(name) == "":
            return None
        if self._absent(name, required):
            return None
        value = self.data[name]
        if not isinstance(value, str):
            self.problems[name] = f"must be a string, got {json_type(value)}"
            return None
        return value

    def amount(self, name: str, *, required: bool = True, maximum: float = MAX_KWH) -> float | None:
        """A finite number >= MIN_KWH and <= ``maximum``."""
        if self._absent(name, required):
            return None
        value = self.data[name]
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.problems[name] = f"must be a number, got {json_type(value)}"
        elif not math.isfinite(value) or not MIN_KWH <= value <= maximum:
            self.problems[name] = f"must be a number >= {MIN_KWH:g} and <= {maximum:g}, got {value!r}"
        else:
            return float(value)
        return None

    def choice(self, name: str, options: tuple[str, ...], *, required: bool = True) -> str | None:
        """One of ``options`` exactly."""
        value = self.text(name, required=required)
        if value is not None and value not in options:
            self.problems[name] = f"must be one of {' | '.join(options)}, got {value!r}"
            return None
        return value

    def check(self) -> None:
        """Raise VALIDATION_ERROR naming every bad field, if any."""
        if self.problems:
            raise validation_error(self.problems)


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
        if len(text) != 10:
            raise ValueError
        return date.fromisoformat(text)
    except ValueError:
        problems[name] = f"must be a date YYYY-MM-DD, got {text!r}"
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


# --- auth ------------------------------------------------------------------------------------------


async def register(request: web.Request) -> web.StreamResponse:
    """POST /api/auth/register/: create a driver account and log it in."""
    fields = Fields(await json_object(request))
    username, password = fields.text("username"), fields.text("password")
    email = fields.text("email", required=False, blank_is_none=True)
    phone = fields.text("phone", required=False, blank_is_none=True)
    problems = auth.registration_problems(username, password, email, phone)
    fields.problems = {**problems, **fields.problems}
    fields.check()
    assert username is not None and password is not None
    password_hash = await off_loop(request, auth.hash_password, password)
    settings = auth_settings(request.app)
    now = settings.clock()

    def create(db: sqlite_utils.Database) -> tuple[int, str]:
        user_id = users.insert_user(db, username, password_hash, email=email, phone=phone, now=now)
        return user_id, users.issue_token(db, user_id, now=now, ttl=settings.token_ttl)

    user_id, token = await store_of(request).write(create)
    return ok({"user_id": user_id, "username": username, "token": token}, "注册成功", status=201)


async def login(request: web.Request) -> web.StreamResponse:
    """POST /api/auth/login/: exchange username + password for a token (throttled on failures)."""
    fields = Fields(await json_object(request))
    username, password = fields.text("username"), fields.text("password")
    fields.check()
    assert username is not None and password is not None
    user, token = await login_with_password(request, username, password)
    return ok(
        {"user_id": user.id, "username": user.username, "token": token, "is_staff": user.is_staff}, "登录成功"
    )


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
    return ok(data)


# --- charging requests -----------------------------------------------------------------------------


def request_data(view: RequestView, zone: zoneinfo.ZoneInfo) -> dict[str, Any]:
    """The spec's request status shape (plus request_id, which PUT and cancel need)."""
    return {
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


async def submit_request(request: web.Request) -> web.StreamResponse:
    """POST /api/charging/request/: join the waiting area."""
    fields = Fields(await json_object(request))
    mode = fields.choice("charging_mode", MODES)
    kwh = fields.amount("requested_amount")
    battery = fields.amount("battery_capacity", required=False)
    if kwh is not None and battery is not None and kwh > battery:
        fields.problems["requested_amount"] = f"must not exceed battery_capacity ({battery:g}), got {kwh:g}"
    fields.check()
    assert mode is not None and kwh is not None
    view = await service_of(request).submit(current_user(request).id, mode, kwh, battery)
    return ok(request_data(view, station_zone(request)), "充电请求提交成功", status=201)


async def change_request(request: web.Request) -> web.StreamResponse:
    """PUT /api/charging/request/{request_id}/: change mode and/or amount while waiting."""
    fields = Fields(await json_object(request))
    mode = fields.choice("charging_mode", MODES, required=False)
    kwh = fields.amount("requested_amount", required=False)
    if mode is None and kwh is None and not fields.problems:
        fields.problems["body"] = "give charging_mode and/or requested_amount"
    fields.check()
    view = await service_of(request).change(
        current_user(request).id, request.match_info["request_id"], mode=mode, kwh=kwh
    )
    return ok(request_data(view, station_zone(request)), "充电请求修改成功")


async def cancel_request(request: web.Request) -> web.StreamResponse:
    """DELETE /api/charging/request/{request_id}/cancel/: leave the queue, or stop and pay."""
    view = await service_of(request).cancel(current_user(request).id, request.match_info["request_id"])
    return ok(request_data(view, station_zone(request)), "充电请求已取消")


async def request_status(request: web.Request) -> web.StreamResponse:
    """GET /api/charging/request/status/: the caller's active (or most recent) request, or null."""
    view = service_of(request).current_request(current_user(request).id)
    if view is None:
        return ok(None, "当前没有充电请求")
    return ok(request_data(view, station_zone(request)))


async def complete(request: web.Request) -> web.StreamResponse:
    """POST /api/charging/complete/: end the caller's charging now and bill it."""
    done = await service_of(request).complete(current_user(request).id)
    data = {
        "bill_id": done.bill_id,
        "total_amount": rounded(done.total_amount),
        "total_cost": rounded(done.total_cost),
        "charging_duration": rounded(done.charging_duration),
    }
    return ok(data, "充电已结束")


async def queue_status(request: web.Request) -> web.StreamResponse:
    """GET /api/charging/queue/status/."""
    return ok(local_values(service_of(request).queue_status(), station_zone(request)))


async def piles_status(request: web.Request) -> web.StreamResponse:
    """GET /api/charging/piles/status/."""
    return ok(local_values(await piles_status_with_registered(request), station_zone(request)))


async def get_parameters(request: web.Request) -> web.StreamResponse:
    """GET /api/charging/config/parameters/."""
    return ok(service_of(request).parameters())


# --- bills -----------------------------------------------------------------------------------------

_BILL_COLUMNS = (
    "id, generated_time, pile_no, electricity, duration, start_time, end_time, "
    "service_fee, total_amount, detail"
)
_BILL_TIME = "julianday(generated_time)"
_IS_BILL = "request_id IS NOT NULL AND generated_time IS NOT NULL"  # a finished, priced segment


@dataclass(frozen=True)
class BillQuery:
    """A validated bill-list query; local dates become a UTC [since, until) range."""

    page: int
    limit: int
    since: datetime | None
    until: datetime | None

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
        return cls(page, limit, since, until)

    def where(self, user_id: int) -> tuple[str, list[Any]]:
        sql, args = f"user_id = ? AND {_IS_BILL}", list[Any]([user_id])
        for bound, op in ((self.since, ">="), (self.until, "<")):
            if bound is not None:
                sql += f" AND {_BILL_TIME} {op} julianday(?)"
                args.append(bound.astimezone(UTC).isoformat())
        return sql, args


def bill_page(db: sqlite_utils.Database, user_id: int, query: BillQuery) -> tuple[int, list[dict[str, Any]]]:
    """(total count, rows of the page), newest first."""
    where, args = query.where(user_id)
    total = db.execute(f"SELECT COUNT(*) FROM orders WHERE {where}", args).fetchone()[0]  # noqa: S608
    rows = db.query(
        f"SELECT {_BILL_COLUMNS} FROM orders WHERE {where} "  # noqa: S608 - columns and clauses are ours
        f"ORDER BY {_BILL_TIME} DESC, rowid DESC LIMIT ? OFFSET ?",
        [*args, query.limit, (query.page - 1) * query.limit],
    )
    return int(total), list(rows)


def bill_rows(db: sqlite_utils.Database, user_id: int, bill_id: str) -> list[dict[str, Any]]:
    """The user's detail record ``bill_id``, or every record of the request bill ``bill_id``
    (what POST /complete/ returns); another user's bill is absent."""
    return list(
        db.query(
            f"SELECT {_BILL_COLUMNS} FROM orders WHERE user_id = ? AND {_IS_BILL} "  # noqa: S608
            "AND (id = ? OR bill_id = ?) ORDER BY julianday(start_time), rowid",
            [user_id, bill_id, bill_id],
        )
    )


def _instant(text: str | None) -> datetime:
    at = datetime.fromisoformat(text) if text else datetime.min
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


@dataclass(frozen=True)
class BillFigures:
    """A bill's exact figures (one detail record, or the sum of a request's records)."""

    bill_id: str
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

    def detail(self, zone: zoneinfo.ZoneInfo) -> dict[str, Any]:
        """The spec's single-bill shape."""
        hours = {f"{name}_hours": rounded(self.hours[name]) for name in PERIODS}
        return {**self.common(zone), "cost_breakdown": self.costs(), "time_breakdown": hours}


async def list_bills(request: web.Request) -> web.StreamResponse:
    """GET /api/charging/bills/: the caller's detail records, newest first, paged."""
    zone, user_id = station_zone(request), current_user(request).id
    query = BillQuery.parse(request.query, zone)
    total, rows = await store_of(request).read(lambda db: bill_page(db, user_id, query))
    bills = [{**(fig := BillFigures.from_row(row)).common(zone), **fig.costs()} for row in rows]
    pages = math.ceil(total / query.limit)
    return ok(
        {
            "bills": bills,
            "pagination": {"current_page": query.page, "total_pages": pages, "total_count": total},
        }
    )


async def get_bill(request: web.Request) -> web.StreamResponse:
    """GET /api/charging/bills/{bill_id}/: one detail record (or a request's bill) with breakdowns."""
    zone, user_id, bill_id = station_zone(request), current_user(request).id, request.match_info["bill_id"]
    rows = await store_of(request).read(lambda db: bill_rows(db, user_id, bill_id))
    if not rows:
        raise not_found("详单不存在")
    figures = BillFigures.combine(bill_id, [BillFigures.from_row(row) for row in rows])
    return ok(figures.detail(zone))


# --- notifications ---------------------------------------------------------------------------------


def notification_rows(db: sqlite_utils.Database, user_id: int, limit: int) -> list[dict[str, Any]]:
    """The user's newest notifications."""
    return list(
        db.query(
            "SELECT id, kind, content, create_time, is_read FROM notifications WHERE user_id = ? "
            "ORDER BY julianday(create_time) DESC, id DESC LIMIT ?",
            [user_id, limit],
        )
    )


async def list_notifications(request: web.Request) -> web.StreamResponse:
    """GET /api/charging/notifications/: the caller's notifications, newest first."""
    problems: dict[str, str] = {}
    limit = query_int(request.query, "limit", 100, NOTIFICATIONS_LIMIT, problems)
    if problems:
        raise validation_error(problems)
    zone, user_id = station_zone(request), current_user(request).id
    rows = await store_of(request).read(lambda db: notification_rows(db, user_id, limit))
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
    return ok(data)


async def mark_notification_read(request: web.Request) -> web.StreamResponse:
    """PUT /api/charging/notifications/{notification_id}/read/: mark one of the caller's as read."""
    notification_id, user_id = path_int(request, "notification_id"), current_user(request).id
    now = auth_settings(request.app).clock().astimezone(UTC).isoformat()

    def mark(db: sqlite_utils.Database) -> int:
        return int(
            db.execute(
                "UPDATE notifications SET is_read = 1, read_time = COALESCE(read_time, ?)"
                " WHERE id = ? AND user_id = ?",
                [now, notification_id, user_id],
            ).rowcount
        )

    if not await store_of(request).write(mark):
        raise not_found("通知不存在")
    return ok({"id": notification_id, "read": True}, "通知已标记为已读")


# --- the route table -------------------------------------------------------------------------------

_NUMBER, _INT, _STR, _BOOL = {"type": "number"}, {"type": "integer"}, {"type": "string"}, {"type": "boolean"}
_DT = {"type": ["string", "null"], "format": "date-time"}
_NULL_STR = {"type": ["string", "null"]}


def _obj(properties: Mapping[str, Any], required: tuple[str, ...] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": dict(properties)}
    schema["required"] = list(properties) if required is None else list(required)
    return schema


_MODE = {"type": "string", "enum": list(MODES)}
_KWH = {"type": "number", "minimum": MIN_KWH, "maximum": MAX_KWH}
REGISTER_BODY = _obj(
    {
        "username": {"type": "string", "pattern": r"^[A-Za-z0-9_.\-@]{3,64}$"},
        "password": {
            "type": "string",
            "minLength": auth.PASSWORD_LENGTH[0],
            "maxLength": auth.PASSWORD_LENGTH[1],
        },
        "email": {"type": ["string", "null"], "format": "email"},
        "phone": _NULL_STR,
    },
    ("username", "password"),
)
LOGIN_BODY = _obj({"username": _STR, "password": _STR})
REQUEST_VIEW = _obj(
    {
        "request_id": _STR,
        "queue_number": _STR,
        "charging_mode": _MODE,
        "requested_amount": _NUMBER,
        "battery_capacity": {"type": ["number", "null"]},
        "current_status": {"type": "string", "enum": ["waiting", "charging", "completed", "cancelled"]},
        "queue_position": _INT,
        "ahead_count": _INT,
        "estimated_wait_time": {**_NUMBER, "description": "minutes; -1 when no working pile of the mode"},
        "charging_pile_id": _NULL_STR,
        "start_time": _DT,
        "current_amount": {**_NUMBER, "description": "kWh so far"},
        "created_at": _DT,
    }
)
_QUEUE_LIST = _obj(
    {
        "waiting_count": _INT,
        "queue_list": {
            "type": "array",
            "items": _obj({"queue_number": _STR, "estimated_wait_time": _NUMBER}),
        },
    }
)
_PILE = _obj(
    {
        "pile_id": _STR,
        "pile_type": {"type": "string", "enum": list(MODES)},
        "status": {"type": "string", "enum": ["normal", "fault", "offline"]},
        "is_working": _BOOL,
        "current_user": _NULL_STR,
        "queue": {"type": "array"},
    }
)
PARAMETERS = _obj(
    {
        "FastChargingPileNum": _INT,
        "TrickleChargingPileNum": _INT,
        "WaitingAreaSize": _INT,
        "ChargingQueueLen": _INT,
        "pricing": _obj({k: _NUMBER for k in ("peak_rate", "normal_rate", "valley_rate", "service_rate")}),
        "time_periods": _obj(
            {
                p: {"type": "array", "items": {"type": "string", "pattern": r"^\d\d:\d\d-\d\d:\d\d$"}}
                for p in PERIODS
            }
        ),
        "fault_strategy": {"type": "string", "enum": ["priority", "time_order"]},
        "dispatch_policy": {"type": "string", "enum": ["best_or_wait", "best_free"]},
    },
    (
        "FastChargingPileNum",
        "TrickleChargingPileNum",
        "WaitingAreaSize",
        "ChargingQueueLen",
        "pricing",
        "time_periods",
    ),
)
_BILL_BASE = {
    "bill_id": _STR,
    "generated_time": _DT,
    "pile_id": _STR,
    "charging_amount": {**_NUMBER, "description": "kWh"},
    "charging_duration": {**_NUMBER, "description": "minutes"},
    "start_time": _DT,
    "end_time": _DT,
}
_COSTS = {f"{n}_cost": _NUMBER for n in (*PERIODS, "service", "total")}
BILL_DETAIL = _obj(
    {
        **_BILL_BASE,
        "cost_breakdown": _obj(_COSTS),
        "time_breakdown": _obj({f"{n}_hours": _NUMBER for n in PERIODS}),
    }
)
BILL_LIST = _obj(
    {
        "bills": {"type": "array", "items": _obj({**_BILL_BASE, **_COSTS})},
        "pagination": _obj({"current_page": _INT, "total_pages": _INT, "total_count": _INT}),
    }
)
NOTIFICATION = _obj(
    {
        "id": _INT,
        "type": {
            "type": "string",
            # the four of the spec, and the kinds of notices written through the operator API
            "enum": [
                "queue_update",
                "charging_start",
                "charging_complete",
                "pile_fault",
                "system",
                "order",
                "activity",
                "recharge",
            ],
        },
        "message": _STR,
        "timestamp": _DT,
        "read": _BOOL,
    }
)


def _query(name: str, schema: Mapping[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": dict(schema),
        "description": description,
    }


_DATE = {"type": "string", "format": "date"}
_NOT_FOUND = ((404, RESOURCE_NOT_FOUND),)
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
        request_body=REGISTER_BODY,
        status=201,
        response=_obj({"user_id": _INT, "username": _STR, "token": _STR}),
        description="A taken username (case-insensitively) is VALIDATION_ERROR {username: already taken}.",
    ),
    RouteSpec(
        "POST",
        "/api/auth/login/",
        login,
        "用户登录",
        Access.PUBLIC,
        _AUTH,
        request_body=LOGIN_BODY,
        response=_obj({"user_id": _INT, "username": _STR, "token": _STR, "is_staff": _BOOL}),
        errors=((401, "AUTH_INVALID"), (429, "AUTH_INVALID")),
        description="After 5 failures in 5 minutes per account, or 20 per client address, logins are "
        "refused with 429 AUTH_INVALID (details.retry_after_s, Retry-After header) until "
        "the window ends. Tokens are valid for 7 days unless configured otherwise.",
    ),
    RouteSpec("POST", "/api/auth/logout/", logout, "用户登出: revoke this token", tag=_AUTH),
    RouteSpec(
        "GET",
        "/api/auth/profile/",
        profile,
        "获取用户信息",
        tag=_AUTH,
        response=_obj(
            {"id": _INT, "username": _STR, "email": _NULL_STR, "phone": _NULL_STR, "is_staff": _BOOL}
        ),
    ),
    RouteSpec(
        "POST",
        "/api/charging/request/",
        submit_request,
        "提交充电请求",
        request_body=_obj(
            {
                "charging_mode": _MODE,
                "requested_amount": _KWH,
                "battery_capacity": {**_KWH, "type": ["number", "null"]},
            },
            ("charging_mode", "requested_amount"),
        ),
        response=REQUEST_VIEW,
        status=201,
        errors=((409, QUEUE_FULL), (409, DUPLICATE_REQUEST)),
    ),
    RouteSpec(
        "PUT",
        "/api/charging/request/{request_id}/",
        change_request,
        "修改充电请求 (waiting area only)",
        request_body=_obj({"charging_mode": _MODE, "requested_amount": _KWH}, ()),
        response=REQUEST_VIEW,
        errors=(*_NOT_FOUND, *_CONFLICT, (409, QUEUE_FULL)),
        description="409 VALIDATION_ERROR with details.reason CHANGE_NOT_ALLOWED once in the charging area.",
    ),
    RouteSpec(
        "DELETE",
        "/api/charging/request/{request_id}/cancel/",
        cancel_request,
        "取消充电请求",
        response=REQUEST_VIEW,
        errors=_NOT_FOUND,
    ),
    RouteSpec(
        "GET",
        "/api/charging/request/status/",
        request_status,
        "查看当前充电请求状态",
        response={**REQUEST_VIEW, "type": ["object", "null"]},
        description="data is null (with a message) when the caller has never made a request.",
    ),
    RouteSpec(
        "POST",
        "/api/charging/complete/",
        complete,
        "结束充电",
        response=_obj(
            {
                "bill_id": _STR,
                "total_amount": {**_NUMBER, "description": "kWh"},
                "total_cost": _NUMBER,
                "charging_duration": {**_NUMBER, "description": "minutes"},
            }
        ),
        errors=(*_NOT_FOUND, *_CONFLICT),
        description="409 VALIDATION_ERROR with details.reason NOT_CHARGING when the caller is not charging.",
    ),
    RouteSpec(
        "GET",
        "/api/charging/queue/status/",
        queue_status,
        "查看排队状态 (token required)",
        response=_obj(
            {
                "fast_charging": _QUEUE_LIST,
                "slow_charging": _QUEUE_LIST,
                "waiting_area_capacity": _obj({"current": _INT, "max": _INT}),
            }
        ),
    ),
    RouteSpec(
        "GET",
        "/api/charging/piles/status/",
        piles_status,
        "查看充电桩状态 (token required)",
        response=_obj(
            {"fast_piles": {"type": "array", "items": _PILE}, "slow_piles": {"type": "array", "items": _PILE}}
        ),
    ),
    RouteSpec(
        "GET",
        "/api/charging/bills/",
        list_bills,
        "查看充电详单列表 (newest first)",
        response=BILL_LIST,
        parameters=(
            _query("page", {"type": "integer", "minimum": 1, "default": 1}, "页码"),
            _query("limit", {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}, "每页数量"),
            _query("start_date", _DATE, "first station-local date (inclusive) of generated_time"),
            _query("end_date", _DATE, "last station-local date (inclusive) of generated_time"),
        ),
    ),
    RouteSpec(
        "GET",
        "/api/charging/bills/{bill_id}/",
        get_bill,
        "查看单个详单",
        response=BILL_DETAIL,
        errors=_NOT_FOUND,
    ),
    RouteSpec(
        "GET",
        "/api/charging/notifications/",
        list_notifications,
        "获取用户通知 (newest first)",
        response={"type": "array", "items": NOTIFICATION},
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
        parameters=({"name": "notification_id", "in": "path", "required": True, "schema": _INT},),
        response=_obj({"id": _INT, "read": _BOOL}),
        errors=_NOT_FOUND,
    ),
    RouteSpec(
        "GET",
        "/api/charging/config/parameters/",
        get_parameters,
        "获取系统参数 (token required)",
        response=PARAMETERS,
    ),
)


def add_user_api(app: web.Application) -> None:
    """Register the user API, its operator endpoints, /api/openapi.json and the middlewares.

    Call before the app starts. See :mod:`central.web.middleware` for the app keys handlers read.
    """
    from central.web.operator_api import OPERATOR_ROUTES  # it builds on this module

    register_routes(app, [*USER_ROUTES, *OPERATOR_ROUTES, OPENAPI_SPEC])
