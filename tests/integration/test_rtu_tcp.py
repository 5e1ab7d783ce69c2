"""Modbus RTU over TCP (an RS-485 to Ethernet converter): the bus owner against the simulator serving
an RS-485 line's units as RTU frames on one TCP port, and the poller wired to it as the daemon does."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Sequence

import pytest

from drivers.bus import Bus, BusSpec, DeviceSpec, PollResult, RtuTcpTransport
from drivers.errors import DriverError
from firmware_sim.config import SimConfig, SimPileSpec, SimSerialBusSpec
from firmware_sim.runner import Simulation, start_simulation
from gateway.poller import Poller
from protocols.registers import SIM_V1, Command, CommandStatus, PortState, SimFault, encode
from tests.helpers import wait_for

CONTROL_ADDRESS = SIM_V1.port_address(1, SIM_V1.control)
TIMEOUT_S = 0.3


@pytest.fixture
async def sim() -> AsyncIterator[Simulation]:
    config = SimConfig(
        piles=tuple(
            SimPileSpec(
                id=f"T{unit}",
                kind="trickle",
                rated_power_W=7000,
                tcp_port=None,
                serial_bus="conv",
                unit=unit,
                ports=2 if unit == 2 else 1,
            )
            for unit in (1, 2, 3)
        ),
        serial_buses=(SimSerialBusSpec("conv", tcp_port=0),),
        time_scale=600.0,
    )
    simulation = await start_simulation(config)
    try:
        yield simulation
    finally:
        await simulation.stop()


def _bus(sim: Simulation, units: Sequence[int] = (1, 2, 3)) -> Bus:
    ep = sim.endpoints["T1"]
    assert ep.transport == "rtu-tcp" and ep.host == "127.0.0.1" and ep.port
    devices = tuple(
        DeviceSpec(f"T{u}", u, SIM_V1, ports=2 if u == 2 else 1, timeout_s=TIMEOUT_S) for u in units
    )
    return Bus(BusSpec("conv", RtuTcpTransport(ep.host, ep.port), devices))


def _start_words(seq: int, target_Wh: int, limit_W: int) -> list[int]:
    values = {
        "command": int(Command.START),
        "command_seq": seq,
        "target_energy_Wh": target_Wh,
        "power_limit_W": limit_W,
    }
    return encode(SIM_V1, SIM_V1.control, values)


async def test_every_unit_behind_the_converter_shares_one_port_and_answers(sim: Simulation) -> None:
    assert len({(ep.host, ep.port) for ep in sim.endpoints.values()}) == 1
    bus = _bus(sim)
    await bus.start()
    try:
        for unit in (1, 2, 3):
            assert (await bus.read_identity(f"T{unit}"))["serial"] == f"T{unit}"
        results = await bus.poll_cycle()
        assert [(r.pile_id, r.ok) for r in results] == [("T1", True), ("T2", True), ("T3", True)]
        assert sorted(results[1].ports) == [1, 2]
        snapshot = json.loads(json.dumps(bus.snapshot()))
        assert snapshot["transport"] == {
            "kind": "rtu-tcp",
            "host": "127.0.0.1",
            "port": sim.endpoints["T1"].port,
        }
        assert snapshot["connected"] is True
    finally:
        await bus.stop()


async def test_a_command_reaches_only_its_unit_and_reads_back(sim: Simulation) -> None:
    bus = _bus(sim)
    await bus.start()
    try:
        await bus.write_registers(3, CONTROL_ADDRESS, _start_words(5, 2000, 5000))
        t1, _, t3 = await bus.poll_cycle()
        assert t3.ok and t1.ok
        assert (t3.ports[1]["ack_seq"], t3.ports[1]["ack_status"]) == (5, CommandStatus.OK)
        assert t3.ports[1]["state"] == PortState.CHARGING
        assert (t1.ports[1]["ack_seq"], t1.ports[1]["state"]) == (0, PortState.AVAILABLE)
        assert sim.port_snapshot("T3", 1)["ack_seq"] == 5
    finally:
        await bus.stop()


async def test_a_silent_unit_times_out_without_starving_or_dropping_its_bus_mates(sim: Simulation) -> None:
    bus = _bus(sim)
    await bus.start()
    try:
        sim.inject_fault("T2", 1, SimFault.SILENT)
        for _ in range(3):  # more timeouts than fail_after_cycles, interleaved with answers
            started = time.monotonic()
            t1, t2, t3 = await bus.poll_cycle()
            assert t1.ok and t3.ok, (t1.error, t3.error)
            assert t2.skipped or (t2.error is not None and t2.error.kind == "timeout")
            assert time.monotonic() - started < TIMEOUT_S + 0.5
        assert bus.health("T2").state == "comm_fault"
        assert bus.health("T1").counters.timeouts == 0
    finally:
        await bus.stop()


async def test_an_unknown_unit_is_silent_as_on_the_line(sim: Simulation) -> None:
    bus = _bus(sim, units=(1, 9))
    await bus.start()
    try:
        t1, t9 = await bus.poll_cycle()
        assert t1.ok, t1.error
        assert t9.error is not None and t9.error.kind == "timeout"
    finally:
        await bus.stop()


async def test_a_scan_of_absent_units_does_not_drop_the_connection_its_piles_poll_on(sim: Simulation) -> None:
    bus = _bus(sim, units=(1,))
    await bus.start()
    try:
        assert (await bus.poll_cycle())[0].ok
        for unit in range(9, 9 + bus.spec.fail_after_cycles + 2):  # pilectl scan probing empty ids
            with pytest.raises(DriverError) as probe:
                await bus.probe_registers(unit, 0, 1, timeout_s=0.05)
            assert probe.value.kind == "timeout"
            assert bus.snapshot()["connected"], f"a probe of absent unit {unit} dropped the connection"
        assert (await bus.poll_cycle())[0].ok
    finally:
        await bus.stop()


async def test_poller_wired_as_the_daemon_reports_rates_without_a_line_speed(sim: Simulation) -> None:
    bus = _bus(sim)
    seen: list[Sequence[PollResult]] = []
    await bus.start()
    poller = Poller(bus, 0.05, seen.append)
    task = asyncio.create_task(poller.run())
    try:
        await wait_for(lambda: poller.stats.cycles >= 5, timeout_s=10, what="five poll cycles")
        snap = poller.snapshot()
        assert snap["transactions_per_s"] and snap["transactions_per_s"] > 0  # type: ignore[operator]
        assert snap["line_utilisation"] is None  # the converter's line speed is not known
        piles = snap["piles"]
        assert isinstance(piles, dict) and set(piles) == {"T1", "T2", "T3"}
        assert all(p["readings_per_s"] and p["last_reading_age_s"] is not None for p in piles.values())
        assert all(r.ok for cycle in seen for r in cycle)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await bus.stop()


async def test_the_converter_port_refuses_a_second_use_in_the_simulator_config() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = SimConfig(
        piles=(
            SimPileSpec(id="A", kind="fast", rated_power_W=7000, tcp_port=port),
            SimPileSpec(id="B", kind="fast", rated_power_W=7000, tcp_port=None, serial_bus="conv"),
        ),
        serial_buses=(SimSerialBusSpec("conv", tcp_port=port),),
    )
    with pytest.raises(ValueError, match=f"tcp_port {port} used more than once"):
        await start_simulation(config)
