"""pymodbus glue: serves :class:`~firmware_sim.device.SimPile` registers over Modbus TCP and RTU.

Built on the pymodbus 3.16 server API: each pile is a ``SimDevice`` with the four Modbus tables
(coils, discrete inputs, holding and input registers) laid out from its register map, whose
``action`` hook sees every request with the addressed table's live register list (reads re-render
the addressed ports, writes run commands). A table the map does not use answers ILLEGAL_ADDRESS.
The server's datastore is a :class:`GatedCore`, which makes a SILENT pile and, on a
serial line, an unknown unit id give no answer at all (the client times out), as on a real bus.
On TCP a request for another unit id gets exception 0x0B (gateway target failed to respond).

An RTU bus is a socat pty pair created here: the server opens one end, the gateway the other. An
RTU bus with a ``tcp_port`` is served instead as Modbus RTU frames on a TCP socket, as an RS-485 to
Ethernet converter in front of the line presents it: several units, and an unknown unit is silent.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import structlog
from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from pymodbus.simulator.simcore import SimCore

from .config import SimSerialBusSpec
from .device import BIT_TABLES, TABLE_OF_FUNCTION, ReadOnlyError, Segment, SimPile, WriteRejectedError

log = structlog.get_logger(__name__)

SOCAT = "/usr/bin/socat" if os.path.exists("/usr/bin/socat") else "socat"
SOCAT_START_TIMEOUT_S = 5.0
SOCAT_STOP_TIMEOUT_S = 3.0
SERIAL_OPEN_TIMEOUT_S = 3.0

Now = Callable[[], float]  # simulated seconds


class SimServerError(RuntimeError):
    """A Modbus server or its serial line could not be started."""


class GatedCore(SimCore):
    """The server datastore, with the silence rules of a real pile in front of it, and its
    largest read (the map's ``max_read``: a longer read gets ILLEGAL_VALUE)."""

    def __init__(self, piles: dict[int, SimPile], devices: list[SimDevice], *, serial: bool) -> None:
        super().__init__(devices)
        self.piles = piles
        self.serial = serial

    def _admit(self, device_id: int) -> ExcCodes | None:
        pile = self.piles.get(device_id)
        if pile is None and self.serial:
            raise NoSuchIdException(f"no unit {device_id} on this line")  # nobody answers
        if pile is None:
            return ExcCodes.GATEWAY_NO_RESPONSE
        if pile.silent:
            raise NoSuchIdException(f"pile {pile.spec.id} is silent")
        return None

    async def async_getValues(
        self, device_id: int, func_code: int, address: int, count: int = 1
    ) -> list[int] | list[bool] | ExcCodes:
        refused = self._admit(device_id)
        if refused is not None:
            return refused
        if func_code in (3, 4) and count > self.piles[device_id].regmap.max_read:
            # the family's device refuses reads beyond its max_read (quantity first, as Modbus says)
            return ExcCodes.ILLEGAL_VALUE
        return await super().async_getValues(device_id, func_code, address, count)

    async def async_setValues(
        self, device_id: int, func_code: int, address: int, values: list[int] | list[bool]
    ) -> ExcCodes | None:
        refused = self._admit(device_id)
        if refused is not None:
            return refused
        return await super().async_setValues(device_id, func_code, address, values)


async def _pile_action(
    pile: SimPile,
    now_s: Now,
    function_code: int,
    start_address: int,
    address: int,
    count: int,
    registers: list[int],
    set_values: list[int] | list[bool] | None,
) -> ExcCodes | None:
    """pymodbus SimDevice action: runs before the registers are read or written.

    For coils and discrete inputs ``registers`` holds 16 bits per word, ``start_address`` counts
    words, ``address`` is the bit and ``count`` the words the request touches.
    """
    table = TABLE_OF_FUNCTION[function_code]
    bits = table in BIT_TABLES
    if bits and not pile.serves(table, address):
        return ExcCodes.ILLEGAL_ADDRESS
    try:
        if set_values is None:
            pile.render(registers, start_address, address, count * 16 if bits else count, now_s(), table)
        else:
            values = [int(v) for v in set_values]
            pile.apply_write(registers, start_address, address, values, now_s(), table)
            _store(set_values, values, bits)
    except ReadOnlyError as exc:
        log.warning("write refused", pile=pile.spec.id, address=address, reason=str(exc))
        return ExcCodes.ILLEGAL_ADDRESS
    except WriteRejectedError as exc:
        log.warning("write rejected", pile=pile.spec.id, address=address, reason=str(exc))
        return ExcCodes.ILLEGAL_VALUE
    return None


def _store(set_values: list[int] | list[bool], values: list[int], bits: bool) -> None:
    """Hand the (possibly edited) written values back to pymodbus in its own element type."""
    if bits:
        cast(list[bool], set_values)[:] = [bool(v) for v in values]
    else:
        cast(list[int], set_values)[:] = values


def _table_data(segments: list[Segment], table: int) -> list[SimData]:
    """pymodbus blocks of one table; an unused table gets one block that the action refuses."""
    bits = table in BIT_TABLES
    if not segments:
        if bits:
            return [SimData(0, values=[False], datatype=DataType.BITS)]
        return [SimData(0, datatype=DataType.INVALID)]
    return [
        SimData(
            segment.address,
            values=[bool(v) for v in segment.values] if bits else list(segment.values),
            datatype=DataType.BITS if bits else DataType.REGISTERS,
            readonly=not segment.writable,
        )
        for segment in segments
    ]


def sim_devices(pile: SimPile, now_s: Now) -> list[SimDevice]:
    """The pymodbus devices serving ``pile``: one under its unit id (one block list per table),
    and one serving only its identity when the map says identity answers on another unit."""
    coils, discrete, holding, inputs = (_table_data(pile.segments(t), t) for t in (1, 2, 3, 4))
    action = functools.partial(_pile_action, pile, now_s)
    devices = [SimDevice(pile.spec.unit, simdata=(coils, discrete, holding, inputs), action=action)]
    if pile.identity_unit is not None:
        c, d, h, i = (_table_data(pile.identity_segments(t), t) for t in (1, 2, 3, 4))
        devices.append(SimDevice(pile.identity_unit, simdata=(c, d, h, i), action=_identity_action))
    return devices


async def _identity_action(
    function_code: int,
    _start_address: int,
    _address: int,
    _count: int,
    _registers: list[int],
    set_values: list[int] | list[bool] | None,
) -> ExcCodes | None:
    """The identity unit's registers are static; its (bit) tables refuse writes."""
    return ExcCodes.ILLEGAL_ADDRESS if set_values is not None else None


def _gate(
    server: ModbusTcpServer | ModbusSerialServer,
    piles: list[SimPile],
    devices: list[SimDevice],
    *,
    line: bool = False,
) -> None:
    """Put a :class:`GatedCore` in place of the datastore pymodbus built from ``devices``;
    ``line``: an RS-485 line (behind a converter) where an unknown unit is silent."""
    by_unit = {p.spec.unit: p for p in piles}
    by_unit |= {p.identity_unit: p for p in piles if p.identity_unit is not None}
    serial = line or isinstance(server, ModbusSerialServer)
    server.context = GatedCore(by_unit, devices, serial=serial)


@dataclass
class TcpPileServer:
    """One pile on its own Modbus TCP port."""

    pile: SimPile
    server: ModbusTcpServer
    port: int

    async def stop(self) -> None:
        await self.server.shutdown()  # type: ignore[no-untyped-call]


async def start_tcp_pile(pile: SimPile, host: str, port: int, now_s: Now) -> TcpPileServer:
    """Listen for ``pile`` on ``host:port`` (0 = ephemeral); the bound port is in the result."""
    devices = sim_devices(pile, now_s)
    server = ModbusTcpServer(devices, address=(host, port), ignore_missing_devices=True)
    _gate(server, [pile], devices)
    try:
        await server.serve_forever(background=True)
    except RuntimeError as exc:
        raise SimServerError(f"pile {pile.spec.id}: cannot listen on {host}:{port}") from exc
    listener = server.transport
    bound = listener.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    return TcpPileServer(pile, server, int(bound))


@dataclass
class RtuTcpBusServer:
    """An RS-485 line behind an RS-485 to Ethernet converter: RTU frames on one TCP port."""

    spec: SimSerialBusSpec
    piles: list[SimPile]
    server: ModbusTcpServer
    port: int

    async def stop(self) -> None:
        await self.server.shutdown()  # type: ignore[no-untyped-call]


async def start_rtu_tcp_bus(
    spec: SimSerialBusSpec, piles: list[SimPile], host: str, port: int, now_s: Now
) -> RtuTcpBusServer:
    """Serve every pile of the bus, by unit id, as Modbus RTU over TCP on ``host:port`` (0 = ephemeral)."""
    devices = [device for p in piles for device in sim_devices(p, now_s)]
    server = ModbusTcpServer(
        devices, framer=FramerType.RTU, address=(host, port), ignore_missing_devices=True
    )
    _gate(server, piles, devices, line=True)
    try:
        await server.serve_forever(background=True)
    except RuntimeError as exc:
        raise SimServerError(f"rtu-tcp bus {spec.name}: cannot listen on {host}:{port}") from exc
    bound = int(server.transport.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
    log.info("rtu-tcp bus serving", bus=spec.name, port=bound, units=[p.spec.unit for p in piles])
    return RtuTcpBusServer(spec, piles, server, bound)


@dataclass
class SerialBusServer:
    """A socat pty pair and the RTU server on its simulator end."""

    spec: SimSerialBusSpec
    piles: list[SimPile]
    gateway_path: str
    sim_path: str
    socat: asyncio.subprocess.Process
    tmp_dir: str
    server: ModbusSerialServer | None = None
    _stopped: bool = field(default=False, repr=False)

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self.server is not None:
            await self.server.shutdown()  # type: ignore[no-untyped-call]
        await _stop_process(self.socat)
        _remove_bus_files(self.gateway_path, self.tmp_dir)
        log.info("serial bus stopped", bus=self.spec.name)


@dataclass(frozen=True)
class _BusFiles:
    tmp_dir: str
    sim_path: str
    gateway_path: str
    log_path: str

    def links_exist(self) -> bool:
        return os.path.lexists(self.sim_path) and os.path.lexists(self.gateway_path)

    def socat_output(self) -> str:
        text = Path(self.log_path).read_text(errors="replace").strip()
        return text[-500:] or "no output"


def _prepare_bus_files(spec: SimSerialBusSpec) -> _BusFiles:
    tmp_dir = tempfile.mkdtemp(prefix=f"pilegate-sim-{spec.name}-")
    gateway_path = spec.gateway_path or os.path.join(tmp_dir, "gateway")
    if os.path.islink(gateway_path):
        os.unlink(gateway_path)  # a stale link from an earlier run
    log_path = os.path.join(tmp_dir, "socat.log")
    return _BusFiles(tmp_dir, os.path.join(tmp_dir, "sim"), gateway_path, log_path)


def _remove_bus_files(gateway_path: str, tmp_dir: str) -> None:
    with contextlib.suppress(OSError):
        if os.path.islink(gateway_path):
            os.unlink(gateway_path)
    shutil.rmtree(tmp_dir, ignore_errors=True)


async def _stop_process(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            await asyncio.wait_for(process.wait(), SOCAT_STOP_TIMEOUT_S)
        except TimeoutError:
            process.kill()
            await process.wait()


async def _wait_for_links(process: asyncio.subprocess.Process, files: _BusFiles) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SOCAT_START_TIMEOUT_S
    while not files.links_exist():
        if process.returncode is not None or loop.time() > deadline:
            raise SimServerError(f"socat did not create the pty pair: {files.socat_output()}")
        await asyncio.sleep(0.01)


async def _spawn_socat(files: _BusFiles) -> asyncio.subprocess.Process:
    argv = [
        SOCAT, "-d", "-d",
        f"pty,raw,echo=0,link={files.sim_path}",
        f"pty,raw,echo=0,link={files.gateway_path}",
    ]  # fmt: skip
    fd = os.open(files.log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        return await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=fd, stderr=fd
        )
    finally:
        os.close(fd)


async def _start_socat(spec: SimSerialBusSpec) -> SerialBusServer:
    files = _prepare_bus_files(spec)
    process = await _spawn_socat(files)
    bus = SerialBusServer(spec, [], files.gateway_path, files.sim_path, process, files.tmp_dir)
    try:
        await _wait_for_links(process, files)
    except BaseException:
        await bus.stop()
        raise
    return bus


async def start_serial_bus(spec: SimSerialBusSpec, piles: list[SimPile], now_s: Now) -> SerialBusServer:
    """Create the pty pair and serve every pile of the bus, by unit id, on its simulator end."""
    bus = await _start_socat(spec)
    bus.piles = piles
    try:
        devices = [device for p in piles for device in sim_devices(p, now_s)]
        bus.server = ModbusSerialServer(
            devices,
            port=bus.sim_path,
            baudrate=spec.baudrate,
            parity=spec.parity,
            stopbits=spec.stopbits,
            bytesize=spec.bytesize,
            timeout=SERIAL_OPEN_TIMEOUT_S,
            ignore_missing_devices=True,
        )
        _gate(bus.server, piles, devices)
        await bus.server.serve_forever(background=True)
    except (RuntimeError, OSError) as exc:
        await bus.stop()
        raise SimServerError(f"serial bus {spec.name}: cannot serve {bus.sim_path}: {exc}") from exc
    log.info(
        "serial bus serving", bus=spec.name, gateway_path=bus.gateway_path, units=[p.spec.unit for p in piles]
    )
    return bus
