"""Polling helpers: tests wait for conditions with a deadline, never with a bare sleep.

Every wait in the tests goes through :func:`wait_for` (async) or :func:`wait_for_sync` (blocking):
poll ``predicate`` until it returns something truthy and return that, or fail after ``timeout_s``
with a message naming ``what`` was awaited. Two optional hooks widen the failure:

- ``give_up`` is asked after each miss; a non-empty answer (the reason, e.g. "the gateway exited")
  ends the wait at once, because what it waits for can no longer happen;
- ``context`` is asked once on failure and its text is appended to the message (a log tail, the
  last messages seen).
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

import aiohttp

T = TypeVar("T")

GiveUp = Callable[[], str | None]
Context = Callable[[], str]


class _Deadline:
    """The shared bookkeeping of both waits: when to stop and what to say then."""

    def __init__(self, timeout_s: float, what: str, give_up: GiveUp | None, context: Context | None):
        self.timeout_s = timeout_s
        self.what = what
        self.give_up = give_up
        self.context = context
        self.at = time.monotonic() + timeout_s

    def check(self) -> None:
        """Raise ``AssertionError`` when the wait should end without success."""
        reason = self.give_up() if self.give_up is not None else None
        if reason:
            self._fail(f"gave up waiting for {self.what}: {reason}")
        if time.monotonic() > self.at:
            self._fail(f"timed out after {self.timeout_s}s waiting for {self.what}")

    def _fail(self, message: str) -> None:
        extra = self.context() if self.context is not None else ""
        raise AssertionError(f"{message}\n{extra}" if extra else message)


@overload
async def wait_for(
    predicate: Callable[[], Awaitable[T]],
    timeout_s: float = ...,
    interval_s: float = ...,
    what: str = ...,
    *,
    give_up: GiveUp | None = ...,
    context: Context | None = ...,
) -> T: ...
@overload
async def wait_for(
    predicate: Callable[[], T],
    timeout_s: float = ...,
    interval_s: float = ...,
    what: str = ...,
    *,
    give_up: GiveUp | None = ...,
    context: Context | None = ...,
) -> T: ...
async def wait_for(
    predicate: Callable[[], Any],
    timeout_s: float = 10.0,
    interval_s: float = 0.02,
    what: str = "condition",
    *,
    give_up: GiveUp | None = None,
    context: Context | None = None,
) -> Any:
    """Poll ``predicate`` (plain or async) until it returns something truthy; fail after ``timeout_s``."""
    deadline = _Deadline(timeout_s, what, give_up, context)
    while True:
        result = predicate()
        if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
            result = await result
        if result:
            return result
        deadline.check()
        await asyncio.sleep(interval_s)


def wait_for_sync(
    predicate: Callable[[], T],
    timeout_s: float = 10.0,
    interval_s: float = 0.02,
    what: str = "condition",
    *,
    give_up: GiveUp | None = None,
    context: Context | None = None,
) -> T:
    """Blocking twin of :func:`wait_for` for tests without an event loop."""
    deadline = _Deadline(timeout_s, what, give_up, context)
    while True:
        result = predicate()
        if result:
            return result
        deadline.check()
        time.sleep(interval_s)


async def finishes(awaitable: Awaitable[T], timeout_s: float, what: str) -> T:
    """Await ``awaitable`` for at most ``timeout_s``; on a timeout fail naming ``what`` and with
    where every task of the loop stood (a hung teardown then says what hung)."""
    try:
        async with asyncio.timeout(timeout_s):
            return await awaitable
    except TimeoutError:
        stacks = io.StringIO()
        for task in asyncio.all_tasks():
            task.print_stack(limit=6, file=stacks)
        raise AssertionError(f"{what} did not finish within {timeout_s}s\n{stacks.getvalue()}") from None


async def next_event(response: aiohttp.ClientResponse, timeout_s: float = 10) -> tuple[str, Any]:
    """The next named Server-Sent Event of a stream (retry lines and keep-alive comments skipped)."""
    event: str | None = None
    data: Any = None
    async with asyncio.timeout(timeout_s):
        while True:
            line = (await response.content.readline()).decode().rstrip("\n")
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: "):
                data = json.loads(line.removeprefix("data: "))
            elif line == "" and event is not None:
                return event, data
