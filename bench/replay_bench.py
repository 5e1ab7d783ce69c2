"""Replay benchmark: generate a seeded scenario of N events and time ``central.replay.replay``.

Run: ``.venv/bin/python bench/replay_bench.py [--events 1000] [--seed 7] [--waiting 100]``.
Prints events/s and total seconds (parsing + replay + output encoding).
"""

from __future__ import annotations

import argparse
import random
import time

from central.domain.params import StationParams
from central.replay import replay, to_json_line


def generate(events: int, seed: int, params: StationParams) -> list[str]:
    """A scenario of ``events`` lines: arrivals, cancels, changes, pile faults and recoveries."""
    rng = random.Random(seed)
    piles = [f"F{i}" for i in range(1, params.fast_pile_num + 1)]
    piles += [f"T{i}" for i in range(1, params.trickle_pile_num + 1)]
    faulted: set[str] = set()
    cars: list[str] = []
    minute = 6 * 60
    lines: list[str] = []
    for n in range(events):
        minute = (minute + rng.choice((0, 1, 1, 2, 3))) % (24 * 60)
        stamp = f"{minute // 60:02d}:{minute % 60:02d}"
        lines.append(f"{stamp} {_event(rng, n, cars, piles, faulted)}")
    return lines


def _event(rng: random.Random, n: int, cars: list[str], piles: list[str], faulted: set[str]) -> str:
    roll = rng.random()
    if roll < 0.6 or not cars:
        cars.append(f"V{n}")
        return f"(A,V{n},{rng.choice('FT')},{rng.choice((5, 7.5, 10, 20, 30, 45))})"
    if roll < 0.75:
        return f"(A,{rng.choice(cars)},O,0)"
    if roll < 0.9:
        return f"(C,{rng.choice(cars)},{rng.choice('FTO')},{rng.choice((-1, 10, 25))})"
    pile = rng.choice(piles)
    faulted.symmetric_difference_update({pile})
    return f"(B,{pile},O,{0 if pile in faulted else 1})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--waiting", type=int, default=100, help="WaitingAreaSize")
    args = parser.parse_args()
    params = StationParams(waiting_area_size=args.waiting)
    lines = generate(args.events, args.seed, params)
    started = time.perf_counter()
    written = sum(len(to_json_line(row)) for row in replay(lines, params))
    elapsed_s = time.perf_counter() - started
    print(
        f"events: {args.events}  output: {written} chars  total: {elapsed_s:.3f} s  "
        f"rate: {args.events / elapsed_s:.0f} events/s"
    )


if __name__ == "__main__":
    main()
