"""The operator platform API's station part: charging stations, piles and ports, over the same
rows the gateways report and the scheduler uses (the rows are read and written by
:mod:`central.adapters.stations`; handlers here validate, call it and render).

Reading needs any valid token; creating, changing and deleting needs permission level >= 3. A pile
created here is a real record with ``totalPorts`` as its port capacity and no ports yet: the
operator adds them (``POST /api/ChargingPorts``, numbers 1..totalPorts), so it can take operator
orders once its gateway reports it, and the driver API's pile list shows it
(:func:`piles_status_with_registered`). Live fields (port voltage, current, power, temperature,
meter, status, fault; pile online status, temperature, heartbeat) are whatever the ingest last
wrote; nothing here invents them. A taken ``pileNo``, or ``portNo`` within a pile, is a request
parameter error (400 naming the field). Deleting a station that still has piles, or a pile or port
with a charging order or a driver car at it, is refused with 409. Datetimes are ISO 8601 UTC with
``Z``. :data:`ROUTES` is the route table (see :mod:`central.web.openapi`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from datetime import date, datetime
from typing import Annotated, Any

import msgspec
from aiohttp import web

from central.adapters import stations as repo
from central.adapters.database import Db, IntegrityError
from central.adapters.query import Resource, where_clause
from central.application.auth import AuthUser
from central.application.charging import ChargingService
from central.web.errors import PLATFORM_STYLE, conflict
from central.web.keys import STATIONS as STATIONS_KEY
from central.web.middleware import current_user
from central.web.openapi import RouteSpec
from central.web.permissions import Access, may_act_for
from central.web.platform.common import (
    CONFLICT_409,
    FAULT_TYPE,
    MISSING_404,
    ONLINE_STATUS,
    PAGE_PARAMETERS,
    PILE_STATUS,
    PILE_TYPE,
    PORT_TYPE,
    STATION_STATUS,
    STR,
    CreatedKey,
    DateText,
    Key,
    Page,
    UtcTime,
    children_response,
    created,
    described,
    int_codes_schema,
    invalid,
    item_response,
    key_path,
    list_response,
    no_content,
    not_found,
    now_iso,
    page_response,
    paging,
    path_key,
    query_code,
    query_key,
    query_keyword,
    read,
    read_shape,
    rendered,
    utc_z,
    write,
)
from central.web.shapes import PLATFORM, S, codes, decode, json_object
from central.web.station_runtime import StationNotRunning, StationRuntime, Stations, UnknownStation

MAX_PORTS = 10
POWER_KW = (0.1, 500.0)
PORT_NO = (1, 99)  # the MQTT topic's port range
PILE_NO_HINT = "must be 1-64 of A-Z a-z 0-9 _ . : - (the pile's MQTT id)"


# --- input -----------------------------------------------------------------------------------------

StationName = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
StationCode = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[A-Za-z0-9_.:-]{1,64}$",
        description="the station's MQTT id ({station} of pilegate/v1/{station}/...): a station with a "
        "code is run by the central from its creation on",
        extra={"hint": "must be 1-64 of A-Z a-z 0-9 _ . : - (the station's MQTT id)"},
    ),
]
PileNo = Annotated[
    str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.:-]{1,64}$", extra={"hint": PILE_NO_HINT})
]  # an MQTT pile id (protocols.topics)
PowerKw = Annotated[float, msgspec.Meta(ge=POWER_KW[0], le=POWER_KW[1], description="kW")]
TotalPorts = Annotated[int, msgspec.Meta(ge=1, le=MAX_PORTS)]
Day = (
    Annotated[
        str, msgspec.Meta(max_length=40, description="ISO 8601 date", extra_json_schema={"format": "date"})
    ]
    | None
)
"""A date; a date-time keeps its date part (see :func:`iso_day`)."""
Version = Annotated[str, msgspec.Meta(max_length=32)] | None
GatewayId = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[A-Za-z0-9_.:-]{1,64}$",
        description="the MQTT id of the gateway the pile is bound to; only its births and wills count "
        "for the pile (null or blank: the next gateway that reports the pile)",
        extra={"hint": "must be 1-64 of A-Z a-z 0-9 _ . : - (the gateway's MQTT id)"},
    ),
]
PortNo = Annotated[
    int | str,
    msgspec.Meta(
        description="port number 1..99 (a digit string is accepted), one of the pile's 1..totalPorts",
        extra_json_schema={"minimum": PORT_NO[0], "maximum": PORT_NO[1], "pattern": "^[0-9]{1,2}$"},
        extra={"hint": f"must be a port number from {PORT_NO[0]} to {PORT_NO[1]}"},
    ),
]
"""A port number as sent; :func:`port_number` reads it."""


class StationUpdate(msgspec.Struct, rename="camel"):
    """The fields to change: a null name or status keeps the stored one; a null or blank address or
    location clears it."""

    name: StationName | None = None
    status: Annotated[int, codes(STATION_STATUS)] | None = None
    address: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    location: Annotated[str, msgspec.Meta(max_length=100)] | None = None


class StationCreate(StationUpdate):
    """A new station: a name is required; the status defaults to 1 (在线). With a ``code`` it is a
    station the central runs (at once, with default parameters, while its status is 1)."""

    name: StationName
    status: Annotated[int, codes(STATION_STATUS)] = 1
    code: StationCode | None = None


class PileUpdate(msgspec.Struct, rename="camel"):
    """The fields to change: a null stationId, pileNo, pileType, powerRate or totalPorts keeps the
    stored value; a null or blank optional text or date clears it."""

    station_id: Key | None = None
    pile_no: PileNo | None = None
    pile_type: Annotated[int, codes(PILE_TYPE)] | None = None
    power_rate: PowerKw | None = None
    total_ports: TotalPorts | None = None
    installation_date: Day = None
    last_maintenance_date: Day = None
    manufacturer: Annotated[str, msgspec.Meta(max_length=100)] | None = None
    imei: Version = None
    protocol_version: Version = None
    software_version: Version = None
    hardware_version: Version = None
    gateway: GatewayId | None = None


class PileCreate(PileUpdate):
    """A new pile: station, MQTT id, type, power and port capacity are required."""

    station_id: Key
    pile_no: PileNo
    pile_type: Annotated[int, codes(PILE_TYPE)]
    power_rate: PowerKw
    total_ports: TotalPorts


PILE_KEPT = frozenset(field.name for field in msgspec.structs.fields(PileCreate) if field.required)
"""The fields a pile must have: a null one in an update keeps the stored value."""
PILE_DAYS = {"installation_date": "installationDate", "last_maintenance_date": "lastMaintenanceDate"}


class PortCreate(msgspec.Struct, rename="camel"):
    """A new port of an existing pile, numbered within the pile's totalPorts; type 1 (国标) by default."""

    pile_id: Key
    port_no: PortNo
    port_type: Annotated[int, codes(PORT_TYPE)] = 1


