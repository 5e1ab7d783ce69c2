"""The stations, piles and ports repository: every query and write of those three tables.

A pile comes into the database from three directions: the station parameters at start-up
(:func:`ensure_station`), an operator's ``POST /api/ChargingPiles``, and the first status a gateway
reports for a pile nobody recorded. All of them call :func:`create_pile`; ports are added by
:func:`add_port` (an operator's ``POST /api/ChargingPorts``) or :func:`add_ports` (ports a
gateway reports, and the station parameters' single port per pile). ``piles.total_ports`` is a
pile's port capacity: an operator-created pile starts with none of its ports.

The functions run inside a store transaction (``Store.write`` / ``Store.read``); they report facts
(ids, counts, rows) and leave refusing a request to their callers.

A pile belongs to the station that runs it: ``piles.station`` is that station's code (its MQTT
``{station}``), and pile numbers are unique per station (two stations may both have an F1). It is the
code of the pile's station record, or the default station's when that record has no code (a
station an operator created without one groups piles the default station runs). Every function
that finds piles by number takes the station.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from central.adapters.database import Db

FAST, TRICKLE = 1, 2  # piles.pile_type


# The reads of the operator API's station, pile and port resources: SELECT (joins included), the
# FROM clause a paged list counts over, and the list order.
STATIONS_FROM = "stations s"
STATION_READ = (
    "SELECT s.id, s.code, s.name, s.status, s.address, s.location, s.update_time, "
    "(SELECT COUNT(*) FROM piles p WHERE p.station_id = s.id) AS pile_count FROM stations s"
)
PILES_FROM = "piles p LEFT JOIN stations s ON s.id = p.station_id"
PILE_READ = f"SELECT p.*, s.name AS station_name FROM {PILES_FROM}"  # noqa: S608
PORTS_FROM = "ports t JOIN piles p ON p.id = t.pile_id"
_ORDER_OWNERS = (  # who owns the port's orders: only they (and staff) may see the order ids
    "(SELECT o.user_id FROM orders o WHERE o.id = t.current_order_id) AS current_order_user, "
    "(SELECT o.user_id FROM orders o WHERE o.id = t.last_order_id) AS last_order_user"
)
PORT_READ = f"SELECT t.*, p.pile_no, p.station, {_ORDER_OWNERS} FROM {PORTS_FROM}"  # noqa: S608
PORT_ORDER = "p.pile_no, CAST(t.port_no AS INTEGER), t.port_no"

# --- stations ------------------------------------------------------------------------------------


def create_station(
    db: Db,
    *,
    name: str,
    now: str,
    code: str | None = None,
    status: int = 1,
    address: str | None = None,
    location: str | None = None,
) -> str:
    """Insert a station and return its id (``code``: the MQTT station id, if it has one)."""
    new_id = uuid.uuid4().hex
    db.execute(
        "INSERT INTO stations (id, code, name, status, address, location, create_time, update_time) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [new_id, code, name, status, address, location, now, now],
    )
    return new_id


def station_id(db: Db, code: str, *, name: str | None = None, now: str) -> str:
    """The id of the station whose ``code`` (the MQTT station id) is given; created if missing."""
    rows = list(db.query("SELECT id FROM stations WHERE code = ?", [code]))
    if rows:
        return str(rows[0]["id"])
    return create_station(db, code=code, name=name or code, now=now)


def station_exists(db: Db, station: str) -> bool:
    return db.execute("SELECT 1 FROM stations WHERE id = ?", [station]).fetchone() is not None


def station_code(db: Db, station_id: str, default: str) -> str | None:
    """The code of the station that runs the piles of station record ``station_id``: its own code,
    or ``default`` when it has none; None when there is no such record."""
    row = db.execute("SELECT code FROM stations WHERE id = ?", [station_id]).fetchone()
    return None if row is None else str(row[0] or default)


def station_by_code(db: Db, code: str) -> dict[str, Any] | None:
    """The station record whose code is ``code``, or None."""
    rows = list(db.query("SELECT id, code, name, status FROM stations WHERE code = ?", [code]))
    return rows[0] if rows else None


def coded_stations(db: Db) -> list[dict[str, Any]]:
    """Every station record with a code (``id``, ``code``, ``name``, ``status``), oldest first."""
    return list(db.query("SELECT id, code, name, status FROM stations WHERE code IS NOT NULL ORDER BY rowid"))


def station_activity(db: Db, code: str) -> dict[str, int]:
    """What the station ``code`` has going: charging orders and driver requests waiting or charging."""
    orders = db.execute("SELECT COUNT(*) FROM orders WHERE station = ? AND status = 1", [code]).fetchone()[0]
    requests = db.execute(
        "SELECT COUNT(*) FROM charging_requests "
        "WHERE station = ? AND current_status IN ('waiting', 'charging')",
        [code],
    ).fetchone()[0]
    return {"orders": int(orders), "requests": int(requests)}


def update_station(db: Db, station: str, changes: Mapping[str, Any]) -> None:
    """Set the given columns of a station."""
    db.table("stations").update(station, dict(changes))


def delete_station(db: Db, station: str) -> None:
    db.execute("DELETE FROM stations WHERE id = ?", [station])


def delete_station_piles(db: Db, station: str) -> None:
    """Delete the piles of station record ``station`` (their ports go with them)."""
    db.execute("DELETE FROM piles WHERE station_id = ?", [station])


# --- piles ---------------------------------------------------------------------------------------


def create_pile(
    db: Db,
    *,
    station_id: str,
    station: str,
    pile_no: str,
    pile_type: int,
    power_kw: float,
    now: str,
    total_ports: int = 0,
    online: bool = False,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """Insert a pile record (no ports) and return its id.

    ``total_ports`` is the number of ports the pile may have (a cap the ports added later
    respect); ``extra`` carries optional columns (``manufacturer``, ``software_version``,
    ``gateway``, ...). ``station`` is the code of the station that runs it (see the module doc).
    A ``pile_no`` that station has already raises ``IntegrityError``.
    """
    pile_id = uuid.uuid4().hex
    db.table("piles").insert(
        {
            **(extra or {}),
            "id": pile_id,
            "station_id": station_id,
            "station": station,
            "pile_no": pile_no,
            "pile_type": pile_type,
            "power_rate": float(power_kw),
            "total_ports": total_ports,
            "status": 0,
            "online_status": 1 if online else 0,
            "in_service": 1,
            "create_time": now,
            "update_time": now,
        }
    )
    return pile_id


def total_ports(db: Db, pile_id: str) -> int | None:
    """A pile's port capacity, or None when there is no such pile."""
    row = db.execute("SELECT total_ports FROM piles WHERE id = ?", [pile_id]).fetchone()
    return None if row is None else int(row[0])


