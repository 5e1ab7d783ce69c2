"""The bus owner: one asyncio task per bus owns its pymodbus client; everyone else queues work.

A bus is a serial line (Modbus RTU, several units), a TCP ``host:port`` (usually one pile), or an
RS-485 to Ethernet converter (Modbus RTU frames over TCP, several units: ``RtuTcpTransport``).
pymodbus clients are not safe to share between tasks, so :class:`Bus` runs one owner task that
takes jobs from a priority queue (commands ahead of polls, FIFO within a priority) and runs them
one at a time on the client. Poll cycles queue one job per device, so a command waits for at most
one device's poll.

Failure policy: each device has its own timeout and retries (retries only for errors other than
timeouts: a silent device is given up on at its first timeout in a cycle). After
``fail_after_cycles`` failed cycles a device is ``comm_fault`` and only tried with capped,
jittered exponential backoff (see :mod:`drivers.health`), so it cannot starve its bus-mates.

Modbus TCP buses use :class:`drivers.modbus_tcp.ModbusTcpClient`, a lean client that answers to
the same calls and fails the request in flight at once when the connection drops. For serial lines
pymodbus is configured not to retry (``retries=0``) and not to reconnect on its own
(``reconnect_delay=0``: its reconnect task would otherwise run behind our back), and its own
response timeout is set well above ours. Timeouts are enforced here with ``asyncio.timeout``;
a lost connection fails the request in flight at once (``trace_connect``) and the next request
reconnects. On TCP (and RTU over TCP), ``fail_after_cycles`` unanswered requests in a row to configured
units (a scan probing empty unit ids does not count) also drop
the connection, so a half-dead peer gets a fresh one. On a serial line the owner keeps the
inter-frame silence (3.5 characters, or 1.75 ms above 19200 baud, plus ``turnaround_s``) before
every request, counted from the last byte of the reply (pymodbus's ``trace_packet`` hook), so the
owner's own work on the reply overlaps the silence; behind a converter the silence is the
converter's business, and only ``turnaround_s`` is kept.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar, cast

import structlog
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException
from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU

from drivers.errors import DriverError, to_driver_error
from drivers.health import DeviceHealth, Transition
from drivers.modbus_tcp import ModbusTcpClient, Reply
from drivers.plan import MODBUS_MAX_BITS, MODBUS_MAX_READ, ReadPlan, compile_read_plan, read_cap
from drivers.specs import BusSpec, DeviceSpec, RtuTcpTransport, SerialTransport, TcpTransport
from drivers.timing import bits_per_char, t35_s
from pilegate.tasks import cancel_and_wait
from protocols.registers import CodecError, decode

__all__ = [
    "Bus",
    "BusSpec",
    "ConnectError",
    "DeviceSpec",
    "PollResult",
    "RtuTcpTransport",
    "SerialTransport",
    "TcpTransport",
]

log = structlog.get_logger(__name__)

T = TypeVar("T")
Client = AsyncModbusTcpClient | AsyncModbusSerialClient | ModbusTcpClient
Response = ModbusPDU | Reply
Call = Callable[[Client], Awaitable[Response]]

COMMAND_PRIORITY = 0
POLL_PRIORITY = 1
MODBUS_MAX_WRITE = 123  # registers per write-multiple-registers request (function 16)
ILLEGAL_DATA_ADDRESS = 0x02
_READS = {  # function code -> (pymodbus client method, reply attribute)
    1: ("read_coils", "bits"),
    2: ("read_discrete_inputs", "bits"),
    3: ("read_holding_registers", "registers"),
    4: ("read_input_registers", "registers"),
}
NEVER_TIMEOUT_MARGIN_S = 1.0  # pymodbus's own timeout sits this far beyond ours


class ConnectError(DriverError):
    """The bus could not be opened, so the request was never sent (safe to retry a write)."""


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class PollResult:
    """One device's outcome of one poll cycle. ``skipped``: not tried, the device is backing off."""

    pile_id: str
    ok: bool
    ts_ms: int  # wall clock ms when the (last) response arrived
    ports: dict[int, dict[str, object]]
    latency_s: float
    error: DriverError | None  # on skipped results: the error that put the device in backoff
    skipped: bool = False


