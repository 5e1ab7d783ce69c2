"""Telemetry retention: the central keeps raw readings for a fixed time, then prunes them.

Bills do not depend on old raw telemetry (segments keep their own meter samples and details), so
pruning only bounds disk use. Rows go oldest-inserted first in small batches, each its own short
write transaction, so ingest is never blocked for long.
"""

from __future__ import annotations

import asyncio
import time
from functools import partial

import structlog

from central.adapters import telemetry
from central.adapters.storage import Store

log = structlog.get_logger(__name__)
BATCH_ROWS = 10_000


async def prune(store: Store, retention_days: float, now_s: float | None = None) -> int:
    """Delete every reading older than the retention; returns how many."""
    cutoff_ms = int(((now_s or time.time()) - retention_days * 86400) * 1000)
    total = 0
    while True:
        deleted = await store.write(partial(telemetry.prune_readings, cutoff_ms=cutoff_ms, rows=BATCH_ROWS))
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
