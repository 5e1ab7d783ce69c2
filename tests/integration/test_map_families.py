"""A family described only by a map file, over real Modbus TCP: a pymodbus server holds the family's
registers (input registers, holding registers, coils, discrete inputs); the bus owner polls them
into canonical values and the command executor drives the family's current-limit recipe."""

from __future__ import annotations

import asyncio
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
from tests.helpers import wait_for

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


STATION_UNIT = 200  # a second unit id answering a station's identity (map key identity_unit)
# the same family, for a station that forgets its current limit, takes single-register writes
# only, cannot read its enable coil back, and answers identity on the station unit
REFRESHING_MAP = (
    WALLBOX_MAP.replace("phases = 3", "phases = 3\nidentity_unit = 200")
    .replace('scale = 0.1, unit = "A" }', 'scale = 0.1, unit = "A", write_function = 6 }')
    .replace('stop = "disable"', 'stop = "disable"\nenable_readable = false\nrefresh_s = 1')
)


# the same family with a session energy register and a unit-set maximum current
SESSION_MAP = (
    WALLBOX_MAP.replace(
        'energy_Wh = { address = 104, type = "u64" }',
        'energy_Wh = { address = 104, type = "u64", energy_kind = "session" }',
    )
    .replace(
        "locked = { address = 7, function = 2 }",
        "locked = { address = 7, function = 2 }\nunit_max_A = { address = 140, scale = 0.1 }",
    )
    .replace('stop = "disable"', 'stop = "disable"\nmax_current = "unit_max_A"')
)


def _device(unit: int) -> SimDevice:
    return SimDevice(
        unit,
        simdata=(
            [SimData(0, count=16, values=False, datatype=DataType.BITS)],
            [SimData(0, count=16, values=False, datatype=DataType.BITS)],
            [SimData(0, count=400, values=0, datatype=DataType.REGISTERS)],
            [SimData(0, count=200, values=0, datatype=DataType.REGISTERS)],
        ),
    )


@pytest.fixture
def wallbox_map() -> str:
    return WALLBOX_MAP


@pytest.fixture
async def wallbox(tmp_path: Path, wallbox_map: str) -> AsyncIterator[Wallbox]:
    path = tmp_path / "test-wallbox.toml"
    path.write_text(wallbox_map)
    regmap = load_map(path)
    server = ModbusTcpServer([_device(UNIT), _device(STATION_UNIT)], address=("127.0.0.1", 0))
    await server.serve_forever(background=True)
    port = int(server.transport.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
    box = Wallbox(server, port, regmap)
    await box.set(vendor="TEST", voltage_V=230.4, current_A=15.99, energy_Wh=2**40 + 7, heartbeat=9)
    await box.set(state="B", fault=0, locked=1)
    station = encode(regmap, regmap.identity, {"vendor": "ACME"})
    await server.context.async_setValues(STATION_UNIT, 4, 0, station)  # input registers, as mapped
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


async def test_a_family_without_identity_registers_is_never_asked_for_them(
    wallbox: Wallbox, executor: tuple[CommandExecutor, GatewayRuntime]
) -> None:
    _commands, runtime = executor
    pile = runtime.piles["W1"]
    pile.regmap = dataclasses.replace(pile.regmap, identity_blocks=(), match=())
    await _poll(runtime)
    await _poll(runtime)
    assert pile.state == "online"
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("identity-")]
    assert pile.status(0).vendor is None


async def _register(wallbox: Wallbox, function: int, address: int, want: int) -> bool:
    return await wallbox.read(function, address) == want


@pytest.mark.parametrize("wallbox_map", [REFRESHING_MAP])
async def test_a_forgetful_station_gets_its_current_rewritten_and_its_identity_from_the_station_unit(
    wallbox: Wallbox, executor: tuple[CommandExecutor, GatewayRuntime]
) -> None:
    commands, runtime = executor
    assert await runtime.buses["b1"].read_identity("W1") == {"vendor": "ACME"}
    await _poll(runtime)
    start = await commands.submit("W1", 1, _command("start", 1, power_W=7000))
    assert (start.status, await wallbox.read(3, 300)) == ("done", 101)
    await wallbox.server.context.async_setValues(UNIT, 6, 300, [60])  # the station falls back to 6 A
    await wait_for(lambda: _register(wallbox, 3, 300, 101), 5.0, 0.05, "the current rewritten")

    stop = await commands.submit("W1", 1, _command("stop", 2))
    assert (stop.status, stop.readback) == ("done", {"current_A": 0.0})  # confirmed by the write reply
    assert await wallbox.read(1, 5) == 0
    await wait_for(lambda: _register(wallbox, 3, 300, 0), 5.0, 0.05, "0 A held after the stop")


@pytest.mark.parametrize("wallbox_map", [SESSION_MAP])
async def test_session_energy_is_published_as_a_meter_and_the_units_maximum_caps_the_current(
    wallbox: Wallbox, executor: tuple[CommandExecutor, GatewayRuntime]
) -> None:
    commands, runtime = executor
    pile = runtime.piles["W1"]
    published = []
    await wallbox.set(unit_max_A=13.0)
    for session_Wh in (100, 150, 20, 45):  # a new session starts after 150 Wh
        await wallbox.set(energy_Wh=session_Wh)
        await _poll(runtime)
        published.append(pile.last[1]["energy_Wh"])
    assert published == [100, 150, 170, 195]
    start = await commands.submit("W1", 1, _command("start", 1, power_W=22_000))
    assert (start.status, start.readback) == ("done", {"current_A": 13.0, "amps": 13.0})
    assert await wallbox.read(3, 300) == 130


async def test_a_ports_commands_take_turns_so_each_read_back_is_its_own(
    wallbox: Wallbox, executor: tuple[CommandExecutor, GatewayRuntime]
) -> None:
    commands, runtime = executor
    await wallbox.set(state="C")  # charging: limits are valid
    await _poll(runtime)
    high = commands.submit("W1", 1, _command("limit", 10, power_W=30000))
    low = commands.submit("W1", 1, _command("limit", 11, power_W=7000))
    # at once, the second write could land before the first read-back, which then never sees 16 A
    assert ((await high).status, (await low).status) == ("done", "done")
    assert ((await high).readback, (await low).readback) == (
        {"current_A": 16.0, "amps": 16.0},
        {"current_A": 10.1, "amps": 10.1},
    )
    assert await wallbox.read(3, 300) == 101  # the second came second


async def test_a_stop_supersedes_a_start_still_waiting_for_its_read_back(
    wallbox: Wallbox, executor: tuple[CommandExecutor, GatewayRuntime]
) -> None:
    commands, runtime = executor
    await _poll(runtime)
    runtime.piles["W1"].regmap = _with_confirm(runtime.piles["W1"].regmap, "heartbeat")  # never confirms
    commands.timeout_s = 60.0
    start = commands.submit("W1", 1, _command("start", 20, power_W=7000))
    await wait_for(lambda: wallbox.read(1, 5), 5, what="the start's enable write")  # it is in its read-back
    queued = commands.submit("W1", 1, _command("start", 21, power_W=7000))
    stop = commands.submit("W1", 1, _command("stop", 22))
    results = await asyncio.wait_for(asyncio.gather(start, queued, stop), 10)  # not the 60 s timeout
    assert [r.status for r in results] == ["failed", "failed", "done"]
    assert results[0].reason == results[1].reason == "superseded by stop c22 before it was confirmed"
    assert await wallbox.read(1, 5) == 0
