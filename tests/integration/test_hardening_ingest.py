"""Ingest binds each pile to the gateway that first reported it: another gateway's birth cannot claim
it and its will cannot take it offline; while the pile's gateway is down nobody else speaks for the
pile. A port whose session has finished is idle."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from central.adapters.ingest import IDLE, Ingest
from central.adapters.schema import migrations
from central.adapters.storage import Store
from protocols import topics
from protocols.payloads import CommandResult, GatewayStatus, PileEvent, PileStatus, Telemetry

pytest_plugins = ("tests.integration.central_fixtures",)

STATION = "s1"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Listener:
    def __init__(self) -> None:
        self.readings: list[tuple[str, int, Telemetry]] = []
        self.states: list[tuple[str, str]] = []
        self.events: list[tuple[str, PileEvent]] = []

    def on_telemetry(self, pile_no: str, port: int, reading: Telemetry) -> None:
        self.readings.append((pile_no, port, reading))

    def on_pile_state(self, pile_no: str, state: str) -> None:
        self.states.append((pile_no, state))

    def on_command_result(self, pile_no: str, port: int, result: CommandResult) -> None: ...

    def on_pile_event(self, pile_no: str, event: PileEvent) -> None:
        self.events.append((pile_no, event))


@pytest.fixture
async def store(each_database: Path | str) -> AsyncIterator[Store]:
    store = Store(each_database, [migrations])
    await store.open()
    yield store
    await store.close()


async def started(store: Store) -> tuple[Ingest, Listener]:
    listener = Listener()
    ingest = Ingest(store, STATION, listener, flush_interval_s=3600)
    await ingest.start()
    return ingest, listener


def birth(ingest: Ingest, gw: str, session: int, *piles: str) -> None:
    ingest.handle(
        topics.gw_status(STATION, gw), GatewayStatus("online", session, now_ms(), piles=piles).to_json()
    )


def will(ingest: Ingest, gw: str, session: int) -> None:
    ingest.handle(topics.gw_status(STATION, gw), GatewayStatus("lost", session).to_json())


def status(ingest: Ingest, pile: str, state: str = "online") -> None:
    payload = PileStatus(
        state,  # type: ignore[arg-type]
        now_ms(),
        kind="fast",
        ports=1,
        rated_power_W=30000,
    ).to_json()
    ingest.handle(topics.pile_status(STATION, pile), payload)


def reading(ingest: Ingest, pile: str, seq: int, state: str = "charging", energy_Wh: int = 1000) -> None:
    payload = Telemetry(now_ms(), 1, seq, state, 400.0, 25.0, 10_000.0, energy_Wh, 30.0, "none").to_json()
    ingest.handle(topics.telemetry(STATION, pile, 1), payload)


async def rows(store: Store, sql: str) -> list[dict[str, Any]]:
    return await store.read(lambda db: [dict(r) for r in db.query(sql)])


async def test_a_forged_birth_and_will_do_not_take_a_pile_offline(store: Store) -> None:
    ingest, listener = await started(store)
    try:
        birth(ingest, "gw1", 1, "F1")
        status(ingest, "F1")
        await ingest.flush()
        birth(ingest, "gw9", 1, "F1")  # a forger claims F1 ...
        will(ingest, "gw9", 1)  # ... and its will would take F1 down
        await ingest.flush()
        assert ingest.pile_state("F1") == "online"
        assert ("F1", "offline") not in listener.states
        assert ingest.stats()["foreign_gateway"] == 1
        assert ingest.stats()["gateways"]["gw9"]["piles"] == []  # type: ignore[index]
        assert await rows(store, "SELECT gateway, online_status FROM piles") == [
            {"gateway": "gw1", "online_status": 1}
        ]
    finally:
        await ingest.stop()


async def test_the_binding_survives_a_restart(store: Store) -> None:
    first, _ = await started(store)
    birth(first, "gw1", 1, "F1")
    status(first, "F1")
    await first.stop()
    second, _listener = await started(store)
    try:
        status(second, "F1")
        birth(second, "gw9", 1, "F1")
        will(second, "gw9", 1)
        assert second.pile_state("F1") == "online" and second.stats()["foreign_gateway"] == 1
        will(second, "gw1", 1)  # its own gateway's will still counts
        assert second.pile_state("F1") == "offline"
    finally:
        await second.stop()


async def test_while_its_gateway_is_down_nobody_speaks_for_the_pile(store: Store) -> None:
    ingest, listener = await started(store)
    try:
        birth(ingest, "gw1", 1, "F1")
        status(ingest, "F1")
        reading(ingest, "F1", 1)
        will(ingest, "gw1", 1)
        reading(ingest, "F1", 2, energy_Wh=99_000)  # forged: F1's gateway is down
        event = PileEvent(now_ms(), 1, 1, "session_stopped", 1)
        ingest.handle(topics.pile_event(STATION, "F1"), event.to_json())
        assert [r.seq for _p, _n, r in listener.readings] == [1] and listener.events == []
        assert ingest.stats()["foreign_gateway"] == 2
        birth(ingest, "gw1", 2, "F1")  # back: its readings count again, the dropped seq was not kept
        reading(ingest, "F1", 2, energy_Wh=1500)
        assert [r.energy_Wh for _p, _n, r in listener.readings] == [1000, 1500]
    finally:
        await ingest.stop()


async def test_an_unbound_pile_binds_to_the_first_gateway_and_an_operator_rebinds_it(store: Store) -> None:
    ingest, _listener = await started(store)
    try:
        birth(ingest, "gw1", 1, "F1", "F2")
        status(ingest, "F1")
        status(ingest, "F2")
        await ingest.flush()
        ingest.bind("F2", "gw2")
        birth(ingest, "gw2", 1, "F2")
        will(ingest, "gw1", 1)
        assert ingest.pile_state("F1") == "offline" and ingest.pile_state("F2") == "online"
        assert ingest.stats()["foreign_gateway"] == 0
    finally:
        await ingest.stop()


@pytest.mark.parametrize(("state", "code"), [("finished", IDLE), ("available", IDLE)])
async def test_a_finished_port_is_idle(store: Store, state: str, code: int) -> None:
    ingest, _listener = await started(store)
    try:
        birth(ingest, "gw1", 1, "F1")
        status(ingest, "F1")
        await ingest.flush()
        reading(ingest, "F1", 1, state=state)
        await ingest.flush()
        assert await rows(store, "SELECT status FROM ports") == [{"status": code}]
        assert await rows(store, "SELECT status FROM piles") == [{"status": code}]
    finally:
        await ingest.stop()


@pytest.mark.parametrize(
    "topic",
    [
        topics.telemetry(STATION, "F1", 1),
        topics.pile_status(STATION, "F1"),
        topics.gw_status(STATION, "gw1"),
        topics.pile_event(STATION, "F1"),
        topics.cmd_result(STATION, "F1", 1),
    ],
)
async def test_deeply_nested_json_over_mqtt_is_dropped_as_malformed(store: Store, topic: str) -> None:
    ingest, listener = await started(store)
    try:
        ingest.handle(topic, b"[" * 100_000)
        malformed = ingest.stats()["malformed_by_reason"]
        assert isinstance(malformed, dict) and sum(malformed.values()) == 1 and "internal" not in malformed
        assert listener.readings == [] and listener.states == []
    finally:
        await ingest.stop()


async def test_a_sequence_number_no_database_column_holds_is_dropped_and_ingest_goes_on(store: Store) -> None:
    """Stored, a seq of 2^64 would fail its whole batch (and with manual acks be retried forever)."""
    ingest, _ = await started(store)
    try:
        status(ingest, "F1")
        reading(ingest, "F1", 2**64)
        reading(ingest, "F1", 2, energy_Wh=1002)
        await ingest.flush()
        assert await rows(store, "SELECT seq FROM telemetry") == [{"seq": 2}]
        assert ingest.stats()["malformed_by_reason"] == {"payload:telemetry": 1}
    finally:
        await ingest.stop()
