"""Stopping background tasks so that a stop always returns.

A task that swallows its cancellation (a library catching ``CancelledError`` inside a wait) would
keep ``await task`` waiting forever and hang a daemon's shutdown. :func:`cancel_and_wait` cancels,
waits a bounded time, cancels again while the task still runs, and in the end logs every task
that would not stop, with where it stood, instead of waiting for it.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterable

import structlog

log = structlog.get_logger(__name__)
RECANCEL_EVERY_S = 0.5  # a swallowed cancellation is repeated this often


async def cancel_and_wait(tasks: Iterable[asyncio.Task[object]], *, what: str, within_s: float = 5.0) -> None:
    """Cancel ``tasks`` and wait for them, at most ``within_s`` seconds; their results and
    exceptions are consumed. The caller's own cancellation is not swallowed."""
    pending = {t for t in tasks if not t.done()}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while pending and loop.time() < deadline:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=min(RECANCEL_EVERY_S, deadline - loop.time()))
    for task in pending:
        where = io.StringIO()
        task.print_stack(limit=8, file=where)
        log.error("task would not stop; left behind", what=what, task=task.get_name(), stack=where.getvalue())
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: no "exception was never retrieved" at exit
