"""Operator endpoints in the driver API's style (the "Django Admin" features): station parameters,
piles in/out of service and declared faults, per-pile reports, and the pile queues.

Every route here is staff-only (permission level >= 3); the envelope and error codes are the driver
API's, and request bodies and response data are msgspec Structs like the driver API's.
:data:`OPERATOR_ROUTES` is the route table (see :mod:`central.web.openapi`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal, get_args

import msgspec
from aiohttp import web

from central.web.errors import RESOURCE_NOT_FOUND, VALIDATION_ERROR, ok, validation_error
from central.web.middleware import Handler, station_of, station_zone
from central.web.openapi import RouteSpec
from central.web.permissions import Access
from central.web.shapes import json_object
from central.web.station_runtime import STATION_NOT_RUNNING
from central.web.user_api import Parameters, TimeRange, local_values, query_date

ReportPeriod = Literal["day", "week", "month"]
REPORT_PERIODS: tuple[str, ...] = get_args(ReportPeriod)


class ParameterChanges(msgspec.Struct, omit_defaults=True):
    """Any subset of the parameters; pricing and time_periods merge by key (the station parameters
    check the values, naming e.g. ``pricing.peak_rate``)."""

    FastChargingPileNum: int | msgspec.UnsetType = msgspec.UNSET
    TrickleChargingPileNum: int | msgspec.UnsetType = msgspec.UNSET
    WaitingAreaSize: int | msgspec.UnsetType = msgspec.UNSET
    ChargingQueueLen: int | msgspec.UnsetType = msgspec.UNSET
    pricing: dict[str, float] | msgspec.UnsetType = msgspec.UNSET
    time_periods: dict[str, list[TimeRange]] | msgspec.UnsetType = msgspec.UNSET
    fault_strategy: Literal["priority", "time_order"] | msgspec.UnsetType = msgspec.UNSET
    dispatch_policy: Literal["best_or_wait", "best_free"] | msgspec.UnsetType = msgspec.UNSET


CHANGEABLE_PARAMETERS = ParameterChanges.__struct_fields__


class PileInService(msgspec.Struct):
    pile_id: str
    in_service: bool


class PileFaulted(msgspec.Struct):
    pile_id: str
    faulted: bool


class PileReportRow(msgspec.Struct):
    """One pile's totals over the period [from, to] (station-local dates)."""

    pile_id: str
    period: ReportPeriod
    from_: str = msgspec.field(name="from")
    to: str
    sessions: int
    charging_minutes: float
    kwh: float
    charging_fee: float
    service_fee: float
    total: float


class PileReport(msgspec.Struct):
    period: ReportPeriod
    date: Annotated[str, msgspec.Meta(extra_json_schema={"format": "date"})]
    piles: list[PileReportRow]
    station: Annotated[str, msgspec.Meta(description="the code of the report's station")] | None = None


class QueuedAtPile(msgspec.Struct):
    """A car at a pile, charging or queued behind it."""

    user_id: int | None
    username: str | None
    request_id: str
    queue_number: str
    battery_capacity: float | None
    requested_amount: float
    queued_at: Annotated[str, msgspec.Meta(extra_json_schema={"format": "date-time"})] | None
    waited_minutes: float


class PileCars(msgspec.Struct):
    pile_id: str
    cars: list[QueuedAtPile]


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
    params = await (await station_of(request)).actions.update_parameters(changes)
    return ok(msgspec.convert(params, Parameters), "系统参数已更新")


@dataclass(frozen=True)
class PileAction:
    """One operator switch on a pile: its verb (the station action ``pile``), and what the pile is
    afterwards."""

    verb: str
    summary: str
    message: str
    response: type[PileInService] | type[PileFaulted]
    state: bool

    def handler(self) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            pile_id = request.match_info["pile_id"]
            await (await station_of(request)).actions.pile(pile_id, self.verb)
            return ok(self.response(pile_id, self.state), self.message)

        handle.__name__ = f"pile_{self.verb}"
        return handle


PILE_ACTIONS = (
    PileAction(
        "on",
        "启用充电桩 (back in service)",
        "充电桩已启用",
        PileInService,
        True,
    ),
    PileAction(
        "off",
        "停用充电桩 (out of service; its cars are re-placed)",
        "充电桩已停用",
        PileInService,
        False,
    ),
    PileAction(
        "fault",
        "声明充电桩故障",
        "充电桩已标记为故障",
        PileFaulted,
        True,
    ),
    PileAction(
        "recover",
        "充电桩故障恢复",
        "充电桩已恢复",
        PileFaulted,
        False,
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
    service, zone = (await station_of(request)).service, station_zone(request)
    day = day or service.now().astimezone(zone).date()
    rows = await service.pile_report(period, day)
    report = {
        "period": period,
        "date": day.isoformat(),
        "piles": local_values(rows, zone),
        "station": service.station,
    }
    return ok(msgspec.convert(report, PileReport))


async def pile_queues(request: web.Request) -> web.StreamResponse:
    """GET /api/charging/admin/queues/: the cars at every pile."""
    queues = local_values((await station_of(request)).service.pile_queues(), station_zone(request))
    return ok(msgspec.convert(queues, list[PileCars]))


_OPS = "operator"
_STATION = {
    "name": "station",
    "in": "query",
    "required": False,
    "schema": {"type": "string", "maxLength": 64},
    "description": "the station's code (default: the default station)",
}
_STATION_ERRORS = ((404, RESOURCE_NOT_FOUND), (503, STATION_NOT_RUNNING))


def _pile_route(action: PileAction) -> RouteSpec:
    return RouteSpec(
        "POST",
        f"/api/charging/admin/piles/{{pile_id}}/{action.verb}/",
        action.handler(),
        action.summary,
        Access.STAFF,
        _OPS,
        parameters=(_STATION,),
        errors=((404, RESOURCE_NOT_FOUND), (409, VALIDATION_ERROR), (503, STATION_NOT_RUNNING)),
        response=action.response,
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
        request_body=Annotated[ParameterChanges, msgspec.Meta(extra_json_schema={"minProperties": 1})],
        parameters=(_STATION,),
        errors=_STATION_ERRORS,
        response=Parameters,
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
            _STATION,
        ),
        errors=_STATION_ERRORS,
        response=PileReport,
    ),
    RouteSpec(
        "GET",
        "/api/charging/admin/queues/",
        pile_queues,
        "各充电桩排队车辆",
        Access.STAFF,
        _OPS,
        parameters=(_STATION,),
        errors=_STATION_ERRORS,
        response=list[PileCars],
    ),
)