class PortUpdate(msgspec.Struct, rename="camel"):
    """The fields to change (null keeps the stored value)."""

    port_no: PortNo | None = None
    port_type: Annotated[int, codes(PORT_TYPE)] | None = None
    is_disabled: bool | None = None


def iso_day(text: str) -> str | None:
    """An ISO 8601 date (a date-time keeps its date part) as ``YYYY-MM-DD``; None if it is neither."""
    try:
        day = date.fromisoformat(text) if len(text) == 10 else datetime.fromisoformat(text).date()
    except ValueError:
        return None
    return day.isoformat()


def valid_days(valid: Mapping[str, Any]) -> dict[str, str]:
    """The problems of the pile dates that are not ISO 8601 dates."""
    return {
        name: f"must be an ISO 8601 date such as 2025-01-01, got {value!r}"
        for field, name in PILE_DAYS.items()
        if (value := valid.get(field)) is not None and iso_day(value) is None
    }


def pile_columns(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The pile columns of body fields (the field names are the column names; dates as ``YYYY-MM-DD``)."""
    return {
        name: iso_day(value) if name in PILE_DAYS and value is not None else value
        for name, value in fields.items()
    }


def _port_value(sent: int | str) -> int | str:
    """A digit string (at most 3 digits, spaces around allowed) as its integer; else as sent."""
    text = sent.strip() if isinstance(sent, str) else ""
    return int(text) if text.isdecimal() and len(text) <= 3 else sent


def port_number(sent: int | str) -> str:
    """The stored text of a port number that :func:`valid_port_no` accepted."""
    return str(_port_value(sent))


def valid_port_no(valid: Mapping[str, Any]) -> dict[str, str]:
    """The problem of a portNo that is not a port number 1..99 (an integer or a digit string)."""
    sent = valid.get("port_no")
    if sent is None:
        return {}
    value = _port_value(sent)
    if isinstance(value, int) and PORT_NO[0] <= value <= PORT_NO[1]:
        return {}
    return {"portNo": f"must be a port number from {PORT_NO[0]} to {PORT_NO[1]}, got {value!r}"}


async def read_changes(
    request: web.Request,
    shape: type[S],
    kept: Collection[str],
    rules: Callable[[Mapping[str, Any]], Mapping[str, str]] | None = None,
) -> dict[str, Any]:
    """The fields an update body sends, by attribute name: a null (or blank text) field clears its column,
    except that one of ``kept`` keeps the stored value (``rules``: see :func:`read_shape`)."""
    data = await json_object(request)
    body = decode(data, shape, PLATFORM, rules)
    values = {
        field.name: getattr(body, field.name)
        for field in msgspec.structs.fields(body)
        if field.encode_name in data
    }
    return {name: value for name, value in values.items() if value is not None or name not in kept}


# --- driver queue ------------------------------------------------------------------------------------


def point_port(point_id: str, pile_no: str) -> str | None:
    """The port number (text) of a scheduler charging point of ``pile_no``, else None."""
    if point_id == pile_no:
        return "1"
    prefix = f"{pile_no}-"
    return point_id[len(prefix) :] if point_id.startswith(prefix) else None


def stations_of(request: web.Request) -> Stations:
    return request.app[STATIONS_KEY]


async def running(request: web.Request, code: str) -> StationRuntime | None:
    """The runtime of station ``code`` if it runs here, its read view if another central runs it
    (its ``actions`` forward to the owner), else None (it runs nowhere)."""
    try:
        return await stations_of(request).find(code)
    except (UnknownStation, StationNotRunning):
        return None


async def ports_changed(request: web.Request, station: str, pile_no: str) -> None:
    """Tell the station's runtime (wherever it runs) that a pile's ports changed."""
    runtime = await running(request, station)
    if runtime is not None:
        await runtime.actions.pile_ports_changed(pile_no)


def driver_cars(service: ChargingService | None, pile_no: str, port_no: str | None = None) -> int:
    """Cars the driver queue has at the pile's charging points (or at one port's point)."""
    if service is None:
        return 0
    cars = 0
    for state in service.scheduler.point_states():
        port = point_port(state.point.point_id, pile_no)
        if port is not None and (port_no is None or port == port_no):
            cars += len(state.queue)
    return cars


async def refuse_driver_cars(
    request: web.Request, station: str, pile_no: str, port_no: str | None, action: str
) -> None:
    """409 while the driver queue of the station (its code) has cars at the pile (or port)."""
    runtime = await running(request, station)
    cars = driver_cars(runtime.service if runtime is not None else None, pile_no, port_no)
    if cars:
        where = f"充电桩 {pile_no}" + (f" 端口 {port_no}" if port_no else "")
        raise conflict(f"{where} 有 {cars} 辆司机端车辆正在充电或排队，不能{action}")


def refuse_active(db: Db, pile_id: str, port_id: str | None, what: str, action: str) -> None:
    """409 while a charging order is at the pile (or port)."""
    count = repo.active_orders(db, pile_id, port_id)
    if count:
        raise conflict(f"{what} 有 {count} 个进行中的充电订单或会话，不能{action}")


# --- stations --------------------------------------------------------------------------------------


class Station(msgspec.Struct, rename="camel"):
    id: str
    code: (
        Annotated[str, msgspec.Meta(description="its MQTT {station}; null: not a station the central runs")]
        | None
    )
    running: Annotated[bool, msgspec.Meta(description="whether this central instance runs it")]
    name: str
    status: int
    status_description: str | None
    address: str | None
    location: str | None
    update_time: UtcTime
    pile_count: int


def station_json(row: Mapping[str, Any], runs: Collection[str] = ()) -> dict[str, Any]:
    """The station shape of a row (``runs``: the codes of the stations running here)."""
    return rendered(
        Station(
            id=row["id"],
            code=row["code"],
            running=row["code"] is not None and row["code"] in runs,
            name=row["name"],
            status=row["status"],
            status_description=described(row["status"], STATION_STATUS),
            address=row["address"],
            location=row["location"],
            update_time=utc_z(row["update_time"]),
            pile_count=row["pile_count"],
        )
    )


STATIONS = Resource(
    "充电站", repo.STATION_READ, "s.id", "s.rowid", station_json, count_from=repo.STATIONS_FROM
)


def stations_seen_by(request: web.Request) -> Resource:
    """The stations, saying which run on this instance."""
    runs = set(stations_of(request).running)
    return STATIONS.shaped(lambda row: station_json(row, runs))


async def list_stations(request: web.Request) -> web.StreamResponse:
    """GET /api/ChargingStations."""
    return await list_response(request, stations_seen_by(request))


async def get_station(request: web.Request) -> web.StreamResponse:
    """GET /api/ChargingStations/{id}."""
    return await item_response(request, stations_seen_by(request), path_key(request, "id", "充电站"))


async def paged_stations(request: web.Request) -> web.StreamResponse:
    """GET /api/ChargingStations/paged?pageNumber&pageSize&status&keyword."""
    status, keyword = query_code(request, "status", STATION_STATUS), query_keyword(request)
    where = where_clause([("s.status = ?", status)], keyword, ("s.name", "s.address", "s.location", "s.code"))
    return await page_response(request, stations_seen_by(request), where, paging(request))


async def create_station(request: web.Request) -> web.StreamResponse:
    """POST /api/ChargingStations: with a code (and status 1) its runtime starts at once."""
    values = msgspec.structs.asdict(await read_shape(request, StationCreate))
    now = now_iso(request)
    code = values["code"]

    def insert(db: Db) -> str:
        if code is not None and repo.station_by_code(db, code) is not None:
            raise invalid("code", f"充电站编码 {code} 已存在")
        return repo.create_station(db, **values, now=now)

    station_id = await write(request, _unique(insert, "code", "充电站编码已存在"))
    if code is not None:
        stations_of(request).known.add(code)
        if values["status"] == 1:
            await stations_of(request).follow(code, run=True)
    return created(station_id)


async def refuse_busy_station(request: web.Request, code: str, action: str) -> None:
    """409 while the station ``code`` has charging sessions, charging orders or waiting cars."""
    activity = await read(request, lambda db: repo.station_activity(db, code))
    runtime = await running(request, code)
    if runtime is not None:
        activity["requests"] = max(activity["requests"], len(runtime.service.scheduler.requests))
        activity["orders"] = max(activity["orders"], len(runtime.orders.sessions))
    if activity["orders"] or activity["requests"]:
        raise conflict(
            f"充电站 {code} 有 {activity['orders']} 个进行中的充电订单和 {activity['requests']} 个"
            f"排队或充电中的司机请求，不能{action} (station {code} has charging sessions)"
        )


async def stop_station(request: web.Request, station_id: str, code: str, status: int, action: str) -> None:
    """Stop the station unless it has charging sessions (409): its status becomes ``status`` (not 1)
    and whichever instance runs it stops it; if sessions appeared while it stopped, its status is 1
    again, it runs again and the answer is 409."""
    await refuse_busy_station(request, code, action)
    stations = stations_of(request)
    await write(request, lambda db: repo.update_station(db, station_id, {"status": status}))
    await stations.follow(code, run=False)
    try:
        await refuse_busy_station(request, code, action)
    except Exception:
        await write(request, lambda db: repo.update_station(db, station_id, {"status": 1}))
        await stations.follow(code, run=True)
        raise


async def update_station(request: web.Request) -> web.StreamResponse:
    """PUT /api/ChargingStations/{id}: a station with a code runs while its status is 1 (a new status
    starts or stops it; stopping is refused while it has charging sessions)."""
    station_id = path_key(request, "id", "充电站")
    changes = await read_changes(request, StationUpdate, kept={"name", "status"})
    changes["update_time"] = now_iso(request)
    row = await read(request, lambda db: STATIONS.row(db, station_id))
    code, status = row["code"], changes.get("status", row["status"])
    if code is not None and status != 1 and row["status"] == 1:
        if code == stations_of(request).default:
            raise conflict(f"默认充电站 {code} 不能停用 (the default station always runs)")
        await stop_station(request, station_id, code, status, "停用")

    def update(db: Db) -> None:
        STATIONS.row(db, station_id)
        repo.update_station(db, station_id, changes)

    await write(request, update)
    if code is not None and status == 1:
        await stations_of(request).follow(code, run=True)
    return no_content()


async def delete_station(request: web.Request) -> web.StreamResponse:
    """DELETE /api/ChargingStations/{id}: a station without piles; a station the central runs (with
    a code) is stopped and deleted with its piles, unless it has charging sessions (409)."""
    station_id = path_key(request, "id", "充电站")
    row = await read(request, lambda db: STATIONS.row(db, station_id))
    code = row["code"]
    if code is not None:
        if code == stations_of(request).default:
            raise conflict(f"默认充电站 {code} 不能删除 (the default station always runs)")
        if row["status"] == 1:
            await stop_station(request, station_id, code, 2, "删除")
        else:
            await refuse_busy_station(request, code, "删除")

    def delete(db: Db) -> None:
        current = STATIONS.row(db, station_id)
        if code is not None:
            repo.delete_station_piles(db, station_id)
        elif current["pile_count"]:
            raise conflict(f"充电站 {station_id} 下还有 {current['pile_count']} 个充电桩，请先删除充电桩")
        repo.delete_station(db, station_id)

    await write(request, delete)
    if code is not None:
        stations_of(request).forget(code)
    return no_content()


# --- piles -----------------------------------------------------------------------------------------


class Pile(msgspec.Struct, rename="camel"):
    id: str
    station_id: str
    station_name: str | None
    station: Annotated[str, msgspec.Meta(description="the code of the station that runs it")]
    pile_no: str
    pile_type: int
    pile_type_description: str | None
    status: int
    status_description: str | None
    power_rate: Annotated[float, msgspec.Meta(description="kW")]
    manufacturer: str | None
    imei: str | None
    total_ports: int
    protocol_version: str | None
    software_version: str | None
    hardware_version: str | None
    online_status: int
    online_status_description: str | None
    signal_strength: int | None
    temperature: float | None
    last_heartbeat_time: UtcTime
    installation_date: DateText
    last_maintenance_date: DateText
    update_time: UtcTime
    gateway: Annotated[str, msgspec.Meta(description="the gateway the pile is bound to")] | None


def pile_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """The pile shape of a row."""
    return rendered(
        Pile(
            id=row["id"],
            station_id=row["station_id"],
            station_name=row["station_name"],
            station=row["station"],
            pile_no=row["pile_no"],
            pile_type=row["pile_type"],
            pile_type_description=described(row["pile_type"], PILE_TYPE),
            status=row["status"],
            status_description=described(row["status"], PILE_STATUS),
            power_rate=row["power_rate"],
            manufacturer=row["manufacturer"],
            imei=row["imei"],
            total_ports=row["total_ports"],
            protocol_version=row["protocol_version"],
            software_version=row["software_version"],
            hardware_version=row["hardware_version"],
            online_status=row["online_status"],
            online_status_description=described(row["online_status"], ONLINE_STATUS),
            signal_strength=row["signal_strength"],
            temperature=row["temperature"],
            last_heartbeat_time=utc_z(row["last_heartbeat_time"]),
            installation_date=row["installation_date"],
            last_maintenance_date=row["last_maintenance_date"],
            update_time=utc_z(row["update_time"]),
            gateway=row["gateway"],
        )
    )


PILES = Resource("充电桩", repo.PILE_READ, "p.id", "p.pile_no", pile_json, count_from=repo.PILES_FROM)


async def list_piles(request: web.Request) -> web.StreamResponse:
    """GET /api/ChargingPiles."""
    return await list_response(request, PILES)


async def get_pile(request: web.Request) -> web.StreamResponse:
    """GET /api/ChargingPiles/{id}."""
    return await item_response(request, PILES, path_key(request, "id", "充电桩"))


async def piles_by_station(request: web.Request) -> web.StreamResponse:
    """GET /api/ChargingPiles/byStation/{stationId}."""
    station_id = path_key(request, "stationId", "充电站")
    return await children_response(request, STATIONS, station_id, PILES, "p.station_id")


async def paged_piles(request: web.Request) -> web.StreamResponse:
    """GET /api/ChargingPiles/paged?pageNumber&pageSize&stationId&status&keyword."""
    station_id, status = query_key(request, "stationId"), query_code(request, "status", PILE_STATUS)
    where = where_clause(
        [("p.station_id = ?", station_id), ("p.status = ?", status)],
        query_keyword(request),
        ("p.pile_no", "p.manufacturer", "p.imei", "s.name"),
    )
    return await page_response(request, PILES, where, paging(request))


def require_station(db: Db, station_id: str, default: str) -> str:
    """The code of the station that runs the piles of station record ``station_id`` (404 naming
    stationId unless the record exists)."""
    code = repo.station_code(db, station_id, default)
    if code is None:
        raise not_found("充电站 (stationId)", station_id)
    return code


def require_unique_pile_no(db: Db, station: str, pile_no: str, pile_id: str | None = None) -> None:
    """400 naming pileNo when another pile of the station has the number."""
    other = repo.pile_by_no(db, pile_no, station=station)
    if other is not None and other[0] != pile_id:
        raise invalid("pileNo", f"充电桩编号 {pile_no} 已存在")


def _unique(fn: Callable[[Db], Any], field: str, message: str) -> Callable[[Db], Any]:
    """``fn`` with a UNIQUE violation (a concurrent duplicate) reported as 400 naming ``field``."""

    def run(db: Db) -> Any:
        try:
            return fn(db)
        except IntegrityError as exc:
            if not exc.unique:
                raise
            raise invalid(field, message) from None

    return run


_PILE_EXTRA = (
    "gateway",
    "manufacturer",
    "imei",
    "protocol_version",
    "software_version",
    "hardware_version",
    "installation_date",
    "last_maintenance_date",
)


async def create_pile(request: web.Request) -> web.StreamResponse:
    """POST /api/ChargingPiles: the pile, with totalPorts as its capacity and no ports yet."""
    values = pile_columns(msgspec.structs.asdict(await read_shape(request, PileCreate, valid_days)))
    now, default = now_iso(request), stations_of(request).default

    def insert(db: Db) -> tuple[str, str]:
        station = require_station(db, values["station_id"], default)
        require_unique_pile_no(db, station, values["pile_no"])
        return station, repo.create_pile(
            db,
            station_id=values["station_id"],
            station=station,
            pile_no=values["pile_no"],
            pile_type=values["pile_type"],
            power_kw=values["power_rate"],
            now=now,
            total_ports=values["total_ports"],
            extra={name: values[name] for name in _PILE_EXTRA},
        )

    station, pile_id = await write(request, _unique(insert, "pileNo", "充电桩编号已存在"))
    runtime = await running(request, station)
    if values["gateway"] is not None and runtime is not None:
        await runtime.actions.pile_gateway(values["pile_no"], values["gateway"])
    return created(pile_id)


def remove_ports_above(db: Db, pile_id: str, total: int) -> None:
    """Numbered ports above a pile's new capacity ``total`` are removed (409 if one charges)."""
    for number, port_id in sorted(repo.numbered_ports(db, pile_id).items()):
        if number > total:
            refuse_active(db, pile_id, port_id, f"端口 {number}", "删除 (totalPorts)")
            repo.delete_port(db, port_id)


