"""The README's technician walkthrough with real processes: a pile on an RS-485 line (the simulator
behind a socat pty at 9600 baud), ``pilectl scan`` on the bare line, the README's five lines of
config, the gateway started, then ``pilectl status``, ``scan`` through the gateway and ``tail``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pilegate.broker import MosquittoBroker, free_port
from tests.e2e.harness import GatewayProcess, Proc, spawn, wait_until
from tests.helpers import wait_for_sync
from tests.unit.test_pilectl_readme import walkthrough_config

pytestmark = pytest.mark.e2e

SIM = """
time_scale = 60.0
[[serial_buses]]
name = "rs485"
baudrate = 9600
[[piles]]
id = "P1"
kind = "trickle"
rated_power_W = 7000
serial_bus = "rs485"
unit = 1
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


def test_wire_scan_configure_and_follow_a_pile(tmp_path: Path):
    (tmp_path / "sim.toml").write_text(SIM)
    ready = tmp_path / "sim.ready.json"
    sim: Proc = spawn(
        "sim", ["sim", "--config", str(tmp_path / "sim.toml"), "--ready-file", str(ready)], tmp_path
    )
    broker = MosquittoBroker(free_port(), tmp_path / "mosquitto")
    broker.start()
    gw = None
    try:
        doc = wait_until(lambda: ready.exists() and json.loads(ready.read_text()), 30, "simulator ready", sim)
        device = doc["piles"]["P1"]["device"]
        bare = pilectl(
            "scan", "--device", device, "--baudrate", "9600", "--parity", "N", "--units", "1-4", "--json"
        )
        assert bare.returncode == 0, bare.stderr
        (unit,) = json.loads(bare.stdout)["found"]
        assert (unit["unit"], unit["matches"][0]["map"]) == (1, "pilegate-sim-v1")

        control_port = free_port()
        config = site_config(device, tmp_path, broker.port, control_port)
        gw = GatewayProcess(
            spawn("gateway", ["gateway", "--config", str(config)], tmp_path),
            config,
            control_port,
            tmp_path / "gw-data",
        )
        wait_until(
            lambda: gw.answering() and gw.status()["piles"]["P1"]["state"] == "online",
            30,
            "P1 online",
            gw.proc,
        )
        status = pilectl("status", "--config", str(config))
        assert status.returncode == 0, status.stderr
        rows = [line.split()[:4] for line in status.stdout.splitlines()]
        assert ["P1", "rs485", "1", "online"] in rows

        through = pilectl("scan", "--units", "1-2", "--json", "--config", str(config))
        assert through.returncode == 0, through.stderr
        assert [(u["unit"], u["pile"]) for u in json.loads(through.stdout)["found"]] == [(1, "P1")]

        env = {k: v for k, v in os.environ.items() if not k.startswith("PILECTL_")}
        tail = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gateway.pilectl",
                "--config",
                str(config),
                "tail",
                "--pile",
                "P1",
                "--json",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            reading = first_telemetry(tail)
            assert (reading["pile"], reading["port"], reading["state"]) == ("P1", 1, "available")
        finally:
            tail.send_signal(signal.SIGINT)
            assert (
                wait_for_sync(lambda: tail.poll() is not None, 10, 0.05, "tail to stop")
                and tail.returncode == 0
            )
            tail.communicate()
    finally:
        if gw:
            gw.proc.stop()
        sim.stop()
        broker.stop()
