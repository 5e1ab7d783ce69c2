"""Telemetry rows and the live fields they set: batched writes for ingest, deletes for retention.

Writes go as multi-row statements: one sqlite3_step per chunk instead of one per row.
``executemany()`` releases and re-takes the GIL around every row's step, and on a busy loop each
re-take can wait a whole switch interval (5 ms), which made the writer thread the bottleneck end
to end.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlite_utils

MAX_SQL_VARIABLES = 32_000  # SQLite's default limit is 32766 since 3.32

_INSERT_READINGS = (
    "INSERT INTO telemetry (pile_no, port, ts, session, seq, state, voltage_v, current_a, power_w, "
    "energy_wh, temperature_c, fault, replayed) VALUES {values}"
)
_UPDATE_PORTS = (  # UPDATE ... FROM needs SQLite 3.33
    "WITH v(pile_no, port_no, voltage, current_a, power_kw, temperature, meter_wh, kwh, status, "
    "fault_type, ts, check_time) AS (VALUES {values}) "
    "UPDATE ports SET voltage = v.voltage, current_ampere = v.current_a, power = v.power_kw, "
    "temperature = v.temperature, meter_wh = v.meter_wh, electricity = v.kwh, status = v.status, "
    "fault_type = v.fault_type, last_telemetry_ms = v.ts, last_check_time = v.check_time, "
    "update_time = ? FROM v JOIN piles ON piles.pile_no = v.pile_no "
    "WHERE ports.pile_id = piles.id AND ports.port_no = v.port_no "
    "AND (ports.last_telemetry_ms IS NULL OR ports.last_telemetry_ms <= v.ts)"
)
_UPDATE_PILES = (
    "WITH v(pile_no, temperature, status, heartbeat) AS (VALUES {values}) "
    "UPDATE piles SET temperature = v.temperature, status = v.status, update_time = ?, "
    "last_heartbeat_time = max(COALESCE(piles.last_heartbeat_time, ''), v.heartbeat) "
    "FROM v WHERE piles.pile_no = v.pile_no"
)


def insert_readings(db: sqlite_utils.Database, rows: Sequence[tuple[Any, ...]]) -> None:
    """Store readings: ``(pile_no, port, ts, session, seq, state, voltage_v, current_a, power_w,
    energy_wh, temperature_c, fault, replayed)`` each."""
    _execute_rows(db, _INSERT_READINGS, rows)


def update_port_live(db: sqlite_utils.Database, rows: Sequence[tuple[Any, ...]], now: str) -> None:
    """Ports' live fields from their latest readings: ``(pile_no, port_no, voltage, current_a,
    power_kw, temperature, meter_wh, kwh, status, fault_type, ts_ms, check_time)`` each. A reading
    older than the one a port shows already changes nothing."""
    _execute_rows(db, _UPDATE_PORTS, rows, now)


def update_pile_live(db: sqlite_utils.Database, rows: Sequence[tuple[Any, ...]], now: str) -> None:
    """Piles' live fields: ``(pile_no, temperature, status, heartbeat)`` each."""
    _execute_rows(db, _UPDATE_PILES, rows, now)


def prune_readings(db: sqlite_utils.Database, cutoff_ms: int, rows: int) -> int:
    """Delete up to ``rows`` of the oldest-inserted readings older than ``cutoff_ms``; how many."""
    cursor = db.execute(
        "DELETE FROM telemetry WHERE rowid IN "
        "(SELECT rowid FROM telemetry WHERE ts < ? ORDER BY rowid LIMIT ?)",
        [cutoff_ms, rows],
    )
    return int(cursor.rowcount)


def _execute_rows(db: sqlite_utils.Database, sql: str, rows: Sequence[tuple[Any, ...]], *tail: Any) -> None:
    """Run ``sql`` with its ``{values}`` filled by as many rows per statement as SQLite allows."""
    if not rows:
        return
    width = len(rows[0])
    per_statement = max(1, (MAX_SQL_VARIABLES - len(tail)) // width)
    for start in range(0, len(rows), per_statement):
        chunk = rows[start : start + per_statement]
        values = ",".join(["(" + ",".join("?" * width) + ")"] * len(chunk))
        db.conn.execute(sql.format(values=values), [v for row in chunk for v in row] + list(tail))
