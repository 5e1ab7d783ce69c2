"""Telemetry rows and the live fields they set: batched writes for ingest, deletes for retention.

Readings go in as one bulk load per batch (``Db.insert_rows``: multi-row INSERTs on SQLite, COPY
on PostgreSQL); the live fields as one statement over a table of values per batch
(``Db.execute_values``: multi-row VALUES on SQLite, one step per chunk instead of one per row, as
``executemany()`` would release and re-take the GIL around every row's step; a COPY into a staging
table on PostgreSQL, binary: the rows are typed). The values are cast to their columns' types where
they are used, as SQLite's VALUES have none.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from central.adapters.database import POSTGRESQL, SQLITE, Db

READING_COLUMNS = (
    "station", "pile_no", "port", "ts", "session", "seq", "state", "voltage_v", "current_a", "power_w",
    "energy_wh", "temperature_c", "fault", "replayed",
)  # fmt: skip
# UPDATE ... FROM needs SQLite 3.33. The ports are reached through their piles in a CTE of its own
# (``k``), MATERIALIZED on PostgreSQL so that its planner joins the readings with their piles first
# whatever it estimates: on tables never analysed (a new database, until autovacuum's first round) it
# took a station's 500 piles for 3 and scanned the station's ports once per reading, 100-300 ms for
# 1,000 ports. SQLite flattens the CTE (MATERIALIZED would make it copy the rows first).
_UPDATE_PORTS = (
    "WITH v(pile_no, port_no, voltage, current_a, power_kw, temperature, meter_wh, kwh, status, "
    "fault_type, ts, check_time) AS (VALUES {values}), "
    "k AS MATERIALIZED (SELECT piles.id AS pile_id, v.* FROM v JOIN piles "
    "ON piles.pile_no = CAST(v.pile_no AS TEXT) AND piles.station = ?) "
    "UPDATE ports SET voltage = CAST(k.voltage AS DOUBLE PRECISION), "
    "current_ampere = CAST(k.current_a AS DOUBLE PRECISION), power = CAST(k.power_kw AS DOUBLE PRECISION), "
    "temperature = CAST(k.temperature AS DOUBLE PRECISION), "
    "meter_wh = CAST(k.meter_wh AS BIGINT), electricity = CAST(k.kwh AS DOUBLE PRECISION), "
    "status = CAST(k.status AS BIGINT), fault_type = CAST(k.fault_type AS BIGINT), "
    "last_telemetry_ms = CAST(k.ts AS BIGINT), last_check_time = CAST(k.check_time AS TEXT), "
    "update_time = ? FROM k WHERE ports.pile_id = k.pile_id AND ports.port_no = CAST(k.port_no AS TEXT) "
    "AND (ports.last_telemetry_ms IS NULL OR ports.last_telemetry_ms <= CAST(k.ts AS BIGINT))"
)
_UPDATE_PORTS_BY_DIALECT = {
    POSTGRESQL: _UPDATE_PORTS,
    SQLITE: _UPDATE_PORTS.replace(" AS MATERIALIZED (", " AS ("),
}
_TEXT, _INT, _REAL = "text", "bigint", "double precision"
_PORT_TYPES = (_TEXT, _TEXT, _REAL, _REAL, _REAL, _REAL, _INT, _REAL, _INT, _INT, _INT, _TEXT)
_HEARTBEAT = "CAST(v.heartbeat AS TEXT)"
_PILE_TYPES = (_TEXT, _REAL, _INT, _TEXT)
_UPDATE_PILES = (
    "WITH v(pile_no, temperature, status, heartbeat) AS (VALUES {values}) "  # noqa: S608 - constants
    "UPDATE piles SET temperature = CAST(v.temperature AS DOUBLE PRECISION), "
    "status = CAST(v.status AS BIGINT), "
    f"update_time = ?, last_heartbeat_time = CASE WHEN piles.last_heartbeat_time > {_HEARTBEAT} "
    f"THEN piles.last_heartbeat_time ELSE {_HEARTBEAT} END "
    "FROM v WHERE piles.pile_no = CAST(v.pile_no AS TEXT) AND piles.station = ?"
)


def insert_readings(db: Db, rows: Sequence[tuple[Any, ...]]) -> None:
    """Store readings: ``(station, pile_no, port, ts, session, seq, state, voltage_v, current_a, power_w,
    energy_wh, temperature_c, fault, replayed)`` each, of the columns' types (str, int, and int or
    float for the reals: a parsed :class:`~protocols.payloads.Telemetry` gives them)."""
    db.insert_rows("telemetry", READING_COLUMNS, rows, typed=True)


def update_port_live(db: Db, rows: Sequence[tuple[Any, ...]], now: str, station: str) -> None:
    """The station's ports' live fields from their latest readings: ``(pile_no, port_no, voltage,
    current_a, power_kw, temperature, meter_wh, kwh, status, fault_type, ts_ms, check_time)`` each
    (str, str, numbers, int, float, int, int, int, str). A reading older than the one a port shows
    already changes nothing."""
    db.execute_values(_UPDATE_PORTS_BY_DIALECT[db.dialect], rows, station, now, types=_PORT_TYPES)


def update_pile_live(db: Db, rows: Sequence[tuple[Any, ...]], now: str, station: str) -> None:
    """The station's piles' live fields: ``(pile_no, temperature, status, heartbeat)`` each (str, a
    number, int, str)."""
    db.execute_values(_UPDATE_PILES, rows, now, station, types=_PILE_TYPES)


def last_readings(db: Db, rows: int) -> list[tuple[str, str, int, int, int]]:
    """``(station, pile_no, port, session, seq)`` of the last ``rows`` readings stored, in insertion
    order."""
    found = db.query(
        "SELECT station, pile_no, port, session, seq FROM telemetry "
        "WHERE rowid > (SELECT COALESCE(MAX(rowid), 0) FROM telemetry) - ? ORDER BY rowid",
        [rows],
    )
    return [(r["station"], r["pile_no"], int(r["port"]), int(r["session"]), int(r["seq"])) for r in found]


def prune_readings(db: Db, cutoff_ms: int, rows: int) -> int:
    """Delete up to ``rows`` of the oldest-inserted readings older than ``cutoff_ms``; how many."""
    cursor = db.execute(
        "DELETE FROM telemetry WHERE rowid IN "
        "(SELECT rowid FROM telemetry WHERE ts < ? ORDER BY rowid LIMIT ?)",
        [cutoff_ms, rows],
    )
    return int(cursor.rowcount)
