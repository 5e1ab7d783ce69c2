"""Frozen descriptions of buses and the devices on them, validated when built.

A bus is one serial line or one TCP ``host:port``; it carries one or more devices (piles), each
with its Modbus unit id, register map and per-device timing. The gateway builds these from its
config; a bad value fails at construction with every problem named in one :class:`SpecError`.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

from drivers.plan import MODBUS_MAX_READ, PlanError, ReadPlan, ReadRequest, compile_read_plan
from drivers.timing import (
    READ_REQUEST_BYTES,
    bits_per_char,
    plan_cycle_time_s,
    read_response_bytes,
    t35_s,
    transaction_time_s,
)
from protocols.regmodel import BIT_FUNCTIONS, RegisterMap


class SpecError(ValueError):
    """A bus or device description is invalid; the message lists every problem."""


def _raise_if(problems: list[str], what: str) -> None:
    if problems:
        raise SpecError(f"{what}: " + "; ".join(problems))


@dataclass(frozen=True)
class DeviceSpec:
    """One pile on a bus. ``retries`` applies to non-timeout errors only."""

    pile_id: str
    unit: int
    regmap: RegisterMap
    ports: int = 1
    timeout_s: float = 0.5
    retries: int = 1
    max_registers: int = 125
    max_gap: int = 16

    def __post_init__(self) -> None:
        problems = []
        if not self.pile_id:
            problems.append("pile_id is empty")
        if not 1 <= self.unit <= 255:
            problems.append(f"unit={self.unit} outside 1..255")
        if not 1 <= self.ports <= self.regmap.max_ports:
            problems.append(f"ports={self.ports} outside 1..{self.regmap.max_ports}")
        if not self.timeout_s > 0:
            problems.append(f"timeout_s={self.timeout_s} must be > 0")
        if self.retries < 0:
            problems.append(f"retries={self.retries} must be >= 0")
        if not 1 <= self.max_registers <= MODBUS_MAX_READ:
            problems.append(f"max_registers={self.max_registers} outside 1..{MODBUS_MAX_READ}")
        if self.max_gap < 0:
            problems.append(f"max_gap={self.max_gap} must be >= 0")
        if not problems:
            try:
                self.read_plan()
            except PlanError as exc:
                problems.append(str(exc))
        _raise_if(problems, f"device {self.pile_id!r}")

    def read_plan(self) -> ReadPlan:
        """The poll-cycle read plan of this device."""
        return compile_read_plan(
            self.regmap, self.ports, max_registers=self.max_registers, max_gap=self.max_gap
        )


def _endpoint_problems(host: str, port: int) -> list[str]:
    problems = []
    if not host:
        problems.append("host is empty")
    if not 1 <= port <= 65535:
        problems.append(f"port={port} outside 1..65535")
    return problems


@dataclass(frozen=True)
class TcpTransport:
    """Modbus TCP to ``host:port``."""

    host: str
    port: int

    def __post_init__(self) -> None:
        _raise_if(_endpoint_problems(self.host, self.port), "tcp transport")

    def describe(self) -> dict[str, object]:
        return {"kind": "tcp", "host": self.host, "port": self.port}


@dataclass(frozen=True)
class RtuTcpTransport:
    """Modbus RTU frames over a TCP socket to ``host:port``: an RS-485 to Ethernet converter.

    A shared line like :class:`SerialTransport` (several units, one request at a time), but the
    converter keeps the inter-frame silence on its serial side, so the bus owner does not wait t3.5.
    """

    host: str
    port: int

    def __post_init__(self) -> None:
        _raise_if(_endpoint_problems(self.host, self.port), "rtu-tcp transport")

    def describe(self) -> dict[str, object]:
        return {"kind": "rtu-tcp", "host": self.host, "port": self.port}


@dataclass(frozen=True)
class SerialTransport:
    """Modbus RTU on a serial device (RS-485 adapter, or a pty in tests)."""

    device: str
    baudrate: int = 19200
    bytesize: int = 8
    parity: str = "N"
    stopbits: int = 1

    def __post_init__(self) -> None:
        problems = []
        if not self.device:
            problems.append("device is empty")
        if self.baudrate <= 0:
            problems.append(f"baudrate={self.baudrate} must be > 0")
        if self.bytesize not in (7, 8):
            problems.append(f"bytesize={self.bytesize} must be 7 or 8")
        if self.parity not in ("N", "E", "O"):
            problems.append(f"parity={self.parity!r} must be 'N', 'E' or 'O'")
        if self.stopbits not in (1, 2):
            problems.append(f"stopbits={self.stopbits} must be 1 or 2")
        _raise_if(problems, f"serial transport {self.device!r}")

    @property
    def bits_per_char(self) -> int:
        return bits_per_char(self.bytesize, self.parity, self.stopbits)

    def plan_time_s(self, plan: ReadPlan) -> float:
        """Wire time of one poll following ``plan`` on this line, t3.5 silences included."""
        bits = self.bits_per_char
        return plan_cycle_time_s(plan, self.baudrate, bits, t35_s(self.baudrate, bits))

    def describe(self) -> dict[str, object]:
        return {
            "kind": "serial",
            "device": self.device,
            "line": f"{self.baudrate} {self.bytesize}{self.parity}{self.stopbits}",
        }


Transport = TcpTransport | RtuTcpTransport | SerialTransport


@dataclass(frozen=True)
class BusSpec:
    """A bus and its devices. ``turnaround_s`` is extra silence between RTU transactions."""

    name: str
    transport: Transport
    devices: tuple[DeviceSpec, ...]
    fail_after_cycles: int = 2
    backoff_max_s: float = 30.0
    turnaround_s: float = 0.0  # RTU inter-request gap beyond 3.5 chars
    backoff_base_s: float = 1.0  # first delay of the comm_fault backoff, doubled per failure

    def __post_init__(self) -> None:
        problems = []
        if not self.devices:
            problems.append("no devices")
        problems += _duplicates("pile_id", [d.pile_id for d in self.devices])
        problems += _duplicates("unit", [d.unit for d in self.devices])
        if self.fail_after_cycles < 1:
            problems.append(f"fail_after_cycles={self.fail_after_cycles} must be >= 1")
        if not 0 < self.backoff_base_s <= self.backoff_max_s:
            problems.append(
                f"need 0 < backoff_base_s ({self.backoff_base_s}) <= backoff_max_s ({self.backoff_max_s})"
            )
        if self.turnaround_s < 0:
            problems.append(f"turnaround_s={self.turnaround_s} must be >= 0")
        if isinstance(self.transport, SerialTransport):
            problems += [f"unit {d.unit} of {d.pile_id} is not an RTU address (1..247)"
                         for d in self.devices if d.unit > 247]  # fmt: skip
            problems += _timeouts_too_short_for_line(self.transport, self.devices)
        _raise_if(problems, f"bus {self.name!r}")


def _timeouts_too_short_for_line(line: SerialTransport, devices: tuple[DeviceSpec, ...]) -> list[str]:
    """A timeout must outlast the device's largest read on the wire, or it can never succeed."""
    bits = line.bits_per_char
    gap_s = t35_s(line.baudrate, bits)
    problems = []
    for d in devices:
        largest = max(d.read_plan().requests, key=_response_bytes)
        wire_s = transaction_time_s(READ_REQUEST_BYTES, _response_bytes(largest), line.baudrate, bits, gap_s)
        if d.timeout_s <= wire_s:
            what = "bit" if largest.function in BIT_FUNCTIONS else "register"
            problems.append(
                f"device {d.pile_id}: timeout_s={d.timeout_s} is not longer than the "
                f"{wire_s:.3f} s a {largest.count}-{what} read takes at {line.baudrate} baud"
            )
    return problems


def _response_bytes(request: ReadRequest) -> int:
    """Bytes of the reply frame: 2 per register, or 1 per 8 bits for coils and discrete inputs."""
    if request.function in BIT_FUNCTIONS:
        return read_response_bytes(0) + math.ceil(request.count / 8)
    return read_response_bytes(request.count)


def _duplicates(what: str, values: list[str] | list[int]) -> list[str]:
    dups = sorted(str(v) for v, n in Counter(values).items() if n > 1)
    return [f"duplicate {what} {', '.join(dups)}"] if dups else []
