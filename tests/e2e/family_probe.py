"""A probe for the family end-to-end tests: whether the simulator serves a family's telemetry
registers as its own snapshot says (it may not yet, for maps whose blocks interleave)."""

from __future__ import annotations

from pymodbus.client import AsyncModbusTcpClient

from protocols.codec import decode
from protocols.registers import get_map
from tests.e2e.harness import SimProcess

FAMILIES = ("keba-p30", "alfen-ng9xx", "bender-cc61x", "abb-terra-ac")
UNIT = 1  # a real KEBA P30 answers on 255, which the gateway and simulator configs refuse today


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
    return sorted(name for name, value in served.items() if name in first and first[name] != value)
