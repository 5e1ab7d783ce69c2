"""Polling helpers: tests wait for conditions with a deadline, never with a bare sleep."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")


@overload
async def wait_for(predicate: Callable[[], Awaitable[T]], timeout_s: float = ...,
                   interval_s: float = ..., what: str = ...) -> T: ...
@overload
async def wait_for(predicate: Callable[[], T], timeout_s: float = ...,
                   interval_s: float = ..., what: str = ...) -> T: ...
async def wait_for(predicate: Callable[[], Any], timeout_s: float = 10.0,
                   interval_s: float = 0.02, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(interval_s)


def wait_for_sync(predicate: Callable[[], T], timeout_s: float = 10.0,
                  interval_s: float = 0.02, what: str = "condition") -> T:
    """Blocking twin of :func:`wait_for` for tests without an event loop."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(interval_s)
