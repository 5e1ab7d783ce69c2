"""Central ingest against a real Mosquitto and a real SQLite store.

A probe plays the gateway: it publishes telemetry, statuses and events; the central's MQTT client
hands them to :class:`Ingest`, which writes batches to the store and tells a recording listener.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import pytest

from central.adapters.ingest import Ingest
from central.adapters.mqtt import CentralMqtt, ConnectTimeoutError, MqttSettings, NotConnectedError
from central.adapters.schema import migrations
from central.adapters.storage import Store
from pilegate.broker import MosquittoBroker, add_mosquitto_user, free_port
from protocols import topics
from protocols.payloads import (
    CommandResult,
    GatewayStatus,
    PileEvent,
    PileState,
    PileStatus,
    Telemetry,
)
from tests.helpers import wait_for

if TYPE_CHECKING:
    from tests.broker_fixtures import MqttProbe

pytest_plugins = ["tests.broker_fixtures", "tests.integration.central_fixtures"]

STATION = "s1"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class RecordingListener:
    """Records every listener call; optionally raises to prove ingest survives it."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.readings: list[tuple[str, int, Telemetry]] = []
        self.states: list[tuple[str, str]] = []
        self.results: list[tuple[str, int, CommandResult]] = []
        self.events: list[tuple[str, PileEvent]] = []

    def on_telemetry(self, pile_no: str, port: int, reading: Telemetry) -> None:
        self.readings.append((pile_no, port, reading))
        if self.fail:
            raise RuntimeError("listener bug")

    def on_pile_state(self, pile_no: str, state: str) -> None:
        self.states.append((pile_no, state))

    def on_command_result(self, pile_no: str, port: int, result: CommandResult) -> None:
        self.results.append((pile_no, port, result))

    def on_pile_event(self, pile_no: str, event: PileEvent) -> None:
        self.events.append((pile_no, event))


def reading(
    seq: int,
    *,
    session: int = 1,
    ts: int | None = None,
    energy_Wh: int = 1000,
    state: str = "charging",
    replayed: bool = False,
    fault: str = "none",
) -> bytes:
    return Telemetry(
        ts or now_ms(), session, seq, state, 400.0, 25.0, 10_000.0, energy_Wh, 35.5, fault, replayed=replayed
    ).to_json()


def pile_status(
    state: PileState = "online", kind: Literal["fast", "trickle"] | None = "trickle", ports: int = 2
) -> bytes:
    return PileStatus(
        state, now_ms(), kind=kind, ports=ports, rated_power_W=7000, vendor="ACME", firmware="1.2.3"
    ).to_json()


def tele_topic(pile: str, port: int = 1) -> str:
    return topics.telemetry(STATION, pile, port)


@pytest.fixture
async def store(each_database: Path | str) -> AsyncIterator[Store]:
    store = Store(each_database, [migrations])
    await store.open()
    yield store
    await store.close()


class Central:
    """An Ingest fed by a CentralMqtt, the way the service wires them."""

    def __init__(self, store: Store, port: int, listener: RecordingListener, **ingest: Any) -> None:
        self.listener = listener
        self.ingest = Ingest(store, STATION, listener, **ingest)
        settings = MqttSettings(
            "127.0.0.1", port, client_id="central-test", reconnect_min_s=0.1, reconnect_max_s=0.5
        )
        self.mqtt = CentralMqtt(settings, [self.ingest.subscription], self.ingest.handle)

    async def start(self) -> None:
        await self.ingest.start()
        await self.mqtt.start()
        await self.mqtt.wait_connected(5)

    async def stop(self) -> None:
        await self.mqtt.stop()
        await self.ingest.stop()


@pytest.fixture
async def central(store: Store, mosquitto: MosquittoBroker) -> AsyncIterator[Central]:
    c = Central(store, mosquitto.port, RecordingListener())
    await c.start()
    yield c
    await c.stop()


def stat(central: Central, key: str) -> Any:
    return cast(Any, central.ingest.stats()[key])


