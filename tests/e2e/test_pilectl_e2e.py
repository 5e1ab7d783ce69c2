"""pilectl against a running gateway (real processes), and the gateway's Prometheus metrics."""

from __future__ import annotations

import json
import os
import stat
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
    wait_until(
        lambda: all(p["state"] == "online" for p in gw.status()["piles"].values()),
        15,
        "piles online",
        gw.proc,
    )
    yield gw
    gw.proc.stop()
    sim.proc.stop()
    broker.stop()


def pilectl(gw, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """pilectl as a technician runs it: the gateway config gives the address and the token file."""
    argv = ["--config", str(gw.config_path)] if env is None else []
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PILECTL_")}
    return subprocess.run(
        [sys.executable, "-m", "gateway.pilectl", *argv, *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**environ, **(env or {})},
    )


def control(
    gw, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    """A raw request to the control API: the status code and body."""
    req = urllib.request.Request(
        f"http://127.0.0.1:{gw.control_port}{path}", data=body, method=method, headers=headers or {}
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


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
    assert "available" in pilectl(running, "telemetry").stdout  # states by name, not register codes
    assert set(telemetry) == {"F1", "T1"}


def test_start_limit_and_stop_a_port(running):
    started = pilectl(running, "start", "T1", "1", "--energy-wh", "100000")
    assert started.returncode == 0, started.stdout + started.stderr
    assert "start T1 port 1: done" in started.stdout
    wait_until(lambda: running.status()["piles"]["T1"]["ports"]["1"]["state"] == 2, 10, "T1 charging")
    limited = json.loads(pilectl(running, "limit", "T1", "1", "3500", "--json").stdout)
    assert limited["status"] == "done" and limited["readback"]["active_limit_W"] == 3500
    again = pilectl(running, "start", "T1", "1")
    assert again.returncode == 1 and "cannot start in state 2" in again.stdout
    stopped = pilectl(running, "stop", "T1", "1")
    assert stopped.returncode == 0 and "done" in stopped.stdout


def test_metrics_are_prometheus_text(running):
    code, body = control(running, "GET", "/metrics", headers={"Authorization": f"Bearer {running.token()}"})
    assert code == 200
    text = body.decode()
    assert "# TYPE pilegate_gateway_telemetry_total counter" in text
    assert 'pilegate_gateway_pile_online{pile="F1"} 1.0' in text
    assert "pilegate_gateway_outbox_depth" in text


def test_bad_control_requests_get_400_with_the_reason(running):
    code, body = control(
        running,
        "POST",
        "/read",
        b"[1]",
        {"Authorization": f"Bearer {running.token()}", "Content-Type": "application/json"},
    )
    assert code == 400
    assert "JSON object" in json.loads(body)["error"]


def test_the_gateway_creates_a_private_token_file(running):
    token_file = running.data_dir / "control.token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o640
    assert token_file.read_text().strip() == running.token()
    assert len(running.token()) >= 32


@pytest.mark.parametrize("path", ["/status", "/plan", "/telemetry", "/metrics"])
def test_every_route_needs_the_token(running, path):
    assert control(running, "GET", path)[0] == 401
    assert control(running, "GET", path, headers={"Authorization": "Bearer wrong-token-0123456789"})[0] == 401
    assert control(running, "GET", path, headers={"Authorization": running.token()})[0] == 401


def test_a_command_without_the_token_starts_nothing(running):
    body = json.dumps({"pile": "T1", "port": 1, "op": "start", "params": {}}).encode()
    code, _ = control(running, "POST", "/command", body, {"Content-Type": "application/json"})
    assert code == 401
    assert running.status()["piles"]["T1"]["ports"]["1"]["state"] != 2


def test_cross_site_and_rebound_requests_are_refused(running):
    """A web page can send text/plain, a foreign Origin, or reach us by a rebound DNS name."""
    auth = {"Authorization": f"Bearer {running.token()}"}
    body = json.dumps({"pile": "T1", "port": 1, "op": "start", "params": {}}).encode()
    plain = control(running, "POST", "/command", body, {**auth, "Content-Type": "text/plain"})
    assert plain[0] == 415
    port = running.control_port
    rebound = control(running, "GET", "/status", headers={**auth, "Host": f"evil.example:{port}"})
    assert rebound[0] == 403
    other_port = control(running, "GET", "/status", headers={**auth, "Host": f"127.0.0.1:{port + 1}"})
    assert other_port[0] == 403
    foreign = control(
        running,
        "POST",
        "/command",
        body,
        {**auth, "Content-Type": "application/json", "Origin": "http://evil.example"},
    )
    assert foreign[0] == 403
    assert running.status()["piles"]["T1"]["ports"]["1"]["state"] != 2
    for host in (f"127.0.0.1:{port}", f"localhost:{port}"):
        assert control(running, "GET", "/status", headers={**auth, "Host": host})[0] == 200
    own = control(running, "GET", "/status", headers={**auth, "Origin": f"http://127.0.0.1:{port}"})
    assert own[0] == 200


def test_pilectl_finds_the_token_from_the_environment(running):
    url = f"http://127.0.0.1:{running.control_port}"
    token_file = str(running.data_dir / "control.token")
    by_file = pilectl(running, "--url", url, "status", env={"PILECTL_TOKEN_FILE": token_file})
    assert by_file.returncode == 0, by_file.stderr
    by_value = pilectl(running, "--url", url, "status", env={"PILECTL_TOKEN": running.token()})
    assert by_value.returncode == 0, by_value.stderr
    wrong = pilectl(running, "--url", url, "status", env={"PILECTL_TOKEN": "x" * 40})
    assert wrong.returncode == 1 and "PILECTL_TOKEN is not this gateway's" in wrong.stderr
    missing = pilectl(
        running, "--url", url, "status", env={"PILECTL_TOKEN_FILE": str(running.data_dir / "nope.token")}
    )
    assert missing.returncode == 1 and "nope.token does not exist" in missing.stderr
