"""Poll cadence under a fake clock: the drift-free grid, back to back on a saturated bus, recovery,
fair per-pile reading ages, and the achieved rates the poller reports."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pytest
import structlog

from drivers.bus import PollResult
from drivers.health import DeviceHealth
from drivers.plan import ReadPlan
from drivers.specs import BusSpec, DeviceSpec, SerialTransport, TcpTransport
from gateway.poller import RECOVER_CYCLES, Poller
from protocols.registers import SIM_V1

PERIOD_S = 1.0


class Done(Exception):
    """The scripted bus has run all its cycles."""


class FakeClock:
    """Monotonic seconds that only move when a sleep or a scripted cycle moves them."""

    def __init__(self) -> None:
        self.now_s = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now_s

    def wall_ms(self) -> int:
        return int(1_700_000_000_000 + self.now_s * 1000)

    async def sleep(self, delay_s: float) -> None:
        self.sleeps.append(delay_s)
        self.now_s += delay_s


class ScriptedBus:
    """A bus whose cycles take scripted durations on the fake clock; each pile is read in turn,
    one request per pile, and the reading is stamped when its read ends."""

    def __init__(self, clock: FakeClock, cycle_s: Sequence[float], units: int = 4, serial: bool = True):
        self.clock = clock
        self.cycle_s = list(cycle_s)
        devices = tuple(DeviceSpec(f"P{u}", u, SIM_V1) for u in range(1, units + 1))
        transport = SerialTransport("/dev/null", baudrate=9600) if serial else TcpTransport("h", 502)
        self.spec = BusSpec("rs485", transport, devices)
        self._health = {d.pile_id: DeviceHealth(d.pile_id) for d in devices}
        self.starts: list[float] = []
        self.readings: dict[str, list[float]] = {d.pile_id: [] for d in devices}

    async def poll_cycle(self) -> list[PollResult]:
        if not self.cycle_s:
            raise Done
        self.starts.append(self.clock.now_s)
        per_pile_s = self.cycle_s.pop(0) / len(self.spec.devices)
        results = []
        for d in self.spec.devices:
            self.clock.now_s += per_pile_s
            self._health[d.pile_id].count_request(None)
            self.readings[d.pile_id].append(self.clock.now_s)
            results.append(PollResult(d.pile_id, True, self.clock.wall_ms(), {1: {}}, per_pile_s, None))
        return results

    def health(self, pile_id: str) -> DeviceHealth:
        return self._health[pile_id].copy()

    def plan(self, pile_id: str) -> ReadPlan:
        return next(d for d in self.spec.devices if d.pile_id == pile_id).read_plan()


def poller_for(bus: ScriptedBus, clock: FakeClock, seen: list[Sequence[PollResult]] | None = None) -> Poller:
    out = seen if seen is not None else []
    return Poller(bus, PERIOD_S, out.append, clock=clock, sleep=clock.sleep, wall_ms=clock.wall_ms)


async def run_all(poller: Poller) -> None:
    with pytest.raises(Done):
        await poller.run()


async def test_a_bus_that_keeps_up_polls_on_the_drift_free_grid() -> None:
    clock = FakeClock()
    bus = ScriptedBus(clock, [0.3, 0.7, 0.2, 0.95])
    poller = poller_for(bus, clock)
    await run_all(poller)
    assert bus.starts == [100.0, 101.0, 102.0, 103.0]
    assert poller.stats.overruns == 0 and not poller.stats.saturated


async def test_a_saturated_bus_polls_back_to_back_without_idling() -> None:
    clock = FakeClock()
    bus = ScriptedBus(clock, [1.5] * 6)
    poller = poller_for(bus, clock)
    await run_all(poller)
    assert bus.starts == pytest.approx([100.0, 101.5, 103.0, 104.5, 106.0, 107.5])
    assert clock.sleeps == []  # the line never waited for a grid point
    assert poller.stats.saturated and poller.stats.saturations == 1
    assert poller.stats.overruns == 6


async def test_saturation_and_recovery_are_logged_once_each() -> None:
    clock = FakeClock()
    bus = ScriptedBus(clock, [1.5] * 5 + [0.4] * 6)
    with structlog.testing.capture_logs() as logs:
        poller = poller_for(bus, clock)
        await run_all(poller)
    events = [e["event"] for e in logs]
    assert events == ["bus saturated: polling back to back", "bus keeps up again: polling on the period"]
    assert not poller.stats.saturated


async def test_recovered_bus_returns_to_the_original_grid() -> None:
    clock = FakeClock()
    bus = ScriptedBus(clock, [1.3, 1.3] + [0.4] * (RECOVER_CYCLES + 2))
    await run_all(poller_for(bus, clock))
    # back to back while saturated, until RECOVER_CYCLES short cycles in a row; then on 100 + k
    back_to_back = bus.starts[: 2 + RECOVER_CYCLES]
    gaps = [b - a for a, b in itertools.pairwise(back_to_back)]
    assert gaps == pytest.approx([1.3, 1.3] + [0.4] * (RECOVER_CYCLES - 1))
    assert bus.starts[2 + RECOVER_CYCLES :] == pytest.approx([104.0, 105.0])


async def test_one_slow_cycle_among_fast_ones_does_not_flap() -> None:
    clock = FakeClock()
    bus = ScriptedBus(clock, [0.5, 1.2, 0.5, 1.2, 0.5, 0.5, 0.5, 0.5])
    with structlog.testing.capture_logs() as logs:
        poller = poller_for(bus, clock)
        await run_all(poller)
    assert [e["event"] for e in logs].count("bus saturated: polling back to back") == 1
    assert poller.stats.saturations == 1 and poller.stats.overruns == 2


async def test_every_pile_is_read_once_per_cycle_with_equal_bounded_intervals() -> None:
    clock = FakeClock()
    bus = ScriptedBus(clock, [2.0] * 10, units=8)
    seen: list[Sequence[PollResult]] = []
    await run_all(poller_for(bus, clock, seen))
    assert all(sorted(r.pile_id for r in cycle) == sorted(bus.readings) for cycle in seen)
    for times in bus.readings.values():
        intervals = [b - a for a, b in itertools.pairwise(times)]
        assert intervals == pytest.approx([2.0] * 9)  # one cycle, for the first pile as for the last


async def test_rates_report_cycles_transactions_utilisation_and_reading_age() -> None:
    clock = FakeClock()
    bus = ScriptedBus(clock, [0.5] * 21, units=4)  # saturated by nothing: on the 1 s grid
    poller = poller_for(bus, clock)
    await run_all(poller)
    snap = poller.snapshot()
    assert snap["cycles_per_s"] == pytest.approx(1.0, abs=1e-3)
    assert snap["transactions_per_s"] == pytest.approx(4.0, abs=1e-3)
    line = bus.spec.transport
    assert isinstance(line, SerialTransport)
    wire_s = sum(line.plan_time_s(bus.plan(p)) for p in bus.readings)
    assert snap["line_utilisation"] == pytest.approx(wire_s, abs=1e-3)  # one cycle's wire time per second
    piles = snap["piles"]
    assert isinstance(piles, dict)
    assert piles["P1"]["readings_per_s"] == pytest.approx(1.0, abs=1e-3)
    # the last cycle ran 120.0-120.5 (P4 read last); the poller then waited for 121.0
    assert clock.now_s == pytest.approx(121.0)
    assert piles["P4"]["last_reading_age_s"] == pytest.approx(0.5)
    assert piles["P1"]["last_reading_age_s"] == pytest.approx(0.875)


async def test_rates_cover_only_the_recent_window() -> None:
    clock = FakeClock()
    bus = ScriptedBus(clock, [0.1] * 30 + [1.5] * 20, units=1)
    poller = poller_for(bus, clock)
    await run_all(poller)
    snap = poller.snapshot()
    assert 10.0 <= snap["window_s"] <= 10.0 + 1.5  # type: ignore[operator]
    assert snap["cycles_per_s"] == pytest.approx(1 / 1.5, abs=1e-3)


async def test_rates_are_unknown_before_two_cycles_and_utilisation_without_a_line_speed() -> None:
    clock = FakeClock()
    bus = ScriptedBus(clock, [0.2] * 3, serial=False)
    poller = poller_for(bus, clock)
    assert poller.snapshot()["cycles_per_s"] is None
    assert poller.snapshot()["piles"]["P1"]["last_reading_age_s"] is None  # type: ignore[index]
    await run_all(poller)
    snap = poller.snapshot()
    assert snap["cycles_per_s"] == pytest.approx(1.0, abs=1e-3)
    assert snap["line_utilisation"] is None


async def test_a_failing_result_handler_does_not_stop_polling() -> None:
    clock = FakeClock()
    bus = ScriptedBus(clock, [0.1] * 3)

    def explode(_results: Sequence[PollResult]) -> None:
        raise ValueError("bad reading")

    with structlog.testing.capture_logs() as logs:
        poller = Poller(bus, PERIOD_S, explode, clock=clock, sleep=clock.sleep, wall_ms=clock.wall_ms)
        await run_all(poller)
    assert poller.stats.cycles == 3
    assert [e["event"] for e in logs] == ["handling poll results failed"] * 3


async def test_a_saturated_bus_gets_its_next_cycle_before_results_are_handled() -> None:
    clock = FakeClock()
    bus = ScriptedBus(clock, [0.5, 1.5, 1.5, 1.5])
    started_when_handled: list[int] = []
    poller = Poller(
        bus,
        PERIOD_S,
        lambda _results: started_when_handled.append(len(bus.starts)),
        clock=clock,
        sleep=clock.sleep,
        wall_ms=clock.wall_ms,
    )
    await run_all(poller)
    # on the grid: handled before the next cycle starts; saturated: the next one is already running
    assert started_when_handled == [1, 3, 4, 4]
