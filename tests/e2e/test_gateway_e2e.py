"""End to end: simulator, gateway and Mosquitto as real processes on ephemeral loopback ports."""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from pilegate.broker import MosquittoBroker, free_port
from tests.broker_fixtures import MqttProbe
from tests.e2e.harness import (
    GatewayProcess,
    GatewaySettings,
    SimProcess,
    start_gateway,
    start_sim,
)
from tests.helpers import wait_for

pytestmark = pytest.mark.e2e

STATION = "s1"
TELEMETRY = f"pilegate/v1/{STATION}/pile/+/port/+/telemetry"
PERIOD_S = 0.5


@pytest.fixture
def broker(tmp_path: Path):
    broker = MosquittoBroker(free_port(), tmp_path / "mosquitto", persistence=True)
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def sim(tmp_path: Path):
    sim = start_sim(tmp_path, fast=1, trickle=1, time_scale=60.0)
    yield sim
    sim.proc.stop()


@pytest.fixture
async def probe(broker: MosquittoBroker):
    """The central's stand-in: a persistent session, so nothing is missed across a broker restart."""
    probe = MqttProbe(broker.port, client_id=f"central-{uuid.uuid4().hex[:6]}", clean_session=False)
    await probe.connect()
    await probe.subscribe(f"pilegate/v1/{STATION}/#", qos=1)
    yield probe
    probe.close()


@pytest.fixture
def gateway(tmp_path: Path, sim: SimProcess, broker: MosquittoBroker, probe: MqttProbe):
    gw = start_gateway(
        tmp_path, sim.piles, broker.port, GatewaySettings(station=STATION, poll_period_s=PERIOD_S)
    )
    yield gw
    gw.proc.stop()


def streams(probe: MqttProbe) -> dict[str, list[dict[str, Any]]]:
    by_topic: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for message in probe.matching(TELEMETRY):
        by_topic[message.topic].append(message.json())
    return by_topic


def assert_contiguous(seqs: list[int], what: str) -> None:
    assert seqs == list(range(1, len(seqs) + 1)), f"{what}: seq not contiguous from 1: {seqs}"


async def test_telemetry_of_every_port_arrives_with_contiguous_seq(gateway, probe, sim):
    topics = {f"pilegate/v1/{STATION}/pile/{p}/port/1/telemetry" for p in sim.piles}
    await wait_for(
        lambda: topics <= set(streams(probe)) and all(len(v) >= 6 for v in streams(probe).values()),
        timeout_s=20,
        what="6 readings of every port",
    )
    for topic, readings in streams(probe).items():
        sessions = {r["session"] for r in readings}
        assert len(sessions) == 1, f"{topic}: one session expected, got {sessions}"
        assert_contiguous([r["seq"] for r in readings], topic)
        first = readings[0]
        assert first["state"] == "available" and first["fault"] == "none"
        assert all(r["ts"] <= time.time() * 1000 for r in readings)
        heartbeats = [r["heartbeat"] for r in readings]
        assert heartbeats[-1] != heartbeats[0], "the heartbeat register must tick"


async def test_broker_outage_of_20s_loses_and_duplicates_nothing(gateway, probe, broker, sim):
    await wait_for(
        lambda: len(streams(probe)) == 2 and all(len(v) >= 3 for v in streams(probe).values()),
        timeout_s=20,
        what="telemetry before the outage",
    )
    broker.stop()
    outage_started = time.time() * 1000
    # the outage lasts until the gateway has queued 20 s of readings of both ports
    needed = 2 * int(20 / PERIOD_S)
    await wait_for(
        lambda: gateway.status()["outbox"]["depth"] >= needed,
        timeout_s=40,
        interval_s=0.25,
        what=f"{needed} messages queued in the outbox",
    )
    broker.start()
    await wait_for(lambda: gateway.status()["outbox"]["depth"] == 0, timeout_s=30, what="the outbox to drain")
    after_restart = time.time() * 1000
    await wait_for(
        lambda: all(any(r["ts"] > after_restart for r in v) for v in streams(probe).values()),
        timeout_s=15,
        what="fresh telemetry after the restart",
    )
    for topic, readings in streams(probe).items():
        unique = {(r["session"], r["seq"]): r for r in readings}
        by_session: dict[int, list[int]] = defaultdict(list)
        for session, seq in sorted(unique):
            by_session[session].append(seq)
        assert len(by_session) >= 2, f"{topic}: a reconnect must start a new session"
        for session, seqs in by_session.items():
            assert_contiguous(seqs, f"{topic} session {session}")
        queued = [r for r in unique.values() if r["ts"] > outage_started and r.get("replayed")]
        assert len(queued) >= int(20 / PERIOD_S) - 2, f"{topic}: readings of the outage missing"
        duplicates = len(readings) - len(unique)
        assert duplicates <= 1000, f"{topic}: more duplicates than the in-flight window"


