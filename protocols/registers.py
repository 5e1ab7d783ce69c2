"""Pile register maps as data, and the pure codec that turns register words into values and back.

A register map describes one pile family: an identity block read once at start-up, and per port a
telemetry block, a writable control block and a read-back block, repeated every ``port_stride``
registers. The simulator serves these registers and the drivers read them, both through
:func:`decode` / :func:`encode`, so a round-trip test keeps the two honest.

All values are holding registers (function codes 3, 6 and 16). A field's engineering value is
``raw * scale``; byte order applies inside each 16-bit register, word order across the two registers
of a 32-bit field.
"""

from __future__ import annotations

import enum
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

FieldType = Literal["u16", "i16", "u32", "i32", "str"]
Order = Literal["big", "little"]

_WIDTH = {"u16": 1, "i16": 1, "u32": 2, "i32": 2}
_RANGE = {
    "u16": (0, 0xFFFF),
    "i16": (-0x8000, 0x7FFF),
    "u32": (0, 0xFFFF_FFFF),
    "i32": (-0x8000_0000, 0x7FFF_FFFF),
}


class CodecError(ValueError):
    """A value or register list does not fit the register map."""


class PortState(enum.IntEnum):
    """Port state register values (the pile's own view of the port)."""

    AVAILABLE = 0  # nothing plugged, ready
    PLUGGED = 1  # vehicle connected, not charging
    CHARGING = 2
    FINISHED = 3  # target reached or stopped; vehicle still connected
    FAULTED = 4
    UNAVAILABLE = 5  # taken out of service


class FaultCode(enum.IntEnum):
    """Fault code register values."""

    NONE = 0
    OVER_TEMPERATURE = 1
    METER_FAULT = 2
    CONTACTOR_FAULT = 3


class Command(enum.IntEnum):
    """Values the gateway writes to the ``command`` control register."""

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
class Field:
    """One value in a block. ``offset`` is relative to the block's base address."""

    name: str
    offset: int
    type: FieldType
    scale: float = 1.0
    unit: str = ""
    length: int = 0  # registers; required for "str", derived otherwise

    @cached_property
    def width(self) -> int:
        return self.length if self.type == "str" else _WIDTH[self.type]


@dataclass(frozen=True)
class Block:
    """A contiguous group of fields. ``base`` is absolute for identity, per-port relative otherwise."""

    name: str
    base: int
    fields: tuple[Field, ...]
    writable: bool = False

    @cached_property
    def size(self) -> int:  # cached: decode asks for it on every poll of every pile
        return max(f.offset + f.width for f in self.fields)

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"{self.name} has no field {name!r}")


