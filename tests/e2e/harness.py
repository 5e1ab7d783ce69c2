"""Real processes for end-to-end tests and benchmarks: the simulator and the gateway.

Each is started with ``python -m pilegate.cli``, on ephemeral loopback ports, with its output in a
log file that a failing test prints. Stopping is always bounded: SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.config import load_config
from gateway.control_token import TokenFileError, read_token
from pilegate.broker import free_port as broker_free_port
from tests.helpers import wait_for_sync


def free_port() -> int:
    return broker_free_port()


@dataclass
class Proc:
    """A child process with its log; ``stop()`` is SIGTERM then SIGKILL after a deadline."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self) -> str:
        """The end of the log, for failure messages."""
        return self.log()[-4000:]

    def exit_reason(self) -> str | None:
        """Why a wait on this process cannot succeed any more: it exited (else ``None``)."""
        return None if self.alive() else f"{self.name} exited ({self.popen.returncode})"

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 15.0) -> int:
        return stop_process(self.popen, sig, timeout_s)


def stop_process(popen: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout_s: float = 15.0) -> int:
    """Send ``sig`` to a running process, SIGKILL it if it has not exited after ``timeout_s``;
    its exit code."""
    if popen.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            popen.send_signal(sig)
        try:
            popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait(5)
    return int(popen.returncode)


def spawn(name: str, args: list[str], workdir: Path) -> Proc:
    log_path = workdir / f"{name}.log"
    log_file = log_path.open("ab")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    popen = subprocess.Popen(
        [sys.executable, "-m", "pilegate.cli", *args],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    log_file.close()
    return Proc(name, popen, log_path)


def wait_until(predicate: Any, timeout_s: float, what: str, proc: Proc | None = None) -> Any:
    """:func:`wait_for_sync` that, given ``proc``, fails as soon as it exits and shows its log tail."""
    if proc is None:
        return wait_for_sync(predicate, timeout_s, 0.05, what)
    return wait_for_sync(predicate, timeout_s, 0.05, what, give_up=proc.exit_reason, context=proc.log_tail)


@dataclass
class SimProcess:
    proc: Proc
    piles: dict[str, dict[str, Any]]
    control_port: int

    def fault(self, pile: str, kind: str, port: int = 1) -> None:
        body = json.dumps({"port": port, "kind": kind}).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.control_port}/piles/{pile}/fault",
            data=body,
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.status == 200

    def snapshot(self) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.control_port}/piles"
        with urllib.request.urlopen(url, timeout=5) as resp:
            return dict(json.loads(resp.read()))


def start_sim(
    workdir: Path,
    *,
    fast: int = 1,
    trickle: int = 1,
    time_scale: float = 60.0,
    extra: list[str] | None = None,
) -> SimProcess:
    params = workdir / "station.toml"
    params.write_text(
        f"FastChargingPileNum = {fast}\nTrickleChargingPileNum = {trickle}\n"
        "fast_power_kw = 30\nslow_power_kw = 10\n"
    )
    ready = workdir / "sim.ready.json"
    control_port = free_port()
    proc = spawn(
        "sim",
        [
            "sim",
            "--station",
            str(params),
            "--time-scale",
            str(time_scale),
            "--control-port",
            str(control_port),
            "--ready-file",
            str(ready),
            *(extra or []),
        ],
        workdir,
    )
    doc = wait_until(lambda: ready.exists() and json.loads(ready.read_text()), 30, "simulator ready", proc)
    return SimProcess(proc, doc["piles"], control_port)


def restart_sim(workdir: Path, previous: SimProcess, time_scale: float, initial_energy_Wh: int) -> SimProcess:
    """A new simulator process serving the same piles on the same TCP ports as ``previous`` (which
    must be gone), every meter starting at ``initial_energy_Wh``: piles that rebooted."""
    config = workdir / "sim-restart.toml"
    lines = [f"time_scale = {time_scale}", "control_port = 0", ""]
    for pile_id, ep in sorted(previous.piles.items()):
        lines += [
            "[[piles]]",
            f'id = "{pile_id}"',
            f'kind = "{ep["kind"]}"',
            f"rated_power_W = {ep['rated_power_W']}",
            f"ports = {ep['ports']}",
            f"unit = {ep['unit']}",
            f"tcp_port = {ep['port']}",
            f"initial_energy_Wh = {initial_energy_Wh}",
            "",
        ]
    config.write_text("\n".join(lines))
    ready = workdir / "sim.ready.json"
    ready.unlink(missing_ok=True)
    proc = spawn(previous.proc.name, ["sim", "--config", str(config), "--ready-file", str(ready)], workdir)
    doc = wait_until(lambda: ready.exists() and json.loads(ready.read_text()), 30, "simulator ready", proc)
    return SimProcess(proc, doc["piles"], int(doc["control_port"]))


@dataclass
class GatewayProcess:
    proc: Proc
    config_path: Path
    control_port: int
    data_dir: Path

    def restart(self, workdir: Path) -> GatewayProcess:
        """The same gateway (config, data directory) in a new process, once its control API answers."""
        proc = spawn(self.proc.name, ["gateway", "--config", str(self.config_path)], workdir)
        gateway = GatewayProcess(proc, self.config_path, self.control_port, self.data_dir)
        wait_until(gateway.answering, 30, "gateway control API", proc)
        return gateway

    def answering(self) -> bool:
        try:
            self.status()
        except (OSError, TokenFileError):
            return False
        return True

    def token(self) -> str:
        """The control API's bearer token, from the file the gateway creates at start."""
        return read_token(load_config(self.config_path).control_token_file)

    def status(self) -> dict[str, Any]:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.control_port}/status",
            headers={"Authorization": f"Bearer {self.token()}"},
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            return dict(json.loads(resp.read()))


