"""The simulator serving the fictional current-style map ``tests/data/test-wallbox-current.toml``
as real Modbus servers: every function code the map declares, read and written with pymodbus'
client over TCP and over an RTU socat pty; start, limit and stop the way the map's recipe says;
faults through the control API in the family's bit field. Time runs 600x.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient

from firmware_sim.config import SimConfig, SimPileSpec, SimSerialBusSpec
from firmware_sim.runner import Simulation, start_simulation
from protocols.canonical import fault_converter, state_converter
from protocols.registers import SIM_V1, FaultCode, PortState, decode, load_map
from tests.helpers import wait_for

MAP_PATH = Path(__file__).resolve().parents[1] / "data" / "test-wallbox-current.toml"
WALLBOX = load_map(MAP_PATH)
TELEMETRY = WALLBOX.telemetry
ACTIVE = WALLBOX.blocks_of("readback")[1]  # active_current_A, an input register
ENABLED_DI = WALLBOX.field_address(1, "enabled")  # a discrete input
ENABLE_COIL = WALLBOX.field_address(1, "charging_enabled")
CURRENT_REG = WALLBOX.field_address(1, "charge_current_A")  # holding register, 0.1 A

CONFIG = SimConfig(
    piles=(
        SimPileSpec("W1", "trickle", 22_000, ports=2, map=str(MAP_PATH)),
        SimPileSpec("S1", "fast", 30_000),  # pilegate-sim-v1 beside it
        SimPileSpec("W2", "trickle", 11_000, unit=3, tcp_port=None, serial_bus="bus1", map=str(MAP_PATH)),
    ),
    serial_buses=(SimSerialBusSpec("bus1"),),
    time_scale=600.0,
    control_port=0,
)

Client = AsyncModbusTcpClient | AsyncModbusSerialClient


@pytest.fixture
async def sim() -> AsyncIterator[Simulation]:
    simulation = await start_simulation(CONFIG)
    try:
        yield simulation
    finally:
        await simulation.stop()


@pytest.fixture
async def w1(sim: Simulation) -> AsyncIterator[AsyncModbusTcpClient]:
    endpoint = sim.endpoints["W1"]
    assert endpoint.host is not None and endpoint.port is not None
    client = AsyncModbusTcpClient(endpoint.host, port=endpoint.port, timeout=2.0, retries=0)
    assert await client.connect()
    try:
        yield client
    finally:
        client.close()


async def telemetry(client: Client, port: int = 1, unit: int = 1) -> dict[str, Any]:
    address = WALLBOX.port_address(port, TELEMETRY)
    response = await client.read_input_registers(address, count=TELEMETRY.size, device_id=unit)
    assert not response.isError(), response
    values: dict[str, Any] = decode(WALLBOX, TELEMETRY, response.registers)
    values["canonical_state"] = state_converter(TELEMETRY.field("state"))(values["state"])
    values["canonical_fault"] = fault_converter(TELEMETRY.field("fault"))(values["fault"])
    return values


async def start(client: Client, current_A: float, unit: int = 1) -> None:
    """The current recipe's start: enable coil on, then the current limit."""
    assert not (await client.write_coil(ENABLE_COIL, True, device_id=unit)).isError()
    await set_current(client, current_A, unit)


async def set_current(client: Client, current_A: float, unit: int = 1) -> None:
    response = await client.write_register(CURRENT_REG, round(current_A * 10), device_id=unit)
    assert not response.isError(), response


async def active_current_A(client: Client) -> object:
    address = WALLBOX.port_address(1, ACTIVE)
    response = await client.read_input_registers(address, count=1, device_id=1)
    assert not response.isError(), response
    return decode(WALLBOX, ACTIVE, response.registers)["active_current_A"]


async def charging_at(client: Client, current_A: float) -> dict[str, Any] | None:
    values = await telemetry(client)
    settled = values["canonical_state"] == PortState.CHARGING and values["current_L1_A"] == current_A
    return values if settled else None