@dataclass(frozen=True)
class RegisterMap:
    """A pile family's registers. Port ``p`` (1-based) starts at ``port_base + (p-1)*port_stride``."""

    name: str
    identity: Block
    telemetry: Block
    control: Block
    readback: Block
    port_base: int
    port_stride: int
    sim: Block | None = None  # simulator-only registers, per port like the others
    byte_order: Order = "big"
    word_order: Order = "big"
    max_ports: int = 4
    _blocks: tuple[Block, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        blocks = tuple(b for b in (self.telemetry, self.control, self.readback, self.sim) if b)
        object.__setattr__(self, "_blocks", blocks)

    def port_address(self, port: int, block: Block) -> int:
        """Absolute address of ``block`` for 1-based ``port``."""
        if not 1 <= port <= self.max_ports:
            raise CodecError(f"port {port} outside 1..{self.max_ports} of map {self.name}")
        return self.port_base + (port - 1) * self.port_stride + block.base

    def port_span(self) -> int:
        """Registers from a port's first polled register to its last read-back register."""
        return self.readback.base + self.readback.size - self.telemetry.base


def _word_bytes(word: int, byte_order: Order) -> bytes:
    return word.to_bytes(2, byte_order)


def _decode_field(f: Field, words: Sequence[int], byte_order: Order, word_order: Order) -> object:
    if f.type == "str":
        raw = b"".join(_word_bytes(w, byte_order) for w in words)
        return raw.rstrip(b"\x00 ").decode("ascii", errors="replace")
    ordered = words if word_order == "big" else list(reversed(words))
    raw_bytes = b"".join(_word_bytes(w, byte_order) for w in ordered)
    # bytes are now most-significant first whatever the device's orders were
    value = int.from_bytes(raw_bytes, "big", signed=f.type.startswith("i"))
    if f.scale == 1.0:
        return value
    return round(value * f.scale, 6)


def _encode_field(f: Field, value: object, byte_order: Order, word_order: Order) -> list[int]:
    if f.type == "str":
        try:
            data = str(value).encode("ascii")
        except UnicodeEncodeError:
            raise CodecError(f"{f.name}: {value!r} is not ASCII text") from None
        if len(data) > 2 * f.width:
            raise CodecError(f"{f.name}: {value!r} longer than {2 * f.width} characters")
        data = data.ljust(2 * f.width, b"\x00")
        pairs = [data[i : i + 2] for i in range(0, len(data), 2)]
        return [int.from_bytes(p, byte_order) for p in pairs]
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise CodecError(f"{f.name}: expected a number, got {value!r}")
    scaled = value / f.scale
    if not math.isfinite(scaled):
        raise CodecError(f"{f.name}: {value} {f.unit} out of range for {f.type} x{f.scale}")
    raw = round(scaled)
    low, high = _RANGE[f.type]
    if not low <= raw <= high:
        raise CodecError(f"{f.name}: {value} {f.unit} out of range for {f.type} x{f.scale}")
    msb_first = raw.to_bytes(2 * f.width, "big", signed=f.type.startswith("i"))
    words = [int.from_bytes(msb_first[i : i + 2], byte_order) for i in range(0, len(msb_first), 2)]
    return words if word_order == "big" else list(reversed(words))


_STRUCT_CODES = {"u16": "H", "i16": "h", "u32": "I", "i32": "i"}


@dataclass(frozen=True)
class _CompiledBlock:
    """A block of a big-endian map decoded by one ``struct.unpack``: the poll hot path."""

    words: struct.Struct  # the block's registers as bytes
    fields: struct.Struct  # those bytes as the fields' raw values
    names: tuple[str, ...]
    scales: tuple[float, ...]
    strings: tuple[bool, ...]
    regmap: RegisterMap  # kept so the cache key (ids) cannot be reused while cached
    block: Block


_COMPILED: dict[tuple[int, int], _CompiledBlock | None] = {}


def _compile(regmap: RegisterMap, block: Block) -> _CompiledBlock | None:
    if regmap.byte_order != "big" or regmap.word_order != "big":
        return None  # rare vendor orders take the generic path
    layout, position = [">"], 0
    for f in sorted(block.fields, key=lambda f: f.offset):
        if f.offset < position:
            return None  # overlapping fields: generic path
        layout.append(f"{2 * (f.offset - position)}x" if f.offset > position else "")
        layout.append(f"{2 * f.width}s" if f.type == "str" else _STRUCT_CODES[f.type])
        position = f.offset + f.width
    ordered = sorted(block.fields, key=lambda f: f.offset)
    return _CompiledBlock(
        struct.Struct(f">{block.size}H"),
        struct.Struct("".join(layout)),
        tuple(f.name for f in ordered),
        tuple(f.scale for f in ordered),
        tuple(f.type == "str" for f in ordered),
        regmap,
        block,
    )


def _compiled(regmap: RegisterMap, block: Block) -> _CompiledBlock | None:
    key = (id(regmap), id(block))
    try:
        return _COMPILED[key]
    except KeyError:
        compiled = _COMPILED[key] = _compile(regmap, block)
        return compiled


def decode(regmap: RegisterMap, block: Block, registers: Sequence[int]) -> dict[str, object]:
    """Values of every field of ``block`` from ``registers``, which start at the block's base."""
    if len(registers) < block.size:
        raise CodecError(f"{block.name}: need {block.size} registers, got {len(registers)}")
    compiled = _compiled(regmap, block)
    if compiled is None:
        bad = next((r for r in registers[: block.size] if not 0 <= r <= 0xFFFF), None)
        if bad is not None:
            raise CodecError(f"{block.name}: register value {bad} out of 0..65535")
        return {
            f.name: _decode_field(
                f, registers[f.offset : f.offset + f.width], regmap.byte_order, regmap.word_order
            )
            for f in block.fields
        }
    try:
        raw = compiled.fields.unpack(compiled.words.pack(*registers[: block.size]))
    except struct.error as exc:
        raise CodecError(f"{block.name}: register value out of 0..65535 ({exc})") from None
    out: dict[str, object] = {}
    for name, value, scale, is_str in zip(
        compiled.names, raw, compiled.scales, compiled.strings, strict=True
    ):
        if is_str:
            out[name] = value.rstrip(b"\x00 ").decode("ascii", errors="replace")
        else:
            out[name] = value if scale == 1.0 else round(value * scale, 6)
    return out


def encode(regmap: RegisterMap, block: Block, values: Mapping[str, object]) -> list[int]:
    """Registers of ``block`` (from its base) holding ``values``; fields not given are 0."""
    unknown = set(values) - {f.name for f in block.fields}
    if unknown:
        raise CodecError(f"{block.name}: unknown fields {sorted(unknown)}")
    words = [0] * block.size
    for f in block.fields:
        if f.name in values:
            encoded = _encode_field(f, values[f.name], regmap.byte_order, regmap.word_order)
            words[f.offset : f.offset + f.width] = encoded
    return words


def encode_field(regmap: RegisterMap, block: Block, name: str, value: object) -> list[int]:
    """Registers of one field, for a write of just that field at its own address."""
    f = block.field(name)
    return _encode_field(f, value, regmap.byte_order, regmap.word_order)


def pack_u16(words: Sequence[int]) -> bytes:
    """Registers as big-endian bytes (for logging and hex dumps)."""
    return struct.pack(f">{len(words)}H", *words)


SIM_V1 = RegisterMap(
    name="pilegate-sim-v1",
    identity=Block(
        "identity",
        base=0,
        fields=(
            Field("vendor", 0, "str", length=8),
            Field("model", 8, "str", length=8),
            Field("serial", 16, "str", length=8),
            Field("firmware", 24, "str", length=4),
            Field("num_ports", 28, "u16"),
            Field("rated_power_W", 29, "u32", unit="W"),
            Field("max_current_A", 31, "u16", scale=0.1, unit="A"),
            Field("kind", 32, "u16"),  # 0 = AC trickle, 1 = DC fast
        ),
    ),
    port_base=100,
    port_stride=40,
    telemetry=Block(
        "telemetry",
        base=0,
        fields=(
            Field("state", 0, "u16"),
            Field("voltage_V", 1, "u16", scale=0.1, unit="V"),
            Field("current_A", 2, "i32", scale=0.01, unit="A"),
            Field("power_W", 4, "i32", unit="W"),
            Field("energy_Wh", 6, "u32", unit="Wh"),
            Field("temperature_C", 8, "i16", scale=0.1, unit="°C"),
            Field("fault", 9, "u16"),
            Field("heartbeat", 10, "u16"),
        ),
    ),
    control=Block(
        "control",
        base=16,
        writable=True,
        fields=(
            Field("command", 0, "u16"),
            Field("command_seq", 1, "u16"),
            Field("target_energy_Wh", 2, "u32", unit="Wh"),  # energy to deliver; 0 = no target
            Field("power_limit_W", 4, "u32", unit="W"),  # 0 = rated power
        ),
    ),
    readback=Block(
        "readback",
        base=24,
        fields=(
            Field("ack_seq", 0, "u16"),
            Field("ack_status", 1, "u16"),
            Field("active_target_Wh", 2, "u32", unit="Wh"),
            Field("active_limit_W", 4, "u32", unit="W"),
        ),
    ),
    sim=Block(
        "sim",
        base=36,
        writable=True,
        fields=(Field("sim_fault", 0, "u16"),),  # write a SimFault value; SILENT is device-wide
    ),
)

MAPS: dict[str, RegisterMap] = {SIM_V1.name: SIM_V1}


def get_map(name: str) -> RegisterMap:
    """The register map called ``name``."""
    try:
        return MAPS[name]
    except KeyError:
        raise CodecError(f"unknown register map {name!r}; known: {sorted(MAPS)}") from None