def pile_by_no(db: Db, pile_no: str, *, station: str) -> tuple[str, int] | None:
    """``(id, total_ports)`` of the station's pile numbered ``pile_no``, or None."""
    row = db.execute(
        "SELECT id, total_ports FROM piles WHERE station = ? AND pile_no = ?", [station, pile_no]
    ).fetchone()
    return None if row is None else (str(row[0]), int(row[1]))


def update_pile(db: Db, pile_id: str, changes: Mapping[str, Any]) -> None:
    """Set the given columns of a pile."""
    db.table("piles").update(pile_id, dict(changes))


def delete_pile(db: Db, pile_id: str) -> None:
    """Delete a pile; its ports go with it (ON DELETE CASCADE)."""
    db.execute("DELETE FROM piles WHERE id = ?", [pile_id])


def active_orders(db: Db, pile_id: str, port_id: str | None = None) -> int:
    """Charging orders (status 1) at a pile or port: by their pile / port, or held by a port
    (``ports.current_order_id``; a pointer to an order no longer charging is stale, not busy)."""
    port_clause, args = ("AND t.id = ?", [pile_id, port_id]) if port_id else ("", [pile_id])
    order_clause = "o.port_id = ?" if port_id else "o.pile_id = ?"
    sql = (
        f"SELECT COUNT(*) FROM orders o WHERE o.status = 1 AND ({order_clause} OR o.id IN "  # noqa: S608
        f"(SELECT t.current_order_id FROM ports t WHERE t.pile_id = ? {port_clause}))"
    )
    return int(db.execute(sql, [port_id or pile_id, *args]).fetchone()[0])


def registered_piles(db: Db, *, station: str) -> list[dict[str, Any]]:
    """Every pile record of the station with the user charging there (operator orders and driver
    sessions)."""
    return list(
        db.query(
            "SELECT p.pile_no, p.pile_type, p.status, p.online_status, p.in_service, "
            "(SELECT u.username FROM ports t JOIN orders o ON o.id = t.current_order_id "
            " JOIN users u ON u.id = o.user_id WHERE t.pile_id = p.id LIMIT 1) AS charging_user "
            "FROM piles p WHERE p.station = ? ORDER BY p.pile_no",
            [station],
        )
    )


# --- what the gateways report about piles ------------------------------------------------------------


def pile_gateways(db: Db, *, station: str) -> list[tuple[str, str]]:
    """``(pile_no, gateway)`` of the station's piles whose gateway is known."""
    return [
        (r[0], r[1])
        for r in db.execute(
            "SELECT p.pile_no, p.gateway FROM piles p WHERE p.station = ? AND p.gateway IS NOT NULL",
            [station],
        ).fetchall()
    ]


def update_pile_identity(
    db: Db,
    pile_id: str,
    *,
    online: bool,
    firmware: str | None,
    vendor: str | None,
    gateway: str | None,
    now: str,
) -> None:
    """A known pile's online flag and what its status reports about it (values given win, except
    that a recorded manufacturer is kept)."""
    db.execute(
        "UPDATE piles SET online_status = ?, software_version = COALESCE(?, software_version), "
        "manufacturer = COALESCE(manufacturer, ?), gateway = COALESCE(?, gateway), "
        "update_time = ? WHERE id = ?",
        [1 if online else 0, firmware, vendor, gateway, now, pile_id],
    )