async def update_pile(request: web.Request) -> web.StreamResponse:
    """PUT /api/ChargingPiles/{id}: the fields given; a new pileNo, or a station another station's
    runtime runs, only while nothing charges."""
    pile_id = path_key(request, "id", "充电桩")
    changes = pile_columns(await read_changes(request, PileUpdate, PILE_KEPT, valid_days))
    now, default = now_iso(request), stations_of(request).default
    current = await read(request, lambda db: PILES.row(db, pile_id))
    was = current["station"]
    station = was
    if "station_id" in changes:
        station = await read(request, lambda db: require_station(db, changes["station_id"], default))
    moved = station != was
    renamed = "pile_no" in changes and changes["pile_no"] != current["pile_no"]
    if renamed or moved:
        await refuse_driver_cars(request, was, current["pile_no"], None, "修改编号或所属充电站")
    pile_no = changes.get("pile_no", current["pile_no"])

    def update(db: Db) -> None:
        PILES.row(db, pile_id)
        if renamed or moved:
            require_unique_pile_no(db, station, pile_no, pile_id)
            refuse_active(db, pile_id, None, f"充电桩 {current['pile_no']}", "修改编号或所属充电站")
        if "total_ports" in changes:
            remove_ports_above(db, pile_id, changes["total_ports"])
        repo.update_pile(db, pile_id, {**changes, "station": station, "update_time": now})

    await write(request, _unique(update, "pileNo", "充电桩编号已存在"))
    old, new = await running(request, was), await running(request, station)
    if old is not None and (moved or renamed):
        await old.actions.pile_unregistered(current["pile_no"])
    if new is not None:
        await new.actions.pile_ports_changed(pile_no)
        if "gateway" in changes:  # the operator's binding wins over any claim
            await new.actions.pile_gateway(pile_no, changes["gateway"])
    return no_content()