@dataclass(slots=True)
class _Job:
    run: Callable[[], Awaitable[object]]
    future: asyncio.Future[object]


@dataclass
class _Device:
    spec: DeviceSpec
    plan: ReadPlan
    health: DeviceHealth
    identity: dict[str, object] = field(default_factory=dict)


class Bus:
    """Owner of one bus: runs every request to the bus's devices from a single task."""

    def __init__(
        self,
        spec: BusSpec,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = _wall_ms,
        rng: random.Random | None = None,
    ) -> None:
        self.spec = spec
        self._clock = clock
        self._wall_ms = wall_ms
        self._rng = rng or random.Random()
        self._devices = {d.pile_id: self._make_device(d) for d in spec.devices}
        self._order = tuple(self._devices.values())
        self._by_unit = {d.spec.unit: d for d in self._order}
        self._queue: asyncio.PriorityQueue[tuple[int, int, _Job]] = asyncio.PriorityQueue()
        self._seq = itertools.count()
        self._task: asyncio.Task[None] | None = None
        self._current: _Job | None = None
        self._client: Client | None = None
        self._in_flight = False
        self._unanswered = 0  # requests in a row with no reply at all (TCP reconnect rule)
        self._line_free_at = 0.0  # time.monotonic() from which the next RTU frame may start
        self._last_rx_at = 0.0  # time.monotonic() when bytes last arrived from the line
        self._gap_s = self._frame_gap_s(spec)
        self._log = log.bind(bus=spec.name)

    def _make_device(self, d: DeviceSpec) -> _Device:
        plan = compile_read_plan(d.regmap, d.ports, max_registers=d.max_registers, max_gap=d.max_gap)
        health = DeviceHealth(
            d.pile_id,
            fail_after_cycles=self.spec.fail_after_cycles,
            backoff_base_s=self.spec.backoff_base_s,
            backoff_max_s=self.spec.backoff_max_s,
        )
        return _Device(d, plan, health)

    @staticmethod
    def _frame_gap_s(spec: BusSpec) -> float:
        t = spec.transport
        if isinstance(t, RtuTcpTransport):
            return spec.turnaround_s  # the converter keeps t3.5 on its serial side
        if not isinstance(t, SerialTransport):
            return 0.0
        return t35_s(t.baudrate, bits_per_char(t.bytesize, t.parity, t.stopbits)) + spec.turnaround_s

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Create the client and start the owner task (the first request connects)."""
        if self._task is not None:
            return
        self._client = self._make_client()
        self._task = asyncio.create_task(self._own(), name=f"bus-owner {self.spec.name}")

    async def stop(self) -> None:
        """Cancel the owner task, fail queued work with a connection error, close the client."""
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait([task], what=f"bus {self.spec.name}")
        self._fail_pending()
        if self._client is not None:
            self._client.close()
            self._client = None

    def _make_client(self) -> Client:
        t = self.spec.transport
        # our asyncio.timeout always fires first; pymodbus's own timeout is only a backstop
        timeout_s = 2 * max(d.timeout_s for d in self.spec.devices) + NEVER_TIMEOUT_MARGIN_S
        common: dict[str, Any] = {
            "name": self.spec.name,
            "timeout": timeout_s,
            "retries": 0,
            "reconnect_delay": 0,
            "trace_connect": self._on_connection_change,
            "trace_packet": self._on_packet,
        }
        client: Client
        if isinstance(t, TcpTransport):
            return ModbusTcpClient(t.host, t.port)
        if isinstance(t, RtuTcpTransport):
            client = AsyncModbusTcpClient(t.host, port=t.port, framer=FramerType.RTU, **common)
        else:
            client = AsyncModbusSerialClient(
                t.device,
                baudrate=t.baudrate,
                bytesize=t.bytesize,
                parity=t.parity,
                stopbits=t.stopbits,
                **common,
            )
        client.set_max_no_responses(2**30)  # never let pymodbus drop the connection itself
        return client

    def _on_packet(self, sending: bool, data: bytes) -> bytes:
        """pymodbus hook: notes when the reply's bytes arrive, for the inter-frame silence."""
        if not sending:
            self._last_rx_at = time.monotonic()
        return data

    def _line_quiet_since(self, sent_at: float) -> float:
        """When the line last carried a byte: the reply's last chunk, or now if none came."""
        return self._last_rx_at if self._last_rx_at >= sent_at else time.monotonic()

    def _on_connection_change(self, connected: bool) -> None:
        """pymodbus hook: a connection lost mid-request fails that request now, not at timeout."""
        if connected or not self._in_flight or isinstance(self._client, ModbusTcpClient | None):
            return
        pending = getattr(self._client.ctx, "response_future", None)
        if isinstance(pending, asyncio.Future) and not pending.done():
            pending.set_exception(ConnectionException("connection lost while awaiting reply"))

    # ------------------------------------------------------------------ the owner task

    async def _own(self) -> None:
        while True:
            _, _, job = await self._queue.get()
            if job.future.done():  # the caller gave up while the job was queued
                continue
            self._current = job
            try:
                result = await job.run()
            except Exception as exc:  # delivered to the caller, who decides
                if not job.future.done():
                    job.future.set_exception(exc)
            else:
                if not job.future.done():
                    job.future.set_result(result)
            self._current = None

    def _fail_pending(self) -> None:
        jobs = [self._current] if self._current else []
        self._current = None
        while not self._queue.empty():
            jobs.append(self._queue.get_nowait()[2])
        for job in jobs:
            if not job.future.done():
                job.future.set_exception(DriverError("connection", self.spec.name, "bus stopped"))

    async def _submit(self, priority: int, run: Callable[[], Awaitable[T]]) -> T:
        future = self._enqueue(priority, run)
        return cast(T, await future)

    def _enqueue(self, priority: int, run: Callable[[], Awaitable[object]]) -> asyncio.Future[object]:
        if self._task is None:
            raise DriverError("invalid", self.spec.name, "bus is not running (call start())")
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((priority, next(self._seq), _Job(run, future)))
        return future

    # ------------------------------------------------------------------ public API

    async def poll_cycle(self) -> list[PollResult]:
        """Poll every device once (poll priority); one result per device, in device order."""
        futures = [self._enqueue(POLL_PRIORITY, partial(self._poll_device, d)) for d in self._order]
        if len(futures) == 1:
            return [cast(PollResult, await futures[0])]
        return cast(list[PollResult], await asyncio.gather(*futures))

    async def read_identity(self, pile_id: str) -> dict[str, object]:
        """Decoded identity registers of ``pile_id`` (command priority); empty if the map has none."""
        dev = self._device(pile_id)
        regmap = dev.spec.regmap
        unit = regmap.identity_unit or dev.spec.unit  # some families answer identity on a station unit
        identity: dict[str, object] = {}
        for block in regmap.identity_blocks:
            read = partial(self._read_span, unit, block.base, block.size, block.function)
            words = await self._submit(COMMAND_PRIORITY, read)
            try:
                identity.update(decode(regmap, block, words))
            except CodecError as exc:
                raise to_driver_error(pile_id, exc) from exc
        dev.identity = identity
        return dict(identity)

    async def read_registers(self, unit: int, address: int, count: int, function: int = 3) -> list[int]:
        """Raw registers (or 0/1 bits for functions 1 and 2) at command priority, split to the
        device's request size. ``function``: 3 holding, 4 input, 1 coils, 2 discrete inputs."""
        self._check_span(unit, address, count)
        if function not in _READS:
            raise DriverError("invalid", self._label(unit), f"function {function} is not a read (1-4)")
        return await self._submit(COMMAND_PRIORITY, partial(self._read_span, unit, address, count, function))

    async def write_register(self, unit: int, address: int, value: int) -> None:
        """Write one holding register with function 6 (command priority); never retried once sent.
        For devices that refuse function 16 on single registers."""
        self._check_span(unit, address, 1)
        if not (isinstance(value, int) and 0 <= value <= 0xFFFF):
            raise DriverError("invalid", self._label(unit), f"not a 16-bit register value: {value!r}")
        call: Call = lambda c: c.write_register(address, value, device_id=unit)  # noqa: E731
        await self._submit(COMMAND_PRIORITY, partial(self._exchange, unit, call, idempotent=False))

    async def write_coil(self, unit: int, address: int, value: bool) -> None:
        """Write one coil with function 5 (command priority); never retried once sent."""
        self._check_span(unit, address, 1)
        call: Call = lambda c: c.write_coil(address, value, device_id=unit)  # noqa: E731
        await self._submit(COMMAND_PRIORITY, partial(self._exchange, unit, call, idempotent=False))

    async def write_registers(self, unit: int, address: int, values: Sequence[int]) -> None:
        """Write holding registers with function 16 (command priority); never retried once sent."""
        self._check_span(unit, address, len(values))
        if len(values) > MODBUS_MAX_WRITE:
            raise DriverError("invalid", self._label(unit), f"{len(values)} values > 123 per write")
        if bad := [v for v in values if not (isinstance(v, int) and 0 <= v <= 0xFFFF)]:
            raise DriverError("invalid", self._label(unit), f"not 16-bit register values: {bad}")
        words = list(values)
        call: Call = lambda c: c.write_registers(address, words, device_id=unit)  # noqa: E731
        await self._submit(COMMAND_PRIORITY, partial(self._exchange, unit, call, idempotent=False))

    async def probe_registers(
        self, unit: int, address: int, count: int, timeout_s: float, function: int = 3
    ) -> list[int]:
        """Registers (or 0/1 bits for functions 1 and 2) of any unit id, one attempt within
        ``timeout_s``, at poll priority (``pilectl scan``: probes take turns with the polls instead
        of going ahead of them). ``function``: 3 holding, 4 input, 1 coils, 2 discrete inputs."""
        self._check_span(unit, address, count)
        if function not in _READS:
            raise DriverError("invalid", self._label(unit), f"function {function} is not a read (1-4)")
        method, attribute = _READS[function]
        limit = MODBUS_MAX_BITS if attribute == "bits" else MODBUS_MAX_READ
        if count > limit:
            raise DriverError("invalid", self._label(unit), f"{count} {attribute} > {limit} per read")
        call: Call = lambda c: getattr(c, method)(address, count=count, device_id=unit)  # noqa: E731
        response = await self._submit(POLL_PRIORITY, partial(self._exchange_once, unit, call, timeout_s))
        return self._values(response, attribute, unit, address, count)

    def health(self, pile_id: str) -> DeviceHealth:
        """A copy of the device's communication health."""
        return self._device(pile_id).health.copy()

    def snapshot(self) -> dict[str, object]:
        """JSON-able status of the bus and its devices (for the gateway's local control API)."""
        now = self._clock()
        return {
            "bus": self.spec.name,
            "transport": self.spec.transport.describe(),
            "running": self._task is not None,
            "connected": bool(self._client and self._client.connected),
            "queue_depth": self._queue.qsize(),
            "devices": {
                d.spec.pile_id: {
                    "unit": d.spec.unit,
                    "ports": d.spec.ports,
                    "requests_per_cycle": len(d.plan.requests),
                    **d.health.as_dict(now),
                }
                for d in self._order
            },
        }

    def plan(self, pile_id: str) -> ReadPlan:
        """The read plan compiled for ``pile_id`` (for ``pilectl plan``)."""
        return self._device(pile_id).plan

    # ------------------------------------------------------------------ helpers

    def _device(self, pile_id: str) -> _Device:
        try:
            return self._devices[pile_id]
        except KeyError:
            raise DriverError(
                "invalid", self.spec.name, f"no pile {pile_id!r} on bus; has {sorted(self._devices)}"
            ) from None

    def _label(self, unit: int) -> str:
        dev = self._by_unit.get(unit)
        return dev.spec.pile_id if dev else f"{self.spec.name}/unit{unit}"

    def _check_span(self, unit: int, address: int, count: int) -> None:
        problems = []
        if not 1 <= unit <= 255:
            problems.append(f"unit {unit} outside 1..255")
        if count < 1:
            problems.append(f"count {count} < 1")
        if address < 0 or address + count > 0x10000:
            problems.append(f"registers {address}..{address + count - 1} outside 0..65535")
        if problems:
            raise DriverError("invalid", self._label(unit), "; ".join(problems))

    # ------------------------------------------------------------------ owner-side work

    async def _poll_device(self, dev: _Device) -> PollResult:
        start = self._clock()
        health = dev.health
        if not health.due(start):
            health.record_skip()
            return PollResult(dev.spec.pile_id, False, self._wall_ms(), {}, 0.0, health.last_error, True)
        try:
            unit = dev.spec.unit
            responses = [await self._read(unit, r.address, r.count, r.function) for r in dev.plan.requests]
            ts_ms = self._wall_ms()
            ports = dev.plan.decode(responses)
        except (DriverError, CodecError) as exc:
            err = to_driver_error(dev.spec.pile_id, exc)
            if self._fall_back_to_exact_reads(dev, err):
                return await self._poll_device(dev)
            return self._cycle_failed(dev, err, start)
        latency_s = self._clock() - start
        if health.record_success(self._clock(), ts_ms, latency_s) is Transition.RECOVERED:
            self._log.info("device_recovered", pile=dev.spec.pile_id, state=health.state)
        return PollResult(dev.spec.pile_id, True, ts_ms, ports, latency_s, None)

    def _fall_back_to_exact_reads(self, dev: _Device, err: DriverError) -> bool:
        """A device that refuses reads through unmapped registers gets a plan without holes."""
        plan = dev.plan
        if err.exception_code != ILLEGAL_DATA_ADDRESS or plan.max_gap == 0:
            return False
        if not any(plan.wasted(i) for i in range(len(plan.requests))):
            return False
        spec = dev.spec
        dev.plan = compile_read_plan(spec.regmap, spec.ports, max_registers=spec.max_registers, max_gap=0)
        self._log.warning(
            "device_refuses_reads_across_holes",
            pile=spec.pile_id,
            requests_per_cycle=len(dev.plan.requests),
            hint="serve unmapped registers in the port stride, or set max_gap=0 for this device",
        )
        return True

    def _cycle_failed(self, dev: _Device, err: DriverError, start: float) -> PollResult:
        now = self._clock()
        health = dev.health
        pile = dev.spec.pile_id
        if health.record_failure(now, err, self._rng) is Transition.FAILED:
            self._log.error("device_failed", pile=pile, kind=err.kind, error=err.message, state=health.state)
        else:
            self._log.debug(
                "device_still_failing",
                pile=pile,
                kind=err.kind,
                state=health.state,
                consecutive_failures=health.consecutive_failures,
                retry_in_s=round(health.next_attempt_at - now, 3),
            )
        return PollResult(pile, False, self._wall_ms(), {}, now - start, err)

    async def _read_span(self, unit: int, address: int, count: int, function: int = 3) -> list[int]:
        dev = self._by_unit.get(unit)
        cap = read_cap(dev.spec.regmap, function, dev.spec.max_registers) if dev else MODBUS_MAX_READ
        words: list[int] = []
        for offset in range(0, count, cap):
            words += await self._read(unit, address + offset, min(cap, count - offset), function)
        return words

    async def _read(self, unit: int, address: int, count: int, function: int = 3) -> list[int]:
        """One read of ``count`` registers, or bits as 0/1 for coils and discrete inputs."""
        method, attribute = _READS[function]
        call: Call = lambda c: getattr(c, method)(address, count=count, device_id=unit)  # noqa: E731
        response = await self._exchange(unit, call)
        return self._values(response, attribute, unit, address, count)

    def _values(self, response: object, attribute: str, unit: int, address: int, count: int) -> list[int]:
        """The registers of a read reply, or its bits as 0/1; a reply of another size is a decode error."""
        values: list[int] = getattr(response, attribute, [])
        if attribute == "bits":  # replies pad bits to whole bytes
            values = [1 if b else 0 for b in values[:count]]
        if len(values) != count:
            raise DriverError(
                "decode", self._label(unit), f"asked {count} {attribute} at {address}, got {len(values)}"
            )
        return values

    async def _exchange(self, unit: int, call: Call, *, idempotent: bool = True) -> Response:
        """One request with the device's retries for non-timeout errors."""
        dev = self._by_unit.get(unit)
        retries = dev.spec.retries if dev else 1
        timeout_s = dev.spec.timeout_s if dev else DeviceSpec.timeout_s
        attempt = 0
        while True:
            try:
                return await self._exchange_once(unit, call, timeout_s)
            except DriverError as err:
                retry_ok = err.retryable and (idempotent or isinstance(err, ConnectError))
                if attempt >= retries or not retry_ok:
                    raise
                attempt += 1

    async def _exchange_once(self, unit: int, call: Call, timeout_s: float) -> Response:
        client = self._client
        if client is None:
            raise DriverError("connection", self._label(unit), "bus stopped")
        await self._keep_line_silence()
        sent_at = time.monotonic()
        phase = "connection"
        try:
            async with asyncio.timeout(timeout_s):
                if not client.connected:
                    await self._connect(client, unit)
                phase = "reply"
                self._in_flight = True
                response = await call(client)
        except TimeoutError as exc:
            err = DriverError("timeout", self._label(unit), f"no {phase} within {timeout_s:g} s")
            raise self._failed(unit, err) from exc
        except Exception as exc:  # pymodbus, pyserial and OS errors alike
            raise self._failed(unit, to_driver_error(self._label(unit), exc)) from exc
        finally:
            self._in_flight = False
            self._line_free_at = self._line_quiet_since(sent_at) + self._gap_s
        if response.isError():
            raise self._failed(unit, to_driver_error(self._label(unit), response))
        self._account(unit, None)
        return response

    async def _connect(self, client: Client, unit: int) -> None:
        if not await client.connect():
            where = self.spec.transport.describe()
            raise ConnectError("connection", self._label(unit), f"cannot open {where}")

    async def _keep_line_silence(self) -> None:
        if self._gap_s and (wait_s := self._line_free_at - time.monotonic()) > 0:
            await asyncio.sleep(wait_s)

    def _failed(self, unit: int, err: DriverError) -> DriverError:
        self._account(unit, err)
        return err

    def _account(self, unit: int, err: DriverError | None) -> None:
        """Count the request on its device; apply the TCP drop-after-silence rule. A unit no pile
        is configured on (``pilectl scan`` probing empty ids) says nothing about the connection:
        its silence is not counted."""
        dev = self._by_unit.get(unit)
        if dev is not None:
            dev.health.count_request(err)
        if err is None or err.kind == "exception_response":
            self._unanswered = 0
        elif err.kind == "timeout" and dev is not None:
            self._unanswered += 1
            if self._unanswered >= self.spec.fail_after_cycles and self._is_tcp and self._client:
                self._log.debug("dropping_silent_connection", unanswered=self._unanswered)
                self._client.close()
                self._unanswered = 0

    @property
    def _is_tcp(self) -> bool:
        return isinstance(self.spec.transport, TcpTransport | RtuTcpTransport)
