"""Stations, piles and ports: the one way each is created.

A pile comes into the database from three directions: the station parameters at start-up
(:func:`ensure_station`), an operator's ``POST /api/ChargingPiles``, and the first status a gateway
reports for a pile nobody recorded. All of them call :func:`create_pile`; ports are added by
:func:`add_port` (an operator's ``POST /api/ChargingPorts``) or :func:`add_ports` (ports a
gateway reports, and the station parameters' single port per pile).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import sqlite_utils

FAST, TRICKLE = 1, 2  # piles.pile_type


def station_id(db: sqlite_utils.Database, code: str, *, name: str | None = None, now: str) -> str:
    """The id of the station whose ``code`` (the MQTT station id) is given; created if missing."""
    rows = list(db.query("SELECT id FROM stations WHERE code = ?", [code]))
    if rows:
        return str(rows[0]["id"])
    new_id = uuid.uuid4().hex
    db.execute(
        "INSERT INTO stations (id, code, name, status, create_time, update_time) VALUES (?, ?, ?, 1, ?, ?)",
        [new_id, code, name or code, now, now],
    )
    return new_id


def create_pile(
    db: sqlite_utils.Database,
    *,
    station_id: str,
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
    ``gateway``, ...). A ``pile_no`` that exists already raises ``sqlite3.IntegrityError``.
    """
    pile_id = uuid.uuid4().hex
    db.table("piles").insert(
        {
            **(extra or {}),
            "id": pile_id,
            "station_id": station_id,
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


def add_port(db: sqlite_utils.Database, pile_id: str, port_no: str, now: str, *, port_type: int = 1) -> str:
    """Insert one port of a pile and return its id; a duplicate ``port_no`` raises IntegrityError."""
    port_id = uuid.uuid4().hex
    db.execute(
        "INSERT INTO ports (id, pile_id, port_no, port_type, status, update_time) VALUES (?, ?, ?, ?, 0, ?)",
        [port_id, pile_id, port_no, port_type, now],
    )
    return port_id


def add_ports(db: sqlite_utils.Database, pile_id: str, port_nos: Iterable[int], now: str) -> None:
    """Insert the numbered ports a pile lacks (ports it has are left as they are)."""
    for number in port_nos:
        db.execute(
            "INSERT OR IGNORE INTO ports (id, pile_id, port_no, port_type, status, update_time) "
            "VALUES (?, ?, ?, 1, 0, ?)",
            [uuid.uuid4().hex, pile_id, str(number), now],
        )


def ensure_station(
    db: sqlite_utils.Database,
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
        if db.table("piles").count_where("pile_no = ?", [pile_no]):
            continue
        pile_id = create_pile(
            db,
            station_id=sid,
            pile_no=pile_no,
            pile_type=pile_type,
            power_kw=power_kw,
            now=now,
            total_ports=1,
        )
        add_ports(db, pile_id, [1], now)