async def delete_pile(request: web.Request) -> web.StreamResponse:
    """DELETE /api/ChargingPiles/{id}: refused while it charges or has driver cars."""
    pile_id = path_key(request, "id", "充电桩")
    current = await read(request, lambda db: PILES.row(db, pile_id))
    await refuse_driver_cars(request, current["station"], current["pile_no"], None, "删除")

    def delete(db: Db) -> None:
        PILES.row(db, pile_id)
        refuse_active(db, pile_id, None, f"充电桩 {current['pile_no']}", "删除")
        repo.delete_pile(db, pile_id)

    await write(request, delete)
    runtime = await running(request, current["station"])
    if runtime is not None:
        await runtime.actions.pile_unregistered(current["pile_no"])  # no longer schedulable
    return no_content()


# --- ports -----------------------------------------------------------------------------------------


class Port(msgspec.Struct, rename="camel"):
    """A port (status codes as the piles'; fault types per the pile registers)."""

    id: str
    pile_id: str
    pile_no: str
    port_no: str
    port_type: int
    port_type_description: str | None
    status: int
    status_description: str | None
    fault_type: int
    fault_type_description: str | None
    is_disabled: bool
    current_order_id: str | None
    voltage: float | None
    current_ampere: float | None
    power: Annotated[float, msgspec.Meta(description="kW")] | None
    temperature: float | None
    electricity: Annotated[float, msgspec.Meta(description="cumulative meter, kWh")] | None
    total_charging_times: int
    total_charging_duration: Annotated[int, msgspec.Meta(description="seconds")]
    total_power_consumption: Annotated[float, msgspec.Meta(description="kWh")]
    last_check_time: UtcTime
    last_order_id: str | None
    update_time: UtcTime


