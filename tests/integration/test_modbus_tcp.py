"""The lean Modbus TCP client through the bus owner: against the simulator, and against a peer that
answers with hand-made frames (late, garbled, from the wrong unit) to check every failure path."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from drivers.bus import Bus, BusSpec, DeviceSpec, TcpTransport
from drivers.errors import DriverError
from drivers.modbus_tcp import ModbusTcpClient
from firmware_sim.config import SimConfig, SimPileSpec
from firmware_sim.runner import Simulation, start_simulation
from protocols.registers import SIM_V1

Answer = Callable[[int, int, int, int], list[bytes]]  # (tid, unit, address, count) -> frames


def frame(tid: int, unit: int, pdu: bytes, protocol: int = 0) -> bytes:
    return struct.pack(">HHHB", tid, protocol, len(pdu) + 1, unit) + pdu


def registers_pdu(values: list[int]) -> bytes:
    return struct.pack(f">BB{len(values)}H", 3, 2 * len(values), *values)


class Peer:
    """A Modbus TCP server that answers read requests with whatever ``answer`` returns."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.connections = 0
        self.server: asyncio.Server | None = None
        self.handlers: list[asyncio.Task[object]] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self.handlers.append(task)
        try:
            while request := await reader.readexactly(12):
                tid, _, _, unit, _, address, count = struct.unpack(">HHHBBHH", request)
                for data in self.answer(tid, unit, address, count):
                    writer.write(data)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])


@pytest.fixture
async def peer_bus() -> AsyncIterator[Callable[[Answer], Awaitable[tuple[Peer, Bus]]]]:
    made: list[tuple[Peer, Bus]] = []

    async def make(answer: Answer) -> tuple[Peer, Bus]:
        peer = Peer(answer)
        peer.server = await asyncio.start_server(peer.handle, "127.0.0.1", 0)
        device = DeviceSpec("X1", 1, SIM_V1, timeout_s=0.3, retries=0)
        bus = Bus(BusSpec("tcp-X1", TcpTransport("127.0.0.1", peer.port), (device,)))
        await bus.start()
        made.append((peer, bus))
        return peer, bus

    yield make
    for peer, bus in made:
        await bus.stop()
        assert peer.server is not None
        peer.server.close()
        await asyncio.wait_for(asyncio.gather(*peer.handlers), 5)  # each ends when the bus hangs up
        await peer.server.wait_closed()


async def test_a_late_reply_to_an_earlier_request_is_ignored(peer_bus) -> None:
    def answer(tid: int, unit: int, address: int, count: int) -> list[bytes]:
        stale = frame(tid - 1, unit, registers_pdu([9999] * count))
        return [stale, frame(tid, unit, registers_pdu(list(range(address, address + count))))]

    _, bus = await peer_bus(answer)
    assert await bus.read_registers(1, 100, 3) == [100, 101, 102]


async def test_a_reply_split_over_many_segments_is_reassembled(peer_bus) -> None:
    def answer(tid: int, unit: int, address: int, count: int) -> list[bytes]:
        data = frame(tid, unit, registers_pdu([7] * count))
        return [data[i : i + 1] for i in range(len(data))]

    _, bus = await peer_bus(answer)
    assert await bus.read_registers(1, 0, 40) == [7] * 40


async def test_an_exception_response_is_an_exception_response_error(peer_bus) -> None:
    _, bus = await peer_bus(lambda tid, unit, a, c: [frame(tid, unit, bytes((0x83, 0x02)))])
    with pytest.raises(DriverError) as info:
        await bus.read_registers(1, 0, 2)
    assert info.value.kind == "exception_response"
    assert info.value.exception_code == 2
    assert "ILLEGAL_DATA_ADDRESS" in info.value.message


