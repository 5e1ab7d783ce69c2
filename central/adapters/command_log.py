"""The ``commands`` table: one audit row per attempt of a command sent to a pile."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from central.adapters.database import Db


def insert_command(db: Db, row: Mapping[str, Any]) -> None:
    """Record an attempt (``row`` names every column of ``commands``)."""
    db.execute(
        "INSERT INTO commands (id, station, pile_no, port, op, params, car, status, reason, attempt, "
        "created_ms, expires_ms, updated_ms) VALUES (:id, :station, :pile_no, :port, :op, :params, "
        ":car, :status, :reason, :attempt, :created_ms, :expires_ms, :updated_ms)",
        dict(row),
    )


def update_command(db: Db, cid: str, *, status: str, reason: str | None, now_ms: int) -> None:
    """An attempt's new status (and why)."""
    db.execute(
        "UPDATE commands SET status = ?, reason = ?, updated_ms = ? WHERE id = ?",
        [status, reason, now_ms, cid],
    )
