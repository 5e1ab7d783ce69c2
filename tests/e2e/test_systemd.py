"""Running as systemd services: the shipped units pass ``systemd-analyze verify``, and the gateway and
the central tell a ``NOTIFY_SOCKET`` READY once serving and WATCHDOG from their event loops."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from pilegate.broker import MosquittoBroker, free_port
from pilegate.sdnotify import Notifier
from tests.e2e.harness import GatewaySettings, start_central, start_gateway, start_sim
from tests.helpers import wait_for_sync

UNITS = sorted((Path(__file__).parents[2] / "systemd").glob("*.service"))
DAEMONS = ("pilegate-gateway.service", "pilegate-central.service")


def test_the_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is missing: scripts/system-deps installs Debian's systemd package")
    bin_dir = Path(sys.executable).parent
    if not (bin_dir / "pilegate").exists():
        pytest.skip(f"the pilegate entry points are not installed beside {sys.executable}")
    assert {u.name for u in UNITS} >= set(DAEMONS)
    for unit in UNITS:  # verify checks that the commands exist: point them at this install's
        (tmp_path / unit.name).write_text(unit.read_text().replace("/usr/local/bin/", f"{bin_dir}/"))
    result = subprocess.run(
        [analyze, "verify", *(str(tmp_path / u.name) for u in UNITS)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0 and not result.stderr.strip(), result.stdout + result.stderr


@pytest.mark.parametrize("unit", DAEMONS)
def test_the_daemons_are_notify_services_with_a_watchdog(unit: str) -> None:
    text = (Path(__file__).parents[2] / "systemd" / unit).read_text()
    for line in (
        "Type=notify",
        "WatchdogSec=",
        "ProtectSystem=strict",
        "StateDirectory=",
        "NoNewPrivileges=true",
    ):
        assert f"\n{line}" in text, f"{unit} lacks {line}"


class NotifySocket:
    """A unix datagram socket bound where ``NOTIFY_SOCKET`` will point, collecting what arrives."""

    def __init__(self, address: str) -> None:
        self.env_value = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.settimeout(0.05)
        self.messages: list[dict[str, str]] = []

    def drain(self) -> list[dict[str, str]]:
        while True:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                return self.messages
            self.messages.append(dict(line.split("=", 1) for line in data.decode().splitlines()))

    def count(self, key: str) -> int:
        return sum(key in m for m in self.drain())


def pinged(notify: NotifySocket, times: int) -> bool:
    return notify.count("WATCHDOG") >= times


@pytest.fixture
def sockets(tmp_path: Path) -> Iterator[dict[str, NotifySocket]]:
    # one abstract socket (as systemd may give) and one in the file system
    found = {
        "gateway": NotifySocket(f"@pilegate-test-{uuid.uuid4().hex}"),
        "central": NotifySocket(str(tmp_path / "central.notify")),
    }
    yield found
    for s in found.values():
        s.sock.close()


@pytest.mark.e2e
def test_gateway_and_central_notify_ready_and_feed_the_watchdog(
    tmp_path: Path, sockets: dict[str, NotifySocket], monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = MosquittoBroker(free_port(), tmp_path / "mosquitto")
    broker.start()
    sim = start_sim(tmp_path, fast=1, trickle=1)
    monkeypatch.setenv("WATCHDOG_USEC", "400000")  # a ping every 0.2 s
    procs = []
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", sockets["gateway"].env_value)
        gateway = start_gateway(tmp_path, sim.piles, broker.port, GatewaySettings(poll_period_s=0.5))
        procs.append(gateway.proc)
        monkeypatch.setenv("NOTIFY_SOCKET", sockets["central"].env_value)
        central = start_central(tmp_path, broker.port)
        procs.append(central.proc)
        for name, proc in (("gateway", gateway.proc), ("central", central.proc)):
            notify = sockets[name]
            wait_for_sync(partial(pinged, notify, 3), 15, 0.1, f"{name} watchdog pings")
            ready = [m for m in notify.drain() if m.get("READY") == "1"]
            assert len(ready) == 1 and ready[0]["MAINPID"] == str(proc.popen.pid), notify.messages
            assert notify.messages.index(ready[0]) < next(
                i for i, m in enumerate(notify.messages) if "WATCHDOG" in m
            ), "READY comes once serving, before the first watchdog ping"
        for proc in procs:
            assert proc.stop() == 0
        assert all(any("STOPPING" in m for m in s.drain()) for s in sockets.values())
    finally:
        for proc in procs:
            proc.stop()
        sim.proc.stop()
        broker.stop()


def test_a_stuck_event_loop_stops_feeding_the_watchdog(tmp_path: Path) -> None:
    notify = NotifySocket(str(tmp_path / "notify"))
    notifier = Notifier({"NOTIFY_SOCKET": notify.env_value, "WATCHDOG_USEC": "100000"})

    async def run() -> tuple[int, int]:
        feeding = asyncio.get_running_loop().create_task(notifier.feed_watchdog())
        await asyncio.sleep(0.5)
        before = notify.count("WATCHDOG")
        time.sleep(0.6)  # noqa: ASYNC251 (the point: the loop is stuck, no task runs)
        during = notify.count("WATCHDOG") - before
        feeding.cancel()
        return before, during

    before, during = asyncio.run(run())
    assert before >= 5 and during == 0
    assert Notifier({}).ready() is False  # no NOTIFY_SOCKET: nothing to tell
