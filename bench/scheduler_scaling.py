"""Scheduler cost per event as the waiting area grows: it must grow at most logarithmically.

For each size N the waiting area is filled with N cars, then a bounded mix of events is timed:
arrivals, amount changes, cancels of waiting cars, and completions (which call the next car).
Prints microseconds per event for each N; a flat or slowly rising column is the goal.

    .venv/bin/python bench/scheduler_scaling.py --sizes 1000,10000,100000 --events 2000
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from central.domain.ideal import next_completions
from central.domain.params import params_from_mapping
from central.domain.scheduler import Scheduler

START = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)


def filled(size: int, rng: random.Random) -> tuple[Scheduler, list[str], datetime]:
    params = params_from_mapping(
        {
            "FastChargingPileNum": 4,
            "TrickleChargingPileNum": 6,
            "WaitingAreaSize": size + 10_000,
            "ChargingQueueLen": 3,
        }
    )
    scheduler = Scheduler(params)
    cars = []
    for n in range(size):
        car = f"W{n}"
        scheduler.arrive(START, car, rng.choice("FT"), rng.randint(5, 60), dispatch=False)
        cars.append(car)
    scheduler.dispatch(START)
    scheduler.pop_events()
    return scheduler, cars, START


def timed_mix(scheduler: Scheduler, cars: list[str], now: datetime, events: int, rng: random.Random) -> float:
    waiting = [c for c in cars if c in scheduler.requests]
    t0 = time.perf_counter()
    for n in range(events):
        now += timedelta(seconds=1)
        kind = n % 4
        if kind == 0:
            scheduler.arrive(now, f"N{n}", rng.choice("FT"), rng.randint(5, 60))
        elif kind == 1 and waiting:
            car = waiting[rng.randrange(len(waiting))]
            request = scheduler.get(car)
            if request is not None and request.state.value == "waiting":
                scheduler.change(now, car, kwh=rng.randint(5, 60))
        elif kind == 2 and waiting:
            car = waiting.pop(rng.randrange(len(waiting)))
            if car in scheduler.requests:
                scheduler.cancel(now, car)
        else:
            due = next_completions(scheduler)
            if due is not None:
                at, done = due
                now = max(now, at)
                for car in done:
                    scheduler.segment_finished(now, car)
        scheduler.pop_events()
    return (time.perf_counter() - t0) / events


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--events", type=int, default=2000)
    args = ap.parse_args()
    print(f"{'waiting cars':>12}  {'µs per event':>12}")
    for size in (int(s) for s in args.sizes.split(",")):
        rng = random.Random(7)
        scheduler, cars, now = filled(size, rng)
        per_event = timed_mix(scheduler, cars, now, args.events, rng)
        print(f"{size:>12}  {per_event * 1e6:>12.1f}")


if __name__ == "__main__":
    main()