async def rows(store: Store, sql: str, params: Any = ()) -> list[dict[str, Any]]:
    return await store.read(lambda db: [dict(r) for r in db.query(sql, params)])


async def wait_stored(central: Central, count: int, timeout_s: float = 10.0) -> None:
    await wait_for(
        lambda: stat(central, "stored") >= count, timeout_s=timeout_s, what=f"{count} telemetry rows stored"
    )


async def register(probe: MqttProbe, store: Store, pile: str, **kw: Any) -> None:
    probe.publish(topics.pile_status(STATION, pile), pile_status(**kw), retain=True)

    async def known() -> bool:
        return bool(await rows(store, "SELECT id FROM piles WHERE pile_no = ?", [pile]))

    await wait_for(known, timeout_s=5, what=f"pile {pile} registered")


# -- telemetry -------------------------------------------------------------------------------


async def test_telemetry_is_stored_once_in_batches_with_duplicates_dropped(central, mqtt_probe, store):
    for seq in range(1, 101):
        for port in (1, 2):
            mqtt_probe.publish(tele_topic("P1", port), reading(seq))
    for seq in range(90, 101):  # an in-flight window sent again after a reconnect
        mqtt_probe.publish(tele_topic("P1", 1), reading(seq))
    await wait_stored(central, 200)
    await wait_for(lambda: stat(central, "duplicates") == 11, timeout_s=5)
    stats = central.ingest.stats()
    assert stats["stored"] == 200
    assert stats["flushes"] < 20  # ~211 messages in a handful of transactions, not one each
    count = await rows(
        store,
        "SELECT port, count(*) AS n, count(DISTINCT seq) AS d FROM telemetry GROUP BY port ORDER BY port",
    )
    assert count == [{"port": 1, "n": 100, "d": 100}, {"port": 2, "n": 100, "d": 100}]
    port1 = [r.seq for p, port, r in central.listener.readings if port == 1]
    assert port1 == list(range(1, 101))


async def test_gaps_are_counted_and_the_rest_still_stored(central, mqtt_probe):
    for seq in (1, 2, 3, 7, 8):
        mqtt_probe.publish(tele_topic("P1"), reading(seq))
    await wait_stored(central, 5)
    stats = central.ingest.stats()
    assert (stats["gaps"], stats["missing"]) == (1, 3)


async def test_replayed_backlog_after_an_outage_is_stored_exactly_once(central, mqtt_probe, store):
    gw = topics.gw_status(STATION, "gw1")
    mqtt_probe.publish(gw, GatewayStatus("online", 1, now_ms(), piles=("P1",)).to_json(), retain=True)
    for seq in range(1, 6):
        mqtt_probe.publish(tele_topic("P1"), reading(seq, session=1))
    mqtt_probe.publish(gw, GatewayStatus("online", 2, now_ms(), piles=("P1",)).to_json(), retain=True)
    for seq in range(4, 11):  # 4 and 5 were in flight when the link dropped
        mqtt_probe.publish(tele_topic("P1"), reading(seq, session=1, replayed=True))
    for seq in range(1, 4):
        mqtt_probe.publish(tele_topic("P1"), reading(seq, session=2))
    await wait_stored(central, 13)
    await wait_for(lambda: stat(central, "duplicates") == 2, timeout_s=5)
    got = await rows(store, "SELECT session, seq, replayed FROM telemetry ORDER BY rowid")
    assert [(r["session"], r["seq"]) for r in got] == (
        [(1, s) for s in range(1, 11)] + [(2, s) for s in range(1, 4)]
    )
    assert sum(r["replayed"] for r in got) == 5
    assert stat(central, "gateways")["gw1"]["session"] == 2


