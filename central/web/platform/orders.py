"""The operator platform API's orders: every charging session of both APIs as an order, operator
orders that start real charges, payment, and statistics.

Driver-API sessions are orders too (rows with a request id); their lifecycle stays with the
charging service (complete / cancel of a charging one goes through it), and they are paid like any
other. Operator orders are :mod:`central.application.orders`. Access: level >= 3 for everything,
except that a user may read (byUser of themself, paged with userId = themself, get), create,
complete, cancel and pay their own orders (403 otherwise). A user below level 3 creating their own
order gets a driver's order (billed by the drivers' mode 1, capped by their balance) and pays by
balance only: a wallet payment (微信, 支付宝) is confirmed by staff or by the provider's signed
callback (:mod:`central.application.payments`), the one route without a token. ``startDate`` /
``endDate`` are station-local dates, inclusive, on the order's start time. Money is rounded half
up to 0.01 and kWh to 0.001 for display (exact in the database); datetimes are ISO 8601 UTC with
``Z``. :data:`ROUTES` is the route table (see :mod:`central.web.openapi`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from fractions import Fraction
from typing import Annotated, Any, TypeVar

import msgspec
import structlog
from aiohttp import web

from central.adapters import order_queries
from central.adapters.database import Db
from central.adapters.order_queries import OrderQuery
from central.adapters.orders import Payment, pay_by_callback, pay_order
from central.adapters.query import require_row, require_user
from central.application.payments import CallbackRejected, PaymentSettings, verify_callback
from central.application.ports import OrderTarget
from central.domain.limits import MAX_KWH, MIN_KWH
from central.domain.orders import PROVIDERS, OrderStatus, PaymentMethod
from central.domain.pricing import DRIVER_BILLING_MODE, BillingMode
from central.domain.units import display_number, exact
from central.web.errors import (
    AUTH_INVALID,
    PLATFORM_STYLE,
    ApiError,
    conflict,
    json_response,
)
from central.web.keys import PAYMENTS, STATIONS
from central.web.middleware import current_user, station_of, station_zone
from central.web.openapi import RouteSpec
from central.web.permissions import (
    Access,
    check_payment_confirmation,
    forbidden,
    may_act_for,
    require_self_or_staff,
)
from central.web.platform.common import (
    BILLING_MODE,
    CONFLICT_409,
    DATETIME,
    DENIED_403,
    ID_SCHEMA,
    INT,
    KEY_RESULT,
    KEY_SCHEMA,
    MAX_KEY,
    MISSING_404,
    NSTR,
    NUM,
    ORDER_STATUS,
    PAGE_PARAMETERS,
    PAYMENT_METHOD,
    PAYMENT_STATUS,
    STR,
    Id,
    Key,
    created,
    described,
    int_codes_schema,
    invalid,
    key_path,
    no_content,
    not_found,
    obj_schema,
    page_object,
    page_offset,
    page_schema,
    paging,
    path_key,
    path_parameter,
    query_code,
    query_key,
    query_keyword,
    read,
    read_shape,
    utc_z,
    write,
)
from central.web.shapes import calendar_day, codes
from central.web.station_runtime import acting

log = structlog.get_logger(__name__)
T = TypeVar("T")

MAX_DURATION_S = 30 * 24 * 3600
TRANSACTION_ID_LEN = (1, 64)

# --- reading orders --------------------------------------------------------------------------------


def duration_text(seconds: int) -> str:
    """``2小时0分钟0秒``."""
    hours, rest = divmod(max(0, seconds), 3600)
    return f"{hours}小时{rest // 60}分钟{rest % 60}秒"


def money(text: str | None) -> float:
    return display_number(Fraction(text or "0"), 2)


def kwh(value: Fraction) -> float:
    return display_number(value, 3)


@dataclass(frozen=True)
class LiveFigures:
    """What a charging order shows before it is billed: kWh so far (if followed) and elapsed time
    (by its station's clock, when that station runs here)."""

    now: datetime
    delivered: Mapping[str, Fraction]
    station_now: Mapping[str, datetime] = field(default_factory=dict)

    def electricity(self, row: Mapping[str, Any]) -> Fraction:
        if row["status"] == OrderStatus.CHARGING and row["id"] in self.delivered:
            return self.delivered[row["id"]]
        return Fraction(row["electricity"] or "0")

    def seconds(self, row: Mapping[str, Any]) -> int:
        if row["status"] == OrderStatus.CHARGING and row["start_time"]:
            started = datetime.fromisoformat(row["start_time"])
            now = self.station_now.get(row.get("station") or "", self.now)
            return max(0, int((now - started).total_seconds()))
        return int(row["duration"] or 0)


def order_json(row: Mapping[str, Any], live: LiveFigures) -> dict[str, Any]:
    """The spec's order shape (plus createTime)."""
    seconds = live.seconds(row)
    return {
        "id": row["id"],
        "station": row.get("station"),
        "orderNo": row["order_no"],
        "userId": row["user_id"],
        "userNickname": row["user_nickname"],
        "pileId": row["pile_id"],
        "pileNo": row["pile_no"],
        "portId": row["port_id"],
        "portNo": row["port_no"],
        "status": row["status"],
        "statusDescription": described(row["status"], ORDER_STATUS),
        "billingMode": row["billing_mode"],
        "billingModeDescription": described(row["billing_mode"], BILLING_MODE),
        "startTime": utc_z(row["start_time"]),
        "endTime": utc_z(row["end_time"]),
        "duration": seconds,
        "durationFormatted": duration_text(seconds),
        "electricity": kwh(live.electricity(row)),
        "amount": money(row["amount"]),
        "serviceFee": money(row["service_fee"]),
        "totalAmount": money(row["total_amount"]),
        "paymentStatus": row["payment_status"],
        "paymentStatusDescription": described(row["payment_status"], PAYMENT_STATUS),
        "paymentTime": utc_z(row["payment_time"]),
        "paymentMethod": row["payment_method"],
        "paymentMethodDescription": described(row["payment_method"], PAYMENT_METHOD),
        "transactionId": row["transaction_id"],
        "createTime": utc_z(row["create_time"]),
        "updateTime": utc_z(row["update_time"]),
    }


async def live_figures(request: web.Request) -> LiveFigures:
    """Progress of charging orders this process follows (operator orders and driver sessions of
    every station running here)."""
    delivered: dict[str, Fraction] = {}
    station_now: dict[str, datetime] = {}
    for runtime in request.app[STATIONS].runtimes():
        service = runtime.service
        station_now[runtime.code] = service.now()
        delivered.update({s.order_id: Fraction(s.delivered_wh, 1000) for s in service.sessions.values()})
        orders = runtime.orders.sessions.items()
        delivered.update({oid: Fraction(s.meter.delivered_wh, 1000) for oid, s in orders})
    return LiveFigures(station_now_or_wall(request), delivered, station_now)


def station_now_or_wall(request: web.Request, code: str | None = None) -> datetime:
    """Now by the clock of station ``code`` (else the default station) when it runs here, else the
    wall clock (UTC)."""
    stations = request.app[STATIONS]
    runtime = stations.running.get(code or stations.default) or stations.running.get(stations.default)
    return runtime.service.now() if runtime is not None else datetime.now(UTC)


def query_station(request: web.Request) -> str | None:
    """The ``?station=`` filter of a list: a known station's code (404 otherwise), or None."""
    code = request.query.get("station")
    if not code:
        return None
    if code not in request.app[STATIONS].known:
        raise not_found("充电站 (station)", code)
    return code


async def order_list(request: web.Request, fn: Callable[[Db], list[Any]]) -> web.Response:
    rows, live = await read(request, fn), await live_figures(request)
    return json_response([order_json(row, live) for row in rows])


def digits_int(name: str, text: str) -> int:
    """An id written as 1-18 digits (400 naming ``name`` otherwise)."""
    if not text.isdigit() or len(text) > 18:
        raise invalid(name, f"must be a positive integer, got {text[:40]!r}")
    return int(text)


def query_int(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name, "").strip()
    return digits_int(name, raw) if raw else None


def query_day(request: web.Request, name: str) -> date | None:
    raw = request.query.get(name, "").strip()
    if not raw:
        return None
    try:
        return calendar_day(raw)
    except ValueError as exc:
        raise invalid(name, str(exc)) from None


def date_range(request: web.Request) -> tuple[str | None, str | None]:
    """startDate..endDate (station-local, inclusive) as stored UTC bounds [since, until)."""
    start, end = query_day(request, "startDate"), query_day(request, "endDate")
    if start and end and end < start:
        raise invalid("endDate", f"must not be before startDate ({start.isoformat()})")
    zone = station_zone(request)

    def bound(day: date | None) -> str | None:
        return datetime.combine(day, time(), zone).astimezone(UTC).isoformat() if day else None

    return bound(start), bound(end + timedelta(days=1) if end else None)


# --- handlers: reading -----------------------------------------------------------------------------


async def list_orders(request: web.Request) -> web.StreamResponse:
    """GET /api/Orders[?station=CODE]: every order (of that station), newest first (level >= 3)."""
    station = query_station(request)
    return await order_list(request, lambda db: order_queries.all_orders(db, station))


async def paged_orders(request: web.Request) -> web.StreamResponse:
    """GET /api/Orders/paged."""
    page, size = paging(request)
    since, until = date_range(request)
    query = OrderQuery(
        user_id=query_int(request, "userId"),
        pile_id=query_key(request, "pileId"),
        status=query_code(request, "status", ORDER_STATUS),
        since=since,
        until=until,
        keyword=query_keyword(request),
        station=query_station(request),
    )
    actor = current_user(request)
    if not may_act_for(actor, query.user_id):
        raise forbidden(f"权限不足: 查看他人订单需要管理员权限；请使用 userId={actor.id}")
    offset = page_offset(page, size)
    total, rows = await read(request, lambda db: order_queries.order_page(db, query, size, offset))
    live = await live_figures(request)
    return json_response(page_object(page, size, total, [order_json(r, live) for r in rows]))


async def orders_by_user(request: web.Request) -> web.StreamResponse:
    """GET /api/Orders/byUser/{userId}."""
    user_id = digits_int("userId", request.match_info["userId"])
    require_self_or_staff(current_user(request), user_id)

    def rows(db: Db) -> list[Any]:
        require_user(db, user_id)
        return order_queries.orders_of_user(db, user_id)

    return await order_list(request, rows)


async def orders_by_pile(request: web.Request) -> web.StreamResponse:
    """GET /api/Orders/byPile/{pileId} (level >= 3)."""
    pile_id = path_key(request, "pileId", "充电桩")

    def rows(db: Db) -> list[Any]:
        require_row(db, "piles", pile_id, "充电桩")
        return order_queries.orders_of_pile(db, pile_id)

    return await order_list(request, rows)


async def owned_order(request: web.Request) -> dict[str, Any]:
    """The order of the path's ``id``: 404 if absent, 403 if another user's and not staff."""
    order_id = path_key(request, "id", "订单")
    row = await read(request, lambda db: order_queries.order_by_id(db, order_id))
    if row is None:
        raise not_found("订单", order_id)
    actor = current_user(request)
    if not may_act_for(actor, row["user_id"]):
        raise forbidden(f"权限不足: 订单 {order_id} 属于其他用户 (需要 permission level >= 3)")
    return dict(row)


async def get_order(request: web.Request) -> web.StreamResponse:
    """GET /api/Orders/{id}."""
    row = await owned_order(request)
    return json_response(order_json(row, await live_figures(request)))


async def statistics(request: web.Request) -> web.StreamResponse:
    """GET /api/Orders/statistics?startDate&endDate (level >= 3)."""
    since, until = date_range(request)
    station = query_station(request)
    figures = await read(request, lambda db: order_queries.order_statistics(db, since, until, station))
    return json_response(
        {
            "totalOrders": figures.total,
            "totalElectricity": round(figures.kwh, 3),
            "totalDuration": int(figures.seconds),
            "totalAmount": round(figures.amount, 2),
            "pendingPaymentOrders": figures.pending,
            "chargingOrders": figures.charging,
            "completedOrders": figures.completed,
            "cancelledOrders": figures.cancelled,
            "abnormalOrders": figures.abnormal,
        }
    )


# --- handlers: changing ------------------------------------------------------------------------------


def order_target(db: Db, user_id: int, pile_id: str, port_id: str, mode: int) -> tuple[str, OrderTarget]:
    """The station (code) and validated target of a new order (404 for ids that do not exist, 409
    for a busy port)."""
    require_row(db, "users", user_id, "用户 (userId)")
    pile = order_queries.pile_record(db, pile_id)
    if pile is None:
        raise not_found("充电桩 (pileId)", pile_id)
    port = order_queries.port_record(db, port_id)
    if port is None:
        raise not_found("充电端口 (portId)", port_id)
    name = f"{pile.pile_no}-{port.port_no}"
    if port.pile_id != pile_id:
        raise invalid("portId", f"port {port_id} is not a port of pile {pile_id}")
    if port.disabled:
        raise conflict(f"端口 {name} 已停用")
    if port.charging_order is not None:
        raise conflict(f"端口 {name} 正在充电 (订单 {port.charging_order})")
    if port.status == 3:
        raise conflict(f"端口 {name} 故障")
    if not str(port.port_no).isdigit():
        raise conflict(f"端口编号 {port.port_no!r} 不是数字，无法下发充电命令")
    return pile.station, OrderTarget(
        user_id, pile_id, pile.pile_no, port_id, int(port.port_no), exact(pile.power_rate), mode
    )


class OrderCreate(msgspec.Struct, rename="camel"):
    user_id: Id
    pile_id: Key
    port_id: Key
    billing_mode: (
        Annotated[int, codes(BILLING_MODE), msgspec.Meta(extra_json_schema={"default": 1})] | None
    ) = None
    requested_amount: (
        Annotated[
            float,
            msgspec.Meta(
                ge=MIN_KWH,
                le=MAX_KWH,
                description="kWh to deliver at most: sent to the pile as its energy target (a driver's "
                "own order is capped by their balance in any case)",
            ),
        ]
        | None
    ) = None


class OrderStatusChange(msgspec.Struct, rename="camel"):
    status: Annotated[int, codes(ORDER_STATUS)]


class OrderPayment(msgspec.Struct, rename="camel"):
    payment_method: Annotated[int, codes(PAYMENT_METHOD)]
    transaction_id: (
        Annotated[
            str,
            msgspec.Meta(
                min_length=1,
                max_length=TRANSACTION_ID_LEN[1],
                description="the provider's id, required for 1 微信 and 2 支付宝 (staff only); "
                "pays one order only",
            ),
        ]
        | None
    ) = None


async def create_order(request: web.Request) -> web.StreamResponse:
    """POST /api/Orders: an order that starts a real charge on the port (a driver's own order below
    level 3: billed by the drivers' mode, capped by the balance)."""
    body = await read_shape(request, OrderCreate)
    user_id, pile_id, port_id = body.user_id, body.pile_id, body.port_id
    actor = current_user(request)
    require_self_or_staff(actor, user_id)
    wh = math.floor(exact(body.requested_amount) * 1000) if body.requested_amount is not None else None
    if actor.is_staff:
        billing = BillingMode.ENERGY_AND_ENERGY_FEE if body.billing_mode is None else body.billing_mode
    elif body.billing_mode not in (None, DRIVER_BILLING_MODE):
        raise invalid(
            "billingMode", f"a driver's own order is billed by the station's mode {DRIVER_BILLING_MODE}"
        )
    else:
        billing = DRIVER_BILLING_MODE
    station, target = await read(request, lambda db: order_target(db, user_id, pile_id, port_id, billing))
    actions = (await station_of(request, station)).actions
    order_id = await actions.create_order(target, staff=actor.is_staff, energy_wh=wh)
    return created(order_id)


def query_number(request: web.Request, name: str, maximum: float) -> float | None:
    raw = request.query.get(name, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise invalid(name, f"must be a number, got {raw[:40]!r}") from None
    if not math.isfinite(value) or not 0 <= value <= maximum:
        raise invalid(name, f"must be a number from 0 to {maximum:g}, got {raw[:40]!r}")
    return value


async def complete_order(request: web.Request) -> web.StreamResponse:
    """POST /api/Orders/{id}/complete?electricity&duration."""
    electricity = query_number(request, "electricity", MAX_KWH)
    duration = query_number(request, "duration", MAX_DURATION_S)
    row = await owned_order(request)
    actions = (await station_of(request, row["station"])).actions
    if row["request_id"] is not None and row["status"] == OrderStatus.CHARGING:
        await actions.complete(row["user_id"])  # the service ends it
        return no_content()
    kwh_given = exact(electricity) if electricity is not None else None
    seconds = int(duration) if duration is not None else None
    await actions.complete_order(row["id"], electricity_kwh=kwh_given, duration_s=seconds)
    return no_content()


async def cancel_order(request: web.Request) -> web.StreamResponse:
    """POST /api/Orders/{id}/cancel."""
    row = await owned_order(request)
    actions = (await station_of(request, row["station"])).actions
    if row["request_id"] is not None and row["status"] == OrderStatus.CHARGING:
        await actions.cancel(row["user_id"], row["request_id"])
        return no_content()
    await actions.cancel_order(row["id"])
    return no_content()


async def set_order_status(request: web.Request) -> web.StreamResponse:
    """PUT /api/Orders/{id}/status (level >= 3)."""
    order_id = path_key(request, "id", "订单")
    status = (await read_shape(request, OrderStatusChange)).status
    row = await owned_order(request)
    if row["request_id"] is not None and row["status"] == OrderStatus.CHARGING:
        raise conflict("司机端正在充电的会话由充电服务管理；请用 /complete 或 /cancel 结束")
    await (await station_of(request, row["station"])).actions.set_order_status(order_id, status)
    return no_content()


async def pay(request: web.Request) -> web.StreamResponse:
    """POST /api/Orders/{id}/pay."""

    def transaction_for_wallets(valid: Mapping[str, Any]) -> Mapping[str, str]:
        wallet = valid.get("payment_method") in (PaymentMethod.WECHAT, PaymentMethod.ALIPAY)
        return {"transactionId": "is required"} if wallet and valid.get("transaction_id") is None else {}

    body = await read_shape(request, OrderPayment, transaction_for_wallets)
    method, actor = body.payment_method, current_user(request)
    row = await owned_order(request)
    check_payment_confirmation(actor, method)
    confirmed_by = actor.id if method != PaymentMethod.BALANCE else None
    now = station_now_or_wall(request, row["station"])
    payment = Payment(row["id"], method, body.transaction_id, now, confirmed_by)
    paid = await acting(write(request, lambda db: pay_order(db, payment)))
    log.info("order paid", order=row["id"], method=method, cents=paid, by=actor.id)
    return no_content()


class ProviderCallback(msgspec.Struct, rename="camel"):
    order_id: Key
    transaction_id: Annotated[str, msgspec.Meta(min_length=1, max_length=TRANSACTION_ID_LEN[1])]
    amount_cents: Annotated[int, msgspec.Meta(ge=0, description="what the provider collected, in cents")]


async def payment_callback(request: web.Request) -> web.StreamResponse:
    """POST /api/Orders/payments/callback: a payment provider confirms a wallet payment."""
    raw = await request.read()
    settings = request.app.get(PAYMENTS) or PaymentSettings()
    headers = request.headers
    try:
        method = verify_callback(
            settings,
            headers.get("X-Payment-Provider", ""),
            headers.get("X-Payment-Timestamp", ""),
            headers.get("X-Payment-Signature", ""),
            raw,
        )
    except CallbackRejected as exc:
        log.warning("payment callback refused", reason=str(exc), remote=request.remote)
        raise ApiError(401, AUTH_INVALID, f"支付回调未通过验证: {exc}") from None
    body = await read_shape(request, ProviderCallback)
    payment = Payment(body.order_id, method, body.transaction_id, station_now_or_wall(request))
    paid = await acting(write(request, lambda db: pay_by_callback(db, payment, body.amount_cents)))
    log.info(
        "order paid by provider" if paid else "payment callback replayed",
        order=body.order_id,
        method=method,
        transaction=body.transaction_id,
    )
    return json_response({"orderId": body.order_id, "paid": True, "replayed": not paid})


# --- the route table -------------------------------------------------------------------------------

ORDER = obj_schema(
    {
        "id": STR,
        "station": {**NSTR, "description": "the code of the order's station (its MQTT {station})"},
        "orderNo": STR,
        "userId": INT,
        "userNickname": {**NSTR, "description": "the user's nickname, else their openId"},
        "pileId": NSTR,
        "pileNo": NSTR,
        "portId": NSTR,
        "portNo": NSTR,
        "status": int_codes_schema(ORDER_STATUS),
        "statusDescription": STR,
        "billingMode": int_codes_schema(BILLING_MODE),
        "billingModeDescription": STR,
        "startTime": DATETIME,
        "endTime": DATETIME,
        "duration": {**INT, "description": "seconds (so far, while charging)"},
        "durationFormatted": STR,
        "electricity": {**NUM, "description": "kWh (so far, while charging), 3 decimals"},
        "amount": {**NUM, "description": "charging (or time) fee, 2 decimals"},
        "serviceFee": NUM,
        "totalAmount": NUM,
        "paymentStatus": int_codes_schema(PAYMENT_STATUS),
        "paymentStatusDescription": STR,
        "paymentTime": DATETIME,
        "paymentMethod": {
            **int_codes_schema(PAYMENT_METHOD),
            "type": ["integer", "null"],
            "enum": [*PAYMENT_METHOD, None],
        },
        "paymentMethodDescription": NSTR,
        "transactionId": NSTR,
        "createTime": DATETIME,
        "updateTime": DATETIME,
    }
)
STATISTICS = obj_schema(
    {
        "totalOrders": INT,
        "totalElectricity": {**NUM, "description": "kWh"},
        "totalDuration": {**INT, "description": "seconds"},
        "totalAmount": NUM,
        "pendingPaymentOrders": INT,
        "chargingOrders": INT,
        "completedOrders": INT,
        "cancelledOrders": INT,
        "abnormalOrders": INT,
    }
)
_STAFF = "Needs permission level >= 3 (管理员); otherwise 403."
_OWN = "Your own order, or any with permission level >= 3 (管理员); otherwise 403."
_DATES = (
    {"name": "startDate", "in": "query", "schema": {"type": "string", "format": "date"},
     "description": "first station-local date (inclusive) of the orders' start time"},
    {"name": "endDate", "in": "query", "schema": {"type": "string", "format": "date"},
     "description": "last station-local date (inclusive) of the orders' start time"},
)  # fmt: skip
_ID = (key_path("id", "订单ID"),)
_STATION = {
    "name": "station",
    "in": "query",
    "schema": {"type": "string", "maxLength": 64},
    "description": "only the orders of this station (its code); an unknown code is 404",
}
_CALLBACK_HEADERS = (
    {"name": "X-Payment-Provider", "in": "header", "required": True,
     "schema": {"type": "string", "enum": list(PROVIDERS)}, "description": "who calls back"},
    {"name": "X-Payment-Timestamp", "in": "header", "required": True,
     "schema": {"type": "string", "pattern": "^[0-9]{1,12}$"}, "description": "Unix seconds of the call"},
    {"name": "X-Payment-Signature", "in": "header", "required": True,
     "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
     "description": "hex HMAC-SHA256 of timestamp + '.' + raw body, keyed by the provider's secret"},
)  # fmt: skip
CALLBACK_RESULT = obj_schema(
    {
        "orderId": STR,
        "paid": {"type": "boolean"},
        "replayed": {"type": "boolean", "description": "already paid by this transaction"},
    }
)
_BILLING = (
    "Billing (exact, rounded for display only): billingMode 1 (电量+电量服务费): amount = Σ kWh charged in "
    "each time-of-use period × that period's rate (peak/normal/valley, station time, as driver bills), "
    "serviceFee = kWh × service_rate. billingMode 2 (电量+时间服务费): amount as mode 1, serviceFee = hours "
    "× service_rate × the pile's powerRate (kW). billingMode 0 (按时间): amount = hours × normal_rate × the "
    "pile's powerRate (kW), serviceFee = 0. totalAmount = amount + serviceFee. kWh is the port's meter "
    "difference from the idle reading before the start to the stopped reading; hours run from the order's "
    "start to the stopped reading."
)


def _route(method: str, path: str, handler: Any, summary: str, access: Access, **options: Any) -> RouteSpec:
    errors = tuple(options.pop("errors", ()))
    if access is Access.USER:
        errors = (DENIED_403, *errors)
    return RouteSpec(
        method, path, handler, summary, access, "Orders", PLATFORM_STYLE, errors=errors, **options
    )


def _routes() -> list[RouteSpec]:
    s, u = Access.STAFF, Access.USER
    listing = {"type": "array", "items": ORDER}
    return [
        _route(
            "GET",
            "/api/Orders",
            list_orders,
            "获取所有订单",
            s,
            parameters=(_STATION,),
            response=listing,
            errors=((404, "RESOURCE_NOT_FOUND"),),
            description=f"{_STAFF} Newest start first; for large tables use /api/Orders/paged.",
        ),
        _route(
            "GET",
            "/api/Orders/paged",
            paged_orders,
            "获取订单分页列表",
            u,
            parameters=(
                *PAGE_PARAMETERS,
                {"name": "userId", "in": "query", "schema": ID_SCHEMA},
                {"name": "pileId", "in": "query", "schema": {"type": "string", "maxLength": MAX_KEY}},
                {"name": "status", "in": "query", "schema": int_codes_schema(ORDER_STATUS)},
                *_DATES,
                _STATION,
            ),
            response=page_schema(ORDER),
            errors=((400, "VALIDATION_ERROR"), (404, "RESOURCE_NOT_FOUND")),
            description="Level >= 3, or userId equal to yourself (403 otherwise). Newest start first. "
            "keyword: orderNo starting with it, pileNo equal to it (or containing it, for "
            "piles on record), or the user's nickname/openId containing it. pageSize above "
            "100 is clamped to 100; pageNumber or pageSize below 1 is 400; a page past the "
            "end is empty with correct totals.",
        ),
        _route(
            "GET",
            "/api/Orders/statistics",
            statistics,
            "获取订单统计数据",
            s,
            parameters=(*_DATES, _STATION),
            response=STATISTICS,
            errors=((404, "RESOURCE_NOT_FOUND"),),
            description=f"{_STAFF} One aggregate over the orders whose start time falls in the dates "
            "(all orders without dates); totalAmount sums totalAmount of every status.",
        ),
        _route(
            "GET",
            "/api/Orders/byUser/{userId}",
            orders_by_user,
            "获取用户订单列表",
            u,
            parameters=(path_parameter("userId", "", ID_SCHEMA),),
            response=listing,
            errors=(MISSING_404,),
            description="Your own, or any user's with level >= 3.",
        ),
        _route(
            "GET",
            "/api/Orders/byPile/{pileId}",
            orders_by_pile,
            "获取充电桩订单列表",
            s,
            parameters=(path_parameter("pileId", "", KEY_SCHEMA),),
            response=listing,
            errors=(MISSING_404,),
            description=_STAFF,
        ),
        _route(
            "GET",
            "/api/Orders/{id}",
            get_order,
            "获取订单详情",
            u,
            parameters=_ID,
            response=ORDER,
            errors=(MISSING_404,),
            description=_OWN,
        ),
        _route(
            "POST",
            "/api/Orders",
            create_order,
            "创建订单 (starts a real charge)",
            u,
            request_body=OrderCreate,
            response=KEY_RESULT,
            status=201,
            errors=(MISSING_404, CONFLICT_409),
            description="Level >= 3, or userId equal to yourself. The port must belong to the pile, "
            "be enabled and free, and its pile online (409 otherwise; ids that do not exist "
            "are 404). The order (status 1 充电中) takes the port out of the driver queue and "
            "sends the pile a start command; a start the pile refuses makes it 4 异常 and frees "
            "the port. billingMode defaults to 1. requestedAmount (kWh) is sent to the pile as its "
            "energy target (energy_Wh). A user below level 3 ordering for themself gets a driver's "
            "order: only a port the driver queue leaves free (no queued or charging car, not held by "
            "another order; 409 otherwise); billed by the station's mode 1 (another billingMode is "
            "400 naming billingMode); capped at the energy their available balance (balance less "
            "every unpaid order's total) pays for at the dearest rate plus the service rate, or at "
            "requestedAmount if lower, sent to the pile as its target; 409 if that balance pays for "
            "no energy or another own order of theirs is charging. " + _BILLING,
        ),
        _route(
            "PUT",
            "/api/Orders/{id}/status",
            set_order_status,
            "更新订单状态",
            s,
            parameters=_ID,
            request_body=OrderStatusChange,
            status=204,
            errors=(MISSING_404, CONFLICT_409),
            description=f"{_STAFF} Legal changes only (409 otherwise): 1→4 (stops the port and bills "
            "what it delivered), 0→2/3/4, 4→0/2/3; 2 and 3 are final, and a paid order "
            "cannot be cancelled. A charging driver session is the service's (409).",
        ),
        _route(
            "POST",
            "/api/Orders/{id}/pay",
            pay,
            "订单支付",
            u,
            parameters=_ID,
            request_body=OrderPayment,
            status=204,
            errors=(MISSING_404, CONFLICT_409),
            description=f"{_OWN} Payable: unpaid and 0 待支付 (becomes 2 已完成), 2 已完成, or 4 异常 with "
            "an amount. paymentMethod 3 (余额) debits totalAmount rounded half up to the cent "
            "from the order's user, in one transaction with marking the order paid: 409 "
            "余额不足 if the balance is short, 409 if already paid (never a second debit). "
            "Methods 1 (微信) and 2 (支付宝) are money the central never sees: only staff (level >= 3) "
            "confirm them by hand (recorded as the confirming operator; 403 for anyone else, who "
            "pays by balance or through the provider, whose signed callback pays the order). "
            "transactionId (1-64 characters) is required for them and pays one order only (400 "
            "naming transactionId if it already paid another). The user gets an 订单通知 (type 2).",
        ),
        _route(
            "POST",
            "/api/Orders/payments/callback",
            payment_callback,
            "支付平台回调 (provider-signed payment confirmation)",
            Access.PUBLIC,
            parameters=_CALLBACK_HEADERS,
            request_body=ProviderCallback,
            response=CALLBACK_RESULT,
            errors=((401, AUTH_INVALID), MISSING_404, CONFLICT_409),
            description="No token: the signature is the proof. Configure a secret per provider in "
            "central.toml [payments] (wechat_secret / alipay_secret or *_secret_file). The provider "
            "signs timestamp + '.' + the raw body with HMAC-SHA256 under its secret and sends the "
            "lowercase hex digest; the timestamp (Unix seconds) must be within "
            "[payments] tolerance_s (default 300) of the central's clock. An unknown or "
            "unconfigured provider, a stale or future timestamp, or a signature that does not "
            "match (compared in constant time) is 401 and changes nothing. A verified callback "
            "pays the order by the provider's method (微信 1 / 支付宝 2) as /pay would; amountCents "
            "must equal the order's totalAmount in cents (409 otherwise). Replaying the same "
            "callback (same order and transactionId) answers replayed: true and changes nothing; "
            "a transactionId that already paid another order is 400 naming transactionId; another "
            "payment for an order already paid is 409.",
        ),
        _route(
            "POST",
            "/api/Orders/{id}/cancel",
            cancel_order,
            "取消订单",
            u,
            parameters=_ID,
            status=204,
            errors=(MISSING_404, CONFLICT_409),
            description=f"{_OWN} Only a charging order (409 otherwise). Its port is stopped; it becomes 3 "
            "已取消 with nothing to pay if the meter shows nothing delivered, else it is billed "
            "as /complete (0 待支付). A driver session is cancelled through the charging service "
            "(billed by its rules).",
        ),
        _route(
            "POST",
            "/api/Orders/{id}/complete",
            complete_order,
            "完成订单",
            u,
            parameters=(
                *_ID,
                {
                    "name": "electricity",
                    "in": "query",
                    "schema": {"type": "number", "minimum": 0, "maximum": MAX_KWH},
                    "description": "kWh; used ONLY when the port never reported charging for this order",
                },
                {
                    "name": "duration",
                    "in": "query",
                    "schema": {"type": "number", "minimum": 0, "maximum": MAX_DURATION_S},
                    "description": "seconds; used ONLY when the port never reported charging for this order",
                },
            ),
            status=204,
            errors=(MISSING_404, CONFLICT_409),
            description=f"{_OWN} Only a charging order (409 otherwise). Sends stop, waits up to 5 s for the "
            "stopped meter reading, bills it and frees the port; the order becomes 0 待支付 and "
            "the user gets an 订单通知 (type 2). If the port reported charging, electricity "
            "and duration are IGNORED in favour of the meter; if it never did, they are used "
            "(default 0 kWh over the time since the start). A charging driver-API session is completed "
            "through the charging service (its bill: the driver API's rules). " + _BILLING,
        ),
    ]


ROUTES: list[RouteSpec] = _routes()
