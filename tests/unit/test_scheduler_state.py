"""Scheduler state survives to_dict -> JSON -> from_dict exactly, mid-scenario (the service persists
it in SQLite and must restore the same queue after a crash)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from central.config import load_params
from central.domain.errors import SchedulerStateError
from central.domain.events import Event
from central.domain.ideal import complete_all, complete_until
from central.domain.params import StationParams
from central.domain.scheduler import Scheduler
from central.replay import ScenarioEvent, VirtualClock, apply_event, parse_scenario

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"


def random_scenario(events: int, seed: int) -> list[str]:
    """Arrivals, cancels, changes and pile faults/recoveries at increasing times (wrapping days)."""
    rng = random.Random(seed)
    faulted: set[str] = set()
    minute, lines = 6 * 60, []
    for n in range(events):
        minute = (minute + rng.choice((0, 1, 3))) % (24 * 60)
        roll, car = rng.random(), f"V{rng.randrange(max(n, 1))}"
        if roll < 0.6:
            event = f"(A,V{n},{rng.choice('FT')},{rng.choice((5, 7.5, 20, 45))})"
        elif roll < 0.75:
            event = f"(A,{car},O,0)"
        elif roll < 0.9:
            event = f"(C,{car},{rng.choice('FTO')},{rng.choice((-1, 12))})"
        else:
            pile = rng.choice(["F1", "F2", "T1", "T2", "T3"])
            faulted ^= {pile}
            event = f"(B,{pile},O,{0 if pile in faulted else 1})"
        lines.append(f"{minute // 60:02d}:{minute % 60:02d} {event}")
    return lines


def drive(s: Scheduler, clock: VirtualClock, events: list[ScenarioEvent]) -> list[Event]:
    for event in events:
        instant = clock.advance(event.minute)
        complete_until(s, instant)
        apply_event(s, event, instant)
        s.dispatch(instant)
    return s.pop_events()


def through_json(s: Scheduler, params: StationParams) -> Scheduler:
    state = json.loads(json.dumps(s.to_dict()))
    restored = Scheduler.from_dict(state, params)
    assert restored.to_dict() == state
    return restored


def test_round_trip_mid_scenario_continues_identically():
    params = load_params(SCENARIOS / "03_fault_time_order.toml")
    events = parse_scenario((SCENARIOS / "03_fault_time_order.scn").read_text().splitlines(), params)
    split = next(i for i, e in enumerate(events) if e.kind == "B") + 1  # just after the fault
    original = Scheduler(params)
    clock = VirtualClock(params, events[0].minute)
    drive(original, clock, events[:split])
    assert original.fault_queue(), "the split point should have a non-empty fault group"
    restored = through_json(original, params)
    restored_clock = VirtualClock(params, events[0].minute)
    restored_clock.day, restored_clock.minute = clock.day, clock.minute
    tail_a = drive(original, clock, events[split:])
    tail_b = drive(restored, restored_clock, events[split:])
    assert tail_a == tail_b
    assert complete_all(original) == complete_all(restored)
    assert original.pop_events() == restored.pop_events()
    assert original.to_dict() == restored.to_dict()


def test_round_trip_at_every_event_of_a_random_scenario():
    params = StationParams(waiting_area_size=20)
    events = parse_scenario(random_scenario(300, seed=3), params)
    s = Scheduler(params)
    clock = VirtualClock(params, events[0].minute)
    for event in events:
        drive(s, clock, [event])
        s = through_json(s, params)
    assert s.requests or s.clock is not None


def test_restored_state_keeps_numbers_segments_and_details():
    params = StationParams()
    s = Scheduler(params)
    events = parse_scenario(["08:00 (A,V1,F,30)", "08:00 (A,V2,F,30)", "08:20 (B,F1,O,0)"], params)
    drive(s, VirtualClock(params, 480), events)
    restored = through_json(s, params)
    v1 = restored.requests["V1"]
    assert v1.queue_number == "F1"
    assert v1.details == s.requests["V1"].details
    assert restored.next_number == s.next_number
    assert restored.clock == s.clock


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d.pop("requests"),
        lambda d: d.update(version=99),
        lambda d: d["waiting"]["F"].append("GHOST"),
        lambda d: d["requests"][0].update(state="waiting"),
        lambda d: d["requests"][0].update(requested_kwh="lots"),
    ],
)
def test_malformed_or_inconsistent_state_is_refused(damage):
    params = StationParams()
    s = Scheduler(params)
    s.arrive(VirtualClock(params, 480).instant(0, 480), "V1", "F", 10)
    state = s.to_dict()
    damage(state)
    with pytest.raises(SchedulerStateError):
        Scheduler.from_dict(state, params)