@pytest.mark.parametrize(
    ("reply", "problem"),
    [
        (lambda tid, unit, c: frame(tid, unit + 1, registers_pdu([1] * c)), "unit 2"),
        (lambda tid, unit, c: frame(tid, unit, registers_pdu([1] * (c + 1))), "data bytes"),
        (lambda tid, unit, c: frame(tid, unit, bytes((4, 2, 0, 1))), "function 4"),
    ],
)
async def test_a_reply_that_does_not_answer_the_request_is_a_decode_error(peer_bus, reply, problem) -> None:
    _, bus = await peer_bus(lambda tid, unit, a, c: [reply(tid, unit, c)])
    with pytest.raises(DriverError, match=problem) as info:
        await bus.read_registers(1, 0, 2)
    assert info.value.kind == "decode"


async def test_a_garbled_stream_drops_the_connection_and_the_next_request_reconnects(peer_bus) -> None:
    replies = iter([[frame(1, 1, registers_pdu([1]), protocol=7)]])

    def answer(tid: int, unit: int, address: int, count: int) -> list[bytes]:
        return next(replies, [frame(tid, unit, registers_pdu([5] * count))])

    peer, bus = await peer_bus(answer)
    with pytest.raises(DriverError, match="protocol id 7") as info:
        await bus.read_registers(1, 0, 1)
    assert info.value.kind == "decode"
    assert await bus.read_registers(1, 0, 2) == [5, 5]
    assert peer.connections == 2


async def test_a_silent_peer_times_out_and_its_late_answer_is_not_taken_for_the_next(peer_bus) -> None:
    held: list[bytes] = []

    def answer(tid: int, unit: int, address: int, count: int) -> list[bytes]:
        late = held[:]
        held[:] = [frame(tid, unit, registers_pdu([1111] * count))]
        return late + ([frame(tid, unit, registers_pdu([2] * count))] if late else [])

    _, bus = await peer_bus(answer)
    with pytest.raises(DriverError) as info:
        await bus.read_registers(1, 0, 2)
    assert info.value.kind == "timeout"
    assert await bus.read_registers(1, 0, 2) == [2, 2]


async def test_against_the_simulator_reads_writes_and_refused_addresses() -> None:
    config = SimConfig(piles=(SimPileSpec(id="F1", kind="fast", rated_power_W=30000, tcp_port=0),))
    sim: Simulation = await start_simulation(config)
    client = ModbusTcpClient("127.0.0.1", sim.endpoints["F1"].port or 0)
    try:
        assert await client.connect()
        unit = sim.endpoints["F1"].unit
        address = SIM_V1.port_address(1, SIM_V1.control)
        write = await client.write_registers(address, [0, 0, 0, 0], device_id=unit)
        assert not write.isError()
        read = await client.read_holding_registers(address, count=4, device_id=unit)
        assert read.registers == [0, 0, 0, 0]
        refused = await client.read_holding_registers(65000, count=2, device_id=unit)
        assert refused.isError()
        assert refused.exception_code == 2
    finally:
        client.close()
        await sim.stop()


async def test_a_refused_connection_is_reported_not_raised() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    client = ModbusTcpClient("127.0.0.1", port)
    assert not await client.connect()
    assert "ConnectionRefusedError" in client.last_connect_error
    with pytest.raises(ConnectionError):
        await client.read_holding_registers(0, count=1, device_id=1)


async def test_a_dropped_connection_does_not_disturb_the_one_that_replaced_it(peer_bus) -> None:
    peer, _bus = await peer_bus(lambda tid, unit, a, c: [frame(tid, unit, registers_pdu([3] * c))])
    client = ModbusTcpClient("127.0.0.1", peer.port)
    try:
        assert await client.connect()
        client.close()  # its connection_lost runs on a later loop turn...
        assert await client.connect()  # ...after this new connection is made
        for _ in range(3):
            assert (await client.read_holding_registers(0, count=1, device_id=1)).registers == [3]
        assert peer.connections == 2
    finally:
        client.close()


