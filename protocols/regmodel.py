"""The register map model: what one pile family's Modbus registers are and how pilegate reads them.

A :class:`RegisterMap` is built from a map file by :mod:`protocols.maploader`; nothing here parses
files or does I/O. Registers are :class:`Field` objects grouped in :class:`Block` objects, one block
per map section and function code: the identity block(s) at absolute addresses, and per port the
``telemetry`` and ``readback`` blocks (polled every cycle), the ``control`` block (written by
commands) and the ``sim`` block (served by the simulator only). Port ``p`` (1-based) sits at
``port_bases[p - 1]``; a block's ``base`` and a field's ``offset`` are relative to it.

Function codes: 3 holding registers, 4 input registers, 1 coils, 2 discrete inputs. A field's
engineering value is ``raw * scale``; ``values``/``bits`` tables translate a state or fault
register's device codes into pilegate's :class:`PortState` and :class:`FaultCode`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

FieldType = Literal["u16", "i16", "u32", "i32", "u64", "i64", "float32", "float64", "str", "bool"]
Order = Literal["big", "little"]
Section = Literal["identity", "telemetry", "readback", "control", "sim"]

WIDTH = {"u16": 1, "i16": 1, "u32": 2, "i32": 2, "u64": 4, "i64": 4, "float32": 2, "float64": 4, "bool": 1}
INT_RANGE = {
    "u16": (0, 0xFFFF),
    "i16": (-0x8000, 0x7FFF),
    "u32": (0, 0xFFFF_FFFF),
    "i32": (-0x8000_0000, 0x7FFF_FFFF),
    "u64": (0, 2**64 - 1),
    "i64": (-(2**63), 2**63 - 1),
    "bool": (0, 1),
}
FLOAT_TYPES = ("float32", "float64")
REGISTER_FUNCTIONS = (3, 4)  # 16-bit registers: holding, input
BIT_FUNCTIONS = (1, 2)  # single bits: coils, discrete inputs
WRITABLE_FUNCTIONS = (1, 3)  # coils and holding registers can be written
POLLED_SECTIONS: tuple[Section, ...] = ("telemetry", "readback")
PORT_SECTIONS: tuple[Section, ...] = ("telemetry", "readback", "control", "sim")


class CodecError(ValueError):
    """A value or register list does not fit the register map."""


class PortState(enum.IntEnum):
    """A port's state in pilegate's terms (what a map's state table translates device codes into)."""

    AVAILABLE = 0  # nothing plugged, ready
    PLUGGED = 1  # vehicle connected, not charging
    CHARGING = 2
    FINISHED = 3  # target reached or stopped; vehicle still connected
    FAULTED = 4
    UNAVAILABLE = 5  # taken out of service


class FaultCode(enum.IntEnum):
    """pilegate's fault codes (published by lower-case name; ``code_N`` for an unnamed one)."""

    NONE = 0
    OVER_TEMPERATURE = 1
    METER_FAULT = 2
    CONTACTOR_FAULT = 3
    COMMUNICATION = 4  # the pile's internal link (meter, RFID, backend) failed
    RESIDUAL_CURRENT = 5  # RCD / DC leakage tripped
    OVERCURRENT = 6  # the vehicle draws more than allowed
    UNDER_VOLTAGE = 7
    OVER_VOLTAGE = 8
    GROUND_FAULT = 9  # protective earth missing or bad
    VEHICLE = 10  # IEC 61851 state E/F: vehicle or pilot error
    CABLE = 11  # proximity/cable fault, lock failure
    INTERNAL = 12  # self-test or firmware error inside the pile
    OTHER = 13  # a fault the map does not name


class Command(enum.IntEnum):
    """Values the gateway writes to the ``command`` control register (sequenced recipe)."""

    NONE = 0
    START = 1  # start charging; target_energy_Wh and power_limit_W apply
    STOP = 2
    SET_LIMIT = 3  # change power_limit_W of a running session


class CommandStatus(enum.IntEnum):
    """Read-back ``ack_status``: how the pile took the command whose seq is in ``ack_seq``."""

    NONE = 0
    OK = 1
    REJECTED_STATE = 2  # e.g. start while already charging, stop while idle
    REJECTED_FAULT = 3  # the port is faulted
    REJECTED_PARAM = 4  # target or limit out of range


class SimFault(enum.IntEnum):
    """Values of the simulator-only fault-injection register (``sim_fault``)."""

    CLEAR = 0
    OVER_TEMPERATURE = 1
    METER_FAULT = 2
    CONTACTOR_FAULT = 3
    SILENT = 4  # the whole device stops answering


@dataclass(frozen=True)
class StateRule:
    """A second register that overrides the state: when ``(value & mask) == equals`` (and the
    state is one of ``only_from``, if given) the port's state is ``state``."""

    register: str
    equals: int
    state: int
    mask: int = 0  # 0: the whole value
    only_from: tuple[int, ...] = ()


@dataclass(frozen=True)
class Field:
    """One register (or run of registers, or bit). ``offset`` is relative to the block's base.

    ``values`` maps device codes (ints, or text for string registers) to a canonical code;
    ``bits`` maps a bit number to a fault code (the lowest set bit wins); ``documented`` lists the
    codes the vendor document gives for the register. Orders of ``None`` follow the map's.
    """

    name: str
    offset: int
    type: FieldType
    scale: float = 1.0
    unit: str = ""
    length: int = 0  # registers; required for "str", derived otherwise
    byte_order: Order | None = None
    word_order: Order | None = None
    values: tuple[tuple[int | str, int], ...] = ()
    bits: tuple[tuple[int, int], ...] = ()
    documented: tuple[int | str, ...] = ()
    unconfirmed: bool = False
    note: str = ""
    mask: int = 0  # state/fault code = (raw & mask) >> shift; 0: the whole value
    shift: int = 0
    write_function: int = 0  # 6 or 16 for a holding register; 0: 16 (coils: 5)
    overrides: tuple[StateRule, ...] = ()  # state only
    energy_kind: Literal["meter", "session"] = "meter"  # energy_Wh only; session: resets per session

    @cached_property
    def width(self) -> int:
        """Registers (or bits, for coils and discrete inputs) the field occupies."""
        return self.length if self.type == "str" else WIDTH[self.type]

    @cached_property
    def table(self) -> dict[int | str, int]:
        return dict(self.values)

    def device_code(self, canonical: int) -> int | str:
        """The first device code the ``values`` table translates to ``canonical`` (for encoders)."""
        for code, value in self.values:
            if value == canonical:
                return code
        raise CodecError(f"{self.name}: no device code for {canonical} in its values table")


@dataclass(frozen=True)
class Block:
    """Fields of one map section read or written with one function code.

    ``base`` is absolute for identity blocks and relative to the port's base otherwise.
    """

    name: str
    base: int
    fields: tuple[Field, ...]
    writable: bool = False
    function: int = 3
    section: str = ""  # default: the name

    @cached_property
    def size(self) -> int:  # cached: decode asks for it on every poll of every pile
        return max(f.offset + f.width for f in self.fields)

    @cached_property
    def kind(self) -> str:
        return self.section or self.name

    @property
    def bits(self) -> bool:
        """Coils or discrete inputs: one bit per address instead of a 16-bit register."""
        return self.function in BIT_FUNCTIONS

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"{self.name} has no field {name!r}")


