"""``pilectl scan`` with no gateway: straight onto a serial line (simulated piles behind a socat pty,
units 1, 2 and 5 present) or a Modbus TCP host, as a technician runs it (a separate process)."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import shutil
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from firmware_sim.config import SimConfig, SimPileSpec, SimSerialBusSpec
from firmware_sim.runner import Simulation, start_simulation
from tests.helpers import wait_for

pytestmark = pytest.mark.skipif(shutil.which("socat") is None, reason="socat not installed")

SIM = SimConfig(
    piles=(
        SimPileSpec("F1", "fast", 30_000, ports=2),
        *(
            SimPileSpec(f"T{u}", "trickle", 7_000, unit=u, tcp_port=None, serial_bus="rs485")
            for u in (1, 2, 5)
        ),
    ),
    serial_buses=(SimSerialBusSpec("rs485", baudrate=9600),),
    time_scale=60.0,
)


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
async def sim() -> AsyncIterator[Simulation]:
    simulation = await start_simulation(SIM)
    try:
        yield simulation
    finally:
        await simulation.stop()


def _argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "gateway.pilectl", *args]


async def pilectl(*args: str) -> Run:
    proc = await asyncio.create_subprocess_exec(
        *_argv(*args),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return Run(proc.returncode or 0, out.decode(), err.decode())


def line_args(sim: Simulation) -> list[str]:
    device = sim.endpoints["T1"].device
    assert device is not None
    return ["--device", device, "--baudrate", "9600", "--parity", "N"]


async def test_scan_of_a_serial_line_finds_the_units_present(sim: Simulation):
    run = await pilectl("scan", *line_args(sim), "--units", "1-8", "--json")
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert [u["unit"] for u in report["found"]] == [1, 2, 5]
    assert [u["matches"][0]["identity"]["serial"] for u in report["found"]] == ["T1", "T2", "T5"]
    assert all(u["matches"][0]["map"] == "pilegate-sim-v1" for u in report["found"])
    assert report["complete"] and report["probed"] == 8
    assert report["transport"] == {"kind": "serial", "device": line_args(sim)[1], "line": "9600 8N1"}
    assert run.stderr.splitlines() == [f"unit {u}: answers (pilegate-sim-v1)" for u in (1, 2, 5)]


async def test_a_human_scan_of_a_tcp_host_shows_a_table(sim: Simulation):
    ep = sim.endpoints["F1"]
    run = await pilectl("scan", "--host", str(ep.host), "--port", str(ep.port), "--units", "1-3")
    assert run.returncode == 0, run.stderr
    header, row, summary = run.stdout.splitlines()
    assert header.split() == ["UNIT", "PILE", "MAP", "IDENTITY"]
    assert row.split()[:3] == ["1", "-", "pilegate-sim-v1"]
    assert row.split()[3] == "pilegate" and row.endswith(" F1 1.0.0, 2 ports, 30000 W")
    assert summary.startswith(f"scanned units 1..3 (3 probed) on 127.0.0.1 {ep.port} in ")
    assert summary.endswith(": 1 answered")


async def test_a_scan_stops_at_its_deadline_and_says_so(sim: Simulation):
    run = await pilectl(
        "scan", *line_args(sim), "--units", "6-247", "--timeout", "0.15", "--deadline", "0.5", "--json"
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert not report["complete"] and 3 <= report["probed"] <= 6 and report["found"] == []
    assert report["stopped"].startswith("deadline of 0.5 s reached before unit ")


async def test_bad_lines_and_options_are_refused_by_name(sim: Simulation, tmp_path):
    missing = await pilectl("scan", "--device", str(tmp_path / "ttyUSB9"), "--units", "1")
    assert missing.returncode == 1
    assert missing.stderr == f"Error: cannot open {tmp_path / 'ttyUSB9'}\n"
    slow = await pilectl("scan", *line_args(sim), "--timeout", "0.05")
    assert slow.returncode == 2 and "an identity read takes on this line" in slow.stderr
    both = await pilectl("scan", "--device", "/dev/ttyUSB0", "--host", "10.0.0.5")
    assert both.returncode == 2 and "not both" in both.stderr
    units = await pilectl("scan", "--host", "10.0.0.5", "--units", "0-300")
    assert units.returncode == 2 and "unit ids on a TCP host are 1..255" in units.stderr


async def test_on_a_terminal_the_scan_shows_a_progress_bar(sim: Simulation):
    master, slave = pty.openpty()
    proc = await asyncio.create_subprocess_exec(
        *_argv("scan", *line_args(sim), "--units", "1-3"),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=slave,
    )
    os.close(slave)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        seen = await wait_for(lambda: _read_all(master), 5, what="the progress bar on the terminal")
    finally:
        os.close(master)
    assert "scanning" in seen and "100%" in seen
    assert "answers" not in seen  # a bar, not the plain lines
    assert len(out.decode().splitlines()) == 4  # header, units 1 and 2, summary


def _read_all(fd: int) -> str:
    os.set_blocking(fd, False)
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 4096)
        except (BlockingIOError, OSError):
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")