def set_pile_status(db: Db, pile_id: str, code: int, heartbeat: str) -> None:
    """A pile's status code and its latest heartbeat (an older one never replaces a newer)."""
    db.execute(
        "UPDATE piles SET status = ?, "
        "last_heartbeat_time = CASE WHEN last_heartbeat_time > ? THEN last_heartbeat_time ELSE ? END "
        "WHERE id = ?",
        [code, heartbeat, heartbeat, pile_id],
    )


def set_total_ports(db: Db, pile_id: str, total: int) -> None:
    db.execute("UPDATE piles SET total_ports = ? WHERE id = ?", [total, pile_id])


def ports_offline(db: Db, pile_id: str, now: str) -> None:
    """Every port of a pile is offline (status 0)."""
    db.execute("UPDATE ports SET status = 0, update_time = ? WHERE pile_id = ?", [now, pile_id])


def piles_offline(db: Db, pile_nos: Sequence[str], now: str, *, station: str) -> None:
    """The station's numbered piles and all their ports are offline."""
    marks = ",".join("?" * len(pile_nos))
    db.execute(
        f"UPDATE piles SET online_status = 0, status = 0, update_time = ? "  # noqa: S608
        f"WHERE station = ? AND pile_no IN ({marks})",
        [now, station, *pile_nos],
    )
    db.execute(
        f"UPDATE ports SET status = 0, update_time = ? WHERE pile_id IN "  # noqa: S608
        f"(SELECT id FROM piles WHERE station = ? AND pile_no IN ({marks}))",
        [now, station, *pile_nos],
    )


def bind_gateway(db: Db, gateway: str, pile_nos: Sequence[str], *, station: str) -> None:
    """The numbered piles that no gateway serves yet are served by ``gateway`` from now on (a pile
    bound to another gateway keeps it: rebinding is an operator's change of the column)."""
    marks = ",".join("?" * len(pile_nos))
    db.execute(
        f"UPDATE piles SET gateway = ? WHERE gateway IS NULL AND station = ? "  # noqa: S608
        f"AND pile_no IN ({marks})",
        [gateway, station, *pile_nos],
    )


# --- ports ---------------------------------------------------------------------------------------


def add_port(db: Db, pile_id: str, port_no: str, now: str, *, port_type: int = 1) -> str:
    """Insert one port of a pile and return its id; a duplicate ``port_no`` raises IntegrityError."""
    port_id = uuid.uuid4().hex
    db.execute(
        "INSERT INTO ports (id, pile_id, port_no, port_type, status, update_time) VALUES (?, ?, ?, ?, 0, ?)",
        [port_id, pile_id, port_no, port_type, now],
    )
    return port_id


def add_ports(db: Db, pile_id: str, port_nos: Iterable[int], now: str) -> None:
    """Insert the numbered ports a pile lacks (ports it has are left as they are)."""
    for number in port_nos:
        db.execute(
            "INSERT OR IGNORE INTO ports (id, pile_id, port_no, port_type, status, update_time) "
            "VALUES (?, ?, ?, 1, 0, ?)",
            [uuid.uuid4().hex, pile_id, str(number), now],
        )


def port_id_by_no(db: Db, pile_id: str, port_no: str) -> str | None:
    """The id of a pile's port numbered ``port_no``, or None."""
    row = db.execute("SELECT id FROM ports WHERE pile_id = ? AND port_no = ?", [pile_id, port_no]).fetchone()
    return None if row is None else str(row[0])


def numbered_ports(db: Db, pile_id: str) -> dict[int, str]:
    """``{number: id}`` of a pile's ports whose number is a decimal integer."""
    rows = db.execute("SELECT port_no, id FROM ports WHERE pile_id = ?", [pile_id]).fetchall()
    return {int(no): str(pid) for no, pid in rows if str(no).isdigit()}


def update_port(db: Db, port_id: str, changes: Mapping[str, Any]) -> None:
    """Set the given columns of a port."""
    db.table("ports").update(port_id, dict(changes))


def delete_port(db: Db, port_id: str) -> None:
    db.execute("DELETE FROM ports WHERE id = ?", [port_id])


# --- the station parameters ------------------------------------------------------------------------


def ensure_station(
    db: Db,
    *,
    code: str,
    name: str,
    piles: Iterable[tuple[str, int, float]],
    now: str,
) -> None:
    """The station and the piles of its parameters exist as records (both APIs list them).

    ``piles`` holds ``(pile_no, pile_type, power_kw)``; each missing one is created with port 1.
    """
    sid = station_id(db, code, name=name, now=now)
    for pile_no, pile_type, power_kw in piles:
        if db.table("piles").count_where("station = ? AND pile_no = ?", [code, pile_no]):
            continue
        pile_id = create_pile(
            db,
            station_id=sid,
            station=code,
            pile_no=pile_no,
            pile_type=pile_type,
            power_kw=power_kw,
            now=now,
            total_ports=1,
        )
        add_ports(db, pile_id, [1], now)
