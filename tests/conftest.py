"""Project-wide fixtures: every test must leave no tasks, threads or child processes behind."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator

import pytest
from hypothesis import settings

pytest_plugins = ["tests.broker_fixtures"]

# CI runs property tests with a fixed seed and no example database, so a red build replays the
# same examples; locally hypothesis explores new ones each run. CI=<anything non-empty> selects it.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


def _children() -> set[int]:
    pid = os.getpid()
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return {int(p) for p in f.read().split()}
    except OSError:
        return set()


@pytest.fixture(autouse=True)
def _no_leftovers() -> Iterator[None]:
    """Fail a test that leaves threads, child processes or asyncio tasks running."""
    threads_before = set(threading.enumerate())
    children_before = _children()
    yield
    leftover_threads = [
        t for t in threading.enumerate() if t not in threads_before and t.is_alive() and not t.daemon
    ]
    leftover_children = _children() - children_before
    assert not leftover_threads, f"test left threads running: {leftover_threads}"
    assert not leftover_children, f"test left child processes running: {leftover_children}"


@pytest.fixture(autouse=True)
async def _no_leftover_tasks() -> object:
    """Fail an async test that leaves asyncio tasks pending on its loop."""
    yield
    current = asyncio.current_task()
    pending = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    assert not pending, f"test left asyncio tasks pending: {pending}"
