"""A lean Modbus TCP client for the bus owner: the functions register maps use, built for 1,000 piles.

pymodbus spends most of a poll's CPU on generic machinery (a lock, a framer, a PDU decoder
registry, trace and log formatting) around a 12-byte request and a short reply. This client is an
asyncio protocol that packs the request with one ``struct`` call and parses the reply in place.
It speaks the reads of functions 1-4 (coils, discrete inputs, holding and input registers) and the
writes of functions 5, 6 and 16 (one coil, one register, several registers), one request at a
time, as the bus owner only ever has one in flight.

Its interface is the part of pymodbus's client the bus owner uses (``connected``, ``connect()``,
``close()``, ``read_*``, ``write_register(s)``, ``write_coil``, replies with ``registers`` or ``bits``,
``isError()``, ``function_code``, ``exception_code``), so :func:`drivers.errors.to_driver_error`
folds its failures into the same :class:`~drivers.errors.DriverError` kinds:

* an exception response (function code | 0x80) is a reply whose ``isError()`` is true;
* a reply with the wrong unit, function, byte count or protocol id raises :class:`ReplyError`
  (``decode``); one whose transaction id does not match is a late answer to an earlier request
  that timed out: it is dropped and the wait goes on;
* a lost connection fails the request in flight at once with ``ConnectionError`` (``connection``);
  a garbled stream (a length no Modbus reply has) closes the connection: the next request
  reconnects. Timeouts are the caller's (the bus owner wraps every request in ``asyncio.timeout``).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from pymodbus.exceptions import ModbusIOException

READ_COILS = 0x01
READ_DISCRETE = 0x02
READ_HOLDING = 0x03
READ_INPUT = 0x04
WRITE_COIL = 0x05
WRITE_SINGLE = 0x06
WRITE_MULTIPLE = 0x10
MAX_READ = 125
MAX_READ_BITS = 2000
_REGISTER_READS = (READ_HOLDING, READ_INPUT)
_BIT_READS = (READ_COILS, READ_DISCRETE)
_COIL_ON = 0xFF00
MAX_WRITE = 123
_MBAP = struct.Struct(">HHHB")  # transaction id, protocol id, length, unit
_READ_REQUEST = struct.Struct(">HHHBBHH")
_WRITE_REPLY = struct.Struct(">HH")  # address, quantity (16) or value (5, 6)
_MAX_ADU_LENGTH = 254  # MBAP length field: unit + PDU (at most 253 bytes)
_REGISTERS = {n: struct.Struct(f">{n}H") for n in range(MAX_READ + 1)}


class ReplyError(ModbusIOException):
    """A reply that does not answer the request (wrong unit, function or size)."""


@dataclass(slots=True)
class Reply:
    """One answer: the registers or bits read, or a Modbus exception response (``exception_code``)."""

    function_code: int
    registers: list[int]
    exception_code: int | None = None
    bits: list[bool] | None = None

    def isError(self) -> bool:  # pymodbus's name, which drivers.errors relies on
        return self.exception_code is not None


@dataclass(slots=True)
class _Pending:
    tid: int
    unit: int
    function: int
    future: asyncio.Future[Reply]
    expect_count: int  # registers or bits a read asks for; registers written for function 16
    expect_value: int = 0  # the value a function 5 or 6 reply echoes


class ModbusTcpClient:
    """Modbus TCP to ``host:port``; ``connect()`` before the first request (the bus owner does)."""

    def __init__(self, host: str, port: int = 502) -> None:
        self.host, self.port = host, port
        self._conn: _Connection | None = None
        self._tid = 0
        self.last_connect_error = ""

    # -- the pymodbus-shaped interface -------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._conn is not None and self._conn.is_open

    async def connect(self) -> bool:
        """Open the TCP connection; False when it cannot (refused, unreachable: nothing was sent)."""
        if self.connected:
            return True
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(_Connection, self.host, self.port)
        except OSError as exc:
            self.last_connect_error = f"{type(exc).__name__}: {exc}"
            return False
        self._conn = conn
        return conn.is_open

    def close(self) -> None:
        """Drop the connection; a request in flight fails with ConnectionError."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.abort()

    async def read_holding_registers(self, address: int, *, count: int, device_id: int) -> Reply:
        return await self._read(READ_HOLDING, address, count, device_id, MAX_READ)

    async def read_input_registers(self, address: int, *, count: int, device_id: int) -> Reply:
        return await self._read(READ_INPUT, address, count, device_id, MAX_READ)

    async def read_coils(self, address: int, *, count: int, device_id: int) -> Reply:
        return await self._read(READ_COILS, address, count, device_id, MAX_READ_BITS)

    async def read_discrete_inputs(self, address: int, *, count: int, device_id: int) -> Reply:
        return await self._read(READ_DISCRETE, address, count, device_id, MAX_READ_BITS)

    async def _read(self, function: int, address: int, count: int, device_id: int, most: int) -> Reply:
        if not 1 <= count <= most:
            raise ValueError(f"count {count} outside 1..{most}")
        tid = self._next_tid()
        request = _READ_REQUEST.pack(tid, 0, 6, device_id, function, address, count)
        return await self._open_connection().request(request, tid, device_id, function, count)

    async def write_register(self, address: int, value: int, *, device_id: int) -> Reply:
        return await self._write_single(WRITE_SINGLE, address, value, device_id)

    async def write_coil(self, address: int, value: bool, *, device_id: int) -> Reply:
        return await self._write_single(WRITE_COIL, address, _COIL_ON if value else 0, device_id)

    async def _write_single(self, function: int, address: int, value: int, device_id: int) -> Reply:
        tid = self._next_tid()
        request = _READ_REQUEST.pack(tid, 0, 6, device_id, function, address, value)
        return await self._open_connection().request(request, tid, device_id, function, 1, value)

    async def write_registers(self, address: int, values: Sequence[int], *, device_id: int) -> Reply:
        n = len(values)
        if not 1 <= n <= MAX_WRITE:
            raise ValueError(f"{n} values outside 1..{MAX_WRITE}")
        tid = self._next_tid()
        pdu = struct.pack(f">BHHB{n}H", WRITE_MULTIPLE, address, n, 2 * n, *values)
        request = _MBAP.pack(tid, 0, 1 + len(pdu), device_id) + pdu
        return await self._open_connection().request(request, tid, device_id, WRITE_MULTIPLE, n)

    def _next_tid(self) -> int:
        self._tid = self._tid % 0xFFFF + 1
        return self._tid

    def _open_connection(self) -> _Connection:
        if self._conn is None or not self._conn.is_open:
            raise ConnectionError("not connected")
        return self._conn


