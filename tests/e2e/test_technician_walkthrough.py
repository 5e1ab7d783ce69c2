"""The README's technician walkthrough with real processes: an ABB Terra AC wallbox on an RS-485
line (the simulator serving the shipped ``abb-terra-ac`` map behind a socat pty at 9600 baud),
``pilectl scan`` on the bare line naming the family, the README's five lines of config, the gateway
started, then ``pilectl status``, ``scan`` through the gateway and ``tail``, and a driver's charge
on the wallbox started, stopped at the amount and billed by the central."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pilegate.broker import MosquittoBroker, free_port
from tests.e2e.harness import (
    Api,
    CentralProcess,
    GatewayProcess,
    Proc,
    SimProcess,
    spawn,
    start_central,
    wait_until,
)
from tests.helpers import wait_for_sync
from tests.unit.test_pilectl_readme import walkthrough_config

pytestmark = pytest.mark.e2e

FAMILY = "abb-terra-ac"
SIM = f"""
time_scale = 60.0
control_port = 0
[[serial_buses]]
name = "rs485"
baudrate = 9600
[[piles]]
id = "T1"
kind = "trickle"
rated_power_W = 10000
serial_bus = "rs485"
unit = 1
map = "{FAMILY}"
registers = {{ user_max_A = 32 }}
"""


def pilectl(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PILECTL_")}
    return subprocess.run(
        [sys.executable, "-m", "gateway.pilectl", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


def site_config(device: str, tmp_path: Path, mqtt_port: int, control_port: int) -> Path:
    """The README's five lines on this line, plus what a test needs on top: its own data dir,
    control port and broker."""
    five = walkthrough_config().replace("/dev/ttyUSB0", device)
    path = tmp_path / "gateway.toml"
    path.write_text(
        f'{five}\ndata_dir = "{tmp_path / "gw-data"}"\n'
        f'control_listen = "127.0.0.1:{control_port}"\n'
        f'[mqtt]\nurl = "mqtt://127.0.0.1:{mqtt_port}"\n'
    )
    return path


def first_telemetry(proc: subprocess.Popen[str]) -> dict[str, object]:
    assert proc.stdout is not None
    for line in proc.stdout:
        item = json.loads(line)
        if item["kind"] == "telemetry":
            return dict(item)
    raise AssertionError("tail ended without telemetry")


def scan_the_bare_line(device: str) -> None:
    bare = pilectl(
        "scan", "--device", device, "--baudrate", "9600", "--parity", "N", "--units", "1-4", "--json"
    )
    assert bare.returncode == 0, bare.stderr
    (unit,) = json.loads(bare.stdout)["found"]
    (match,) = unit["matches"]
    assert (unit["unit"], match["map"], match["confirmed"]) == (1, FAMILY, True)
    assert f"unit 1: answers ({FAMILY})" in bare.stderr


def follow_the_pile(config: Path) -> None:
    """``pilectl status``, ``scan`` through the gateway and ``tail``, as the README's steps 4 and 5."""
    status = pilectl("status", "--config", str(config))
    assert status.returncode == 0, status.stderr
    rows = [line.split()[:4] for line in status.stdout.splitlines()]
    assert ["T1", "rs485", "1", "online"] in rows

    through = pilectl("scan", "--units", "1-2", "--json", "--config", str(config))
    assert through.returncode == 0, through.stderr
    found = json.loads(through.stdout)["found"]
    assert [(u["unit"], u["pile"], u["matches"][0]["map"]) for u in found] == [(1, "T1", FAMILY)]

    env = {k: v for k, v in os.environ.items() if not k.startswith("PILECTL_")}
    tail = subprocess.Popen(
        [sys.executable, "-m", "gateway.pilectl", "--config", str(config), "tail", "--pile", "T1", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        reading = first_telemetry(tail)
        assert (reading["pile"], reading["port"], reading["state"]) == ("T1", 1, "available")
    finally:
        tail.send_signal(signal.SIGINT)
        assert (
            wait_for_sync(lambda: tail.poll() is not None, 10, 0.05, "tail to stop") and tail.returncode == 0
        )
        tail.communicate()


def session_Wh(sim: SimProcess) -> float:
    """The wallbox's own session energy register (ABB restarts it at 0 every session)."""
    ports = sim.snapshot()["piles"]["T1"]["ports"]
    first = ports["1"] if isinstance(ports, dict) else ports[0]
    return float(first["energy_Wh"])


def charge_and_bill(central: CentralProcess, sim: SimProcess) -> None:
    """A driver's trickle request charged on the wallbox, stopped at the amount and billed."""
    driver = Api(central.url).register("driver1")
    code, body = driver.call(
        "POST",
        "/api/charging/request/",
        {"charging_mode": "slow", "requested_amount": 1.0, "battery_capacity": 60},
    )
    assert code in (200, 201), body

    def request_status() -> str:
        code, body = driver.call("GET", "/api/charging/request/status/")
        assert code == 200, body
        return str(body["data"]["current_status"])

    wait_until(lambda: request_status() == "charging", 30, "the wallbox charging")
    wait_until(lambda: request_status() == "completed", 60, "the amount reached")
    code, body = driver.call("GET", "/api/charging/bills/")
    assert code == 200, body
    [bill] = body["data"]["bills"]
    assert bill["pile_id"] == "T1" and bill["charging_amount"] >= 1.0 - 0.005
    # this session's energy in the wallbox, to the whole Wh it is published in, as the bill shows kWh
    assert bill["charging_amount"] == pytest.approx(session_Wh(sim) / 1000, abs=0.005 + 0.001)


def test_wire_scan_configure_follow_and_bill_a_vendor_wallbox(tmp_path: Path):
    (tmp_path / "sim.toml").write_text(SIM)
    ready = tmp_path / "sim.ready.json"
    sim_proc: Proc = spawn(
        "sim", ["sim", "--config", str(tmp_path / "sim.toml"), "--ready-file", str(ready)], tmp_path
    )
    broker = MosquittoBroker(free_port(), tmp_path / "mosquitto")
    broker.start()
    gw = central = None
    try:
        doc = wait_until(
            lambda: ready.exists() and json.loads(ready.read_text()), 30, "simulator ready", sim_proc
        )
        sim = SimProcess(sim_proc, doc["piles"], int(doc["control_port"]))
        device = doc["piles"]["T1"]["device"]
        scan_the_bare_line(device)

        control_port = free_port()
        config = site_config(device, tmp_path, broker.port, control_port)
        gw = GatewayProcess(
            spawn("gateway", ["gateway", "--config", str(config)], tmp_path),
            config,
            control_port,
            tmp_path / "gw-data",
        )
        wait_until(
            lambda: gw.answering() and gw.status()["piles"]["T1"]["state"] == "online",
            30,
            "T1 online",
            gw.proc,
        )
        follow_the_pile(config)

        central = start_central(tmp_path, broker.port, station="station1", time_scale=60, fast=0, trickle=1)
        charge_and_bill(central, sim)
    finally:
        for proc in (central.proc if central else None, gw.proc if gw else None, sim_proc):
            if proc is not None:
                proc.stop()
        broker.stop()
