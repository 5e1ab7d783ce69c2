"""``pilegate demo`` as a user runs it: READY, live charging, a broker closed to strangers, a clean
stop leaving nothing behind, children that die with the demo even when it is SIGKILLed, a taken port
refused in one line, the printed driver login, a restart that continues the station's clock, a
central still serving once its watchdog pings have outnumbered the notification socket's queue,
several stations each charging with its own piles and gateway, and ``--centrals`` without a
PostgreSQL database refused in one line (``tests/e2e/test_fleet_e2e.py`` runs it on PostgreSQL)."""

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
    extra: list[str] | None = None,
    env: dict[str, str] | None = None,
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
        *(extra or []),
    ]
    environ = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2]), **(env or {})}
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd, env=environ
    )
    lines: list[str] = []
    assert proc.stdout is not None
    stdout = proc.stdout
    threading.Thread(target=lambda: lines.extend(iter(stdout.readline, "")), daemon=True).start()
    return proc, lines


def wait_ready(lines: list[str], proc: subprocess.Popen[str]) -> None:
    """Wait for the READY line; fail at once, with the demo's output, if the demo exits first."""
    ready = wait_for_sync(
        lambda: [ln for ln in lines if ln.startswith("READY http://127.0.0.1:")],
        timeout_s=60,
        what="READY",
        give_up=lambda: None if proc.poll() is None else f"the demo exited with {proc.returncode}",
        context=lambda: "".join(lines[-30:]),
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
        wait_ready(lines, proc)
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
        wait_ready(lines, proc)
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
        wait_ready(lines, proc)
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
        wait_ready(lines, proc)
        restarted = anchor(data_dir / "central" / "central.db")
        assert restarted["station_s"] == pytest.approx(stopped_at, abs=1e-3), "the clock jumped"
        assert restarted["scale"] == 30
    finally:
        stop(proc, lines)


def get_json(url: str, token: str | None = None) -> Any:
    headers = {"Authorization": f"Token {token}"} if token else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as resp:
        return json.load(resp)


def test_the_central_keeps_serving_after_more_watchdog_pings_than_the_ready_socket_holds(tmp_path):
    # the central pings WATCHDOG=1 to the socket it said READY on; a socket nobody reads holds
    # net.unix.max_dgram_qlen (10) datagrams and then blocks the sender: its whole event loop
    proc, lines = start_demo(tmp_path / "demo", "mosquitto", free_port(), env={"WATCHDOG_USEC": "100000"})
    try:
        wait_ready(lines, proc)
        url = next(ln.split()[1] for ln in lines if ln.startswith("READY"))
        pings_s = 30 * 0.05  # thirty pings, one every 50 ms
        deadline = time.monotonic() + pings_s
        while time.monotonic() < deadline:  # it must answer throughout, not only at the start
            assert get_json(f"{url}api/openapi.json")["openapi"]
    finally:
        stop(proc, lines)


def test_several_stations_each_charge_with_their_own_piles_and_gateway(tmp_path):
    data_dir = tmp_path / "demo"
    proc, lines = start_demo(data_dir, "mosquitto", free_port(), extra=["--stations", "2"])
    try:
        wait_ready(lines, proc)
        ready = "".join(lines)
        assert "stations     station1, station2" in ready and "at each station" in ready
        wait_for_sync(
            lambda: [ln for ln in lines if ln.split()[:1] == ["station2"] and "4/5 charging" in ln],
            timeout_s=30,
            what="station2's four ports charging in the live view",
        )
        url = next(ln.split()[1] for ln in lines if ln.startswith("READY"))
        token = driver_login(url, lines)
        for code in ("station1", "station2"):  # each station's own piles, all working
            piles = get_json(f"{url}api/charging/piles/status/?station={code}", token)["data"]
            found = {p["pile_id"]: p["status"] for key in ("fast_piles", "slow_piles") for p in piles[key]}
            assert found == dict.fromkeys(["F1", "F2", "T1", "T2", "T3"], "normal"), (code, piles)
            assert (data_dir / "stations" / code / "gateway.toml").exists()
        for user in ("gw-station1-gw1", "gw-station2-gw1"):
            assert connect_result(int(mqtt_port_of(lines)), username=user, password="guess") != "Success"
    finally:
        stop(proc, lines)
    assert processes_mentioning(str(data_dir)) == [], "demo left processes behind"


def driver_login(url: str, lines: list[str]) -> str:
    """A token of the driver login the READY block printed."""
    [driver] = [ln.split()[1:4] for ln in lines if ln.split()[:1] == ["driver"] and "/" in ln.split()[2:3]]
    username, _slash, password = driver
    body = json.dumps({"username": username, "password": password}).encode()
    request = urllib.request.Request(
        f"{url}api/auth/login/", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        return str(json.load(resp)["data"]["token"])


def mqtt_port_of(lines: list[str]) -> str:
    [broker] = [ln for ln in lines if ln.split()[:1] == ["broker"]]
    return broker.split()[1].rsplit(":", 1)[1]


def test_several_centrals_without_a_postgresql_database_are_refused_in_one_line(tmp_path):
    proc, lines = start_demo(tmp_path / "demo", "mosquitto", free_port(), extra=["--centrals", "2"])
    assert proc.wait(timeout=30) == 2
    time.sleep(0.2)  # the reader thread takes the last lines
    [refusal] = [ln for ln in lines if ln.startswith("Error:")]
    assert "--centrals 2 needs --database postgresql://" in refusal, "".join(lines)
