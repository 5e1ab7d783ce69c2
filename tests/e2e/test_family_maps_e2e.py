"""End to end for each shipped charger family: a simulated pile of the family -> gateway (``map =
NAME``) -> Mosquitto, all real processes on loopback. Start, limit and stop go through the family's
recipe as the gateway writes it; telemetry shows the current the family was set to and a meter that
counts while it charges and stands while it does not; a fault injected through the simulator's
control API arrives the family's way.

Where the simulator cannot yet serve a family's registers as the map lays them out, the case says so
as an expected failure (probed over Modbus before the gateway starts), and runs for real once it can.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from pilegate.broker import MosquittoBroker, free_port
from tests.broker_fixtures import MqttProbe
from tests.e2e.family_probe import (
    FAMILIES,
    UNIT,
    blank_fields,
    encoder_gap,
    fixed_registers_toml,
    sim_refusal,
)
from tests.e2e.harness import GatewayProcess, SimProcess, spawn, wait_until
from tests.helpers import wait_for

pytestmark = pytest.mark.e2e

STATION = "s1"
PORT_TOPIC = f"pilegate/v1/{STATION}/pile/W1/port/1"


@pytest.fixture(params=FAMILIES)
def family(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def broker(tmp_path: Path):
    broker = MosquittoBroker(free_port(), tmp_path / "mosquitto", persistence=False)
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def sim(tmp_path: Path, family: str):
    config = tmp_path / "sim.toml"
    config.write_text(
        "time_scale = 60.0\ncontrol_port = 0\n\n[[piles]]\n"
        f'id = "W1"\nkind = "trickle"\nrated_power_W = 22000\nunit = {UNIT}\nmap = "{family}"\n'
        + fixed_registers_toml(family)
    )
    gap = encoder_gap(family)
    if gap is not None:
        pytest.xfail(f"the simulator cannot render {family} yet: {gap}")
    ready = tmp_path / "sim.ready.json"
    proc = spawn("sim", ["sim", "--config", str(config), "--ready-file", str(ready)], tmp_path)
    try:
        doc = wait_until(
            lambda: ready.exists() and json.loads(ready.read_text()), 30, "simulator ready", proc
        )
    except AssertionError:
        refusal = sim_refusal(proc.log())
        if refusal is None:
            raise
        pytest.xfail(f"the simulator cannot serve {family} yet: {refusal}")
    process = SimProcess(proc, doc["piles"], int(doc["control_port"]))
    try:
        blank = asyncio.run(blank_fields(process, family, "W1"))
        if blank:
            pytest.xfail(
                f"the simulator serves {family}'s {blank} blank (a block's holes over another block)"
            )
        yield process
    finally:
        proc.stop()


@pytest.fixture
async def probe(broker: MosquittoBroker):
    probe = MqttProbe(broker.port, client_id=f"central-{uuid.uuid4().hex[:6]}")
    await probe.connect()
    await probe.subscribe(f"pilegate/v1/{STATION}/#", qos=1)
    yield probe
    probe.close()


@pytest.fixture
def gateway(tmp_path: Path, sim: SimProcess, broker: MosquittoBroker, probe: MqttProbe, family: str):
    endpoint = sim.piles["W1"]
    control_port = free_port()
    config_path = tmp_path / "gateway.toml"
    config_path.write_text(
        f'[gateway]\nid = "gw1"\nstation = "{STATION}"\ndata_dir = "{tmp_path / "gw-data"}"\n'
        f'poll_period_s = 0.5\ncontrol_listen = "127.0.0.1:{control_port}"\nlog_format = "json"\n\n'
        f'[mqtt]\nurl = "mqtt://127.0.0.1:{broker.port}"\nkeepalive_s = 5\n\n'
        f'[[bus]]\nname = "b1"\ntransport = "tcp"\nhost = "{endpoint["host"]}"\nport = {endpoint["port"]}\n'
        "timeout_s = 0.2\n\n"
        f'[[pile]]\nid = "W1"\nbus = "b1"\nunit = {UNIT}\nports = 1\nmap = "{family}"\n'
    )
    proc = spawn("gateway", ["gateway", "--config", str(config_path)], tmp_path)
    gw = GatewayProcess(proc, config_path, control_port, tmp_path / "gw-data")
    try:
        wait_until(gw.answering, 30, "gateway control API", proc)
        yield gw
    finally:
        proc.stop()


def latest(probe: MqttProbe) -> dict[str, Any]:
    readings = probe.matching(f"{PORT_TOPIC}/telemetry")
    return readings[-1].json() if readings else {}


async def command(probe: MqttProbe, op: str, params: dict[str, int]) -> dict[str, Any]:
    """Send ``op`` and return its final result (whatever it is)."""
    command_id = f"t-{uuid.uuid4().hex[:10]}"
    body = {"id": command_id, "op": op, "params": params, "expires_at": int((time.time() + 30) * 1000)}
    probe.publish(f"{PORT_TOPIC}/cmd", json.dumps(body).encode())

    def final() -> dict[str, Any] | None:
        answers = [
            m.json() for m in probe.matching(f"{PORT_TOPIC}/cmd/result") if m.json()["id"] == command_id
        ]
        return next((a for a in answers if a["status"] != "accepted"), None)

    result = await wait_for(final, timeout_s=10, what=f"{op} result")
    assert result is not None
    return result


async def reading(probe: MqttProbe, what: str, check: Any) -> dict[str, Any]:
    found: dict[str, Any] = await wait_for(
        lambda: check(latest(probe)) and latest(probe), timeout_s=15, what=what
    )
    return found


async def test_start_limit_stop_and_a_fault_the_family_way(gateway, probe, sim, family):
    idle = await reading(probe, f"{family} idle", lambda r: r.get("state") in ("available", "plugged"))
    assert idle["fault"] == "none"

    started = await command(probe, "start", {"power_W": 11_000})  # 11000 / (230 V x 3) -> 15 A
    assert started["status"] == "done", started
    charging = await reading(
        probe,
        f"{family} charging at 15 A with a rising meter",
        lambda r: (
            r["state"] == "charging" and r["current_A"] == 15.0 and r["energy_Wh"] > idle["energy_Wh"] + 20
        ),
    )
    assert charging["power_W"] == pytest.approx(3 * 15 * charging["voltage_V"], rel=0.02)

    limited = await command(probe, "limit", {"power_W": 5_520})  # -> 8 A
    assert limited["status"] == "done", limited
    await reading(probe, f"{family} at 8 A", lambda r: r["state"] == "charging" and r["current_A"] == 8.0)

    stopped = await command(probe, "stop", {})
    assert stopped["status"] == "done", stopped
    finished = await reading(
        probe,
        f"{family} stopped",
        lambda r: r["state"] in ("finished", "plugged") and r["power_W"] == 0,
    )
    assert finished["energy_Wh"] > charging["energy_Wh"]
    stood = await reading(probe, "two more readings", lambda r: r["seq"] >= finished["seq"] + 2)
    assert stood["energy_Wh"] == finished["energy_Wh"]

    sim.fault("W1", "over_temperature")
    faulted = await reading(
        probe, f"{family} faulted", lambda r: r["state"] == "faulted" or r["fault"] != "none"
    )
    assert faulted["power_W"] == 0
