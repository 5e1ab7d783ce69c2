"""The shipped maps of real charger families, served by the simulator on loopback Modbus TCP and
driven by a real Modbus client the way each family is commanded (its map's recipe: the current
register in the family's own encoding, the enable register where there is one, one value per
request where the family wants that). Time runs 600x so a session shows energy within a second.

Each family: idle, start (the vehicle charges and the lifetime meter counts), a lower limit (read
back in the family's encoding, power follows), stop (the meter stands still), and a fault shown the
family's way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from pymodbus.client import AsyncModbusTcpClient

from firmware_sim.config import SimConfig, SimPileSpec
from firmware_sim.runner import Simulation, start_simulation
from protocols import canonical
from protocols.codec import decode, encode_field
from protocols.maploader import shipped_names
from protocols.registers import Block, CurrentRecipe, Field, PortState, RegisterMap, SimFault, get_map
from tests.e2e.family_probe import FIXED_REGISTERS, unit_of
from tests.helpers import wait_for

TIME_SCALE = 600.0
RATED_W = 22_000
PHASES = 3
NOMINAL_V = 230.0


@dataclass(frozen=True)
class Family:
    """How a test drives one family: its map, unit id and the function code of single writes."""

    name: str
    unit: int
    single_write_fc6: bool  # the family's sources write one-register values with function 6


KEBA = Family("keba-p30", unit=unit_of("keba-p30"), single_write_fc6=True)  # 255, as a real P30
ALFEN = Family("alfen-ng9xx", unit=unit_of("alfen-ng9xx"), single_write_fc6=False)
BENDER = Family("bender-cc61x", unit=unit_of("bender-cc61x"), single_write_fc6=False)
ABB = Family("abb-terra-ac", unit=unit_of("abb-terra-ac"), single_write_fc6=False)
FAMILIES = (KEBA, ALFEN, BENDER, ABB)


@pytest.fixture(params=FAMILIES, ids=lambda f: f.name)
def family(request: pytest.FixtureRequest) -> Family:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
async def sim(family: Family) -> AsyncIterator[Simulation]:
    fixed = tuple(FIXED_REGISTERS.get(family.name, {}).items())  # registers the sim does not model
    pile = SimPileSpec("P1", "trickle", RATED_W, unit=family.unit, map=family.name, registers=fixed)
    simulation = await start_simulation(SimConfig(piles=(pile,), time_scale=TIME_SCALE, control_port=None))
    try:
        yield simulation
    finally:
        await simulation.stop()


@pytest.fixture
async def client(sim: Simulation) -> AsyncIterator[AsyncModbusTcpClient]:
    endpoint = sim.endpoints["P1"]
    assert endpoint.host is not None and endpoint.port is not None
    modbus = AsyncModbusTcpClient(endpoint.host, port=endpoint.port, timeout=2.0, retries=0)
    assert await modbus.connect()
    try:
        yield modbus
    finally:
        modbus.close()


class Wallbox:
    """A family's port as its sources drive it: reads one field per request, writes per recipe."""

    def __init__(self, client: AsyncModbusTcpClient, family: Family) -> None:
        self.client, self.family = client, family
        self.regmap: RegisterMap = get_map(family.name)
        recipe = self.regmap.recipe
        assert isinstance(recipe, CurrentRecipe)
        self.recipe = recipe

    async def _read_field(self, block: Block, f: Field) -> list[int]:
        address = self.regmap.port_address(1, block) + f.offset
        response = await self.client.read_holding_registers(
            address, count=f.width, device_id=self.family.unit
        )
        assert not response.isError(), (self.family.name, f.name, response)
        return list(response.registers)

    async def read(self, section: str, raw: bool = False) -> dict[str, object]:
        """Values of every field of ``section``; canonical (state and fault through their tables)
        unless ``raw``, which keeps the family's own codes."""
        values: dict[str, object] = {}
        for block in self.regmap.blocks_of(section):
            words = [0] * block.size
            for f in block.fields:
                words[f.offset : f.offset + f.width] = await self._read_field(block, f)
            values.update(decode(self.regmap, block, words))
            for f in block.fields:
                convert = canonical.converter(f) if section == "telemetry" and not raw else None
                if convert is not None:
                    values[f.name] = convert(values[f.name])
        return values

    async def write(self, name: str, value: object) -> None:
        block, f = self.regmap.fields_by_name[name]
        words = encode_field(self.regmap, block, name, value)
        address = self.regmap.port_address(1, block) + f.offset
        unit = self.family.unit
        if len(words) == 1 and self.family.single_write_fc6:
            response = await self.client.write_register(address, words[0], device_id=unit)
        else:
            response = await self.client.write_registers(address, words, device_id=unit)
        assert not response.isError(), (self.family.name, name, response)

    async def start(self, current_A: float) -> None:
        await self.write(self.recipe.current, current_A)
        if self.recipe.enable is not None:
            await self.write(self.recipe.enable, self.recipe.enable_on)

    async def stop(self) -> None:
        if self.recipe.stop == "disable":
            assert self.recipe.enable is not None
            await self.write(self.recipe.enable, self.recipe.enable_off)
        else:
            await self.write(self.recipe.current, 0)

    async def confirmed_A(self) -> float:
        block, _f = self.regmap.fields_by_name[self.recipe.confirm]
        values = await self.read(block.kind)
        value = values[self.recipe.confirm]
        assert isinstance(value, int | float)
        return float(value)


