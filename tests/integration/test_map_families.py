"""A family described only by a map file, over real Modbus TCP: a pymodbus server holds the family's
registers (input registers, holding registers, coils, discrete inputs); the bus owner polls them
into canonical values and the command executor drives the family's current-limit recipe."""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.bus import Bus, BusSpec, DeviceSpec, TcpTransport
from gateway.commands import CommandExecutor
from gateway.config import parse_config
from gateway.daemon import bus_spec
from gateway.outbox import Outbox
from gateway.publisher import Publisher
from gateway.runtime import GatewayRuntime
from protocols.codec import encode
from protocols.payloads import CommandMessage
from protocols.registers import CurrentRecipe, FaultCode, PortState, RegisterMap, load_map

UNIT = 3
WALLBOX_MAP = """
[map]
name = "test-wallbox"
document = "pilegate test family (fictional)"
function = 4
phases = 3
nominal_voltage_V = 230

[identity]
vendor = { address = 0, type = "string", length = 4 }

[match]
vendor = "TEST*"

[telemetry]
voltage_V = { address = 100, type = "float32" }
current_A = { address = 102, type = "u16", scale = 0.01 }
energy_Wh = { address = 104, type = "u64" }
heartbeat = { address = 108 }

[telemetry.state]
address = 110
type = "string"
length = 1
documented = ["A", "B", "C", "F"]
values = { A = "available", B = "plugged", C = "charging", F = "faulted" }

[telemetry.fault]
address = 111
documented = [0, 1]
bits = { 0 = "residual_current", 1 = "overcurrent" }

[readback]
locked = { address = 7, function = 2 }

[control]
amps = { address = 300, function = 3, scale = 0.1, unit = "A" }
enabled = { address = 5, function = 1 }

[command]
style = "current"
current = "amps"
min_current_A = 6
max_current_A = 16
step_A = 0.1
enable = "enabled"
stop = "disable"
"""


@dataclass
class Wallbox:
    server: ModbusTcpServer
    port: int
    regmap: RegisterMap

    async def set(self, **values: object) -> None:
        """Put canonical-named device values (device codes for state/fault) into its registers."""
        for block in self.regmap.port_blocks + self.regmap.identity_blocks:
            mine = {f.name: values[f.name] for f in block.fields if f.name in values}
            if mine:
                words = encode(self.regmap, block, mine)
                for f in block.fields:
                    if f.name in mine:
                        at = f.offset
                        chunk = words[at : at + f.width]
                        value = [bool(w) for w in chunk] if block.bits else chunk
                        await self.server.context.async_setValues(
                            UNIT, _SET_FC[block.function], block.base + at, value
                        )

    async def read(self, function: int, address: int) -> int:
        client = AsyncModbusTcpClient("127.0.0.1", port=self.port)
        await client.connect()
        try:
            if function == 1:
                return int((await client.read_coils(address, count=1, device_id=UNIT)).bits[0])
            return int((await client.read_holding_registers(address, count=1, device_id=UNIT)).registers[0])
        finally:
            client.close()


_SET_FC = {1: 5, 2: 2, 3: 6, 4: 4}


