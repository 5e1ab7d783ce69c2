"""The gateway over Modbus RTU: two piles on one serial line (a socat pty pair), to MQTT."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from pilegate.broker import MosquittoBroker, free_port
from tests.broker_fixtures import MqttProbe
from tests.e2e.harness import GatewayProcess, Proc, spawn, wait_until
from tests.helpers import wait_for

pytestmark = pytest.mark.e2e

SIM = """
time_scale = 60.0
[[serial_buses]]
name = "rs485"
baudrate = 38400
[[piles]]
id = "T1"
kind = "trickle"
rated_power_W = 7000
serial_bus = "rs485"
unit = 1
[[piles]]
id = "T2"
kind = "trickle"
rated_power_W = 7000
serial_bus = "rs485"
unit = 2
ports = 2
"""


def gateway_toml(device: str, mqtt_port: int, data_dir: Path, control_port: int) -> str:
    return f"""
[gateway]
id = "gw-rtu"
station = "s2"
data_dir = "{data_dir}"
poll_period_s = 0.5
control_listen = "127.0.0.1:{control_port}"
[mqtt]
url = "mqtt://127.0.0.1:{mqtt_port}"
[[bus]]
name = "rs485"
transport = "rtu"
device = "{device}"
baudrate = 38400
timeout_s = 0.2
[[pile]]
id = "T1"
bus = "rs485"
unit = 1
[[pile]]
id = "T2"
bus = "rs485"
unit = 2
ports = 2
"""


async def test_two_rtu_units_on_one_line_publish_every_port(tmp_path: Path):
    (tmp_path / "sim.toml").write_text(SIM)
    ready = tmp_path / "sim.ready.json"
    sim: Proc = spawn(
        "sim", ["sim", "--config", str(tmp_path / "sim.toml"), "--ready-file", str(ready)], tmp_path
    )
    broker = MosquittoBroker(free_port(), tmp_path / "mosquitto")
    broker.start()
    probe = MqttProbe(broker.port, client_id=f"rtu-{uuid.uuid4().hex[:6]}")
    gw = None
    try:
        doc = wait_until(lambda: ready.exists() and json.loads(ready.read_text()), 30, "simulator ready", sim)
        device = doc["piles"]["T1"]["device"]
        assert device == doc["piles"]["T2"]["device"], "both units share one serial line"
        await probe.connect()
        await probe.subscribe("pilegate/v1/s2/#")
        control_port = free_port()
        config = tmp_path / "gw-rtu.toml"
        config.write_text(gateway_toml(device, broker.port, tmp_path / "gw-data", control_port))
        gw = GatewayProcess(
            spawn("gateway", ["gateway", "--config", str(config)], tmp_path),
            config,
            control_port,
            tmp_path / "gw-data",
        )
        topics = {
            "pilegate/v1/s2/pile/T1/port/1/telemetry",
            "pilegate/v1/s2/pile/T2/port/1/telemetry",
            "pilegate/v1/s2/pile/T2/port/2/telemetry",
        }
        await wait_for(
            lambda: all(len(probe.matching(t)) >= 3 for t in topics),
            timeout_s=20,
            what="three readings of every RTU port",
        )
        status = [m.json() for m in probe.matching("pilegate/v1/s2/pile/T2/status")]
        assert status[-1]["state"] == "online"
        await wait_for(
            lambda: any(m.json().get("ports") == 2 for m in probe.matching("pilegate/v1/s2/pile/T2/status")),
            timeout_s=10,
            what="T2's identity (2 ports) read over RTU",
        )
    finally:
        probe.close()
        if gw:
            gw.proc.stop()
        sim.stop()
        broker.stop()