@pytest.fixture
async def wallbox(client: AsyncModbusTcpClient, family: Family) -> Wallbox:
    return Wallbox(client, family)


async def test_the_pile_serves_what_its_simulation_says(wallbox: Wallbox, sim: Simulation):
    """Every telemetry register, read one field per request, decodes to the simulator's own
    snapshot of the port: no block's holes blank another block's registers, codes sit in place."""
    served = await wallbox.read("telemetry", raw=True)
    expected = sim.port_snapshot("P1", 1)
    assert {n: v for n, v in served.items() if n in expected} == {
        n: expected[n] for n in served if n in expected
    }
    state = PortState(int(str((await wallbox.read("telemetry"))["state"])))
    assert state.name == expected["state_name"]


async def telemetry(wallbox: Wallbox) -> dict[str, object]:
    return await wallbox.read("telemetry")


def number(values: dict[str, object], name: str) -> float:
    value = values[name]
    assert isinstance(value, int | float), (name, value)
    return float(value)


def phase_power_W(values: dict[str, object]) -> float:
    return sum(number(values, f"voltage_L{p}_V") * number(values, f"current_L{p}_A") for p in (1, 2, 3))


async def charging_with_energy(wallbox: Wallbox, above_Wh: float) -> dict[str, object]:
    async def ready() -> dict[str, object] | None:
        values = await telemetry(wallbox)
        charging = values["state"] == PortState.CHARGING
        return values if charging and number(values, "energy_Wh") > above_Wh else None

    values = await wait_for(ready, timeout_s=10.0, what=f"{wallbox.family.name} charging with energy")
    assert values is not None
    return values


async def test_idle_port_is_not_charging_and_its_meter_reads(wallbox: Wallbox):
    values = await telemetry(wallbox)
    assert values["state"] in (PortState.AVAILABLE, PortState.PLUGGED)
    assert number(values, "energy_Wh") >= 0


async def test_start_charges_at_the_current_and_the_meter_counts(wallbox: Wallbox):
    before = number(await telemetry(wallbox), "energy_Wh")
    await wallbox.start(16)
    await charging_with_energy(wallbox, before)
    assert await wallbox.confirmed_A() == pytest.approx(16.0)
    expected_W = min(RATED_W, 16 * NOMINAL_V * PHASES)

    async def at_full_power() -> dict[str, object] | None:  # after the ramp
        values = await telemetry(wallbox)
        return values if phase_power_W(values) == pytest.approx(expected_W, rel=0.05) else None

    values = await wait_for(at_full_power, timeout_s=10.0, what="16 A on three phases")
    assert values is not None
    if "power_W" in values:
        assert number(values, "power_W") == pytest.approx(expected_W, rel=0.05)


async def test_a_lower_limit_is_read_back_and_the_power_follows(wallbox: Wallbox):
    await wallbox.start(16)
    await charging_with_energy(wallbox, 0)
    await wallbox.write(wallbox.recipe.current, 10)

    async def at_10_A() -> bool:
        return await wallbox.confirmed_A() == pytest.approx(10.0) and phase_power_W(
            await telemetry(wallbox)
        ) == pytest.approx(10 * NOMINAL_V * PHASES, rel=0.05)

    await wait_for(at_10_A, timeout_s=10.0, what="power at 10 A")


async def test_stop_ends_charging_and_the_meter_stands_still(wallbox: Wallbox, sim: Simulation):
    await wallbox.start(16)
    await charging_with_energy(wallbox, 0)
    await wallbox.stop()

    async def stopped() -> dict[str, object] | None:
        values = await telemetry(wallbox)
        return values if values["state"] != PortState.CHARGING else None

    values = await wait_for(stopped, timeout_s=10.0, what="charging stopped")
    assert values is not None
    assert values["state"] in (PortState.FINISHED, PortState.PLUGGED)
    stopped_at = number(values, "energy_Wh")
    minute_later = sim.clock.now_s() + 60  # a charging port would count over 100 Wh in it
    await wait_for(lambda: sim.clock.now_s() > minute_later, timeout_s=5.0, what="a simulated minute")
    assert number(await telemetry(wallbox), "energy_Wh") == stopped_at


async def test_a_fault_shows_the_family_way(wallbox: Wallbox, sim: Simulation):
    await wallbox.start(16)
    await charging_with_energy(wallbox, 0)
    sim.inject_fault("P1", 1, SimFault.OVER_TEMPERATURE)

    async def faulted() -> dict[str, object] | None:
        values = await telemetry(wallbox)
        shows_fault = values["state"] == PortState.FAULTED or values.get("fault", 0) != 0
        return values if shows_fault and values["state"] != PortState.CHARGING else None

    await wait_for(faulted, timeout_s=10.0, what="the fault shown")


def test_every_shipped_family_is_under_test():
    assert sorted(f.name for f in FAMILIES) == sorted(n for n in shipped_names() if n != "pilegate-sim-v1")
    assert all(isinstance(get_map(f.name).recipe, CurrentRecipe) for f in FAMILIES)
