"""Probes for the family end-to-end tests: whether the simulator serves a family's telemetry as
its own snapshot says (it may not yet: blocks that interleave, codes under a mask), and whether it
could start at all (identity registers between a port's registers)."""

from __future__ import annotations

from pymodbus.client import AsyncModbusTcpClient

from firmware_sim.render import MapEncoder
from protocols import canonical
from protocols.codec import decode
from protocols.registers import PortState, get_map
from tests.e2e.harness import SimProcess

FAMILIES = ("keba-p30", "alfen-ng9xx", "bender-cc61x", "abb-terra-ac")
UNIT = 1  # a real KEBA P30 answers on 255: the gateway takes it on TCP, the simulator not yet
# read-back registers the simulator has no model for, fixed per family in its pile config
FIXED_REGISTERS = {
    "alfen-ng9xx": {"availability": 1},  # operative
    "abb-terra-ac": {"user_max_A": 32},  # the installer's maximum (caps the current)
    "keba-p30": {"max_supported_A": 32},  # the hardware's maximum (caps the current)
}


def fixed_registers_toml(family: str) -> str:
    """The simulator pile config line fixing ``family``'s unmodelled read-back registers."""
    fixed = FIXED_REGISTERS.get(family)
    return "registers = { " + ", ".join(f"{k} = {v}" for k, v in fixed.items()) + " }\n" if fixed else ""


SIM_REFUSALS = ("is overlapping",)  # pymodbus: the simulator lays identity over a port's registers


def sim_refusal(log: str) -> str | None:
    """Why the simulator process could not serve the map, when it is a known gap."""
    found = [line.strip() for line in log.splitlines() if any(r in line for r in SIM_REFUSALS)]
    return found[-1] if found else None  # the exception's own line, after the traceback's source


async def blank_fields(sim: SimProcess, family: str, pile: str) -> list[str]:
    """Telemetry fields of ``pile`` that the simulator serves unlike its own snapshot."""
    regmap = get_map(family)
    endpoint = sim.piles[pile]
    client = AsyncModbusTcpClient(endpoint["host"], port=endpoint["port"], timeout=2.0, retries=0)
    assert await client.connect()
    try:
        served: dict[str, object] = {}
        for block in regmap.blocks_of("telemetry"):
            words = [0] * block.size
            for f in block.fields:
                address = regmap.port_address(1, block) + f.offset
                response = await client.read_holding_registers(address, count=f.width, device_id=UNIT)
                assert not response.isError(), response
                words[f.offset : f.offset + f.width] = response.registers
            served.update(decode(regmap, block, words))
    finally:
        client.close()
    ports = sim.snapshot()["piles"][pile]["ports"]
    first = ports["1"] if isinstance(ports, dict) else ports[0]
    wrong = sorted(name for name, value in served.items() if name in first and first[name] != value)
    state = canonical.state_converter(regmap.telemetry.field("state"))(served["state"])
    if PortState(int(str(state))).name != first["state_name"]:
        wrong.append(f"state {PortState(int(str(state))).name} (the simulator says {first['state_name']})")
    return wrong


def encoder_gap(family: str) -> str | None:
    """Why the simulator's encoder would show a charging port as something else (a state code under
    a mask that it does not shift into place, say), or None when it shows it as charging."""
    regmap = get_map(family)
    block, f = regmap.fields_by_name["state"]
    words = [0] * block.size
    words[f.offset : f.offset + f.width] = MapEncoder(regmap).encode_field(f, int(PortState.CHARGING))
    code = decode(regmap, block, words)["state"]
    shown = PortState(int(str(canonical.state_converter(f)(code))))
    return None if shown == PortState.CHARGING else f"a charging port's state reads {code!r}, {shown.name}"
