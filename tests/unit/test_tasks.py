"""cancel_and_wait: a stop returns even when a task swallows its cancellation."""

from __future__ import annotations

import asyncio
import contextlib

from structlog.testing import capture_logs

from pilegate.tasks import cancel_and_wait


async def _swallows_once(stopped: asyncio.Event) -> None:
    with contextlib.suppress(asyncio.CancelledError):  # as a library catching it inside a wait might
        await asyncio.Event().wait()
    try:
        await asyncio.Event().wait()
    finally:
        stopped.set()


async def _stops_only_when(allowed: asyncio.Event) -> None:
    while not allowed.is_set():
        with contextlib.suppress(asyncio.CancelledError):
            await allowed.wait()


async def test_a_swallowed_cancellation_is_repeated_until_the_task_ends():
    stopped = asyncio.Event()
    task = asyncio.create_task(_swallows_once(stopped))
    await asyncio.sleep(0)  # let it reach its first wait
    await cancel_and_wait([task], what="test", within_s=5)
    assert task.done() and stopped.is_set()


async def test_a_task_that_never_stops_is_logged_and_left_behind():
    allowed = asyncio.Event()
    task = asyncio.create_task(_stops_only_when(allowed), name="stubborn")
    await asyncio.sleep(0)
    with capture_logs() as logs:
        await cancel_and_wait([task], what="test", within_s=0.3)
    assert not task.done()
    (entry,) = [e for e in logs if e["event"] == "task would not stop; left behind"]
    assert entry["task"] == "stubborn" and "_stops_only_when" in entry["stack"]
    allowed.set()
    await task


async def test_failed_and_finished_tasks_are_consumed_without_waiting():
    async def fails() -> None:
        raise RuntimeError("boom")

    task = asyncio.create_task(fails())
    await asyncio.sleep(0)
    await cancel_and_wait([task], what="test")
    assert isinstance(task.exception(), RuntimeError)