# ------------------------------------------------------------------------------------ every table


async def test_identity_and_telemetry_are_input_registers_matching_the_family(w1):
    response = await w1.read_input_registers(0, count=WALLBOX.identity.size, device_id=1)
    assert not response.isError(), response
    identity = decode(WALLBOX, WALLBOX.identity, response.registers)
    assert (identity["vendor"], identity["model"], identity["serial"], identity["num_ports"]) == (
        "TESTCO", "TW-11", "W1", 2,
    )  # fmt: skip
    values = await telemetry(w1)
    assert (values["state"], values["canonical_state"], values["fault"]) == ("A", PortState.AVAILABLE, 0)
    assert values["voltage_L3_V"] == 230.0


async def test_coil_discrete_input_and_holding_register_answer_on_their_own_codes(w1):
    coil = await w1.read_coils(ENABLE_COIL, count=1, device_id=1)
    discrete = await w1.read_discrete_inputs(ENABLED_DI, count=1, device_id=1)
    holding = await w1.read_holding_registers(CURRENT_REG, count=1, device_id=1)
    assert not (coil.isError() or discrete.isError() or holding.isError())
    assert (coil.bits[0], discrete.bits[0], holding.registers) == (False, False, [0])
    # the map declares nothing else: other addresses and codes are refused
    assert (await w1.read_holding_registers(0, count=1, device_id=1)).isError()
    assert (await w1.read_input_registers(CURRENT_REG, count=1, device_id=1)).isError()
    assert (await w1.write_register(WALLBOX.port_address(1, TELEMETRY), 1, device_id=1)).isError()


async def test_coils_the_map_does_not_declare_writable_are_refused(w1):
    response = await w1.write_coil(ENABLE_COIL + 1, True, device_id=1)
    assert response.isError()
    assert response.exception_code == 2  # ILLEGAL_ADDRESS


# ------------------------------------------------------------------------------------ the recipe


async def test_start_limit_stop_through_the_current_recipe(w1):
    await start(w1, 16)
    charging = await wait_for(lambda: charging_at(w1, 16.0), 5.0, what="charging at 16 A")
    assert charging["state"] == "C2"
    assert await active_current_A(w1) == 16.0
    assert (await w1.read_discrete_inputs(ENABLED_DI, count=1, device_id=1)).bits[0] is True
    assert (await w1.read_holding_registers(CURRENT_REG, count=1, device_id=1)).registers == [160]

    await set_current(w1, 8)  # limit
    limited = await wait_for(lambda: charging_at(w1, 8.0), 5.0, what="charging at 8 A")
    assert limited["power_W"] < charging["power_W"] * 0.55
    assert await active_current_A(w1) == 8.0

    assert not (await w1.write_coil(ENABLE_COIL, False, device_id=1)).isError()  # stop = disable

    async def finished() -> dict[str, Any] | None:
        values = await telemetry(w1)
        return values if values["state"] == "C1" and values["power_W"] == 0 else None

    stopped = await wait_for(finished, 5.0, what="the port to stop")
    assert stopped["canonical_state"] == PortState.FINISHED
    assert stopped["energy_Wh"] >= limited["energy_Wh"] > charging["energy_Wh"] > 0


async def energy_rate_Wh_per_h(sim: Simulation, client: Client, current_A: float) -> float:
    """Energy per simulated hour over 300 Wh at ``current_A``; checked against the power read."""
    await wait_for(lambda: charging_at(client, current_A), 5.0, what=f"charging at {current_A} A")
    first_s, first = sim.clock.now_s(), await telemetry(client)
    target_Wh = int(first["energy_Wh"]) + 300
    last = await wait_for(lambda: _energy_above(client, target_Wh), 10.0, what="300 Wh more")
    rate = float(last["energy_Wh"] - first["energy_Wh"]) * 3600 / (sim.clock.now_s() - first_s)
    assert rate == pytest.approx(last["power_W"], rel=0.1)
    return rate


