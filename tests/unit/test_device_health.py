"""Device health: state transitions and backoff under a fake clock, and the bus owner's policy.

The bus tests run :class:`drivers.bus.Bus` against an in-memory fake pymodbus client (no I/O): a
silent device is simulated by the fake raising ``TimeoutError`` at once, so time is only ever
the fake clock's.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest
import structlog
from pymodbus.exceptions import ConnectionException, ModbusIOException

from drivers.bus import Bus, BusSpec, DeviceSpec, TcpTransport
from drivers.errors import DriverError, to_driver_error
from drivers.health import DeviceHealth, Transition, backoff_delay_s
from protocols.registers import SIM_V1, CodecError


class FakeClock:
    """Monotonic seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _timeout(device: str = "P1") -> DriverError:
    return DriverError("timeout", device, "no reply within 0.5 s")


# --------------------------------------------------------------------------- DeviceHealth


def test_new_device_is_unknown_and_due() -> None:
    health = DeviceHealth("P1")
    assert health.state == "unknown"
    assert health.due(0.0)


def test_success_marks_online_with_time_and_latency() -> None:
    health = DeviceHealth("P1")
    assert health.record_success(5.0, 1_700_000_000_123, 0.012) is Transition.OK
    assert (health.state, health.last_ok_ms, health.last_latency_s) == (
        "online",
        1_700_000_000_123,
        0.012,
    )


def test_failures_below_threshold_keep_state_and_retry_next_cycle() -> None:
    health = DeviceHealth("P1", fail_after_cycles=3)
    health.record_success(0.0, 1, 0.01)
    assert health.record_failure(10.0, _timeout(), random.Random(1)) is Transition.FAILED
    assert health.record_failure(11.0, _timeout(), random.Random(1)) is Transition.STILL_FAILED
    assert health.state == "online"
    assert health.consecutive_failures == 2
    assert health.due(11.0)