@dataclass(frozen=True)
class SequencedRecipe:
    """Commands as one write of a command code, a sequence number, an energy target and a power
    limit; confirmed when the pile's read-back ``ack_sequence`` shows the sequence number."""

    command: str
    sequence: str
    target_energy: str
    power_limit: str
    ack_sequence: str
    ack_status: str
    codes: tuple[tuple[str, int], ...]  # op -> command code
    statuses: tuple[tuple[int, str], ...]  # ack status code -> ok | rejected_state | ...
    style: Literal["sequenced"] = "sequenced"


@dataclass(frozen=True)
class CurrentRecipe:
    """Commands as a current limit in A (plus an optional enable register or coil), confirmed by
    reading back ``confirm`` (the limit register itself or an active-limit register)."""

    current: str
    min_current_A: float
    max_current_A: float
    step_A: float
    confirm: str
    enable: str | None = None
    enable_on: int = 1
    enable_off: int = 0
    stop: Literal["current_zero", "disable"] = "current_zero"
    confirm_tolerance_A: float = 0.0
    enable_readable: bool = True  # False: a stop by disable is confirmed by the write's reply
    refresh_s: float = 0.0  # > 0: rewrite the last current this often (families that forget it)
    max_current: str | None = None  # a polled register (A) capping max_current_A, e.g. a unit's setting
    style: Literal["current"] = "current"