def port_json(row: Mapping[str, Any], viewer: AuthUser | None = None) -> dict[str, Any]:
    """The port shape of a row, as ``viewer`` may see it: another user's order ids are hidden from
    non-staff (None: every id shown)."""

    def visible(order_id: str | None, owner: int | None) -> str | None:
        return order_id if viewer is None or may_act_for(viewer, owner) else None

    return rendered(
        Port(
            id=row["id"],
            pile_id=row["pile_id"],
            pile_no=row["pile_no"],
            port_no=row["port_no"],
            port_type=row["port_type"],
            port_type_description=described(row["port_type"], PORT_TYPE),
            status=row["status"],
            status_description=described(row["status"], PILE_STATUS),
            fault_type=row["fault_type"],
            fault_type_description=described(row["fault_type"], FAULT_TYPE),
            is_disabled=bool(row["is_disabled"]),
            current_order_id=visible(row["current_order_id"], row["current_order_user"]),
            voltage=row["voltage"],
            current_ampere=row["current_ampere"],
            power=row["power"],
            temperature=row["temperature"],
            electricity=row["electricity"],
            total_charging_times=row["total_charging_times"],
            total_charging_duration=row["total_charging_duration"],
            total_power_consumption=round(row["total_power_consumption"] or 0, 3),
            last_check_time=utc_z(row["last_check_time"]),
            last_order_id=visible(row["last_order_id"], row["last_order_user"]),
            update_time=utc_z(row["update_time"]),
        )
    )