async def test_silent_pile_is_comm_fault_within_three_poll_periods_and_recovers(gateway, probe, sim):
    status_topic = f"pilegate/v1/{STATION}/pile/F1/status"

    def states() -> list[tuple[int, str]]:
        return [(m.json()["ts"], m.json()["state"]) for m in probe.matching(status_topic)]

    await wait_for(lambda: "online" in [s for _, s in states()], timeout_s=15, what="F1 online")
    silenced_ms = time.time() * 1000
    sim.fault("F1", "silent")
    await wait_for(lambda: any(s == "comm_fault" for _, s in states()), timeout_s=10, what="F1 comm_fault")
    fault_ts = next(ts for ts, s in states() if s == "comm_fault")
    assert fault_ts - silenced_ms <= 3 * PERIOD_S * 1000, "comm_fault later than 3 poll periods"
    other = f"pilegate/v1/{STATION}/pile/T1/port/1/telemetry"
    count = len(probe.matching(other))
    await wait_for(
        lambda: len(probe.matching(other)) >= count + 4,
        timeout_s=10,
        what="T1 still polled while F1 is silent",
    )
    sim.fault("F1", "clear")
    await wait_for(lambda: states()[-1][1] == "online", timeout_s=15, what="F1 online again")


async def send_command(
    probe: MqttProbe, pile: str, op: str, params: dict[str, int], expires_in_s: float = 30
) -> str:
    command_id = f"t-{uuid.uuid4().hex[:10]}"
    payload = {
        "id": command_id,
        "op": op,
        "params": params,
        "expires_at": int((time.time() + expires_in_s) * 1000),
    }
    probe.publish(f"pilegate/v1/{STATION}/pile/{pile}/port/1/cmd", json.dumps(payload).encode())
    return command_id


def results(probe: MqttProbe, command_id: str) -> list[dict[str, Any]]:
    return [
        m.json()
        for m in probe.matching(f"pilegate/v1/{STATION}/pile/+/port/+/cmd/result")
        if m.json()["id"] == command_id
    ]


def latest(probe: MqttProbe, pile: str) -> dict[str, Any]:
    readings = probe.matching(f"pilegate/v1/{STATION}/pile/{pile}/port/1/telemetry")
    return readings[-1].json() if readings else {}


async def wait_status(probe: MqttProbe, command_id: str, status: str) -> dict[str, Any]:
    await wait_for(
        lambda: any(r["status"] == status for r in results(probe, command_id)),
        timeout_s=10,
        what=f"command {command_id} {status}",
    )
    return next(r for r in results(probe, command_id) if r["status"] == status)


async def test_start_and_stop_commands_charge_the_port(gateway, probe, sim):
    await wait_for(lambda: latest(probe, "F1").get("state") == "available", timeout_s=15, what="F1 reading")
    before = latest(probe, "F1")["energy_Wh"]
    start = await send_command(probe, "F1", "start", {"energy_Wh": 200_000})
    await wait_status(probe, start, "done")
    assert [r["status"] for r in results(probe, start)] == ["accepted", "done"]
    await wait_for(
        lambda: (
            latest(probe, "F1")["state"] == "charging" and latest(probe, "F1")["energy_Wh"] > before + 100
        ),
        timeout_s=15,
        what="F1 charging and its meter rising",
    )
    charging = latest(probe, "F1")
    assert charging["power_W"] > 1000
    assert 400 <= charging["voltage_V"] <= 750, "a DC fast pile charges at 400-750 V"
    assert charging["current_A"] == pytest.approx(charging["power_W"] / charging["voltage_V"], rel=0.05)
    stop = await send_command(probe, "F1", "stop", {})
    done = await wait_status(probe, stop, "done")
    assert done["readback"]["ack_status"] == 1
    await wait_for(
        lambda: latest(probe, "F1")["state"] == "finished" and latest(probe, "F1")["power_W"] == 0,
        timeout_s=10,
        what="F1 stopped",
    )

    def events() -> list[str]:
        return [m.json()["type"] for m in probe.matching(f"pilegate/v1/{STATION}/pile/F1/event")]

    await wait_for(
        lambda: {"session_started", "session_stopped"} <= set(events()),
        timeout_s=10,
        what="F1's session_started and session_stopped events",
    )


