"""``pilegate demo`` as a user runs it: READY, live charging, and a clean stop leaving nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

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


@pytest.mark.parametrize("broker", ["mosquitto", "embedded"])
def test_demo_comes_up_charges_and_stops_cleanly(tmp_path, broker):
    data_dir = tmp_path / "demo"
    argv = [sys.executable, "-m", "pilegate.cli", "demo", "--data-dir", str(data_dir),
            "--mqtt-port", str(free_port()), "--http-port", str(free_port()),
            "--time-scale", "120", "--broker", broker,
            "--view-interval", "0.5", "--poll-period", "0.5"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    assert proc.stdout is not None
    stdout = proc.stdout
    reader = threading.Thread(target=lambda: lines.extend(iter(stdout.readline, "")),
                              daemon=True)
    reader.start()
    try:
        ready = wait_for_sync(lambda: [ln for ln in lines if ln.startswith("READY http://127.0.0.1:")],
                              timeout_s=60, what="READY")
        assert ready
        wait_for_sync(lambda: sum("charging" in ln for ln in lines) >= 5, timeout_s=30,
                      what="all five ports charging in the live view")
        assert any(f"({'mosquitto' if broker == 'mosquitto' else 'amqtt'})" in ln for ln in lines)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, "".join(lines)[-3000:]
        reader.join(timeout=5)
    assert "demo stopped" in "".join(lines)
    assert processes_mentioning(str(data_dir)) == [], "demo left processes behind"
    gateway_log = (data_dir / "gateway.log").read_text()
    assert '"gateway stopped"' in gateway_log, "the gateway must stop cleanly, not be killed"
