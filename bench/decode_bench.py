"""Decode cost per reading: one port's poll responses to canonical values, on the compiled plan.

Builds the read plan of a pile (pilegate-sim-v1 by default, or any map file), encodes a realistic
register image, and times ``ReadPlan.decode`` over many cycles (best of several rounds, so a busy
machine shows its quiet moments). Prints microseconds per port reading and readings per CPU-second.
Run it against another checkout to compare (the plan API is the same):

    PYTHONPATH=$PWD python bench/decode_bench.py [--ports 1] [--map pilegate-sim-v1] [--cycles 50000]
"""

from __future__ import annotations

import argparse
import json
import time

from drivers.plan import compile_read_plan
from protocols.registers import SIM_V1, encode, get_map

SIM_VALUES: dict[str, dict[str, object]] = {
    "telemetry": {
        "state": 2,
        "voltage_V": 230.5,
        "current_A": 13.37,
        "power_W": 3075,
        "energy_Wh": 123456,
        "temperature_C": 31.5,
        "fault": 0,
        "heartbeat": 77,
    },
    "readback": {"ack_seq": 5, "ack_status": 1, "active_target_Wh": 20000, "active_limit_W": 7000},
}


def responses(regmap_name: str, ports: int) -> tuple[object, list[list[int]]]:
    """The plan and one cycle's responses (sim-v1 values; zeros for another map)."""
    regmap = get_map(regmap_name)
    plan = compile_read_plan(regmap, ports)
    image: dict[int, int] = {}
    if regmap is SIM_V1:
        for port in range(1, ports + 1):
            for name, values in SIM_VALUES.items():
                block = getattr(regmap, name)
                base = regmap.port_address(port, block)
                image.update(enumerate(encode(regmap, block, values), start=base))
    replies = [[image.get(r.address + i, 0) for i in range(r.count)] for r in plan.requests]
    return plan, replies


def measure(regmap_name: str, ports: int, cycles: int, rounds: int) -> dict[str, object]:
    plan, replies = responses(regmap_name, ports)
    decode = plan.decode  # type: ignore[attr-defined]
    best_s = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(cycles):
            decode(replies)
        best_s = min(best_s, time.process_time() - start)
    per_reading_us = best_s / (cycles * ports) * 1e6
    return {
        "map": regmap_name,
        "ports": ports,
        "us_per_reading": round(per_reading_us, 3),
        "readings_per_cpu_s": round(1e6 / per_reading_us),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--map", default="pilegate-sim-v1")
    parser.add_argument("--ports", type=int, default=1)
    parser.add_argument("--cycles", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(json.dumps(measure(args.map, args.ports, args.cycles, args.rounds)))


if __name__ == "__main__":
    main()
