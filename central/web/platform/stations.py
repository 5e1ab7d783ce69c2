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

import math
import re
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime
from typing import Any

import sqlite_utils
from aiohttp import web

from central.adapters import stations as repo
from central.adapters.query import Resource, where_clause
from central.application.charging import ChargingService
from central.web.errors import PLATFORM_STYLE, conflict
from central.web.keys import SERVICE
from central.web.openapi import RouteSpec
from central.web.permissions import Access
from central.web.platform.common import (
    BOOL,
    CONFLICT_409,
    DATE,
    DATETIME,
    FAULT_TYPE,
    INT,
    KEY_RESULT,
    KEY_SCHEMA,
    MAX_KEY,
    MISSING_404,
    NINT,
    NNUM,
    NSTR,
    NUM,
    ONLINE_STATUS,
    PAGE_PARAMETERS,
    PILE_STATUS,
    PILE_TYPE,
    PORT_TYPE,
    STATION_STATUS,
    STR,
    Body,
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
    obj_schema,
    page_response,
    page_schema,
    paging,
    path_key,
    query_code,
    query_key,
    query_keyword,
    read,
    read_body,
    text_schema,
    utc_z,
    write,
)
from central.web.shapes import json_type

MAX_PORTS = 10
POWER_KW = (0.1, 500.0)
PORT_NO = (1, 99)  # the MQTT topic's port range
PILE_NO = re.compile(r"[A-Za-z0-9_.:-]{1,64}")  # an MQTT pile id (protocols.topics)
PILE_NO_HINT = "must be 1-64 of A-Z a-z 0-9 _ . : - (the pile's MQTT id)"


# --- input -----------------------------------------------------------------------------------------


class Fields(Body):
    """:class:`Body` plus the numbers, dates and port numbers of stations, piles and ports."""

    def number(self, name: str, *, required: bool = False, bounds: tuple[float, float]) -> float | None:
        """A finite number within ``bounds`` (inclusive)."""
        value = self.data.get(name)
        if self._missing(name, value, required):
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.bad(name, f"must be a number, got {json_type(value)}")
        elif not math.isfinite(value) or not bounds[0] <= value <= bounds[1]:
            self.bad(name, f"must be a number from {bounds[0]:g} to {bounds[1]:g}, got {value!r}")
        else:
            return float(value)
        return None

    def day(self, name: str) -> str | None:
        """An ISO 8601 date (a date-time keeps its date part) as ``YYYY-MM-DD``."""
        value = self.text(name, max_len=40)
        if value is None:
            return None
        try:
            return (
                date.fromisoformat(value) if len(value) == 10 else datetime.fromisoformat(value).date()
            ).isoformat()
        except ValueError:
            self.bad(name, f"must be an ISO 8601 date such as 2025-01-01, got {value!r}")
            return None

    def port_no(self, name: str, *, required: bool = False) -> str | None:
        """A port number 1..99 (integer or digit string), stored as its decimal text."""
        value = self.data.get(name)
        if isinstance(value, str) and value.strip().isdigit() and len(value.strip()) <= 3:
            value = int(value.strip())
        if self._missing(name, value, required):
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not PORT_NO[0] <= value <= PORT_NO[1]:
            self.bad(name, f"must be a port number from {PORT_NO[0]} to {PORT_NO[1]}, got {value!r}")
            return None
        return str(value)


async def read_fields(request: web.Request) -> Fields:
    body = await read_body(request)
    return Fields(body.data)


# --- driver queue ------------------------------------------------------------------------------------


def point_port(point_id: str, pile_no: str) -> str | None:
    """The port number (text) of a scheduler charging point of ``pile_no``, else None."""
    if point_id == pile_no:
        return "1"
    prefix = f"{pile_no}-"
    return point_id[len(prefix) :] if point_id.startswith(prefix) else None


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


