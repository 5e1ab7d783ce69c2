"""The simulator as real Modbus servers on loopback: TCP piles, an RTU bus over a socat pty pair,
the control API and the CLI. Time runs 600x so sessions show energy within a fraction of a second.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import textwrap
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from click.testing import CliRunner, Result
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException

from firmware_sim.cli import main as sim_cli
from firmware_sim.config import (
    SimConfig,
    SimPileSpec,
    SimSerialBusSpec,
    load_sim_config,
)
from firmware_sim.runner import SimServerError, Simulation, start_simulation
from protocols.registers import (
    SIM_V1,
    Command,
    CommandStatus,
    FaultCode,
    PortState,
    SimFault,
    decode,
    encode,
)
from tests.helpers import wait_for

REPO = Path(__file__).resolve().parents[2]
TIME_SCALE = 600.0
SILENT_TIMEOUT_S = 0.3

CONFIG = SimConfig(
    piles=(
        SimPileSpec("F1", "fast", 30_000, ports=2),
        SimPileSpec("T1", "trickle", 7_000, unit=1, tcp_port=None, serial_bus="bus1"),
        SimPileSpec("T2", "trickle", 7_000, unit=2, tcp_port=None, serial_bus="bus1"),
    ),
    serial_buses=(SimSerialBusSpec("bus1"),),
    time_scale=TIME_SCALE,
    control_port=0,
)

Client = AsyncModbusTcpClient | AsyncModbusSerialClient


def is_link(path: Path) -> bool:
    return path.is_symlink()


def exists(path: Path) -> bool:
    return path.exists()


def read_text(path: Path) -> str:
    return path.read_text()


@pytest.fixture
async def sim() -> AsyncIterator[Simulation]:
    simulation = await start_simulation(CONFIG)
    try:
        yield simulation
    finally:
        await simulation.stop()


@asynccontextmanager
async def tcp_client(sim: Simulation, pile: str, timeout_s: float = 2.0) -> AsyncIterator[Client]:
    endpoint = sim.endpoints[pile]
    assert endpoint.host is not None
    assert endpoint.port is not None
    client = AsyncModbusTcpClient(endpoint.host, port=endpoint.port, timeout=timeout_s, retries=0)
    assert await client.connect()
    try:
        yield client
    finally:
        client.close()


@asynccontextmanager
async def rtu_client(sim: Simulation, pile: str, timeout_s: float = 2.0) -> AsyncIterator[Client]:
    endpoint = sim.endpoints[pile]
    assert endpoint.device is not None
    assert endpoint.baudrate is not None
    client = AsyncModbusSerialClient(
        endpoint.device, baudrate=endpoint.baudrate, timeout=timeout_s, retries=0
    )
    assert await client.connect()
    try:
        yield client
    finally:
        client.close()


async def read_block(client: Client, unit: int, block_name: str, port: int = 1) -> dict[str, object]:
    block = getattr(SIM_V1, block_name)
    address = block.base if block_name == "identity" else SIM_V1.port_address(port, block)
    response = await client.read_holding_registers(address, count=block.size, device_id=unit)
    assert not response.isError(), response
    return decode(SIM_V1, block, response.registers)


async def send_command(
    client: Client, unit: int, command: int, seq: int, target_Wh: int = 0, port: int = 1
) -> None:
    values = {"command": command, "command_seq": seq, "target_energy_Wh": target_Wh,
              "power_limit_W": 0}  # fmt: skip
    words = encode(SIM_V1, SIM_V1.control, values)
    address = SIM_V1.port_address(port, SIM_V1.control)
    response = await client.write_registers(address, words, device_id=unit)
    assert not response.isError(), response


async def energy_Wh(client: Client, unit: int, port: int = 1) -> int:
    value = (await read_block(client, unit, "telemetry", port))["energy_Wh"]
    assert isinstance(value, int)
    return value


async def answers(client: Client, unit: int) -> bool:
    """True when ``unit`` answers normally, False when the request times out (no answer at all)."""
    try:
        response = await client.read_holding_registers(0, count=1, device_id=unit)
    except ModbusIOException:
        return False
    assert not response.isError(), f"unit {unit} answered with an exception: {response}"
    return True


# ------------------------------------------------------------------------------------------ TCP


async def test_tcp_pile_serves_identity_and_idle_telemetry(sim):
    async with tcp_client(sim, "F1") as client:
        identity = await read_block(client, 1, "identity")
        telemetry = await read_block(client, 1, "telemetry", port=2)
    assert (identity["serial"], identity["num_ports"], identity["rated_power_W"]) == ("F1", 2, 30_000)
    assert identity["kind"] == 1
    assert telemetry["state"] == PortState.AVAILABLE
    assert telemetry["temperature_C"] == 25.0


async def test_tcp_session_started_via_control_block_delivers_rising_energy(sim):
    async with tcp_client(sim, "F1") as client:
        await send_command(client, 1, Command.START, seq=41, target_Wh=1_000_000)
        readback = await read_block(client, 1, "readback")
        assert (readback["ack_seq"], readback["ack_status"]) == (41, CommandStatus.OK)
        control = await read_block(client, 1, "control")
        assert control["command"] == Command.NONE  # the pile consumed the command
        first = await wait_for(lambda: energy_Wh(client, 1), timeout_s=5, what="energy > 0")
        await wait_for(lambda: _more(client, first), timeout_s=5, what="energy rising")
        telemetry = await wait_for(lambda: _at_full_power(client), timeout_s=5, what="ramp done")
    assert telemetry is not None
    assert telemetry["state"] == PortState.CHARGING
    assert 400 <= float(str(telemetry["voltage_V"])) <= 750
    assert float(str(telemetry["current_A"])) > 30


async def _at_full_power(client: Client) -> dict[str, object] | None:
    telemetry = await read_block(client, 1, "telemetry")
    return telemetry if telemetry["power_W"] == 30_000 else None


async def _more(client: Client, than_Wh: int) -> bool:
    return await energy_Wh(client, 1) > than_Wh


async def test_tcp_session_stops_itself_at_target(sim):
    async with tcp_client(sim, "F1") as client:
        await send_command(client, 1, Command.START, seq=1, target_Wh=500, port=2)

        async def finished() -> bool:
            return (await read_block(client, 1, "telemetry", 2))["state"] == PortState.FINISHED

        await wait_for(finished, timeout_s=5, what="port 2 finished")
        assert await energy_Wh(client, 1, port=2) == 500


async def test_tcp_request_for_another_unit_gets_gateway_exception(sim):
    async with tcp_client(sim, "F1") as client:
        response = await client.read_holding_registers(0, count=1, device_id=9)
    assert response.isError()
    assert response.exception_code == 0x0B


async def test_writes_to_telemetry_are_refused_with_illegal_address(sim):
    async with tcp_client(sim, "F1") as client:
        address = SIM_V1.port_address(1, SIM_V1.telemetry)
        response = await client.write_registers(address, [1, 2], device_id=1)
    assert response.isError()
    assert response.exception_code == 0x02


async def test_sim_fault_register_over_modbus_faults_the_port(sim):
    assert SIM_V1.sim is not None
    async with tcp_client(sim, "F1") as client:
        address = SIM_V1.port_address(1, SIM_V1.sim)
        assert not (await client.write_register(address, SimFault.CONTACTOR_FAULT, device_id=1)).isError()
        telemetry = await read_block(client, 1, "telemetry")
        bad = await client.write_register(address, 77, device_id=1)
    assert (telemetry["state"], telemetry["fault"]) == (PortState.FAULTED, FaultCode.CONTACTOR_FAULT)
    assert bad.isError()
    assert bad.exception_code == 0x03


async def test_silent_tcp_pile_times_out_until_cleared(sim):
    async with tcp_client(sim, "F1", timeout_s=SILENT_TIMEOUT_S) as client:
        sim.inject_fault("F1", 1, SimFault.SILENT)
        assert not await answers(client, 1)
        sim.inject_fault("F1", 1, SimFault.CLEAR)
        await wait_for(lambda: answers(client, 1), timeout_s=5, what="F1 answering again")


async def test_two_piles_cannot_share_a_tcp_port():
    first = await start_simulation(SimConfig(piles=(SimPileSpec("A", "fast", 1000),)))
    try:
        port = first.endpoints["A"].port
        clash = SimConfig(piles=(SimPileSpec("B", "fast", 1000, tcp_port=port),))
        with pytest.raises(SimServerError, match=f"pile B: cannot listen on 127.0.0.1:{port}"):
            await start_simulation(clash)
    finally:
        await first.stop()


# ------------------------------------------------------------------------------------------ RTU


async def test_rtu_bus_serves_two_units_over_the_socat_pty(sim):
    assert sim.endpoints["T1"].device == sim.endpoints["T2"].device
    assert is_link(Path(str(sim.endpoints["T1"].device)))
    async with rtu_client(sim, "T1") as client:
        serials = [(await read_block(client, unit, "identity"))["serial"] for unit in (1, 2)]
        await send_command(client, 2, Command.START, seq=3, target_Wh=100_000)
        first = await wait_for(lambda: energy_Wh(client, 2), timeout_s=5, what="T2 energy > 0")
        telemetry = await read_block(client, 2, "telemetry")
        still_idle = await read_block(client, 1, "telemetry")
    assert serials == ["T1", "T2"]
    assert first > 0
    assert telemetry["state"] == PortState.CHARGING
    assert 220 <= float(str(telemetry["voltage_V"])) <= 230
    assert still_idle["state"] == PortState.AVAILABLE


async def test_silent_device_does_not_starve_bus_mates(sim):
    async with rtu_client(sim, "T1", timeout_s=SILENT_TIMEOUT_S) as client:
        sim.inject_fault("T1", 1, SimFault.SILENT)
        assert not await answers(client, 1)
        assert await answers(client, 2)
        assert not await answers(client, 1)
        assert await answers(client, 2)
        sim.inject_fault("T1", 1, SimFault.CLEAR)
        await wait_for(lambda: answers(client, 1), timeout_s=5, what="T1 answering again")


async def test_unknown_unit_on_the_bus_gets_no_answer(sim):
    async with rtu_client(sim, "T1", timeout_s=SILENT_TIMEOUT_S) as client:
        assert not await answers(client, 7)
        assert await answers(client, 1)


async def test_stop_kills_socat_and_removes_the_pty_links():
    simulation = await start_simulation(CONFIG)
    device = Path(str(simulation.endpoints["T1"].device))
    assert is_link(device)
    await simulation.stop()
    assert not is_link(device)
    assert not exists(device.parent)


# ------------------------------------------------------------------------------------------ control API


@asynccontextmanager
async def control(sim: Simulation) -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
    async with aiohttp.ClientSession() as session:
        yield session, f"http://127.0.0.1:{sim.control_port}"


async def test_control_api_lists_endpoints_and_port_snapshots(sim):
    async with control(sim) as (http, base), http.get(f"{base}/piles") as response:
        body = await response.json()
    assert response.status == 200
    assert set(body["piles"]) == {"F1", "T1", "T2"}
    assert body["piles"]["T2"]["endpoint"]["transport"] == "rtu"
    assert body["piles"]["F1"]["ports"]["2"]["state_name"] == "AVAILABLE"


async def test_control_api_injects_and_clears_faults(sim):
    async with control(sim) as (http, base):
        url = f"{base}/piles/F1/fault"
        async with http.post(url, json={"port": 2, "kind": "over_temperature"}) as response:
            body = await response.json()
        assert response.status == 200
        assert body["snapshot"]["fault_name"] == "OVER_TEMPERATURE"
        assert sim.port_snapshot("F1", 2)["state"] == PortState.FAULTED
        async with http.post(url, json={"port": 2, "kind": "clear"}) as response:
            assert response.status == 200
    assert sim.port_snapshot("F1", 2)["state"] == PortState.AVAILABLE


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"port": 1, "kind": "melted"}, "kind must be one of"),
        ({"port": 3, "kind": "silent"}, "port must be an integer 1..2, got 3"),
        ({"port": "1", "kind": "silent"}, "port must be an integer"),
        ({"port": 1, "kind": "silent", "when": "now"}, "unknown fields ['when']"),
        ([1, 2], "body must be a JSON object"),
        ("not json", "body must be a JSON object like"),
    ],
)
async def test_control_api_rejects_bad_fault_requests_with_400(sim, body, message):
    async with control(sim) as (http, base):
        data = body if isinstance(body, str) else json.dumps(body)
        async with http.post(f"{base}/piles/F1/fault", data=data) as response:
            payload = await response.json()
    assert response.status == 400
    assert message in payload["error"]
    assert sim.port_snapshot("F1", 1)["state"] == PortState.AVAILABLE


async def test_control_api_answers_404_for_an_unknown_pile(sim):
    async with (
        control(sim) as (http, base),
        http.post(f"{base}/piles/X9/fault", json={"kind": "silent"}) as response,
    ):
        payload = await response.json()
    assert response.status == 404
    assert "no pile 'X9'" in payload["error"]


# ------------------------------------------------------------------------------------------ CLI


async def invoke_in_thread(args: list[str]) -> Result:
    """Run the CLI off the loop so its blocking HTTP call can reach this loop's control API."""
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(max_workers=1) as executor:
        return await loop.run_in_executor(executor, CliRunner().invoke, sim_cli, args)