async def test_port_live_fields_follow_the_newest_reading_not_a_replayed_one(central, mqtt_probe, store):
    await register(mqtt_probe, store, "P1")
    t = now_ms()
    mqtt_probe.publish(tele_topic("P1"), reading(1, session=2, ts=t, energy_Wh=5000))
    await wait_stored(central, 1)
    mqtt_probe.publish(
        tele_topic("P1"),
        reading(7, session=1, ts=t - 60_000, energy_Wh=4000, state="available", replayed=True),
    )
    await wait_stored(central, 2)
    port = (
        await rows(
            store,
            "SELECT ports.* FROM ports JOIN piles ON piles.id = ports.pile_id "
            "WHERE pile_no = 'P1' AND port_no = '1'",
        )
    )[0]
    assert port["meter_wh"] == 5000 and port["electricity"] == 5.0
    assert port["last_telemetry_ms"] == t
    assert port["status"] == 2  # in use (charging), not the replayed "available"
    assert (port["voltage"], port["current_ampere"], port["power"]) == (400.0, 25.0, 10.0)
    assert port["temperature"] == 35.5 and port["fault_type"] == 0
    pile = (await rows(store, "SELECT status, temperature FROM piles WHERE pile_no = 'P1'"))[0]
    assert pile == {"status": 2, "temperature": 35.5}


async def test_a_faulted_reading_marks_the_port_faulted(central, mqtt_probe, store):
    await register(mqtt_probe, store, "P1")
    mqtt_probe.publish(tele_topic("P1", 2), reading(1, state="faulted", fault="over_temperature"))
    await wait_stored(central, 1)
    port = (await rows(store, "SELECT status, fault_type FROM ports WHERE port_no = '2'"))[0]
    assert port == {"status": 3, "fault_type": 1}


# -- malformed input -------------------------------------------------------------------------


async def test_malformed_payloads_and_topics_are_counted_and_ingest_goes_on(central, mqtt_probe):
    mqtt_probe.publish(tele_topic("P1"), b"{not json")
    mqtt_probe.publish(tele_topic("P1"), b'{"ts": 1, "session": 1}')
    mqtt_probe.publish(f"pilegate/v1/{STATION}/pile/P1/port/x/telemetry", reading(1))
    mqtt_probe.publish(f"pilegate/v1/{STATION}/nonsense", b"{}")
    mqtt_probe.publish(topics.pile_status(STATION, "P1"), b'{"state": "melting"}')
    central.ingest.handle(topics.telemetry("other", "P1", 1), reading(1))  # another station's
    mqtt_probe.publish(tele_topic("P1"), reading(1))
    await wait_stored(central, 1)
    await wait_for(lambda: sum(stat(central, "malformed_by_reason").values()) == 6, timeout_s=5)
    assert stat(central, "malformed_by_reason") == {
        "payload:telemetry": 2,
        "topic": 3,
        "payload:pile_status": 1,
    }


async def test_a_failing_listener_does_not_stop_ingest(store, mosquitto, mqtt_probe):
    c = Central(store, mosquitto.port, RecordingListener(fail=True))
    await c.start()
    try:
        for seq in (1, 2, 3):
            mqtt_probe.publish(tele_topic("P1"), reading(seq))
        await wait_stored(c, 3)
        assert stat(c, "listener_errors") == 3
    finally:
        await c.stop()


async def test_stop_writes_what_is_buffered(store):
    ingest = Ingest(store, STATION, RecordingListener(), flush_interval_s=60)
    await ingest.start()
    for seq in range(1, 6):
        ingest.handle(tele_topic("P1"), reading(seq))
    assert ingest.stats()["buffered"] == 5
    await ingest.stop()
    assert (await rows(store, "SELECT count(*) AS n FROM telemetry"))[0]["n"] == 5


# -- piles and gateways ----------------------------------------------------------------------


