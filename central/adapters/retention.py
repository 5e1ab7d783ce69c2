"""Telemetry retention: the central keeps raw readings for a fixed time, then prunes them.

Bills do not depend on old raw telemetry (segments keep their own meter samples and details), so
pruning only bounds disk use. Rows go oldest-inserted first in small batches, each its own short
write transaction, so ingest is never blocked for long.
"""

from __future__ import annotations

import asyncio
import time

import sqlite_utils
import structlog

from central.adapters.storage import Store

log = structlog.get_logger(__name__)
BATCH_ROWS = 10_000


def prune_batch(db: sqlite_utils.Database, cutoff_ms: int, rows: int = BATCH_ROWS) -> int:
    """Delete up to ``rows`` of the oldest-inserted readings older than ``cutoff_ms``."""
    cursor = db.execute(
        "DELETE FROM telemetry WHERE rowid IN "
        "(SELECT rowid FROM telemetry WHERE ts < ? ORDER BY rowid LIMIT ?)",
        [cutoff_ms, rows],
    )
    return int(cursor.rowcount)


async def prune(store: Store, retention_days: float, now_s: float | None = None) -> int:
    """Delete every reading older than the retention; returns how many."""
    cutoff_ms = int(((now_s or time.time()) - retention_days * 86400) * 1000)
    total = 0
    while True:
        deleted = await store.write(lambda db: prune_batch(db, cutoff_ms))
        total += deleted
        if deleted < BATCH_ROWS:
            return total
        await asyncio.sleep(0)  # let other writes in between batches


async def run_retention(store: Store, retention_days: float, interval_s: float = 3600) -> None:
    """Prune now and then every ``interval_s`` (a cancellable background task)."""
    while True:
        try:
            deleted = await prune(store, retention_days)
            if deleted:
                log.info("telemetry pruned", rows=deleted, retention_days=retention_days)
        except Exception:
            log.exception("telemetry pruning failed")
        await asyncio.sleep(interval_s)