def test_comm_fault_after_threshold_then_jittered_doubling_backoff_capped() -> None:
    health = DeviceHealth("P1", fail_after_cycles=2, backoff_base_s=1.0, backoff_max_s=8.0)
    rng = random.Random(42)
    now = 100.0
    health.record_failure(now, _timeout(), rng)
    assert health.due(now)
    delays = []
    for _ in range(6):
        health.record_failure(now, _timeout(), rng)
        assert health.state == "comm_fault"
        delays.append(health.next_attempt_at - now)
        assert not health.due(now)
        assert health.due(health.next_attempt_at)
        now = health.next_attempt_at
    ceilings = [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    for delay, ceiling in zip(delays, ceilings, strict=True):
        assert ceiling / 2 <= delay <= ceiling


def test_backoff_is_reproducible_with_a_seeded_rng() -> None:
    a = [backoff_delay_s(k, 1.0, 30.0, rng) for rng in [random.Random(7)] for k in range(8)]
    b = [backoff_delay_s(k, 1.0, 30.0, rng) for rng in [random.Random(7)] for k in range(8)]
    assert a == b
    assert max(a) <= 30.0


def test_first_failure_is_comm_fault_when_threshold_is_one() -> None:
    health = DeviceHealth("P1", fail_after_cycles=1, backoff_base_s=2.0)
    health.record_failure(0.0, _timeout(), random.Random(3))
    assert health.state == "comm_fault"
    assert 1.0 <= health.next_attempt_at <= 2.0


def test_success_after_comm_fault_recovers_and_is_due_at_once() -> None:
    health = DeviceHealth("P1", fail_after_cycles=1)
    health.record_failure(0.0, _timeout(), random.Random(3))
    assert health.record_success(5.0, 99, 0.02) is Transition.RECOVERED
    assert (health.state, health.consecutive_failures, health.last_error) == ("online", 0, None)
    assert health.due(5.0)


def test_counters_split_timeouts_from_other_errors() -> None:
    health = DeviceHealth("P1")
    health.count_request(None)
    health.count_request(_timeout())
    health.count_request(DriverError("exception_response", "P1", "busy", exception_code=6))
    health.record_skip()
    c = health.counters
    assert (c.requests, c.timeouts, c.errors, c.skipped_cycles) == (3, 1, 1, 1)


def test_health_as_dict_is_json_able() -> None:
    health = DeviceHealth("P1", fail_after_cycles=1)
    health.record_failure(0.0, _timeout(), random.Random(3))
    out = json.loads(json.dumps(health.as_dict(now=0.5)))
    assert out["state"] == "comm_fault"
    assert out["last_error"]["kind"] == "timeout"
    assert out["retry_in_s"] > 0


# --------------------------------------------------------------------------- error folding


@dataclass
class FakeExceptionResponse:
    function_code: int
    exception_code: int

    def isError(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("failure", "kind"),
    [
        (TimeoutError(), "timeout"),
        (ModbusIOException("No response received after 0 retries"), "timeout"),
        (ConnectionException("Not connected"), "connection"),
        (ConnectionRefusedError(111, "refused"), "connection"),
        (ModbusIOException("Unable to decode request"), "decode"),
        (CodecError("telemetry: need 11 registers"), "decode"),
        (ValueError("bad count"), "invalid"),
    ],
)
def test_every_failure_folds_into_one_typed_error(failure: BaseException, kind: str) -> None:
    err = to_driver_error("P1", failure)
    assert (err.kind, err.device) == (kind, "P1")


def test_exception_response_names_its_code() -> None:
    err = to_driver_error("P1", FakeExceptionResponse(0x83, 2))
    assert err.kind == "exception_response"
    assert err.exception_code == 2
    assert "ILLEGAL_DATA_ADDRESS (0x02)" in err.message
    assert not err.retryable  # the same request cannot succeed
    assert to_driver_error("P1", FakeExceptionResponse(0x83, 6)).retryable  # busy: may succeed


# --------------------------------------------------------------------------- bus owner policy


@dataclass
class FakeResponse:
    registers: list[int] = field(default_factory=list)
    function_code: int = 3

    def isError(self) -> bool:
        return False


class FakeCtx:
    response_future: asyncio.Future[object] | None = None


class FakeClient:
    """Stands in for a pymodbus async client; records every request as (op, unit, address)."""

    def __init__(self) -> None:
        self.connected = False
        self.calls: list[tuple[str, int, int]] = []
        self.silent: set[int] = set()
        self.failures: dict[int, list[BaseException | FakeExceptionResponse]] = {}
        self.gate: asyncio.Event | None = None  # when set, reads wait for it
        self.entered = asyncio.Event()  # set once a request reached the client
        self.ctx = FakeCtx()
        self.refuse_connects = 0

    async def connect(self) -> bool:
        if self.refuse_connects:
            self.refuse_connects -= 1
            return False
        self.connected = True
        return True

    def close(self) -> None:
        self.connected = False

    def set_max_no_responses(self, _count: int) -> None:
        pass

    async def _answer(self, op: str, unit: int, address: int, count: int) -> object:
        self.calls.append((op, unit, address))
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if unit in self.silent:
            raise TimeoutError
        if self.failures.get(unit):
            failure = self.failures[unit].pop(0)
            if isinstance(failure, BaseException):
                raise failure
            return failure
        return FakeResponse([0] * count)

    async def read_holding_registers(self, address: int, *, count: int, device_id: int) -> object:
        return await self._answer("read", device_id, address, count)

    async def write_registers(self, address: int, values: Sequence[int], *, device_id: int) -> object:
        return await self._answer("write", device_id, address, 0)


class FakeBus(Bus):
    fake: FakeClient  # the client start() made

    def _make_client(self) -> FakeClient:  # type: ignore[override]
        self.fake = FakeClient()
        return self.fake


def _bus(clock: FakeClock, units: int = 2, **bus_kwargs: float) -> FakeBus:
    devices = tuple(DeviceSpec(f"P{u}", u, SIM_V1, timeout_s=0.2, retries=2) for u in range(1, units + 1))
    spec = BusSpec("b0", TcpTransport("127.0.0.1", 1502), devices, **bus_kwargs)  # type: ignore[arg-type]
    return FakeBus(spec, clock=clock, wall_ms=lambda: int(clock.now * 1000), rng=random.Random(5))


async def test_dead_device_goes_comm_fault_is_skipped_in_backoff_and_recovers() -> None:
    clock = FakeClock()
    bus = _bus(clock, fail_after_cycles=2, backoff_base_s=1.0, backoff_max_s=4.0)
    await bus.start()
    try:
        bus.fake.silent.add(2)
        for _ in range(2):
            ok, dead = await bus.poll_cycle()
            assert ok.ok
            assert not dead.ok
            assert not dead.skipped
            assert dead.error is not None
            assert dead.error.kind == "timeout"
        assert bus.health("P2").state == "comm_fault"
        tried_before = bus.fake.calls.count(("read", 2, 100))
        ok, dead = await bus.poll_cycle()
        assert ok.ok
        assert dead.skipped
        assert dead.error is not None
        assert bus.fake.calls.count(("read", 2, 100)) == tried_before
        clock.now = bus.health("P2").next_attempt_at
        bus.fake.silent.clear()
        ok, back = await bus.poll_cycle()
        assert back.ok
        assert bus.health("P2").state == "online"
        assert bus.health("P1").counters.requests == 4  # P1 was polled every cycle
    finally:
        await bus.stop()


async def test_timeouts_are_not_retried_but_transient_errors_are() -> None:
    clock = FakeClock()
    bus = _bus(clock, units=1)
    await bus.start()
    try:
        busy = FakeExceptionResponse(0x83, 6)
        bus.fake.failures[1] = [busy, busy]
        (result,) = await bus.poll_cycle()
        assert result.ok
        assert len(bus.fake.calls) == 3  # two busy replies, then success (retries=2)
        bus.fake.calls.clear()
        bus.fake.silent.add(1)
        (result,) = await bus.poll_cycle()
        assert not result.ok
        assert len(bus.fake.calls) == 1
        bus.fake.silent.clear()
        bus.fake.calls.clear()
        bus.fake.failures[1] = [FakeExceptionResponse(0x83, 1)]
        (result,) = await bus.poll_cycle()
        assert result.error is not None
        assert result.error.exception_code == 1
        assert len(bus.fake.calls) == 1  # illegal function: repeating cannot help
    finally:
        await bus.stop()


async def test_device_refusing_reads_across_holes_falls_back_to_exact_block_reads() -> None:
    bus = _bus(FakeClock(), units=1)
    await bus.start()
    try:
        bus.fake.failures[1] = [FakeExceptionResponse(0x83, 2)]  # illegal data address
        (result,) = await bus.poll_cycle()
        assert result.ok
        assert bus.fake.calls == [("read", 1, 100), ("read", 1, 100), ("read", 1, 124)]
        assert len(bus.plan("P1").requests) == 2
    finally:
        await bus.stop()


async def test_commands_go_ahead_of_queued_polls() -> None:
    bus = _bus(FakeClock(), units=3)
    await bus.start()
    try:
        bus.fake.gate = asyncio.Event()
        cycle = asyncio.create_task(bus.poll_cycle())
        await asyncio.sleep(0)  # let the cycle queue its three jobs
        await bus.fake.entered.wait()  # the owner is inside the first poll, held by the gate
        command = asyncio.create_task(bus.read_registers(3, 0, 1))
        await asyncio.sleep(0)
        bus.fake.gate.set()
        await asyncio.gather(cycle, command)
        assert bus.fake.calls == [
            ("read", 1, 100),
            ("read", 3, 0),
            ("read", 2, 100),
            ("read", 3, 100),
        ]
    finally:
        await bus.stop()


async def test_write_is_not_repeated_once_sent_but_a_refused_connect_is_retried() -> None:
    bus = _bus(FakeClock(), units=1)
    await bus.start()
    try:
        bus.fake.failures[1] = [ModbusIOException("Unable to decode request")]
        with pytest.raises(DriverError) as info:
            await bus.write_registers(1, 116, [1, 1])
        assert info.value.kind == "decode"
        assert bus.fake.calls == [("write", 1, 116)]
        bus.fake.close()
        bus.fake.refuse_connects = 1
        await bus.write_registers(1, 116, [1, 2])
        assert bus.fake.calls[-1] == ("write", 1, 116)
    finally:
        await bus.stop()


async def test_failure_logged_once_at_error_then_debug_then_info_on_recovery() -> None:
    clock = FakeClock()
    bus = _bus(clock, units=1, fail_after_cycles=1, backoff_base_s=1.0)
    await bus.start()
    try:
        bus.fake.silent.add(1)
        with structlog.testing.capture_logs() as logs:
            for _ in range(3):
                clock.now = bus.health("P1").next_attempt_at
                await bus.poll_cycle()
            bus.fake.silent.clear()
            clock.now = bus.health("P1").next_attempt_at
            await bus.poll_cycle()
        device_logs = [e for e in logs if e["event"].startswith("device_")]
        levels = [(e["log_level"], e["event"]) for e in device_logs]
        assert levels == [
            ("error", "device_failed"),
            ("debug", "device_still_failing"),
            ("debug", "device_still_failing"),
            ("info", "device_recovered"),
        ]
        first = device_logs[0]
        assert (first["bus"], first["pile"], first["kind"]) == ("b0", "P1", "timeout")
    finally:
        await bus.stop()


async def test_requests_on_a_stopped_bus_fail_with_a_clear_error() -> None:
    bus = _bus(FakeClock(), units=1)
    with pytest.raises(DriverError, match="not running"):
        await bus.poll_cycle()
    await bus.start()
    with pytest.raises(DriverError, match="no pile 'X9'"):
        bus.health("X9")
    with pytest.raises(DriverError, match=r"outside 0\.\.65535"):
        await bus.read_registers(1, 65535, 2)
    await bus.stop()
    snapshot = json.loads(json.dumps(bus.snapshot()))
    assert snapshot["running"] is False
    assert snapshot["devices"]["P1"]["unit"] == 1
