"""Forwarded station calls on a real PostgreSQL (``central/adapters/station_calls.py``): a change sent
to any instance is applied once, in order, under the station's owner, and its answer or error
returns to the caller; a call whose owner died while applying is answered failed, never applied
twice; a call nobody takes times out clearly and is never applied later."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from central.adapters.station_calls import (
    OWNER_STOPPED,
    CallTiming,
    Handler,
    LocalStationCalls,
    PgStationCalls,
    StationCallFailed,
    StationCallTimeout,
    StationNotRunning,
    station_calls,
)
from central.domain.errors import QueueFullError
from tests.helpers import wait_for
from tests.integration.fleet_helpers import Nodes, lease_holders

pytest_plugins = ("tests.integration.central_fixtures", "tests.integration.fleet_fixtures")

MakeCalls = Callable[..., Awaitable[PgStationCalls]]


async def refuse(station: str, kind: str, payload: Any) -> Any:
    raise AssertionError(f"a caller applied {kind} to {station} itself")


@pytest.fixture
async def instance(fleet_url: str) -> AsyncIterator[MakeCalls]:
    """Starts a PgStationCalls as instance ``name``; every one is closed after the test."""
    started: list[PgStationCalls] = []

    async def make(name: str, handler: Handler = refuse, timing: CallTiming | None = None) -> PgStationCalls:
        calls = PgStationCalls(fleet_url, handler, instance_id=name, timing=timing or CallTiming())
        await calls.start()
        started.append(calls)
        return calls

    try:
        yield make
    finally:
        for calls in started:
            await calls.close()


def rows(url: str, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql, params or []).fetchall()


class ApiLike(Exception):
    """What the web layer's API errors look like to this module: status, code, message, details."""

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any]) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


async def test_fifty_concurrent_calls_from_two_instances_are_applied_once_in_order(
    instance: MakeCalls, fleet_url: str
):
    applied: list[int] = []

    async def handler(station: str, kind: str, payload: Any) -> Any:
        applied.append(payload["n"])
        await asyncio.sleep(0)  # another call could interleave here if the owner let it
        return {"n": payload["n"], "order": len(applied)}

    owner = await instance("owner", handler)
    await owner.serve("S1")
    callers = [await instance("c1"), await instance("c2")]
    started = time.monotonic()
    answers = await asyncio.gather(*(callers[n % 2].call("S1", "echo", {"n": n}) for n in range(50)))
    elapsed_s = time.monotonic() - started
    print(f"50 forwarded calls answered in {elapsed_s:.2f} s")

    assert sorted(applied) == list(range(50))  # each exactly once
    assert [answer["n"] for answer in answers] == list(range(50))  # each caller got its own answer
    stored = rows(
        fleet_url, "SELECT payload::json->>'n', status, owner, caller FROM station_calls ORDER BY id"
    )
    assert [int(n) for n, *_ in stored] == applied  # applied in id order
    assert {(status, owner) for _, status, owner, _ in stored} == {("done", "owner")}
    assert all(caller == f"c{int(n) % 2 + 1}" for n, _, _, caller in stored)
    assert sorted(answer["order"] for answer in answers) == list(range(1, 51))


async def test_the_owner_applies_its_own_calls_in_process(instance: MakeCalls, fleet_url: str):
    async def handler(station: str, kind: str, payload: Any) -> Any:
        return {"station": station, "kind": kind, "payload": payload}

    owner = await instance("owner", handler)
    await owner.serve("S1")
    assert await owner.call("S1", "cancel", {"car": "V1"}) == {
        "station": "S1",
        "kind": "cancel",
        "payload": {"car": "V1"},
    }
    assert rows(fleet_url, "SELECT count(*) FROM station_calls") == [(0,)]


async def test_the_owners_error_comes_back_as_the_same_error(instance: MakeCalls):
    async def handler(station: str, kind: str, payload: Any) -> Any:
        if kind == "full":
            raise QueueFullError("the waiting area holds 6 cars")
        if kind == "api":
            raise ApiLike(409, "CONFLICT", "pile F1 is busy", {"pile": "F1"})
        raise ValueError("a bug")

    owner = await instance("owner", handler)
    await owner.serve("S1")
    caller = await instance("caller")

    with pytest.raises(QueueFullError, match=r"^the waiting area holds 6 cars$"):
        await caller.call("S1", "full", {})
    with pytest.raises(StationCallFailed) as api:
        await caller.call("S1", "api", {})
    assert (api.value.status, api.value.code, str(api.value), api.value.details) == (
        409,
        "CONFLICT",
        "pile F1 is busy",
        {"pile": "F1"},
    )
    with pytest.raises(StationCallFailed) as bug:
        await caller.call("S1", "bug", {})
    assert (bug.value.status, bug.value.error.kind, str(bug.value)) == (500, "internal:ValueError", "a bug")


async def test_a_call_claimed_by_an_owner_killed_while_applying_is_answered_failed_never_applied_twice(
    nodes: Nodes, instance: MakeCalls, fleet_url: str
):
    first = nodes.start("A", ["S1"])
    await wait_for(lambda: lease_holders(fleet_url, ["S1"]) == {"S1": ["A"]}, 15, what="A owning S1")
    caller = await instance("caller")
    pending = asyncio.create_task(caller.call("S1", "hang", {"n": 1}, timeout_s=30))
    await wait_for(lambda: first.events("applying"), 10, what="A applying the call", give_up=first.exited)
    assert rows(fleet_url, "SELECT status, owner FROM station_calls") == [("claimed", "A")]
    first.kill()

    second = nodes.start("B", ["S1"])
    with pytest.raises(StationCallFailed) as failed:
        await asyncio.wait_for(pending, 15)
    assert (failed.value.error.kind, failed.value.status, str(failed.value)) == (
        "owner_stopped",
        503,
        OWNER_STOPPED,
    )
    assert rows(fleet_url, "SELECT status, owner, error_kind FROM station_calls") == [
        ("failed", "A", "owner_stopped")
    ]

    answer = await caller.call("S1", "echo", {"n": 2}, timeout_s=15)
    assert answer["by"] == "B"
    assert [e["payload"] for e in second.events("applying")] == [{"n": 2}]  # the killed call: never again