def refuse_driver_cars(request: web.Request, pile_no: str, port_no: str | None, action: str) -> None:
    """409 while the driver queue has cars at the pile (or port)."""
    cars = driver_cars(request.app.get(SERVICE), pile_no, port_no)
    if cars:
        where = f"充电桩 {pile_no}" + (f" 端口 {port_no}" if port_no else "")
        raise conflict(f"{where} 有 {cars} 辆司机端车辆正在充电或排队，不能{action}")


def refuse_active(
    db: sqlite_utils.Database, pile_id: str, port_id: str | None, what: str, action: str
) -> None:
    """409 while a charging order is at the pile (or port)."""
    count = repo.active_orders(db, pile_id, port_id)
    if count:
        raise conflict(f"{what} 有 {count} 个进行中的充电订单或会话，不能{action}")


# --- stations --------------------------------------------------------------------------------------


def station_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """The spec's station shape."""
    return {
        "id": row["id"],
        "name": row["name"],
        "status": row["status"],
        "statusDescription": described(row["status"], STATION_STATUS),
        "address": row["address"],
        "location": row["location"],
        "updateTime": utc_z(row["update_time"]),
        "pileCount": row["pile_count"],
    }


STATIONS = Resource(
    "充电站", repo.STATION_READ, "s.id", "s.rowid", station_json, count_from=repo.STATIONS_FROM
)


async def list_stations(request: web.Request) -> web.StreamResponse:
    """GET /api/ChargingStations."""
    return await list_response(request, STATIONS)


async def get_station(request: web.Request) -> web.StreamResponse:
    """GET /api/ChargingStations/{id}."""
    return await item_response(request, STATIONS, path_key(request, "id", "充电站"))


async def paged_stations(request: web.Request) -> web.StreamResponse:
    """GET /api/ChargingStations/paged?pageNumber&pageSize&status&keyword."""
    status, keyword = query_code(request, "status", STATION_STATUS), query_keyword(request)
    where = where_clause([("s.status = ?", status)], keyword, ("s.name", "s.address", "s.location"))
    return await page_response(request, STATIONS, where, paging(request))


def station_fields(body: Fields, *, creating: bool) -> dict[str, Any]:
    """The station columns the body sets (all required ones when creating)."""
    values = {
        "name": body.text("name", required=creating, max_len=100),
        "status": body.integer("status", choices=STATION_STATUS),
        "address": body.text("address", max_len=200),
        "location": body.text("location", max_len=100),
    }
    body.check()
    if creating:
        values["status"] = 1 if values["status"] is None else values["status"]
        return values
    keep = {"name", "status"}  # a null name or status keeps the stored one; texts may be cleared
    return {k: v for k, v in values.items() if body.present(_camel(k)) and (v is not None or k not in keep)}


def _camel(column: str) -> str:
    head, *rest = column.split("_")
    return head + "".join(part.title() for part in rest)


async def create_station(request: web.Request) -> web.StreamResponse:
    """POST /api/ChargingStations."""
    values = station_fields(await read_fields(request), creating=True)
    now = now_iso(request)
    return created(await write(request, lambda db: repo.create_station(db, **values, now=now)))


async def update_station(request: web.Request) -> web.StreamResponse:
    """PUT /api/ChargingStations/{id}."""
    station_id = path_key(request, "id", "充电站")
    changes = {**station_fields(await read_fields(request), creating=False), "update_time": now_iso(request)}

    def update(db: sqlite_utils.Database) -> None:
        STATIONS.row(db, station_id)
        repo.update_station(db, station_id, changes)

    await write(request, update)
    return no_content()


async def delete_station(request: web.Request) -> web.StreamResponse:
    """DELETE /api/ChargingStations/{id}: only a station without piles."""
    station_id = path_key(request, "id", "充电站")

    def delete(db: sqlite_utils.Database) -> None:
        row = STATIONS.row(db, station_id)
        if row["pile_count"]:
            raise conflict(f"充电站 {station_id} 下还有 {row['pile_count']} 个充电桩，请先删除充电桩")
        repo.delete_station(db, station_id)

    await write(request, delete)
    return no_content()


# --- piles -----------------------------------------------------------------------------------------