async def test_invalid_commands_are_rejected_or_expired_and_ids_are_idempotent(gateway, probe, sim):
    await wait_for(lambda: latest(probe, "T1").get("state") == "available", timeout_s=15, what="T1 reading")
    too_strong = await send_command(probe, "T1", "start", {"power_W": 50_000})
    rejected = await wait_status(probe, too_strong, "rejected")
    assert "exceeds the pile's rated 10000 W" in rejected["reason"]
    stale = await send_command(probe, "T1", "start", {}, expires_in_s=-1)
    await wait_status(probe, stale, "expired")
    probe.publish(
        f"pilegate/v1/{STATION}/pile/T1/port/1/cmd",
        b'{"id":"bad-1","op":"start","params":{"energy_kWh":5},"expires_at":1}',
    )
    malformed = await wait_status(probe, "bad-1", "rejected")
    assert "energy_kWh" in malformed["reason"]
    # the same id twice: executed once, answered twice
    payload = json.dumps(
        {
            "id": "dup-1",
            "op": "start",
            "params": {"energy_Wh": 100_000},
            "expires_at": int((time.time() + 30) * 1000),
        }
    ).encode()
    probe.publish(f"pilegate/v1/{STATION}/pile/T1/port/1/cmd", payload)
    await wait_status(probe, "dup-1", "done")
    probe.publish(f"pilegate/v1/{STATION}/pile/T1/port/1/cmd", payload)
    await wait_for(
        lambda: len([r for r in results(probe, "dup-1") if r["status"] == "done"]) == 2,
        timeout_s=10,
        what="the repeated answer",
    )
    assert [r["status"] for r in results(probe, "dup-1")] == ["accepted", "done", "done"]
    assert gateway.status()["commands"]["duplicate"] == 1


async def retained_gateway_state(port: int) -> str:
    reader = MqttProbe(port)
    await reader.connect()
    try:
        topic = f"pilegate/v1/{STATION}/gw/gw1/status"
        await reader.subscribe(topic)
        await wait_for(lambda: reader.matching(topic), timeout_s=5, what="retained gw status")
        return str(reader.matching(topic)[-1].json()["state"])
    finally:
        reader.close()


async def test_sigterm_leaves_offline_and_kill_9_leaves_lost(tmp_path, sim, broker, probe):
    settings = GatewaySettings(station=STATION, poll_period_s=PERIOD_S, keepalive_s=5)
    first: GatewayProcess = start_gateway(tmp_path, sim.piles, broker.port, settings, "gw-a")
    await wait_for(lambda: first.status()["uplink"]["connected"], timeout_s=10, what="gateway connected")
    assert first.proc.stop(signal.SIGTERM) == 0
    assert await retained_gateway_state(broker.port) == "offline"
    pile_states = {
        m.topic.split("/")[4]: m.json()["state"]
        for m in probe.matching(f"pilegate/v1/{STATION}/pile/+/status")
    }
    assert set(pile_states.values()) == {"offline"}

    second = start_gateway(tmp_path, sim.piles, broker.port, settings, "gw-b")
    await wait_for(lambda: second.status()["uplink"]["connected"], timeout_s=10, what="gateway connected")
    assert await retained_gateway_state(broker.port) == "online"
    second.proc.stop(signal.SIGKILL)
    await wait_for(
        lambda: probe.matching(f"pilegate/v1/{STATION}/gw/gw1/status")[-1].json()["state"] == "lost",
        timeout_s=15,
        what="the last will",
    )
    assert await retained_gateway_state(broker.port) == "lost"
