"""Driver against the simulator on loopback: Modbus TCP, and Modbus RTU over a socat pty pair."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import time
from collections.abc import AsyncIterator

import pytest

from drivers.bus import Bus, BusSpec, DeviceSpec, PollResult, SerialTransport, TcpTransport
from drivers.errors import DriverError
from firmware_sim.config import SimConfig, SimPileSpec, SimSerialBusSpec
from firmware_sim.runner import Simulation, start_simulation
from protocols.registers import SIM_V1, Command, CommandStatus, PortState, SimFault, encode
from tests.helpers import wait_for

pytestmark = pytest.mark.skipif(shutil.which("socat") is None, reason="socat not installed")

CONTROL_ADDRESS = SIM_V1.port_address(1, SIM_V1.control)


@pytest.fixture
async def sim() -> AsyncIterator[Simulation]:
    config = SimConfig(
        piles=(
            SimPileSpec(id="F1", kind="fast", rated_power_W=30000, tcp_port=0),
            SimPileSpec(id="F2", kind="fast", rated_power_W=60000, tcp_port=0, ports=2),
            *(
                SimPileSpec(
                    id=f"T{unit}",
                    kind="trickle",
                    rated_power_W=10000,
                    tcp_port=None,
                    serial_bus="rtu0",
                    unit=unit,
                )
                for unit in (1, 2)
            ),
        ),
        serial_buses=(SimSerialBusSpec("rtu0"),),
        time_scale=600.0,
    )
    simulation = await start_simulation(config)
    try:
        yield simulation
    finally:
        await simulation.stop()


def _tcp_bus(sim: Simulation) -> Bus:
    ep = sim.endpoints["F1"]
    assert ep.host is not None
    assert ep.port is not None
    device = DeviceSpec("F1", ep.unit, SIM_V1, timeout_s=0.5)
    return Bus(BusSpec("tcp-F1", TcpTransport(ep.host, ep.port), (device,)))


def _rtu_bus(sim: Simulation, timeout_s: float = 0.2, **bus_kwargs: float) -> Bus:
    ep = sim.endpoints["T1"]
    assert ep.device is not None
    assert ep.baudrate is not None
    line = SerialTransport(ep.device, baudrate=ep.baudrate)
    devices = tuple(
        DeviceSpec(pile, sim.endpoints[pile].unit, SIM_V1, timeout_s=timeout_s) for pile in ("T1", "T2")
    )
    return Bus(BusSpec("rtu0", line, devices, **bus_kwargs))  # type: ignore[arg-type]


def _start_words(seq: int, target_Wh: int, limit_W: int) -> list[int]:
    values = {
        "command": int(Command.START),
        "command_seq": seq,
        "target_energy_Wh": target_Wh,
        "power_limit_W": limit_W,
    }
    return encode(SIM_V1, SIM_V1.control, values)


async def test_tcp_pile_identity_and_poll_cycle(sim: Simulation) -> None:
    bus = _tcp_bus(sim)
    await bus.start()
    try:
        identity = await bus.read_identity("F1")
        assert (identity["serial"], identity["rated_power_W"], identity["kind"]) == ("F1", 30000, 1)
        before_ms = int(time.time() * 1000)
        (result,) = await bus.poll_cycle()
        assert result.ok, result.error
        assert before_ms <= result.ts_ms <= int(time.time() * 1000)
        assert result.ports[1]["state"] == PortState.AVAILABLE
        assert bus.health("F1").state == "online"
        snapshot = json.loads(json.dumps(bus.snapshot()))
        assert snapshot["connected"] is True
        assert snapshot["devices"]["F1"]["counters"]["requests"] == 2
    finally:
        await bus.stop()


async def test_start_command_write_then_readback_over_tcp(sim: Simulation) -> None:
    bus = _tcp_bus(sim)
    await bus.start()
    try:
        await bus.write_registers(1, CONTROL_ADDRESS, _start_words(7, 5000, 20000))
        (result,) = await bus.poll_cycle()
        assert result.ok, result.error
        port = result.ports[1]
        assert (port["ack_seq"], port["ack_status"]) == (7, CommandStatus.OK)
        assert (port["active_target_Wh"], port["active_limit_W"]) == (5000, 20000)
        assert port["state"] == PortState.CHARGING
        assert sim.port_snapshot("F1", 1)["ack_seq"] == 7
    finally:
        await bus.stop()


async def test_two_port_pile_values_land_on_the_right_port(sim: Simulation) -> None:
    ep = sim.endpoints["F2"]
    assert ep.host is not None
    assert ep.port is not None
    device = DeviceSpec("F2", ep.unit, SIM_V1, ports=2)
    bus = Bus(BusSpec("tcp-F2", TcpTransport(ep.host, ep.port), (device,)))
    await bus.start()
    try:
        port2_control = SIM_V1.port_address(2, SIM_V1.control)
        await bus.write_registers(ep.unit, port2_control, _start_words(11, 9000, 40000))
        (result,) = await bus.poll_cycle()
        assert result.ok, result.error
        assert (result.ports[2]["ack_seq"], result.ports[2]["state"]) == (11, PortState.CHARGING)
        assert result.ports[2]["active_limit_W"] == 40000
        assert (result.ports[1]["ack_seq"], result.ports[1]["state"]) == (0, PortState.AVAILABLE)
    finally:
        await bus.stop()


async def test_unreachable_tcp_pile_is_a_connection_error(sim: Simulation) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    device = DeviceSpec("X1", 1, SIM_V1, timeout_s=0.5, retries=0)
    bus = Bus(BusSpec("tcp-X1", TcpTransport("127.0.0.1", free_port), (device,)))
    await bus.start()
    try:
        (result,) = await bus.poll_cycle()
        assert not result.ok
        assert result.error is not None
        assert result.error.kind == "connection"
        with pytest.raises(DriverError, match="connection"):
            await bus.read_registers(1, 0, 1)
    finally:
        await bus.stop()


async def test_connection_dropped_mid_request_fails_at_once_not_at_timeout() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(12)  # one request's MBAP header and PDU, then hang up unanswered
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    device = DeviceSpec("X1", 1, SIM_V1, timeout_s=2.0, retries=0)
    bus = Bus(BusSpec("tcp-X1", TcpTransport("127.0.0.1", port), (device,)))
    await bus.start()
    try:
        started = time.monotonic()
        (result,) = await bus.poll_cycle()
        assert result.error is not None
        assert result.error.kind == "connection"
        assert time.monotonic() - started < 1.0  # well before the 2 s timeout
    finally:
        await bus.stop()
        server.close()
        await server.wait_closed()


async def test_rtu_two_units_identity_write_and_readback(sim: Simulation) -> None:
    bus = _rtu_bus(sim)
    await bus.start()
    try:
        assert (await bus.read_identity("T1"))["serial"] == "T1"
        assert (await bus.read_identity("T2"))["serial"] == "T2"
        await bus.write_registers(2, CONTROL_ADDRESS, _start_words(3, 2000, 5000))
        t1, t2 = await bus.poll_cycle()
        assert t1.ok, t1.error
        assert t2.ok, t2.error
        assert (t2.ports[1]["ack_seq"], t2.ports[1]["ack_status"]) == (3, CommandStatus.OK)
        assert t2.ports[1]["state"] == PortState.CHARGING
        assert (t1.ports[1]["ack_seq"], t1.ports[1]["state"]) == (0, PortState.AVAILABLE)
    finally:
        await bus.stop()


async def test_silent_device_does_not_starve_bus_mates(sim: Simulation) -> None:
    # the answering unit must answer within it in every cycle: 0.2 s was too little for the
    # simulator's reply on a loaded 2-core machine (T1 "starved" once in a full parallel run)
    timeout_s = 0.5
    bus = _rtu_bus(sim, timeout_s, fail_after_cycles=2, backoff_base_s=0.6, backoff_max_s=1.2)
    await bus.start()
    try:
        sim.inject_fault("T2", 1, SimFault.SILENT)
        outcomes: list[PollResult] = []

        async def cycle_until_skipped() -> bool:
            started = time.monotonic()
            t1, t2 = await bus.poll_cycle()
            assert t1.ok, f"T1 starved: {t1.error}"  # polled every cycle
            assert time.monotonic() - started < timeout_s + 0.3  # one timeout at most
            outcomes.append(t2)
            return t2.skipped

        await wait_for(cycle_until_skipped, timeout_s=5, interval_s=0, what="T2 skipped in backoff")
        tried = [r for r in outcomes if not r.skipped]
        assert len(tried) == 2
        assert all(r.error is not None and r.error.kind == "timeout" for r in tried)
        assert bus.health("T2").state == "comm_fault"

        sim.inject_fault("T2", 1, SimFault.CLEAR)

        async def t2_back() -> bool:
            t1, t2 = await bus.poll_cycle()
            assert t1.ok
            return t2.ok

        await wait_for(t2_back, timeout_s=5, interval_s=0, what="T2 online again")
        health = bus.health("T2")
        assert (health.state, health.consecutive_failures) == ("online", 0)
        assert health.counters.skipped_cycles >= 1
    finally:
        await bus.stop()
