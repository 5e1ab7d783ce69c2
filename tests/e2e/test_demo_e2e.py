"""``pilegate demo`` as a user runs it: READY, live charging, a broker closed to strangers, a clean
stop leaving nothing behind, children that die with the demo even when it is SIGKILLed, a taken port
refused in one line, the printed driver login, and a restart that continues the station's clock."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.broker_fixtures import connect_result
from tests.e2e.harness import free_port
from tests.helpers import wait_for_sync

pytestmark = pytest.mark.e2e


def processes_mentioning(text: str) -> list[str]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline and int(pid) != os.getpid():
            found.append(f"{pid}: {cmdline}")
    return found


def start_demo(
    data_dir: Path,
    broker: str,
    mqtt_port: int,
    *,
    http_port: int | None = None,
    time_scale: float = 120,
    cwd: Path | None = None,
) -> tuple[subprocess.Popen[str], list[str]]:
    """``pilegate demo`` in a child process; its output lines collect in the returned list."""
    argv = [
        sys.executable,
        "-m",
        "pilegate.cli",
        "demo",
        "--data-dir",
        str(data_dir),
        "--mqtt-port",
        str(mqtt_port),
        "--http-port",
        str(http_port or free_port()),
        "--time-scale",
        str(time_scale),
        "--broker",
        broker,
        "--view-interval",
        "0.5",
        "--poll-period",
        "0.5",
    ]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd, env=env
    )
    lines: list[str] = []
    assert proc.stdout is not None
    stdout = proc.stdout
    threading.Thread(target=lambda: lines.extend(iter(stdout.readline, "")), daemon=True).start()
    return proc, lines


def wait_ready(lines: list[str]) -> None:
    ready = wait_for_sync(
        lambda: [ln for ln in lines if ln.startswith("READY http://127.0.0.1:")], timeout_s=60, what="READY"
    )
    assert ready


def children_of(pid: int) -> list[int]:
    """The pids whose parent is ``pid``."""
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat_line = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if int(stat_line.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry))
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting to be reaped does not count)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("broker", ["mosquitto", "embedded"])
def test_demo_comes_up_charges_and_stops_cleanly(tmp_path, broker):
    data_dir = tmp_path / "demo"
    mqtt_port = free_port()
    proc, lines = start_demo(data_dir, broker, mqtt_port)
    try:
        wait_ready(lines)
        wait_for_sync(
            lambda: sum("charging" in ln for ln in lines) >= 5,
            timeout_s=30,
            what="all five ports charging in the live view",
        )
        assert any(f"({'mosquitto' if broker == 'mosquitto' else 'amqtt'};" in ln for ln in lines)
        # the broker refuses strangers: no anonymous clients, no guessed passwords
        assert connect_result(mqtt_port) != "Success"
        assert connect_result(mqtt_port, username="pilegate-central", password="guess") != "Success"
        assert connect_result(mqtt_port, username="gw-demo-gw1", password="guess") != "Success"
        for user in ("pilegate-central", "gw-demo-gw1", "demo-view"):  # their logins charge above
            secret = data_dir / "secrets" / f"{user}.password"
            assert stat.S_IMODE(secret.stat().st_mode) == 0o600
            assert len(secret.read_text().strip()) >= 24
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, "".join(lines)[-3000:]
    wait_for_sync(lambda: "demo stopped" in "".join(lines), timeout_s=5, what="demo stopped")
    assert processes_mentioning(str(data_dir)) == [], "demo left processes behind"
    gateway_log = (data_dir / "gateway.log").read_text()
    assert '"gateway stopped"' in gateway_log, "the gateway must stop cleanly, not be killed"


@pytest.mark.parametrize("broker", ["mosquitto", "embedded"])
def test_children_die_with_the_demo_even_when_it_is_killed(tmp_path, broker):
    data_dir = tmp_path / "demo"
    proc, lines = start_demo(data_dir, broker, free_port())
    try:
        wait_ready(lines)
        children = children_of(proc.pid)
        assert len(children) >= 4, children  # broker, sim, gateway, central
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        wait_for_sync(
            lambda: not any(alive(pid) for pid in children),
            30,
            0.1,
            "the children to die with the demo",
            context=lambda: f"still alive: {[pid for pid in children if alive(pid)]}",
        )
        assert processes_mentioning(str(data_dir)) == []
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.parametrize("option", ["--http-port", "--mqtt-port"])
def test_a_taken_port_is_refused_in_one_line_naming_the_option(tmp_path, option):
    with socket.socket() as other:  # another process serving the port
        other.bind(("127.0.0.1", 0))
        other.listen()
        taken = other.getsockname()[1]
        ports = {"http_port": taken} if option == "--http-port" else {}
        proc, lines = start_demo(
            tmp_path / "demo", "mosquitto", taken if option == "--mqtt-port" else free_port(), **ports
        )
        assert proc.wait(timeout=30) != 0
    time.sleep(0.2)  # the reader thread takes the last lines
    output = "".join(lines)
    assert not any(ln.startswith("READY") for ln in lines), output
    [refusal] = [ln for ln in lines if ln.startswith("Error:")]
    assert f"port {taken} is in use by another process" in refusal and option in refusal, output


def anchor(db: Path) -> dict[str, Any]:
    with sqlite3.connect(db) as conn:
        [(value,)] = conn.execute("SELECT value FROM params WHERE key = 'clock_anchor'").fetchall()
    return dict(json.loads(value))


def station_time_at_stop(db: Path) -> float:
    a = anchor(db)
    return float(a["station_s"] + (a["seen_wall_s"] - a["wall_s"]) * a["scale"])


def stop(proc: subprocess.Popen[str], lines: list[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0, "".join(lines)[-3000:]


def test_the_printed_driver_login_works_and_a_restart_continues_the_station_clock(tmp_path):
    # a relative data dir, as `make demo` gives it: everything lands in it, nothing nested
    proc, lines = start_demo(Path("data/demo"), "embedded", free_port(), time_scale=120, cwd=tmp_path)
    data_dir = tmp_path / "data" / "demo"
    try:
        wait_ready(lines)
        ready = "".join(lines)
        url = next(ln.split()[1] for ln in lines if ln.startswith("READY"))
        assert f"dashboard    {url}" in ready
        [driver] = [
            ln.split()[1:4] for ln in lines if ln.split()[:1] == ["driver"] and "/" in ln.split()[2:3]
        ]
        username, _slash, password = driver
        body = json.dumps({"username": username, "password": password}).encode()
        request = urllib.request.Request(
            f"{url}api/auth/login/", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert json.load(resp)["data"]["token"]
        assert "pilectl status --config" in ready
    finally:
        stop(proc, lines)
    assert (data_dir / "central" / "central.db").exists() and not (data_dir / "data").exists()
    stopped_at = station_time_at_stop(data_dir / "central" / "central.db")
    proc, lines = start_demo(Path("data/demo"), "embedded", free_port(), time_scale=30, cwd=tmp_path)
    try:
        wait_ready(lines)
        restarted = anchor(data_dir / "central" / "central.db")
        assert restarted["station_s"] == pytest.approx(stopped_at, abs=1e-3), "the clock jumped"
        assert restarted["scale"] == 30
    finally:
        stop(proc, lines)