Recipe = SequencedRecipe | CurrentRecipe


@dataclass(frozen=True)
class MapHeader:
    """Where a map comes from: the vendor document (and version) it follows."""

    title: str = ""
    vendor: str = ""
    document: str = ""
    document_version: str = ""
    source: str = ""  # the file it was loaded from


@dataclass(frozen=True)
class RegisterMap:
    """A pile family's registers, addresses per port, and command recipe."""

    name: str
    identity_blocks: tuple[Block, ...]
    port_blocks: tuple[Block, ...]
    port_bases: tuple[int, ...]
    port_stride: int = 0  # 0: explicit per-port bases
    byte_order: Order = "big"
    word_order: Order = "big"
    max_read: int = 125
    nominal_voltage_V: float = 230.0
    phases: int = 1
    recipe: Recipe | None = None
    match: tuple[tuple[str, tuple[int | str | tuple[int, int], ...]], ...] = ()
    header: MapHeader = field(default_factory=MapHeader)
    identity_unit: int = 0  # the unit id answering identity reads; 0: the pile's own

    @property
    def max_ports(self) -> int:
        return len(self.port_bases)

    @property
    def port_base(self) -> int:
        return self.port_bases[0]

    def blocks_of(self, section: str) -> tuple[Block, ...]:
        """Per-port blocks of ``section`` (one per function code it uses)."""
        return tuple(b for b in self.port_blocks if b.kind == section)

    def _single(self, section: str) -> Block | None:
        blocks = self.identity_blocks if section == "identity" else self.blocks_of(section)
        if len(blocks) > 1:
            raise CodecError(f"map {self.name}: {section} uses {len(blocks)} function codes")
        return blocks[0] if blocks else None

    def _required(self, section: str) -> Block:
        block = self._single(section)
        if block is None:
            raise CodecError(f"map {self.name} has no {section} registers")
        return block

    @property
    def identity(self) -> Block:
        return self._required("identity")

    @property
    def telemetry(self) -> Block:
        return self._required("telemetry")

    @property
    def control(self) -> Block:
        return self._required("control")

    @property
    def readback(self) -> Block:
        return self._required("readback")

    @property
    def sim(self) -> Block | None:
        return self._single("sim")

    @cached_property
    def fields_by_name(self) -> dict[str, tuple[Block, Field]]:
        """Every per-port field by name, with its block."""
        return {f.name: (b, f) for b in self.port_blocks for f in b.fields}

    def port_address(self, port: int, block: Block) -> int:
        """Absolute address of ``block`` for 1-based ``port``."""
        if not 1 <= port <= self.max_ports:
            raise CodecError(f"port {port} outside 1..{self.max_ports} of map {self.name}")
        return self.port_bases[port - 1] + block.base

    def field_address(self, port: int, name: str) -> int:
        """Absolute address of the per-port field ``name`` for 1-based ``port``."""
        block, f = self.fields_by_name[name]
        return self.port_address(port, block) + f.offset

    def port_span(self) -> int:
        """Registers from a port's first polled register to its last polled register."""
        polled = [b for b in self.port_blocks if b.kind in POLLED_SECTIONS]
        return max(b.base + b.size for b in polled) - min(b.base for b in polled)