class FunctionPeer(Peer):
    """A peer whose answers also see the request's function code: the reads of functions 1-4 and
    the single writes of functions 5 and 6 share one 12-byte request layout."""

    def __init__(self, answer: Callable[[int, int, int, int, int], list[bytes]]) -> None:
        super().__init__(lambda *_: [])
        self.by_function = answer
        self.requests: list[tuple[int, int, int]] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.append(task)
        try:
            while request := await reader.readexactly(12):
                tid, _, _, unit, function, address, count = struct.unpack(">HHHBBHH", request)
                self.requests.append((function, address, count))
                for data in self.by_function(tid, unit, function, address, count):
                    writer.write(data)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def device_answer(tid: int, unit: int, function: int, address: int, count: int) -> list[bytes]:
    """Input registers count up from the address; coils and discrete inputs alternate 1, 0;
    single writes echo the request (function 5 with the Modbus on/off values only)."""
    if function == 4:
        values = range(address, address + count)
        return [frame(tid, unit, struct.pack(f">BB{count}H", 4, 2 * count, *values))]
    if function in (1, 2):
        bits = [1 - i % 2 for i in range(count)]
        packed = bytes(sum(b << (i % 8) for i, b in enumerate(bits[k : k + 8])) for k in range(0, count, 8))
        return [frame(tid, unit, bytes((function, len(packed))) + packed)]
    if function in (5, 6):
        return [frame(tid, unit, struct.pack(">BHH", function, address, count))]
    return [frame(tid, unit, bytes((function | 0x80, 0x01)))]


@pytest.fixture
async def function_bus() -> AsyncIterator[tuple[FunctionPeer, Bus]]:
    peer = FunctionPeer(device_answer)
    peer.server = await asyncio.start_server(peer.handle, "127.0.0.1", 0)
    device = DeviceSpec("X1", 1, SIM_V1, timeout_s=0.3, retries=0)
    bus = Bus(BusSpec("tcp-X1", TcpTransport("127.0.0.1", peer.port), (device,)))
    await bus.start()
    yield peer, bus
    await bus.stop()
    peer.server.close()
    await asyncio.wait_for(asyncio.gather(*peer.handlers), 5)  # each ends when the bus hangs up
    await peer.server.wait_closed()


async def test_input_registers_coils_and_discrete_inputs_are_read_by_their_function(function_bus) -> None:
    peer, bus = function_bus
    assert await bus.read_registers(1, 30, 3, function=4) == [30, 31, 32]
    assert await bus.read_registers(1, 10, 10, function=1) == [1, 0, 1, 0, 1, 0, 1, 0, 1, 0]
    assert await bus.read_registers(1, 5, 3, function=2) == [1, 0, 1]
    assert [f for f, _, _ in peer.requests] == [4, 1, 2]


async def test_single_register_and_coil_writes_use_functions_6_and_5(function_bus) -> None:
    peer, bus = function_bus
    await bus.write_register(1, 5004, 16000)
    await bus.write_coil(1, 10, True)
    await bus.write_coil(1, 10, False)
    assert peer.requests == [(6, 5004, 16000), (5, 10, 0xFF00), (5, 10, 0)]


async def test_a_single_write_whose_echo_differs_is_a_decode_error() -> None:
    peer = FunctionPeer(lambda tid, unit, f, a, v: [frame(tid, unit, struct.pack(">BHH", f, a, v + 1))])
    peer.server = await asyncio.start_server(peer.handle, "127.0.0.1", 0)
    bus = Bus(BusSpec("tcp-X1", TcpTransport("127.0.0.1", peer.port), (DeviceSpec("X1", 1, SIM_V1),)))
    await bus.start()
    try:
        with pytest.raises(DriverError, match="does not echo the value 7") as info:
            await bus.write_register(1, 100, 7)
        assert info.value.kind == "decode"
    finally:
        await bus.stop()
        peer.server.close()
        await asyncio.wait_for(asyncio.gather(*peer.handlers), 5)
        await peer.server.wait_closed()