async def test_a_call_no_owner_takes_times_out_clearly_and_is_never_applied_later(
    instance: MakeCalls, fleet_url: str
):
    caller = await instance("caller")
    started = time.monotonic()
    with pytest.raises(StationCallTimeout) as timeout:
        await caller.call("S1", "echo", {"n": 1}, timeout_s=1)
    assert time.monotonic() - started < 3
    assert (
        str(timeout.value)
        == "station 'S1': no central instance owning it took the call within 1 s; it was not applied"
    )
    assert timeout.value.applied is False
    assert rows(fleet_url, "SELECT status, error_kind FROM station_calls") == [("failed", "timeout")]

    # a caller that died before its deadline leaves a pending call; once expired, no owner applies it
    rows(
        fleet_url,
        "INSERT INTO station_calls (station, kind, payload, caller, created_ms, expires_ms) "
        "VALUES ('S1', 'echo', '{\"n\": 2}', 'dead', pilegate_now_ms() - 5000, pilegate_now_ms() - 4000) "
        "RETURNING id",
    )
    applied: list[Any] = []

    async def handler(station: str, kind: str, payload: Any) -> Any:
        applied.append(payload)
        return payload

    owner = await instance("owner", handler)
    await owner.serve("S1")
    assert await caller.call("S1", "echo", {"n": 3}) == {"n": 3}
    assert applied == [{"n": 3}]
    assert rows(fleet_url, "SELECT payload, status, error_kind FROM station_calls ORDER BY id") == [
        ('{"n": 1}', "failed", "timeout"),
        ('{"n": 2}', "failed", "expired"),
        ('{"n": 3}', "done", None),
    ]


async def test_a_graceful_hand_over_lets_the_call_being_applied_finish(instance: MakeCalls, fleet_url: str):
    applying, release = asyncio.Event(), asyncio.Event()

    async def slow(station: str, kind: str, payload: Any) -> Any:
        applying.set()
        await release.wait()
        return "finished"

    owner = await instance("owner", slow)
    await owner.serve("S1")
    caller = await instance("caller")
    pending = asyncio.create_task(caller.call("S1", "echo", {}))
    # being applied, not merely claimed: a call claimed in the moment its station is released goes
    # back to pending for the next owner
    await wait_for(applying.is_set, 10, what="the call being applied")
    assert rows(fleet_url, "SELECT status FROM station_calls") == [("claimed",)]
    handing_over = asyncio.create_task(owner.unserve("S1"))
    release.set()
    await handing_over
    assert await pending == "finished"


async def test_old_answers_are_pruned(instance: MakeCalls, fleet_url: str):
    rows(
        fleet_url,
        "INSERT INTO station_calls (station, kind, payload, status, caller, created_ms, expires_ms, done_ms) "
        "VALUES ('S1', 'echo', '{}', 'done', 'x', 0, 1, pilegate_now_ms() - 7200000) RETURNING id",
    )

    async def handler(station: str, kind: str, payload: Any) -> Any:
        return None

    owner = await instance("owner", handler, CallTiming(prune_every_s=0))
    await owner.serve("S2")
    await wait_for(lambda: rows(fleet_url, "SELECT count(*) FROM station_calls") == [(0,)], 5, what="pruned")


async def test_on_sqlite_calls_are_applied_in_process(tmp_path: Path):
    async def handler(station: str, kind: str, payload: Any) -> Any:
        if kind == "full":
            raise QueueFullError("full")
        return [station, kind, payload]

    calls = station_calls(f"sqlite:///{tmp_path / 'central.db'}", handler, instance_id="solo")
    assert isinstance(calls, LocalStationCalls)
    await calls.start()
    with pytest.raises(StationNotRunning, match="station 'S1' is not running"):
        await calls.call("S1", "echo", 1)
    await calls.serve("S1")
    assert await calls.call("S1", "echo", 1) == ["S1", "echo", 1]
    with pytest.raises(QueueFullError):
        await calls.call("S1", "full", None)
    await calls.close()


async def test_a_call_another_instance_claimed_while_both_held_the_station_is_answered_failed(
    instance: MakeCalls, fleet_url: str
):
    async def handler(station: str, kind: str, payload: Any) -> Any:
        raise AssertionError("a claimed call was applied again")

    owner = await instance("owner", handler)
    await owner.serve("S1")  # the old owner claims after this: its lease was gone, it had not seen it yet
    rows(
        fleet_url,
        "INSERT INTO station_calls (station, kind, payload, status, caller, owner, created_ms, expires_ms) "
        "VALUES ('S1', 'echo', '{}', 'claimed', 'x', 'old', pilegate_now_ms(), pilegate_now_ms() + 60000) "
        "RETURNING id",
    )
    await wait_for(
        lambda: rows(fleet_url, "SELECT status, error FROM station_calls") == [("failed", OWNER_STOPPED)],
        5,
        what="the orphaned claim answered failed",
    )