async def test_sim_fault_command_posts_to_the_control_api(sim):
    port = str(sim.control_port)
    result = await invoke_in_thread(["sim-fault", "--control-port", port, "T2", "meter_fault"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output.splitlines()[-1])  # earlier lines: this loop's sim logs
    assert printed["snapshot"]["fault_name"] == "METER_FAULT"
    assert sim.port_snapshot("T2", 1)["state"] == PortState.FAULTED
    refused = await invoke_in_thread(["sim-fault", "--control-port", port, "--port", "2", "T2", "clear"])
    assert refused.exit_code == 1
    assert "control API refused (400): port must be an integer 1..1, got 2" in refused.output


def test_sim_fault_command_reports_an_unreachable_control_api(unused_tcp_port):
    result = CliRunner().invoke(
        sim_cli, ["sim-fault", "--control-port", str(unused_tcp_port), "F1", "silent"]
    )
    assert result.exit_code == 1
    assert "cannot reach the simulator control API" in result.output


def test_sim_command_needs_exactly_one_source(tmp_path):
    neither = CliRunner().invoke(sim_cli, ["sim"])
    both = CliRunner().invoke(sim_cli, ["sim", "--config", "a.toml", "--station", "b.toml"])
    assert neither.exit_code == both.exit_code == 2
    assert "give exactly one of --config FILE or --station PARAMS.toml" in both.output


def test_sim_command_reports_config_problems_by_name(tmp_path):
    path = tmp_path / "sim.toml"
    path.write_text('[[piles]]\nid = "F1"\nkind = "warp"\nrated_power_W = 1000\n')
    result = CliRunner().invoke(sim_cli, ["sim", "--config", str(path)])
    assert result.exit_code == 1
    assert "pile 'F1': kind 'warp' is not one of ['fast', 'trickle']" in result.output


def test_cli_help_carries_examples():
    for command in ("sim", "sim-fault"):
        result = CliRunner().invoke(sim_cli, [command, "--help"])
        assert result.exit_code == 0
        assert "Example:" in result.output


def test_example_config_loads():
    config = load_sim_config(REPO / "config" / "sim.example.toml")
    rtu = [p for p in config.piles if p.serial_bus]
    assert len(rtu) == 2
    assert len(config.piles) > len(rtu)


async def test_sim_process_prints_ready_and_stops_cleanly_on_sigterm(tmp_path):
    config = tmp_path / "sim.toml"
    config.write_text(textwrap.dedent("""
        time_scale = 60
        [[serial_buses]]
        name = "line"
        [[piles]]
        id = "F1"
        kind = "fast"
        rated_power_W = 30000
        [[piles]]
        id = "T1"
        kind = "trickle"
        rated_power_W = 7000
        serial_bus = "line"
    """))  # fmt: skip
    ready = tmp_path / "ready.json"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "firmware_sim.cli", "sim", "--config", str(config),
        "--ready-file", str(ready), "--control-port", "0",
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        line = await asyncio.wait_for(process.stdout.readline(), 20)  # type: ignore[union-attr]
        document = json.loads(line)
        assert document["ready"] is True
        assert json.loads(read_text(ready)) == document
        assert document["control_port"] > 0
        device = Path(document["piles"]["T1"]["device"])
        assert is_link(device)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 20) == 0
        assert not is_link(device)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@pytest.fixture
def unused_tcp_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
