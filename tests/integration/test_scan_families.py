"""``pilectl scan`` recognises simulated piles of each shipped charger family by name, as a technician
runs it on a line no gateway owns (a separate process): over Modbus TCP (ABB Terra AC; KEBA P30 on
the unit id 255 it answers on; Alfen NG9xx, whose identity answers on station unit 200; Bender, whose
map has no match rule, so it fits unconfirmed; a pilegate-sim-v1 pile) and on an RS-485 line behind a
socat pty for the family that speaks Modbus RTU (ABB) next to a sim-v1 pile."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest

from firmware_sim.config import SimConfig, SimPileSpec, SimSerialBusSpec
from firmware_sim.runner import Simulation, start_simulation
from tests.e2e.family_probe import FIXED_REGISTERS

pytestmark = pytest.mark.skipif(shutil.which("socat") is None, reason="socat not installed")


def pile(pile_id: str, family: str, unit: int = 1, serial_bus: str | None = None) -> SimPileSpec:
    fixed = tuple(FIXED_REGISTERS.get(family, {}).items())  # read-back registers the sim does not model
    tcp_port = None if serial_bus else 0
    return SimPileSpec(
        pile_id,
        "trickle",
        11_000,
        unit=unit,
        map=family,
        registers=fixed,
        tcp_port=tcp_port,
        serial_bus=serial_bus,
    )


SIM = SimConfig(
    piles=(
        pile("A1", "abb-terra-ac"),
        pile("K1", "keba-p30", unit=255),
        pile("L1", "alfen-ng9xx"),
        pile("B1", "bender-cc61x"),
        pile("S1", "pilegate-sim-v1"),
        pile("T1", "pilegate-sim-v1", unit=1, serial_bus="rs485"),
        pile("A3", "abb-terra-ac", unit=3, serial_bus="rs485"),
    ),
    serial_buses=(SimSerialBusSpec("rs485", baudrate=19200),),
    time_scale=60.0,
    control_port=None,
)


@pytest.fixture
async def sim() -> AsyncIterator[Simulation]:
    simulation = await start_simulation(SIM)
    try:
        yield simulation
    finally:
        await simulation.stop()


async def pilectl_scan(*args: str) -> tuple[dict[str, Any], str]:
    """``pilectl scan ARGS --json``: the report, and the progress lines it wrote to stderr."""
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "gateway.pilectl", "scan", *args, "--json"],
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    return json.loads(out), err.decode()


def found(report: dict[str, Any]) -> dict[int, list[tuple[str, bool, str, int | None]]]:
    """Each answering unit's matches as (map, confirmed, role, identity_unit)."""
    return {
        u["unit"]: [(m["map"], m["confirmed"], m["role"], m["identity_unit"]) for m in u["matches"]]
        for u in report["found"]
    }


async def test_a_scan_of_each_family_over_tcp_names_it(sim: Simulation):
    hosts = {
        p: ["--host", str(sim.endpoints[p].host), "--port", str(sim.endpoints[p].port)]
        for p in sim.endpoints
        if p in ("A1", "K1", "L1", "B1", "S1")
    }
    runs = dict(
        zip(hosts, await asyncio.gather(*(pilectl_scan(*args) for args in hosts.values())), strict=True)
    )
    reports = {p: report for p, (report, _err) in runs.items()}
    assert all(r["complete"] and (r["first"], r["last"]) == (1, 255) for r in reports.values())
    assert found(reports["A1"]) == {1: [("abb-terra-ac", True, "pile", None)]}
    assert found(reports["K1"]) == {255: [("keba-p30", True, "pile", None)]}
    assert found(reports["L1"]) == {
        1: [("alfen-ng9xx", True, "pile", 200)],
        200: [("alfen-ng9xx", True, "station", None)],
    }
    assert found(reports["B1"]) == {1: [("bender-cc61x", False, "pile", None)]}  # no [match] rule
    assert found(reports["S1"]) == {1: [("pilegate-sim-v1", True, "pile", None)]}
    keba = reports["K1"]["found"][0]["matches"][0]["identity"]
    assert str(keba["product"]).startswith("3") and len(str(keba["product"])) == 6
    alfen = reports["L1"]["found"][0]["matches"][0]["identity"]
    assert alfen["vendor"].startswith("Alfen")
    assert "unit 255: answers (keba-p30)" in runs["K1"][1]
    assert "unit 1: answers (alfen-ng9xx (identity on unit 200))" in runs["L1"][1]
    assert "unit 1: answers (bender-cc61x (unconfirmed))" in runs["B1"][1]


async def test_a_scan_of_an_rs485_line_names_an_abb_pile_next_to_a_sim_pile(sim: Simulation):
    device = sim.endpoints["T1"].device
    assert device is not None
    report, err = await pilectl_scan("--device", device, "--baudrate", "19200", "--units", "1-4")
    assert found(report) == {
        1: [("pilegate-sim-v1", True, "pile", None)],
        3: [("abb-terra-ac", True, "pile", None)],
    }
    assert report["found"][1]["matches"][0]["identity"]["model"][0] in "GPST"
    assert "unit 3: answers (abb-terra-ac)" in err
