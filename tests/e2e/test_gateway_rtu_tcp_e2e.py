"""The gateway daemon on an ``rtu-tcp`` bus (an RS-485 to Ethernet converter, simulated): every unit's
telemetry reaches MQTT, and a bus that cannot read its piles within the period polls back to back,
says so once, and reports its achieved rates in /status, /metrics and ``pilectl status``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from pilegate.broker import MosquittoBroker, free_port
from tests.broker_fixtures import MqttProbe
from tests.e2e.harness import GatewayProcess, Proc, spawn, wait_until
from tests.helpers import wait_for

pytestmark = pytest.mark.e2e

UNITS = (1, 2, 3)
TURNAROUND_S = 0.05  # 3 units x 50 ms of silence: a cycle takes > 150 ms, the period is 100 ms

SIM = 'time_scale = 60.0\n[[serial_buses]]\nname = "conv"\ntcp_port = 0\n' + "".join(
    f'[[piles]]\nid = "T{u}"\nkind = "trickle"\nrated_power_W = 7000\nserial_bus = "conv"\nunit = {u}\n'
    for u in UNITS
)


def gateway_toml(host: str, port: int, mqtt_port: int, data_dir: Path, control_port: int) -> str:
    piles = "".join(f'[[pile]]\nid = "T{u}"\nbus = "conv"\nunit = {u}\n' for u in UNITS)
    return f"""
[gateway]
id = "gw-conv"
station = "s3"
data_dir = "{data_dir}"
poll_period_s = 0.1
control_listen = "127.0.0.1:{control_port}"
log_format = "json"
[mqtt]
url = "mqtt://127.0.0.1:{mqtt_port}"
[[bus]]
name = "conv"
transport = "rtu-tcp"
host = "{host}"
port = {port}
timeout_s = 0.09
turnaround_s = {TURNAROUND_S}
{piles}"""


def metrics(gw: GatewayProcess) -> str:
    req = urllib.request.Request(
        f"http://127.0.0.1:{gw.control_port}/metrics", headers={"Authorization": f"Bearer {gw.token()}"}
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        return str(resp.read().decode())


def pilectl_status(gw: GatewayProcess) -> str:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PILECTL_")}
    done = subprocess.run(
        [sys.executable, "-m", "gateway.pilectl", "--config", str(gw.config_path), "status"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
        env=environ,
    )
    return done.stdout


async def test_units_behind_a_converter_publish_and_a_saturated_bus_reports_its_rates(tmp_path: Path):
    (tmp_path / "sim.toml").write_text(SIM)
    ready = tmp_path / "sim.ready.json"
    sim: Proc = spawn(
        "sim", ["sim", "--config", str(tmp_path / "sim.toml"), "--ready-file", str(ready)], tmp_path
    )
    broker = MosquittoBroker(free_port(), tmp_path / "mosquitto")
    broker.start()
    probe = MqttProbe(broker.port, client_id=f"conv-{uuid.uuid4().hex[:6]}")
    gw = None
    try:
        doc = wait_until(lambda: ready.exists() and json.loads(ready.read_text()), 30, "simulator ready", sim)
        endpoints = {(ep["transport"], ep["host"], ep["port"]) for ep in doc["piles"].values()}
        assert len(endpoints) == 1, "every unit behind one converter port"
        (_, host, port) = endpoints.pop()
        await probe.connect()
        await probe.subscribe("pilegate/v1/s3/#")
        control_port = free_port()
        config = tmp_path / "gw.toml"
        config.write_text(gateway_toml(host, port, broker.port, tmp_path / "gw-data", control_port))
        gw = GatewayProcess(
            spawn("gateway", ["gateway", "--config", str(config)], tmp_path),
            config,
            control_port,
            tmp_path / "gw-data",
        )
        await wait_for(
            lambda: all(
                len(probe.matching(f"pilegate/v1/s3/pile/T{u}/port/1/telemetry")) >= 5 for u in UNITS
            ),
            timeout_s=30,
            what="five readings of every unit behind the converter",
        )
        wait_until(gw.answering, 30, "gateway control API", gw.proc)

        def poller() -> dict[str, Any]:
            assert gw is not None
            return dict(gw.status()["buses"]["conv"]["poller"])

        wait_until(
            lambda: poller()["saturated"] and (poller()["cycles_per_s"] or 0) > 0, 20, "saturated, with rates"
        )
        snap = poller()
        cycles_per_s = float(snap["cycles_per_s"])
        assert cycles_per_s < 1 / (len(UNITS) * TURNAROUND_S)  # bounded by the silences it keeps
        assert snap["line_utilisation"] is None  # the converter's baud rate is not known
        piles = snap["piles"]
        assert isinstance(piles, dict)
        for u in UNITS:
            assert piles[f"T{u}"]["readings_per_s"] == pytest.approx(
                cycles_per_s, rel=0.3
            )  # each once a cycle
            assert piles[f"T{u}"]["last_reading_age_s"] < 3 / cycles_per_s
        assert gw.status()["buses"]["conv"]["transport"]["kind"] == "rtu-tcp"

        text = metrics(gw)
        assert 'pilegate_gateway_bus_saturated{bus="conv"} 1.0' in text
        assert 'pilegate_gateway_pile_readings_per_second{bus="conv",pile="T2"}' in text
        status = pilectl_status(gw)
        assert any(line.startswith("conv") and "back to back" in line for line in status.splitlines()), status
        assert gw.proc.log().count("bus saturated: polling back to back") == 1
        assert "poll cycle overran" not in gw.proc.log()
    finally:
        probe.close()
        if gw:
            gw.proc.stop()
        sim.stop()
        broker.stop()