def pile_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """The spec's pile shape."""
    return {
        "id": row["id"],
        "stationId": row["station_id"],
        "stationName": row["station_name"],
        "pileNo": row["pile_no"],
        "pileType": row["pile_type"],
        "pileTypeDescription": described(row["pile_type"], PILE_TYPE),
        "status": row["status"],
        "statusDescription": described(row["status"], PILE_STATUS),
        "powerRate": row["power_rate"],
        "manufacturer": row["manufacturer"],
        "imei": row["imei"],
        "totalPorts": row["total_ports"],
        "protocolVersion": row["protocol_version"],
        "softwareVersion": row["software_version"],
        "hardwareVersion": row["hardware_version"],
        "onlineStatus": row["online_status"],
        "onlineStatusDescription": described(row["online_status"], ONLINE_STATUS),
        "signalStrength": row["signal_strength"],
        "temperature": row["temperature"],
        "lastHeartbeatTime": utc_z(row["last_heartbeat_time"]),
        "installationDate": row["installation_date"],
        "lastMaintenanceDate": row["last_maintenance_date"],
        "updateTime": utc_z(row["update_time"]),
    }


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


_PILE_TEXTS = {
    "manufacturer": 100,
    "imei": 32,
    "protocolVersion": 32,
    "softwareVersion": 32,
    "hardwareVersion": 32,
}
_PILE_COLUMNS = {
    "pileNo": "pile_no",
    "pileType": "pile_type",
    "powerRate": "power_rate",
    "totalPorts": "total_ports",
    "protocolVersion": "protocol_version",
    "softwareVersion": "software_version",
    "hardwareVersion": "hardware_version",
    "installationDate": "installation_date",
    "lastMaintenanceDate": "last_maintenance_date",
    "stationId": "station_id",
    "manufacturer": "manufacturer",
    "imei": "imei",
}


def pile_fields(body: Fields, *, creating: bool) -> dict[str, Any]:
    """The pile columns the body sets (by column name); required ones when creating."""
    values: dict[str, Any] = {
        "stationId": body.text("stationId", required=creating, max_len=MAX_KEY),
        "pileNo": body.text("pileNo", required=creating, pattern=PILE_NO, hint=PILE_NO_HINT),
        "pileType": body.integer("pileType", required=creating, choices=PILE_TYPE),
        "powerRate": body.number("powerRate", required=creating, bounds=POWER_KW),
        "totalPorts": body.integer("totalPorts", required=creating, bounds=(1, MAX_PORTS)),
        "installationDate": body.day("installationDate"),
        "lastMaintenanceDate": body.day("lastMaintenanceDate"),
        **{name: body.text(name, max_len=size) for name, size in _PILE_TEXTS.items()},
    }
    body.check()
    required = ("stationId", "pileNo", "pileType", "powerRate", "totalPorts")
    if creating:
        return {_PILE_COLUMNS[k]: v for k, v in values.items()}
    return {
        _PILE_COLUMNS[k]: v
        for k, v in values.items()
        if body.present(k) and (v is not None or k not in required)
    }


def require_station(db: sqlite_utils.Database, station_id: str) -> None:
    """404 naming stationId unless the station exists."""
    if not repo.station_exists(db, station_id):
        raise not_found("充电站 (stationId)", station_id)


def require_unique_pile_no(db: sqlite_utils.Database, pile_no: str, pile_id: str | None = None) -> None:
    """400 naming pileNo when another pile has the number."""
    other = repo.pile_by_no(db, pile_no)
    if other is not None and other[0] != pile_id:
        raise invalid("pileNo", f"充电桩编号 {pile_no} 已存在")


def _unique(
    fn: Callable[[sqlite_utils.Database], Any], field: str, message: str
) -> Callable[[sqlite_utils.Database], Any]:
    """``fn`` with a UNIQUE violation (a concurrent duplicate) reported as 400 naming ``field``."""

    def run(db: sqlite_utils.Database) -> Any:
        try:
            return fn(db)
        except sqlite3.IntegrityError as exc:
            if "UNIQUE" not in str(exc):
                raise
            raise invalid(field, message) from None

    return run


