"""CPU cost of the simulator's register view: one poll read of a charging port, in process.

What a Modbus read costs the simulator before pymodbus frames the answer: bring the port's physics
to the read's time and re-render its registers through the map's encoder (a charging port changes
on every read, so every read re-encodes). Measured with ``time.process_time`` so a busy machine
skews it less than wall time.

Example:
    PYTHONPATH=$PWD .venv/bin/python bench/sim_render.py --reads 20000
    PYTHONPATH=$PWD .venv/bin/python bench/sim_render.py --map tests/data/test-wallbox-current.toml
"""

from __future__ import annotations

import argparse
import time

from firmware_sim.config import SimPileSpec
from firmware_sim.device import SimPile
from protocols.registers import SIM_V1, Command


def sim_v1_read_cost_us(reads: int) -> float:
    pile = SimPile(SimPileSpec("F1", "fast", 30_000))
    registers = [0] * (SIM_V1.port_base + SIM_V1.port_stride)
    pile.ports[0].command(Command.START, 1, 0, 0, now_s=0.0)
    address = SIM_V1.port_address(1, SIM_V1.telemetry)
    count = SIM_V1.port_span()
    started = time.process_time()
    for i in range(reads):
        pile.render(registers, 0, address, count, 1.0 + i)
    return (time.process_time() - started) / reads * 1e6


def map_read_cost_us(path: str, reads: int) -> float:
    pile = SimPile(SimPileSpec("W1", "trickle", 22_000, map=path))
    regmap = pile.regmap
    table = regmap.telemetry.function
    registers = [0] * 0x10000
    pile.ports[0].offer(True, 16.0, 6.0, now_s=0.0)
    address, count = regmap.port_address(1, regmap.telemetry), regmap.telemetry.size
    started = time.process_time()
    for i in range(reads):
        pile.render(registers, 0, address, count, 1.0 + i, table)
    return (time.process_time() - started) / reads * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reads", type=int, default=20_000)
    parser.add_argument("--map", help="a map file with a current recipe, instead of pilegate-sim-v1")
    args = parser.parse_args()
    cost = map_read_cost_us(args.map, args.reads) if args.map else sim_v1_read_cost_us(args.reads)
    print(f"{args.map or SIM_V1.name}: {cost:.1f} us CPU per read of a charging port ({args.reads} reads)")


if __name__ == "__main__":
    main()