async def test_first_status_of_an_unknown_pile_registers_pile_and_ports(central, mqtt_probe, store):
    await register(mqtt_probe, store, "T9", kind="trickle", ports=2)
    pile = (
        await rows(
            store,
            "SELECT piles.*, stations.code FROM piles JOIN stations "
            "ON stations.id = piles.station_id WHERE pile_no = 'T9'",
        )
    )[0]
    assert (pile["code"], pile["pile_type"], pile["power_rate"], pile["total_ports"]) == (STATION, 2, 7.0, 2)
    assert (pile["manufacturer"], pile["software_version"], pile["online_status"]) == ("ACME", "1.2.3", 1)
    ports = await rows(
        store, "SELECT port_no, status FROM ports WHERE pile_id = ? ORDER BY port_no", [pile["id"]]
    )
    assert [p["port_no"] for p in ports] == ["1", "2"]
    assert ("T9", "online") in central.listener.states
    mqtt_probe.publish(topics.pile_status(STATION, "T9"), pile_status("faulted"), retain=True)
    await wait_for(lambda: central.ingest.pile_state("T9") == "faulted", timeout_s=5)

    async def faulted() -> bool:
        got = await rows(store, "SELECT status FROM piles WHERE pile_no = 'T9'")
        return bool(got[0]["status"] == 3)

    await wait_for(faulted, timeout_s=5, what="pile row faulted")
    assert len(await rows(store, "SELECT id FROM piles")) == 1  # updated, not registered twice


async def test_gateway_lost_takes_its_piles_offline_until_they_report_again(central, mqtt_probe, store):
    gw = topics.gw_status(STATION, "gw1")
    mqtt_probe.publish(gw, GatewayStatus("online", 1, now_ms(), piles=("F1", "T1")).to_json(), retain=True)
    await register(mqtt_probe, store, "F1", kind="fast", ports=1)
    await register(mqtt_probe, store, "T1", kind="trickle", ports=1)
    mqtt_probe.publish(gw, GatewayStatus("lost", 1).to_json(), retain=True)  # the last will
    await wait_for(
        lambda: {("F1", "offline"), ("T1", "offline")} <= set(central.listener.states), timeout_s=5
    )
    assert central.ingest.pile_state("F1") == "offline"

    async def offline_in_db() -> bool:
        got = await rows(store, "SELECT online_status, status FROM piles")
        return got == [{"online_status": 0, "status": 0}] * 2

    await wait_for(offline_in_db, timeout_s=5, what="piles offline in the database")
    mqtt_probe.publish(topics.pile_status(STATION, "F1"), pile_status(kind="fast"), retain=True)
    mqtt_probe.publish(gw, GatewayStatus("online", 2, now_ms(), piles=("F1", "T1")).to_json(), retain=True)
    mqtt_probe.publish(topics.pile_status(STATION, "T1"), pile_status(), retain=True)
    await wait_for(lambda: central.ingest.pile_state("T1") == "online", timeout_s=5)
    assert central.ingest.pile_state("F1") == "offline"  # its status came while the gateway was down
    assert stat(central, "ignored_status") == 1


async def test_a_stale_will_does_not_undo_a_newer_birth(central, mqtt_probe):
    gw = topics.gw_status(STATION, "gw1")
    mqtt_probe.publish(gw, GatewayStatus("online", 5, now_ms(), piles=("F1",)).to_json())
    mqtt_probe.publish(topics.pile_status(STATION, "F1"), pile_status(kind="fast"))
    await wait_for(lambda: central.ingest.pile_state("F1") == "online", timeout_s=5)
    mqtt_probe.publish(gw, GatewayStatus("lost", 4).to_json())
    await wait_for(lambda: stat(central, "ignored_status") == 1, timeout_s=5)
    assert central.ingest.pile_state("F1") == "online"


async def test_after_a_restart_a_lost_gateway_still_owns_its_piles(store, mosquitto, mqtt_probe):
    first = Central(store, mosquitto.port, RecordingListener())
    await first.start()
    gw = topics.gw_status(STATION, "gw1")
    mqtt_probe.publish(gw, GatewayStatus("online", 1, now_ms(), piles=("F1",)).to_json(), retain=True)
    await register(mqtt_probe, store, "F1", kind="fast", ports=1)
    await first.stop()
    mqtt_probe.publish(gw, GatewayStatus("lost", 1).to_json(), retain=True)  # will: no pile list
    second = Central(store, mosquitto.port, RecordingListener())
    await second.start()  # retained: gw "lost", F1 "online" (stale)
    try:
        await wait_for(
            lambda: stat(second, "received") >= 2, timeout_s=5, what="the retained gateway and pile statuses"
        )
        assert stat(second, "gateways")["gw1"]["state"] == "lost"
        assert second.ingest.pile_state("F1") == "offline"  # whichever of the two came first
    finally:
        await second.stop()