async def test_energy_grows_faster_at_a_higher_current(sim, w1):
    await start(w1, 8)
    at_8_A = await energy_rate_Wh_per_h(sim, w1, 8.0)
    await set_current(w1, 32)
    at_32_A = await energy_rate_Wh_per_h(sim, w1, 32.0)
    assert at_32_A > 3.5 * at_8_A


async def _energy_above(client: Client, energy_Wh: int) -> dict[str, Any] | None:
    values = await telemetry(client)
    return values if values["energy_Wh"] >= energy_Wh else None


async def test_a_current_above_the_family_maximum_gets_illegal_value(w1):
    response = await w1.write_register(CURRENT_REG, 330, device_id=1)
    assert response.isError()
    assert response.exception_code == 3  # ILLEGAL_VALUE
    assert (await w1.read_holding_registers(CURRENT_REG, count=1, device_id=1)).registers == [0]


# ------------------------------------------------------------------------------------ faults, others


async def test_control_api_faults_show_in_the_family_bit_field(sim, w1):
    await start(w1, 16)
    await wait_for(lambda: charging_at(w1, 16.0), 5.0, what="charging at 16 A")
    base = f"http://127.0.0.1:{sim.control_port}"
    async with aiohttp.ClientSession() as http:
        body = {"port": 1, "kind": "residual_current"}
        async with http.post(f"{base}/piles/W1/fault", json=body) as response:
            assert response.status == 200
            snapshot = (await response.json())["snapshot"]
    assert (snapshot["fault"], snapshot["fault_name"], snapshot["state"]) == (1, "RESIDUAL_CURRENT", "E")
    values = await telemetry(w1)
    assert (values["fault"], values["canonical_fault"]) == (1, FaultCode.RESIDUAL_CURRENT)
    assert (values["canonical_state"], values["power_W"]) == (PortState.FAULTED, 0)
    sim.inject("W1", 1, "clear")
    assert (await telemetry(w1))["state"] == "B1"


async def test_a_sim_v1_pile_beside_it_is_unchanged(sim):
    endpoint = sim.endpoints["S1"]
    assert endpoint.map == "pilegate-sim-v1" and sim.endpoints["W1"].map == str(MAP_PATH)
    client = AsyncModbusTcpClient("127.0.0.1", port=endpoint.port or 0, timeout=2.0, retries=0)
    assert await client.connect()
    try:
        address = SIM_V1.port_address(1, SIM_V1.telemetry)
        response = await client.read_holding_registers(address, count=SIM_V1.port_span(), device_id=1)
    finally:
        client.close()
    assert not response.isError(), response
    assert decode(SIM_V1, SIM_V1.telemetry, response.registers)["state"] == PortState.AVAILABLE


async def test_the_family_over_an_rtu_bus(sim):
    endpoint = sim.endpoints["W2"]
    assert endpoint.device is not None and endpoint.baudrate is not None
    client = AsyncModbusSerialClient(endpoint.device, baudrate=endpoint.baudrate, timeout=2.0, retries=0)
    assert await client.connect()
    try:
        await start(client, 32, unit=3)

        async def capped() -> dict[str, Any] | None:
            values = await telemetry(client, unit=3)
            return values if values["power_W"] == 11_000 else None

        values = await wait_for(capped, 5.0, what="W2 charging at its 11 kW rating")
        assert values["state"] == "C2"
        coil = await client.read_coils(ENABLE_COIL, count=1, device_id=3)
        assert coil.bits[0] is True
    finally:
        client.close()


async def test_a_read_beyond_the_family_max_read_gets_illegal_value(w1):
    assert WALLBOX.max_read == 60
    first = WALLBOX.port_address(1, TELEMETRY)
    assert not (await w1.read_input_registers(first, count=21, device_id=1)).isError()
    response = await w1.read_input_registers(0, count=61, device_id=1)
    assert response.isError()
    assert response.exception_code == 3  # ILLEGAL_VALUE