_PILE_EXTRA = (
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
    values = pile_fields(await read_fields(request), creating=True)
    now = now_iso(request)

    def insert(db: sqlite_utils.Database) -> str:
        require_station(db, values["station_id"])
        require_unique_pile_no(db, values["pile_no"])
        return repo.create_pile(
            db,
            station_id=values["station_id"],
            pile_no=values["pile_no"],
            pile_type=values["pile_type"],
            power_kw=values["power_rate"],
            now=now,
            total_ports=values["total_ports"],
            extra={name: values[name] for name in _PILE_EXTRA},
        )

    return created(await write(request, _unique(insert, "pileNo", "充电桩编号已存在")))


def remove_ports_above(db: sqlite_utils.Database, pile_id: str, total: int) -> None:
    """Numbered ports above a pile's new capacity ``total`` are removed (409 if one charges)."""
    for number, port_id in sorted(repo.numbered_ports(db, pile_id).items()):
        if number > total:
            refuse_active(db, pile_id, port_id, f"端口 {number}", "删除 (totalPorts)")
            repo.delete_port(db, port_id)


async def update_pile(request: web.Request) -> web.StreamResponse:
    """PUT /api/ChargingPiles/{id}: the fields given; a new pileNo only while nothing charges."""
    pile_id = path_key(request, "id", "充电桩")
    changes = pile_fields(await read_fields(request), creating=False)
    now = now_iso(request)
    current = await read(request, lambda db: PILES.row(db, pile_id))
    renamed = "pile_no" in changes and changes["pile_no"] != current["pile_no"]
    if renamed:
        refuse_driver_cars(request, current["pile_no"], None, "修改编号")

    def update(db: sqlite_utils.Database) -> None:
        PILES.row(db, pile_id)
        if "station_id" in changes:
            require_station(db, changes["station_id"])
        if renamed:
            require_unique_pile_no(db, changes["pile_no"], pile_id)
            refuse_active(db, pile_id, None, f"充电桩 {current['pile_no']}", "修改编号")
        if "total_ports" in changes:
            remove_ports_above(db, pile_id, changes["total_ports"])
        repo.update_pile(db, pile_id, {**changes, "update_time": now})

    await write(request, _unique(update, "pileNo", "充电桩编号已存在"))
    await request.app[SERVICE].pile_ports_changed(changes.get("pile_no", current["pile_no"]))
    return no_content()


async def delete_pile(request: web.Request) -> web.StreamResponse:
    """DELETE /api/ChargingPiles/{id}: refused while it charges or has driver cars."""
    pile_id = path_key(request, "id", "充电桩")
    current = await read(request, lambda db: PILES.row(db, pile_id))
    refuse_driver_cars(request, current["pile_no"], None, "删除")

    def delete(db: sqlite_utils.Database) -> None:
        PILES.row(db, pile_id)
        refuse_active(db, pile_id, None, f"充电桩 {current['pile_no']}", "删除")
        repo.delete_pile(db, pile_id)

    await write(request, delete)
    await request.app[SERVICE].unregister_pile(current["pile_no"])  # no longer schedulable
    return no_content()


# --- ports -----------------------------------------------------------------------------------------


def port_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """The spec's port shape (status codes as the piles'; fault types per the pile registers)."""
    return {
        "id": row["id"],
        "pileId": row["pile_id"],
        "pileNo": row["pile_no"],
        "portNo": row["port_no"],
        "portType": row["port_type"],
        "portTypeDescription": described(row["port_type"], PORT_TYPE),
        "status": row["status"],
        "statusDescription": described(row["status"], PILE_STATUS),
        "faultType": row["fault_type"],
        "faultTypeDescription": described(row["fault_type"], FAULT_TYPE),
        "isDisabled": bool(row["is_disabled"]),
        "currentOrderId": row["current_order_id"],
        "voltage": row["voltage"],
        "currentAmpere": row["current_ampere"],
        "power": row["power"],
        "temperature": row["temperature"],
        "electricity": row["electricity"],
        "totalChargingTimes": row["total_charging_times"],
        "totalChargingDuration": row["total_charging_duration"],
        "totalPowerConsumption": round(row["total_power_consumption"] or 0, 3),
        "lastCheckTime": utc_z(row["last_check_time"]),
        "lastOrderId": row["last_order_id"],
        "updateTime": utc_z(row["update_time"]),
    }


PORTS = Resource("充电端口", repo.PORT_READ, "t.id", repo.PORT_ORDER, port_json, count_from=repo.PORTS_FROM)


async def list_ports(request: web.Request) -> web.StreamResponse:
    """GET /api/ChargingPorts."""
    return await list_response(request, PORTS)


async def get_port(request: web.Request) -> web.StreamResponse:
    """GET /api/ChargingPorts/{id}."""
    return await item_response(request, PORTS, path_key(request, "id", "充电端口"))


async def ports_by_pile(request: web.Request) -> web.StreamResponse:
    """GET /api/ChargingPorts/by-pile/{pileId}."""
    pile_id = path_key(request, "pileId", "充电桩")
    return await children_response(request, PILES, pile_id, PORTS, "t.pile_id")


async def paged_ports(request: web.Request) -> web.StreamResponse:
    """GET /api/ChargingPorts/paged?pageNumber&pageSize&pileId&status&keyword."""
    pile_id, status = query_key(request, "pileId"), query_code(request, "status", PILE_STATUS)
    where = where_clause(
        [("t.pile_id = ?", pile_id), ("t.status = ?", status)],
        query_keyword(request),
        ("p.pile_no", "t.port_no"),
    )
    return await page_response(request, PORTS, where, paging(request))


def require_unique_port_no(
    db: sqlite_utils.Database, pile_id: str, port_no: str, port_id: str | None = None
) -> None:
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
    body = await read_fields(request)
    pile_id = body.text("pileId", required=True, max_len=MAX_KEY)
    port_no = body.port_no("portNo", required=True)
    port_type = body.integer("portType", choices=PORT_TYPE) or 1
    body.check()
    assert pile_id is not None and port_no is not None
    now = now_iso(request)

    def insert(db: sqlite_utils.Database) -> str:
        capacity = repo.total_ports(db, pile_id)
        if capacity is None:
            raise not_found("充电桩 (pileId)", pile_id)
        require_port_in_capacity(port_no, capacity)
        require_unique_port_no(db, pile_id, port_no)
        return repo.add_port(db, pile_id, port_no, now, port_type=port_type)

    port_id = await write(request, _unique(insert, "portNo", "端口编号在该充电桩下已存在"))
    pile_no = await read(request, lambda db: PILES.row(db, pile_id)["pile_no"])
    await request.app[SERVICE].pile_ports_changed(pile_no)  # the port is a charging point now
    return created(port_id)


async def update_port(request: web.Request) -> web.StreamResponse:
    """PUT /api/ChargingPorts/{id}: portNo (only while idle, within totalPorts), portType, isDisabled."""
    port_id = path_key(request, "id", "充电端口")
    body = await read_fields(request)
    values = {
        "port_no": body.port_no("portNo"),
        "port_type": body.integer("portType", choices=PORT_TYPE),
        "is_disabled": body.boolean("isDisabled"),
    }
    body.check()
    changes: dict[str, Any] = {k: v for k, v in values.items() if v is not None}
    if "is_disabled" in changes:
        changes["is_disabled"] = int(changes["is_disabled"])
    current = await read(request, lambda db: PORTS.row(db, port_id))
    renumbered = "port_no" in changes and changes["port_no"] != current["port_no"]
    if renumbered:
        refuse_driver_cars(request, current["pile_no"], current["port_no"], "修改端口编号")
    changes["update_time"] = now_iso(request)

    def update(db: sqlite_utils.Database) -> None:
        PORTS.row(db, port_id)
        if renumbered:
            require_port_in_capacity(changes["port_no"], repo.total_ports(db, current["pile_id"]) or 0)
            require_unique_port_no(db, current["pile_id"], changes["port_no"], port_id)
            refuse_active(db, current["pile_id"], port_id, f"端口 {current['port_no']}", "修改端口编号")
        repo.update_port(db, port_id, changes)

    await write(request, _unique(update, "portNo", "端口编号在该充电桩下已存在"))
    if renumbered:
        await request.app[SERVICE].pile_ports_changed(current["pile_no"])
    return no_content()


async def delete_port(request: web.Request) -> web.StreamResponse:
    """DELETE /api/ChargingPorts/{id}: refused while it charges or driver cars are at it."""
    port_id = path_key(request, "id", "充电端口")
    current = await read(request, lambda db: PORTS.row(db, port_id))
    refuse_driver_cars(request, current["pile_no"], current["port_no"], "删除")

    def delete(db: sqlite_utils.Database) -> None:
        PORTS.row(db, port_id)
        refuse_active(db, current["pile_id"], port_id, f"端口 {current['port_no']}", "删除")
        repo.delete_port(db, port_id)

    await write(request, delete)
    await request.app[SERVICE].pile_ports_changed(current["pile_no"])  # no longer a charging point
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
    """``service.piles_status()`` plus every recorded pile the scheduler does not know (for
    GET /api/charging/piles/status/)."""
    service = request.app[SERVICE]
    scheduled = service.scheduler.pile_ids()
    piles = await read(request, repo.registered_piles)
    return with_registered_piles(service.piles_status(), piles, scheduled)


# --- the route table -------------------------------------------------------------------------------

STATION = obj_schema(
    {
        "id": STR,
        "name": STR,
        "status": INT,
        "statusDescription": NSTR,
        "address": NSTR,
        "location": NSTR,
        "updateTime": DATETIME,
        "pileCount": INT,
    }
)
STATION_BODY = obj_schema(
    {
        "name": {"type": "string", "minLength": 1, "maxLength": 100},
        "status": int_codes_schema(STATION_STATUS),
        "address": text_schema(200),
        "location": text_schema(100),
    },
    ("name",),
)
PILE = obj_schema(
    {
        "id": STR,
        "stationId": STR,
        "stationName": NSTR,
        "pileNo": STR,
        "pileType": INT,
        "pileTypeDescription": NSTR,
        "status": INT,
        "statusDescription": NSTR,
        "powerRate": NUM,
        "manufacturer": NSTR,
        "imei": NSTR,
        "totalPorts": INT,
        "protocolVersion": NSTR,
        "softwareVersion": NSTR,
        "hardwareVersion": NSTR,
        "onlineStatus": INT,
        "onlineStatusDescription": NSTR,
        "signalStrength": NINT,
        "temperature": NNUM,
        "lastHeartbeatTime": DATETIME,
        "installationDate": DATE,
        "lastMaintenanceDate": DATE,
        "updateTime": DATETIME,
    }
)
_PILE_PROPS = {
    "stationId": KEY_SCHEMA,
    "pileNo": {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,64}$"},
    "pileType": int_codes_schema(PILE_TYPE),
    "powerRate": {"type": "number", "minimum": POWER_KW[0], "maximum": POWER_KW[1], "description": "kW"},
    "totalPorts": {"type": "integer", "minimum": 1, "maximum": MAX_PORTS},
    **{name: text_schema(size) for name, size in _PILE_TEXTS.items()},
    "installationDate": {**DATE, "description": "ISO 8601 date"},
}
PILE_CREATE_BODY = obj_schema(_PILE_PROPS, ("stationId", "pileNo", "pileType", "powerRate", "totalPorts"))
PILE_UPDATE_BODY = obj_schema(
    {**_PILE_PROPS, "lastMaintenanceDate": {**DATE, "description": "ISO 8601 date"}}
)
PORT = obj_schema(
    {
        "id": STR,
        "pileId": STR,
        "pileNo": STR,
        "portNo": STR,
        "portType": INT,
        "portTypeDescription": NSTR,
        "status": INT,
        "statusDescription": NSTR,
        "faultType": INT,
        "faultTypeDescription": NSTR,
        "isDisabled": BOOL,
        "currentOrderId": NSTR,
        "voltage": NNUM,
        "currentAmpere": NNUM,
        "power": {**NNUM, "description": "kW"},
        "temperature": NNUM,
        "electricity": {**NNUM, "description": "cumulative meter, kWh"},
        "totalChargingTimes": INT,
        "totalChargingDuration": {**INT, "description": "seconds"},
        "totalPowerConsumption": {**NUM, "description": "kWh"},
        "lastCheckTime": DATETIME,
        "lastOrderId": NSTR,
        "updateTime": DATETIME,
    }
)
_PORT_NO = {
    "type": ["integer", "string"],
    "description": "port number 1..99 (a digit string is accepted), one of the pile's 1..totalPorts",
    "minimum": PORT_NO[0],
    "maximum": PORT_NO[1],
    "pattern": "^[0-9]{1,2}$",
}
PORT_CREATE_BODY = obj_schema(
    {
        "pileId": KEY_SCHEMA,
        "portNo": _PORT_NO,
        "portType": int_codes_schema(PORT_TYPE),
    },
    ("pileId", "portNo"),
)
PORT_UPDATE_BODY = obj_schema(
    {"portNo": _PORT_NO, "portType": int_codes_schema(PORT_TYPE), "isDisabled": BOOL}
)

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
    item: Mapping[str, Any],
    handlers: Mapping[str, Any],
    filters: tuple[dict[str, Any], ...],
    bodies: tuple[Mapping[str, Any], Mapping[str, Any]],
    notes: Mapping[str, str],
    errors: Mapping[str, tuple[tuple[int, str], ...]],
) -> list[RouteSpec]:
    """The six routes every resource of this module has (list, paged, get, create, update, delete);
    ``errors`` holds the create, update and delete routes' errors beyond validation and access."""
    rid = (key_path("id", f"{what}ID"),)
    return [
        _route(
            "GET", base, handlers["list"], f"获取所有{what}", tag, response={"type": "array", "items": item}
        ),
        _route(
            "GET",
            f"{base}/paged",
            handlers["paged"],
            f"获取{what}分页列表",
            tag,
            parameters=(*PAGE_PARAMETERS, *filters),
            response=page_schema(item),
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
            response=KEY_RESULT,
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
        STATION,
        {
            "list": list_stations,
            "paged": paged_stations,
            "get": get_station,
            "create": create_station,
            "update": update_station,
            "delete": delete_station,
        },
        (_status_filter(STATION_STATUS, "充电站状态"),),
        (STATION_BODY, {**STATION_BODY, "required": []}),
        {
            "paged": "keyword matches name, address or location.",
            "create": "status defaults to 1 (在线).",
            "delete": "409 while the station has piles.",
        },
        {"create": (), "update": (MISSING_404,), "delete": (MISSING_404, CONFLICT_409)},
    )
    piles = _crud(
        "/api/ChargingPiles",
        "ChargingPiles",
        "充电桩",
        PILE,
        {
            "list": list_piles,
            "paged": paged_piles,
            "get": get_pile,
            "create": create_pile,
            "update": update_pile,
            "delete": delete_pile,
        },
        (_query("stationId", STR, "充电站ID"), _status_filter(PILE_STATUS, "充电桩状态")),
        (PILE_CREATE_BODY, PILE_UPDATE_BODY),
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
            response={"type": "array", "items": PILE},
            errors=(MISSING_404,),
        ),
    )
    ports = _crud(
        "/api/ChargingPorts",
        "ChargingPorts",
        "充电端口",
        PORT,
        {
            "list": list_ports,
            "paged": paged_ports,
            "get": get_port,
            "create": create_port,
            "update": update_port,
            "delete": delete_port,
        },
        (_query("pileId", STR, "充电桩ID"), _status_filter(PILE_STATUS, "端口状态 (as the piles')")),
        (PORT_CREATE_BODY, PORT_UPDATE_BODY),
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
            response={"type": "array", "items": PORT},
            errors=(MISSING_404,),
        ),
    )
    return [*stations, *piles, *ports]


ROUTES: list[RouteSpec] = _routes()