PORTS = Resource("充电端口", repo.PORT_READ, "t.id", repo.PORT_ORDER, port_json, count_from=repo.PORTS_FROM)


def ports_seen_by(request: web.Request) -> Resource:
    """The ports as the caller may read them (only staff see other users' order ids)."""
    viewer = current_user(request)
    return PORTS.shaped(lambda row: port_json(row, viewer))


async def list_ports(request: web.Request) -> web.StreamResponse:
    """GET /api/ChargingPorts."""
    return await list_response(request, ports_seen_by(request))


async def get_port(request: web.Request) -> web.StreamResponse:
    """GET /api/ChargingPorts/{id}."""
    return await item_response(request, ports_seen_by(request), path_key(request, "id", "充电端口"))


async def ports_by_pile(request: web.Request) -> web.StreamResponse:
    """GET /api/ChargingPorts/by-pile/{pileId}."""
    pile_id = path_key(request, "pileId", "充电桩")
    return await children_response(request, PILES, pile_id, ports_seen_by(request), "t.pile_id")


async def paged_ports(request: web.Request) -> web.StreamResponse:
    """GET /api/ChargingPorts/paged?pageNumber&pageSize&pileId&status&keyword."""
    pile_id, status = query_key(request, "pileId"), query_code(request, "status", PILE_STATUS)
    where = where_clause(
        [("t.pile_id = ?", pile_id), ("t.status = ?", status)],
        query_keyword(request),
        ("p.pile_no", "t.port_no"),
    )
    return await page_response(request, ports_seen_by(request), where, paging(request))


def require_unique_port_no(db: Db, pile_id: str, port_no: str, port_id: str | None = None) -> None:
    """400 naming portNo when another port of the pile has the number."""
    other = repo.port_id_by_no(db, pile_id, port_no)
    if other is not None and other != port_id:
        raise invalid("portNo", f"端口编号 {port_no} 在该充电桩下已存在")


def require_port_in_capacity(port_no: str, total_ports: int) -> None:
    """400 naming portNo unless the number is one of the pile's 1..totalPorts."""
    if not 1 <= int(port_no) <= total_ports:
        raise invalid("portNo", f"must be a port number from 1 to {total_ports} (the pile's totalPorts)")


async def create_port(request: web.Request) -> web.StreamResponse:
    """POST /api/ChargingPorts: a port of an existing pile, numbered within its totalPorts."""
    body = await read_shape(request, PortCreate, valid_port_no)
    pile_id, port_no, port_type = body.pile_id, port_number(body.port_no), body.port_type
    now = now_iso(request)

    def insert(db: Db) -> str:
        capacity = repo.total_ports(db, pile_id)
        if capacity is None:
            raise not_found("充电桩 (pileId)", pile_id)
        require_port_in_capacity(port_no, capacity)
        require_unique_port_no(db, pile_id, port_no)
        return repo.add_port(db, pile_id, port_no, now, port_type=port_type)

    port_id = await write(request, _unique(insert, "portNo", "端口编号在该充电桩下已存在"))
    pile = await read(request, lambda db: PILES.row(db, pile_id))
    await ports_changed(request, pile["station"], pile["pile_no"])  # the port is a charging point now
    return created(port_id)


