"""Operator endpoints in the user API's style (the spec's "Django Admin" features): station
parameters, piles in/out of service and declared faults, per-pile reports, and the pile queues.

Every route here is staff-only (permission level >= 3); the envelope and error codes are the user
API's. :data:`OPERATOR_ROUTES` is the route table (see :mod:`central.web.openapi`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from central.web.errors import RESOURCE_NOT_FOUND, VALIDATION_ERROR, ok, validation_error
from central.web.jsonbody import json_object
from central.web.middleware import Handler, service_of, station_zone
from central.web.openapi import RouteSpec
from central.web.permissions import Access
from central.web.user_api import PARAMETERS, local_values, query_date

CHANGEABLE_PARAMETERS = (
    "FastChargingPileNum",
    "TrickleChargingPileNum",
    "WaitingAreaSize",
    "ChargingQueueLen",
    "pricing",
    "time_periods",
    "fault_strategy",
    "dispatch_policy",
)
REPORT_PERIODS = ("day", "week", "month")


async def update_parameters(request: web.Request) -> web.StreamResponse:
    """PUT /api/charging/config/parameters/: change any subset of the parameters (validated whole)."""
    changes = await json_object(request)
    problems = {
        key: "cannot be changed through the API" for key in changes if key not in CHANGEABLE_PARAMETERS
    }
    if not changes:
        problems["body"] = f"give at least one of {', '.join(CHANGEABLE_PARAMETERS)}"
    if problems:
        raise validation_error(problems)
    params = await service_of(request).update_parameters(changes)
    return ok(params, "系统参数已更新")


@dataclass(frozen=True)
class PileAction:
    """One operator switch on a pile: which service call, and what the pile is afterwards."""

    verb: str
    summary: str
    message: str
    call: Callable[[Any, str], Awaitable[None]]
    result: tuple[str, bool]

    def handler(self) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            pile_id = request.match_info["pile_id"]
            await self.call(service_of(request), pile_id)
            key, value = self.result
            return ok({"pile_id": pile_id, key: value}, self.message)

        handle.__name__ = f"pile_{self.verb}"
        return handle


PILE_ACTIONS = (
    PileAction(
        "on",
        "启用充电桩 (back in service)",
        "充电桩已启用",
        lambda s, pile: s.set_pile_in_service(pile, True),
        ("in_service", True),
    ),
    PileAction(
        "off",
        "停用充电桩 (out of service; its cars are re-placed)",
        "充电桩已停用",
        lambda s, pile: s.set_pile_in_service(pile, False),
        ("in_service", False),
    ),
    PileAction(
        "fault",
        "声明充电桩故障",
        "充电桩已标记为故障",
        lambda s, pile: s.declare_fault(pile, True),
        ("faulted", True),
    ),
    PileAction(
        "recover",
        "充电桩故障恢复",
        "充电桩已恢复",
        lambda s, pile: s.declare_fault(pile, False),
        ("faulted", False),
    ),
)


async def pile_report(request: web.Request) -> web.StreamResponse:
    """GET /api/charging/admin/reports/?period=day|week|month&date=YYYY-MM-DD: per-pile totals."""
    problems: dict[str, str] = {}
    period = request.query.get("period", "day")
    if period not in REPORT_PERIODS:
        problems["period"] = f"must be one of {' | '.join(REPORT_PERIODS)}, got {period!r}"
    day = query_date(request.query, "date", problems)
    if problems:
        raise validation_error(problems)
    service, zone = service_of(request), station_zone(request)
    day = day or service.now().astimezone(zone).date()
    rows = await service.pile_report(period, day)
    return ok({"period": period, "date": day.isoformat(), "piles": local_values(rows, zone)})


async def pile_queues(request: web.Request) -> web.StreamResponse:
    """GET /api/charging/admin/queues/: the cars at every pile."""
    return ok(local_values(service_of(request).pile_queues(), station_zone(request)))


_NUM, _INT, _STR = {"type": "number"}, {"type": "integer"}, {"type": "string"}
_REPORT_ROW = {
    "type": "object",
    "properties": {
        "pile_id": _STR,
        "sessions": _INT,
        "charging_minutes": _NUM,
        "kwh": _NUM,
        "charging_fee": _NUM,
        "service_fee": _NUM,
        "total": _NUM,
    },
}
_CAR = {
    "type": "object",
    "properties": {
        "user_id": _INT,
        "username": _STR,
        "request_id": _STR,
        "queue_number": _STR,
        "battery_capacity": {"type": ["number", "null"]},
        "requested_amount": _NUM,
        "queued_at": {"type": ["string", "null"], "format": "date-time"},
        "waited_minutes": _NUM,
    },
}
_OPS = "operator"


def _pile_route(action: PileAction) -> RouteSpec:
    return RouteSpec(
        "POST",
        f"/api/charging/admin/piles/{{pile_id}}/{action.verb}/",
        action.handler(),
        action.summary,
        Access.STAFF,
        _OPS,
        errors=((404, RESOURCE_NOT_FOUND), (409, VALIDATION_ERROR)),
        response={
            "type": "object",
            "properties": {"pile_id": _STR, action.result[0]: {"const": action.result[1]}},
        },
        description="409 VALIDATION_ERROR with details.reason when the pile is already in that state.",
    )


OPERATOR_ROUTES: tuple[RouteSpec, ...] = (
    RouteSpec(
        "PUT",
        "/api/charging/config/parameters/",
        update_parameters,
        "修改系统参数 (staff)",
        Access.STAFF,
        _OPS,
        request_body={**PARAMETERS, "required": [], "minProperties": 1},
        response=PARAMETERS,
        description="Any subset of the GET shape; pricing and time_periods merge by key, a given "
        "time_periods list replaces that period's list; the result must cover the day.",
    ),
    *(_pile_route(action) for action in PILE_ACTIONS),
    RouteSpec(
        "GET",
        "/api/charging/admin/reports/",
        pile_report,
        "充电桩报表 (day / week / month)",
        Access.STAFF,
        _OPS,
        parameters=(
            {
                "name": "period",
                "in": "query",
                "required": False,
                "schema": {"type": "string", "enum": list(REPORT_PERIODS), "default": "day"},
            },
            {
                "name": "date",
                "in": "query",
                "required": False,
                "schema": {"type": "string", "format": "date"},
                "description": "a station-local date in the period (default: today)",
            },
        ),
        response={
            "type": "object",
            "properties": {"period": _STR, "date": _STR, "piles": {"type": "array", "items": _REPORT_ROW}},
        },
    ),
    RouteSpec(
        "GET",
        "/api/charging/admin/queues/",
        pile_queues,
        "各充电桩排队车辆",
        Access.STAFF,
        _OPS,
        response={
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"pile_id": _STR, "cars": {"type": "array", "items": _CAR}},
            },
        },
    ),
)
