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
from pathlib import Path
from typing import Any

import pytest

from drivers.bus import Bus
from drivers.probe import LineProbe
from drivers.specs import BusSpec, DeviceSpec, TcpTransport
from firmware_sim.config import SimConfig, SimPileSpec, SimSerialBusSpec
from firmware_sim.runner import Simulation, start_simulation
from gateway.scan import probe_unit, scan
from protocols.registers import load_map
from tests.e2e.family_probe import FIXED_REGISTERS

WALLBOX_MAP = Path(__file__).parents[1] / "data" / "test-wallbox-current.toml"  # input registers, bits
WALLBOX = load_map(WALLBOX_MAP)

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
        pile("W1", str(WALLBOX_MAP), unit=7),
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


async def test_identity_in_input_registers_and_bit_reads_over_a_line_probe_and_the_bus_owner(sim: Simulation):
    """A map whose identity is in input registers (function 4) is read with that function code by
    ``pilectl``'s own client and through the gateway's bus owner; both read coils and discrete inputs."""
    ep = sim.endpoints["W1"]
    assert ep.host is not None and ep.port is not None
    transport = TcpTransport(ep.host, ep.port)
    maps = {WALLBOX.name: WALLBOX}
    async with LineProbe(transport, 0.5) as probe:
        (match,) = (await probe_unit(probe.read, 7, maps)).matches
        assert (match.map, match.confirmed, match.identity["serial"]) == ("test-wallbox-current", True, "W1")
        assert await probe.read(7, 1005, 1, 2) in ([0], [1])  # port 1's "enabled" discrete input
    bus = Bus(BusSpec("tcp-W1", transport, (DeviceSpec("W1", 7, WALLBOX, timeout_s=0.5),)))
    await bus.start()
    try:

        async def read(unit: int, address: int, count: int, function: int) -> list[int]:
            return await bus.probe_registers(unit, address, count, 0.5, function)

        report = await scan(read, range(6, 9), maps, deadline_s=10)
        assert [(u.unit, [m.map for m in u.matches]) for u in report.found] == [(7, ["test-wallbox-current"])]
        assert await bus.probe_registers(7, 1010, 1, 0.5, 1) == [0]  # the charging_enabled coil, off
        assert len(await bus.probe_registers(7, 0, 21, 0.5, 4)) == 21  # the identity, input registers
    finally:
        await bus.stop()