async def update_port(request: web.Request) -> web.StreamResponse:
    """PUT /api/ChargingPorts/{id}: portNo (only while idle, within totalPorts), portType, isDisabled."""
    port_id = path_key(request, "id", "充电端口")
    body = await read_shape(request, PortUpdate, valid_port_no)
    changes: dict[str, Any] = {k: v for k, v in msgspec.structs.asdict(body).items() if v is not None}
    if "port_no" in changes:
        changes["port_no"] = port_number(changes["port_no"])
    if "is_disabled" in changes:
        changes["is_disabled"] = int(changes["is_disabled"])
    current = await read(request, lambda db: PORTS.row(db, port_id))
    renumbered = "port_no" in changes and changes["port_no"] != current["port_no"]
    if renumbered:
        await refuse_driver_cars(
            request, current["station"], current["pile_no"], current["port_no"], "修改端口编号"
        )
    changes["update_time"] = now_iso(request)

    def update(db: Db) -> None:
        PORTS.row(db, port_id)
        if renumbered:
            require_port_in_capacity(changes["port_no"], repo.total_ports(db, current["pile_id"]) or 0)
            require_unique_port_no(db, current["pile_id"], changes["port_no"], port_id)
            refuse_active(db, current["pile_id"], port_id, f"端口 {current['port_no']}", "修改端口编号")
        repo.update_port(db, port_id, changes)

    await write(request, _unique(update, "portNo", "端口编号在该充电桩下已存在"))
    if renumbered:
        await ports_changed(request, current["station"], current["pile_no"])
    return no_content()


async def delete_port(request: web.Request) -> web.StreamResponse:
    """DELETE /api/ChargingPorts/{id}: refused while it charges or driver cars are at it."""
    port_id = path_key(request, "id", "充电端口")
    current = await read(request, lambda db: PORTS.row(db, port_id))
    await refuse_driver_cars(request, current["station"], current["pile_no"], current["port_no"], "删除")

    def delete(db: Db) -> None:
        PORTS.row(db, port_id)
        refuse_active(db, current["pile_id"], port_id, f"端口 {current['port_no']}", "删除")
        repo.delete_port(db, port_id)

    await write(request, delete)
    await ports_changed(request, current["station"], current["pile_no"])  # no longer a charging point
    return no_content()


# --- the driver API's pile list ----------------------------------------------------------------------


def with_registered_piles(
    status: Mapping[str, Any], piles: Iterable[Mapping[str, Any]], scheduled: set[str]
) -> dict[str, Any]:
    """The driver API's pile list plus the recorded piles the scheduler does not know.

    Those have no queue; their status is the record's: ``offline`` unless online and in service,
    ``fault`` for status 3, else ``normal``; ``is_working`` while an order charges there.
    """
    out = {"fast_piles": list(status.get("fast_piles", [])), "slow_piles": list(status.get("slow_piles", []))}
    for pile in piles:
        if pile["pile_no"] in scheduled:
            continue
        online = pile["online_status"] == 1 and pile["in_service"] == 1
        entry = {
            "pile_id": pile["pile_no"],
            "pile_type": "fast" if pile["pile_type"] == 1 else "slow",
            "status": "offline" if not online else "fault" if pile["status"] == 3 else "normal",
            "is_working": pile["charging_user"] is not None,
            "current_user": pile["charging_user"],
            "queue": [],
        }
        out["fast_piles" if pile["pile_type"] == 1 else "slow_piles"].append(entry)
    return out


async def piles_status_with_registered(request: web.Request) -> dict[str, Any]:
    """``service.piles_status()`` of the request's station plus every pile recorded for it that the
    scheduler does not know (for GET /api/charging/piles/status/)."""
    runtime = await stations_of(request).find_for(request)
    service, code = runtime.service, runtime.code
    scheduled = service.scheduler.pile_ids()
    piles = await read(request, lambda db: repo.registered_piles(db, station=code))
    return with_registered_piles(service.piles_status(), piles, scheduled)


# --- the route table -------------------------------------------------------------------------------

_READ_NOTE = "Any valid token."
_STAFF_NOTE = "Needs permission level >= 3 (管理员); otherwise 403."