# -- events, results, the client -------------------------------------------------------------


async def test_events_are_deduplicated_and_passed_on(central, mqtt_probe):
    topic = topics.pile_event(STATION, "F1")
    for seq in (1, 2, 2, 3):
        event = PileEvent(now_ms(), 1, seq, "session_started", 1, energy_Wh=100 * seq)
        mqtt_probe.publish(topic, event.to_json())
    await wait_for(lambda: len(central.listener.events) == 3, timeout_s=5)
    await wait_for(lambda: stat(central, "duplicates") == 1, timeout_s=5)
    assert [e.seq for _, e in central.listener.events] == [1, 2, 3]


async def test_command_results_reach_the_listener(central, mqtt_probe):
    result = CommandResult("abc", "accepted", now_ms())
    mqtt_probe.publish(topics.cmd_result(STATION, "F1", 1), result.to_json())
    await wait_for(lambda: central.listener.results, timeout_s=5)
    assert central.listener.results == [("F1", 1, result)]


async def test_client_resubscribes_after_the_broker_restarts(central, mqtt_probe, mosquitto):
    mqtt_probe.publish(tele_topic("P1"), reading(1))
    await wait_stored(central, 1)
    mosquitto.stop()
    await wait_for(lambda: not central.mqtt.connected, timeout_s=5)
    with pytest.raises(NotConnectedError):
        await central.mqtt.publish(topics.cmd(STATION, "P1", 1), b"{}")
    mosquitto.start()
    await central.mqtt.wait_connected(10)
    await mqtt_probe.wait_connected(10, connects=2)
    mqtt_probe.publish(tele_topic("P1"), reading(2))
    await wait_stored(central, 2)


async def test_client_uses_its_credentials_and_a_wrong_password_never_connects(tmp_path):
    passwords = tmp_path / "passwd"
    add_mosquitto_user(passwords, "central", "right")
    with MosquittoBroker(free_port(), tmp_path / "broker", password_file=passwords) as broker:
        good = CentralMqtt(MqttSettings("127.0.0.1", broker.port, "central", "right"), ["a/#"], print)
        bad = CentralMqtt(
            MqttSettings("127.0.0.1", broker.port, "central", "wrong", client_id="bad"), ["a/#"], print
        )
        await good.start()
        await bad.start()
        try:
            await good.wait_connected(5)
            with pytest.raises(ConnectTimeoutError):
                await bad.wait_connected(1)
        finally:
            await good.stop()
            await bad.stop()


async def test_filters_a_killed_process_left_in_its_session_are_forgotten_on_connect(mosquitto, mqtt_probe):
    settings = MqttSettings("127.0.0.1", mosquitto.port, client_id="central-a")
    earlier = CentralMqtt(settings, ["pilegate/v1/south/#"], print)
    await earlier.start()
    await earlier.wait_connected(10)
    await earlier.stop()  # gone without unsubscribing: the persistent session keeps south
    received: list[str] = []
    now = CentralMqtt(settings, ["pilegate/v1/north/#"], lambda topic, _: received.append(topic))
    now.forget(["pilegate/v1/north/#", "pilegate/v1/south/#"])  # north is wanted: kept
    await now.start()
    try:
        await now.wait_connected(10)
        mqtt_probe.publish(topics.telemetry("south", "S1", 1), reading(1))
        mqtt_probe.publish(topics.telemetry("north", "N1", 1), reading(1))
        await wait_for(lambda: received, timeout_s=5, what="north's message")
        # one publisher's messages arrive in order: south's, sent first, would be here by now
        assert received == [topics.telemetry("north", "N1", 1)]
    finally:
        await now.stop()
