"""pilectl against a running gateway (real processes), and the gateway's Prometheus metrics."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from pilegate.broker import MosquittoBroker, free_port
from tests.e2e.harness import GatewaySettings, start_gateway, start_sim, wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture
def running(tmp_path: Path):
    broker = MosquittoBroker(free_port(), tmp_path / "mosquitto")
    broker.start()
    sim = start_sim(tmp_path, fast=1, trickle=1, time_scale=60.0)
    gw = start_gateway(tmp_path, sim.piles, broker.port, GatewaySettings(poll_period_s=0.5))
    wait_until(lambda: all(p["state"] == "online" for p in gw.status()["piles"].values()), 15,
               "piles online", gw.proc)
    yield gw
    gw.proc.stop()
    sim.proc.stop()
    broker.stop()


def pilectl(gw, *args: str) -> subprocess.CompletedProcess[str]:
    url = f"http://127.0.0.1:{gw.control_port}"
    return subprocess.run([sys.executable, "-m", "gateway.pilectl", "--url", url, *args],
                          capture_output=True, text=True, timeout=30, check=False)


def test_status_plan_read_and_telemetry(running):
    status = pilectl(running, "status")
    assert status.returncode == 0, status.stderr
    assert "uplink  connected" in status.stdout
    assert "F1" in status.stdout and "online" in status.stdout
    plan = json.loads(pilectl(running, "plan", "--json").stdout)
    assert plan["T1"]["requests"] == [[100, 30]]
    read = json.loads(pilectl(running, "read", "1", "0", "33", "--pile", "F1", "--json").stdout)
    assert read["registers"][28] == 1  # identity: one port
    assert (read["registers"][29] << 16) + read["registers"][30] == 30_000  # rated power
    ambiguous = pilectl(running, "read", "1", "0", "4")
    assert ambiguous.returncode == 1 and "name a pile" in ambiguous.stderr
    telemetry = json.loads(pilectl(running, "telemetry", "--json").stdout)
    assert set(telemetry) == {"F1", "T1"}


def test_start_limit_and_stop_a_port(running):
    started = pilectl(running, "start", "T1", "1", "--energy-wh", "100000")
    assert started.returncode == 0, started.stdout + started.stderr
    assert "start T1 port 1: done" in started.stdout
    wait_until(lambda: running.status()["piles"]["T1"]["ports"]["1"]["state"] == 2, 10,
               "T1 charging")
    limited = json.loads(pilectl(running, "limit", "T1", "1", "3500", "--json").stdout)
    assert limited["status"] == "done" and limited["readback"]["active_limit_W"] == 3500
    again = pilectl(running, "start", "T1", "1")
    assert again.returncode == 1 and "cannot start in state 2" in again.stdout
    stopped = pilectl(running, "stop", "T1", "1")
    assert stopped.returncode == 0 and "done" in stopped.stdout


def test_metrics_are_prometheus_text(running):
    url = f"http://127.0.0.1:{running.control_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    assert "# TYPE pilegate_gateway_telemetry_total counter" in text
    assert 'pilegate_gateway_pile_online{pile="F1"} 1.0' in text
    assert "pilegate_gateway_outbox_depth" in text


def test_bad_control_requests_get_400_with_the_reason(running):
    req = urllib.request.Request(f"http://127.0.0.1:{running.control_port}/read", data=b"[1]",
                                 method="POST")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=5)
    assert info.value.code == 400
    assert "JSON object" in json.loads(info.value.read())["error"]