@pytest.fixture
async def wallbox(tmp_path: Path) -> AsyncIterator[Wallbox]:
    path = tmp_path / "test-wallbox.toml"
    path.write_text(WALLBOX_MAP)
    regmap = load_map(path)
    device = SimDevice(
        UNIT,
        simdata=(
            [SimData(0, count=16, values=False, datatype=DataType.BITS)],
            [SimData(0, count=16, values=False, datatype=DataType.BITS)],
            [SimData(0, count=400, values=0, datatype=DataType.REGISTERS)],
            [SimData(0, count=200, values=0, datatype=DataType.REGISTERS)],
        ),
    )
    server = ModbusTcpServer([device], address=("127.0.0.1", 0))
    await server.serve_forever(background=True)
    port = int(server.transport.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
    box = Wallbox(server, port, regmap)
    await box.set(vendor="TEST", voltage_V=230.4, current_A=15.99, energy_Wh=2**40 + 7, heartbeat=9)
    await box.set(state="B", fault=0, locked=1)
    try:
        yield box
    finally:
        await server.shutdown()


async def test_bus_polls_every_function_code_into_canonical_values(wallbox: Wallbox) -> None:
    device = DeviceSpec("W1", UNIT, wallbox.regmap, timeout_s=1.0)
    bus = Bus(BusSpec("tcp-w1", TcpTransport("127.0.0.1", wallbox.port), (device,)))
    await bus.start()
    try:
        identity = await bus.read_identity("W1")
        (result,) = await bus.poll_cycle()
        await wallbox.set(state="F", fault=0b10)
        (faulted,) = await bus.poll_cycle()
    finally:
        await bus.stop()
    assert identity == {"vendor": "TEST"}
    assert result.ok, result.error
    assert [r.function for r in bus.plan("W1").requests] == [2, 4]
    assert result.ports[1] == {
        "voltage_V": 230.4,
        "current_A": 15.99,
        "energy_Wh": 2**40 + 7,
        "heartbeat": 9,
        "state": PortState.PLUGGED,
        "fault": FaultCode.NONE,
        "locked": 1,
        "power_W": round(230.4 * 15.99 * 3),  # the family has no power register
    }
    assert (faulted.ports[1]["state"], faulted.ports[1]["fault"]) == (
        PortState.FAULTED,
        FaultCode.OVERCURRENT,
    )


@pytest.fixture
async def executor(wallbox: Wallbox, tmp_path: Path) -> AsyncIterator[tuple[CommandExecutor, GatewayRuntime]]:
    config = parse_config(
        tomllib.loads(
            f"""
            [gateway]
            id = "gw1"
            station = "s1"
            [[bus]]
            name = "b1"
            transport = "tcp"
            host = "127.0.0.1"
            port = {wallbox.port}
            timeout_s = 0.5
            [[pile]]
            id = "W1"
            bus = "b1"
            unit = {UNIT}
            map = "test-wallbox.toml"
            kind = "trickle"
            """
        ),
        "test.toml",
        tmp_path,
    )
    bus = Bus(bus_spec(config, config.buses[0]))
    outbox = Outbox(tmp_path / "outbox.db")
    publisher = Publisher("s1", "gw1", outbox, lambda: None)
    runtime = GatewayRuntime(config, {"b1": bus}, publisher)
    commands = CommandExecutor(runtime, publisher, timeout_s=2.0, readback_interval_s=0.01)
    await bus.start()
    try:
        yield commands, runtime
    finally:
        await commands.close()
        await runtime.close()
        await bus.stop()
        outbox.close()


def _command(op: str, n: int, **params: int) -> CommandMessage:
    return CommandMessage(f"c{n}", op, expires_at=4_102_444_000_000, params=params)  # type: ignore[arg-type]


async def _poll(runtime: GatewayRuntime) -> None:
    runtime.on_results(await runtime.buses["b1"].poll_cycle())


async def test_current_recipe_starts_limits_and_stops_by_register_writes(
    wallbox: Wallbox, executor: tuple[CommandExecutor, GatewayRuntime]
) -> None:
    commands, runtime = executor
    await _poll(runtime)
    start = await commands.submit("W1", 1, _command("start", 1, power_W=7000, energy_Wh=5000))
    assert (start.status, start.readback) == ("done", {"current_A": 10.1, "amps": 10.1})
    assert start.reason == "the pile takes no energy target: the central stops the port at 5000 Wh"
    assert await wallbox.read(3, 300) == 101  # 10.1 A in 0.1 A steps: 7000 W / (230 V x 3)
    assert await wallbox.read(1, 5) == 1

    await wallbox.set(state="C")
    await _poll(runtime)
    low = await commands.submit("W1", 1, _command("limit", 2, power_W=4000))
    assert low.status == "rejected"
    assert low.reason is not None and "below the pile's minimum 6 A" in low.reason
    limit = await commands.submit("W1", 1, _command("limit", 3, power_W=30000))
    assert (limit.status, limit.readback) == ("done", {"current_A": 16.0, "amps": 16.0})
    assert await wallbox.read(3, 300) == 160

    stop = await commands.submit("W1", 1, _command("stop", 4))
    assert stop.status == "done"
    assert await wallbox.read(1, 5) == 0
    assert await wallbox.read(3, 300) == 160  # this family stops by disabling, the limit stays


async def test_current_recipe_fails_when_the_pile_never_shows_the_limit(
    wallbox: Wallbox, executor: tuple[CommandExecutor, GatewayRuntime]
) -> None:
    commands, runtime = executor
    await _poll(runtime)
    pile = runtime.piles["W1"]
    # a map whose confirm register is one the pile never changes: the read-back cannot match
    recipe = pile.regmap.recipe
    assert recipe is not None
    pile.regmap = _with_confirm(pile.regmap, "heartbeat")
    commands.timeout_s = 0.3
    result = await commands.submit("W1", 1, _command("start", 5, power_W=7000))
    assert result.status == "failed"
    assert result.reason == "no read-back confirmation within 0.3s"


def _with_confirm(regmap: RegisterMap, confirm: str) -> RegisterMap:
    assert isinstance(regmap.recipe, CurrentRecipe)
    return dataclasses.replace(regmap, recipe=dataclasses.replace(regmap.recipe, confirm=confirm))