@dataclass
class GatewaySettings:
    station: str = "s1"
    gateway: str = "gw1"
    poll_period_s: float = 0.5
    timeout_s: float = 0.2
    fail_after_cycles: int = 2
    keepalive_s: int = 5
    extra_gateway: dict[str, Any] = field(default_factory=dict)


def gateway_config(
    piles: dict[str, dict[str, Any]], mqtt_port: int, data_dir: Path, control_port: int, s: GatewaySettings
) -> str:
    lines = [
        "[gateway]",
        f'id = "{s.gateway}"',
        f'station = "{s.station}"',
        f'data_dir = "{data_dir}"',
        f"poll_period_s = {s.poll_period_s}",
        f'control_listen = "127.0.0.1:{control_port}"',
        'log_format = "json"',
        *(f"{k} = {json.dumps(v)}" for k, v in s.extra_gateway.items()),
        "",
        "[mqtt]",
        f'url = "mqtt://127.0.0.1:{mqtt_port}"',
        f"keepalive_s = {s.keepalive_s}",
        "",
    ]
    for pile_id, ep in sorted(piles.items()):
        lines += [
            "[[bus]]",
            f'name = "b-{pile_id}"',
            'transport = "tcp"',
            f'host = "{ep["host"]}"',
            f"port = {ep['port']}",
            f"timeout_s = {s.timeout_s}",
            f"fail_after_cycles = {s.fail_after_cycles}",
            "backoff_max_s = 1.0",
            "",
            "[[pile]]",
            f'id = "{pile_id}"',
            f'bus = "b-{pile_id}"',
            f"unit = {ep.get('unit', 1)}",
            f"ports = {ep.get('ports', 1)}",
            *([f'map = "{ep["map"]}"'] if ep.get("map") else []),
            "",
        ]
    return "\n".join(lines)


def start_gateway(
    workdir: Path,
    piles: dict[str, dict[str, Any]],
    mqtt_port: int,
    settings: GatewaySettings | None = None,
    name: str = "gateway",
) -> GatewayProcess:
    settings = settings or GatewaySettings()
    control_port = free_port()
    data_dir = workdir / f"{name}-data"
    config_path = workdir / f"{name}.toml"
    config_path.write_text(gateway_config(piles, mqtt_port, data_dir, control_port, settings))
    proc = spawn(name, ["gateway", "--config", str(config_path)], workdir)
    gw = GatewayProcess(proc, config_path, control_port, data_dir)
    wait_until(gw.answering, 30, "gateway control API", proc)
    return gw


@dataclass
class CentralProcess:
    proc: Proc
    config_path: Path
    url: str

    def restart(self, workdir: Path) -> CentralProcess:
        port = self.url.rsplit(":", 1)[1]
        proc = spawn(self.proc.name, ["central", "--config", str(self.config_path), "--port", port], workdir)
        central = CentralProcess(proc, self.config_path, self.url)
        wait_until(central.answering, 30, "central HTTP", proc)
        return central

    def answering(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/api/openapi.json", timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False


def run_central(
    workdir: Path, config_path: Path, name: str = "central", timeout_s: float = 60
) -> CentralProcess:
    """``pilegate central`` on a free port in a child process, once its HTTP side answers."""
    port = free_port()
    proc = spawn(name, ["central", "--config", str(config_path), "--port", str(port)], workdir)
    central = CentralProcess(proc, config_path, f"http://127.0.0.1:{port}")
    wait_until(central.answering, timeout_s, f"{name} HTTP", proc)
    return central


def central_config(
    station: str,
    mqtt_port: int,
    data_dir: Path,
    time_scale: float,
    fast: int,
    trickle: int,
    extra_station: str = "",
) -> str:
    return f"""
[central]
station = "{station}"
data_dir = "{data_dir}"
time_scale = {time_scale}
log_format = "json"
[mqtt]
url = "mqtt://127.0.0.1:{mqtt_port}"
client_id = "central-{station}"
[station]
FastChargingPileNum = {fast}
TrickleChargingPileNum = {trickle}
WaitingAreaSize = 6
ChargingQueueLen = 2
{extra_station}
"""


def start_central(
    workdir: Path,
    mqtt_port: int,
    *,
    station: str = "s1",
    time_scale: float = 60,
    fast: int = 1,
    trickle: int = 1,
    admin_password: str | None = None,
    extra_station: str = "",
) -> CentralProcess:
    config_path = workdir / "central.toml"
    config_path.write_text(
        central_config(station, mqtt_port, workdir / "central-data", time_scale, fast, trickle, extra_station)
    )
    if admin_password:
        create_admin(config_path, admin_password)
    return run_central(workdir, config_path, timeout_s=30)


def create_admin(config_path: Path, password: str) -> None:
    """``pilegate create-user --admin`` of the user ``admin`` in the config's database."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pilegate.cli",
            "create-user",
            "--config",
            str(config_path),
            "--username",
            "admin",
            "--admin",
        ],
        env={**os.environ, "PILEGATE_PASSWORD": password},
        check=True,
        capture_output=True,
        timeout=60,
    )


class Api:
    """A tiny JSON client for the REST APIs: returns (status, body)."""

    def __init__(self, base: str, token: str | None = None) -> None:
        self.base, self.token = base, token

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Token {self.token}"
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=15) as resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            return exc.code, json.loads(raw) if raw else None

    def register(self, username: str, password: str = "secret-pw-1") -> Api:
        status, body = self.call(
            "POST",
            "/api/auth/register/",
            {
                "username": username,
                "password": password,
                "email": f"{username}@example.com",
                "phone": "13800138000",
            },
        )
        assert status in (200, 201), body
        return Api(self.base, body["data"]["token"])