def _query(name: str, schema: Mapping[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": dict(schema),
        "description": description,
    }


def _route(method: str, path: str, handler: Any, summary: str, tag: str, **options: Any) -> RouteSpec:
    access = Access.USER if method == "GET" else Access.STAFF
    errors = tuple(options.pop("errors", ()))
    note = _READ_NOTE if access is Access.USER else _STAFF_NOTE
    description = f"{note} {options.pop('description', '')}".strip()
    return RouteSpec(
        method,
        path,
        handler,
        summary,
        access,
        tag,
        PLATFORM_STYLE,
        errors=errors,
        description=description,
        **options,
    )


def _crud(
    base: str,
    tag: str,
    what: str,
    item: type[msgspec.Struct],
    handlers: Mapping[str, Any],
    filters: tuple[dict[str, Any], ...],
    bodies: tuple[type[msgspec.Struct], type[msgspec.Struct]],
    notes: Mapping[str, str],
    errors: Mapping[str, tuple[tuple[int, str], ...]],
) -> list[RouteSpec]:
    """The six routes every resource of this module has (list, paged, get, create, update, delete);
    ``errors`` holds the create, update and delete routes' errors beyond validation and access."""
    rid = (key_path("id", f"{what}ID"),)
    return [
        _route("GET", base, handlers["list"], f"获取所有{what}", tag, response=list[item]),  # type: ignore[valid-type]
        _route(
            "GET",
            f"{base}/paged",
            handlers["paged"],
            f"获取{what}分页列表",
            tag,
            parameters=(*PAGE_PARAMETERS, *filters),
            response=Page[item],  # type: ignore[valid-type]
            description="pageSize above 100 is clamped to 100; pageNumber or pageSize below 1 is "
            "400; a page past the end is empty with correct totals. " + notes.get("paged", ""),
        ),
        _route(
            "GET",
            f"{base}/{{id}}",
            handlers["get"],
            f"获取{what}详情",
            tag,
            parameters=rid,
            response=item,
            errors=(MISSING_404,),
        ),
        _route(
            "POST",
            base,
            handlers["create"],
            f"创建{what}",
            tag,
            request_body=bodies[0],
            response=CreatedKey,
            status=201,
            errors=errors["create"],
            description=notes.get("create", ""),
        ),
        _route(
            "PUT",
            f"{base}/{{id}}",
            handlers["update"],
            f"更新{what}",
            tag,
            parameters=rid,
            request_body=bodies[1],
            status=204,
            errors=errors["update"],
            description='Fields left out (or null) are kept; optional texts sent as "" are cleared. '
            + notes.get("update", ""),
        ),
        _route(
            "DELETE",
            f"{base}/{{id}}",
            handlers["delete"],
            f"删除{what}",
            tag,
            parameters=rid,
            status=204,
            errors=errors["delete"],
            description=notes.get("delete", ""),
        ),
    ]


def _status_filter(table: Mapping[int, str], what: str) -> dict[str, Any]:
    return _query("status", int_codes_schema(table), what)


def _routes() -> list[RouteSpec]:
    stations = _crud(
        "/api/ChargingStations",
        "ChargingStations",
        "充电站",
        Station,
        {
            "list": list_stations,
            "paged": paged_stations,
            "get": get_station,
            "create": create_station,
            "update": update_station,
            "delete": delete_station,
        },
        (_status_filter(STATION_STATUS, "充电站状态"),),
        (StationCreate, StationUpdate),
        {
            "paged": "keyword matches name, address or location.",
            "create": "status defaults to 1 (在线). With a code (its MQTT {station}, unique: 400 naming "
            "code) it is a station the central runs, at once, while its status is 1.",
            "update": "A station with a code stops when its status leaves 1 and starts when it returns "
            "to 1; stopping is 409 while it has charging orders or driver requests, and for the "
            "default station.",
            "delete": "409 while the station has piles; a station with a code is stopped and deleted "
            "with its piles, 409 while it has charging orders or driver requests, and for the default "
            "station.",
        },
        {"create": (), "update": (MISSING_404, CONFLICT_409), "delete": (MISSING_404, CONFLICT_409)},
    )
    piles = _crud(
        "/api/ChargingPiles",
        "ChargingPiles",
        "充电桩",
        Pile,
        {
            "list": list_piles,
            "paged": paged_piles,
            "get": get_pile,
            "create": create_pile,
            "update": update_pile,
            "delete": delete_pile,
        },
        (_query("stationId", STR, "充电站ID"), _status_filter(PILE_STATUS, "充电桩状态")),
        (PileCreate, PileUpdate),
        {
            "paged": "keyword matches pileNo, manufacturer, imei or the station name.",
            "create": "totalPorts is the pile's port capacity: the pile starts with no ports; add them "
            "with POST /api/ChargingPorts, numbered 1..totalPorts (a pile a gateway reports first gets "
            "the ports it reports). Until its gateway reports it, status and onlineStatus are 0 离线. "
            "pileNo is the pile's MQTT id and must be unique (400 naming pileNo); a stationId that does "
            "not exist is 404.",
            "update": "A new totalPorts adds no ports; numbered ports above it are removed (409 if one "
            "charges). pileNo must stay unique (400 naming pileNo) and changes only while nothing "
            "charges there and no driver cars are queued at it (409).",
            "delete": "409 while an order charges there, a driver session uses a port, or driver cars are "
            "queued at it; its ports are deleted with it.",
        },
        {
            "create": (MISSING_404,),
            "update": (MISSING_404, CONFLICT_409),
            "delete": (MISSING_404, CONFLICT_409),
        },
    )
    piles.insert(
        2,
        _route(
            "GET",
            "/api/ChargingPiles/byStation/{stationId}",
            piles_by_station,
            "根据充电站ID获取充电桩列表",
            "ChargingPiles",
            parameters=(key_path("stationId", "充电站ID"),),
            response=list[Pile],
            errors=(MISSING_404,),
        ),
    )
    ports = _crud(
        "/api/ChargingPorts",
        "ChargingPorts",
        "充电端口",
        Port,
        {
            "list": list_ports,
            "paged": paged_ports,
            "get": get_port,
            "create": create_port,
            "update": update_port,
            "delete": delete_port,
        },
        (_query("pileId", STR, "充电桩ID"), _status_filter(PILE_STATUS, "端口状态 (as the piles')")),
        (PortCreate, PortUpdate),
        {
            "paged": "keyword matches pileNo or portNo.",
            "create": "portNo is the MQTT port number: one of 1..totalPorts of the pile and unique "
            "within it (otherwise 400 naming portNo). A pileId that does not exist is 404.",
            "update": "isDisabled: true refuses new orders on the port. A new portNo follows the "
            "create rules (400 naming portNo) and changes only while the port is idle (409).",
            "delete": "409 while it charges or driver cars are queued at it.",
        },
        {
            "create": (MISSING_404,),
            "update": (MISSING_404, CONFLICT_409),
            "delete": (MISSING_404, CONFLICT_409),
        },
    )
    ports.insert(
        2,
        _route(
            "GET",
            "/api/ChargingPorts/by-pile/{pileId}",
            ports_by_pile,
            "获取充电桩下的所有充电端口",
            "ChargingPorts",
            parameters=(key_path("pileId", "充电桩ID"),),
            response=list[Port],
            errors=(MISSING_404,),
        ),
    )
    return [*stations, *piles, *ports]


ROUTES: list[RouteSpec] = _routes()