class _Connection(asyncio.Protocol):
    """One TCP connection with at most one request in flight; what happens to it stays with it."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._pending: _Pending | None = None
        self._lost = False

    @property
    def is_open(self) -> bool:
        return self._transport is not None and not self._lost

    def abort(self) -> None:
        self._lost = True
        self._fail(ConnectionError("connection closed while awaiting reply"))
        if self._transport is not None:
            self._transport.abort()

    async def request(
        self, request: bytes, tid: int, unit: int, function: int, count: int, value: int = 0
    ) -> Reply:
        if self._transport is None or self._lost:
            raise ConnectionError("not connected")
        if self._pending is not None and not self._pending.future.done():
            raise RuntimeError("a Modbus TCP request is already in flight")
        future = asyncio.get_running_loop().create_future()
        pending = _Pending(tid, unit, function, future, count, value)
        self._pending = pending
        self._transport.write(request)
        try:
            return await pending.future
        finally:
            self._pending = None

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # a stream transport (uvloop's is not a subclass)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._buffer.clear()
        self._fail(ConnectionError(f"connection lost while awaiting reply{f': {exc}' if exc else ''}"))

    def data_received(self, data: bytes) -> None:
        buf = self._buffer
        buf += data
        while len(buf) >= 7:
            tid, protocol, length, unit = _MBAP.unpack_from(buf)
            if protocol != 0 or not 2 <= length <= _MAX_ADU_LENGTH:
                self._fail(ReplyError(f"not a Modbus TCP reply (protocol id {protocol}, length {length})"))
                self.abort()
                return
            if len(buf) < 6 + length:
                return
            pdu = bytes(buf[7 : 6 + length])
            del buf[: 6 + length]
            self._on_reply(tid, unit, pdu)

    # -- replies -----------------------------------------------------------------------------

    def _on_reply(self, tid: int, unit: int, pdu: bytes) -> None:
        pending = self._pending
        if pending is None or pending.future.done() or tid != pending.tid:
            return  # a late reply to a request that timed out: not the answer to this one
        try:
            reply = _parse(pending, unit, pdu)
        except ReplyError as exc:
            pending.future.set_exception(exc)
        else:
            pending.future.set_result(reply)

    def _fail(self, exc: Exception) -> None:
        pending = self._pending
        if pending is not None and not pending.future.done():
            pending.future.set_exception(exc)


def _parse(pending: _Pending, unit: int, pdu: bytes) -> Reply:
    if unit != pending.unit:
        raise ReplyError(f"reply from unit {unit} to a request to unit {pending.unit}")
    function = pdu[0]
    if function == pending.function | 0x80 and len(pdu) == 2:
        return Reply(function, [], exception_code=pdu[1])
    if function != pending.function:
        raise ReplyError(f"reply with function {function} to function {pending.function}")
    if function in _REGISTER_READS:
        return _parse_read(pending, pdu)
    if function in _BIT_READS:
        return _parse_bits(pending, pdu)
    if function in (WRITE_COIL, WRITE_SINGLE):
        if len(pdu) != 5 or _WRITE_REPLY.unpack_from(pdu, 1)[1] != pending.expect_value:
            raise ReplyError(f"write reply {pdu.hex()} does not echo the value {pending.expect_value}")
        return Reply(function, [])
    if len(pdu) != 5 or _WRITE_REPLY.unpack_from(pdu, 1)[1] != pending.expect_count:
        raise ReplyError(f"write reply {pdu.hex()} does not confirm {pending.expect_count} registers")
    return Reply(function, [])


def _parse_read(pending: _Pending, pdu: bytes) -> Reply:
    count = pending.expect_count
    if len(pdu) < 2 or pdu[1] != 2 * count or len(pdu) != 2 + 2 * count:
        raise ReplyError(f"read reply of {len(pdu) - 2} data bytes, expected {2 * count}")
    return Reply(pending.function, list(_REGISTERS[count].unpack_from(pdu, 2)))


def _parse_bits(pending: _Pending, pdu: bytes) -> Reply:
    """Coils or discrete inputs: ``count`` bits, least significant bit of the first byte first."""
    count, size = pending.expect_count, (pending.expect_count + 7) // 8
    if len(pdu) < 2 or pdu[1] != size or len(pdu) != 2 + size:
        raise ReplyError(f"bit read reply of {len(pdu) - 2} data bytes, expected {size}")
    bits = [bool(pdu[2 + i // 8] >> (i % 8) & 1) for i in range(count)]
    return Reply(pending.function, [], bits=bits)
