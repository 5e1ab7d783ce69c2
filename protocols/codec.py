"""The pure codec: register words to field values and back, compiled to ``struct`` for the hot path.

Byte order applies inside each 16-bit register, word order across the registers of a wider field
(a 64-bit field in little word order has its four registers reversed); strings are bytes in
register order, byte order applying inside each register. A :class:`Unpacker` decodes any set of
fields at known offsets in one response with one ``struct.pack`` of the words and one
``struct.unpack`` per order group (almost always one group): the read plan compiles one per request.
Coils and discrete inputs (bit blocks) hold one 0/1 value per address and skip ``struct``.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import cast

from protocols.regmodel import FLOAT_TYPES, INT_RANGE, Block, CodecError, Field, Order, RegisterMap

_STRUCT_CODES = {
    "u16": "H",
    "i16": "h",
    "u32": "I",
    "i32": "i",
    "u64": "Q",
    "i64": "q",
    "float32": "f",
    "float64": "d",
    "bool": "H",
}
# (byte order, word order) -> (how to pack the words, how to unpack the field): the four orders
# are the four combinations of a big/little word pack and a big/little field read.
_MODES: dict[tuple[Order, Order], tuple[str, str]] = {
    ("big", "big"): (">", ">"),
    ("little", "little"): (">", "<"),
    ("little", "big"): ("<", ">"),
    ("big", "little"): ("<", "<"),
}

Post = Callable[[object], object] | None


def orders(regmap: RegisterMap, f: Field) -> tuple[Order, Order]:
    """The field's (byte order, word order): its own, else the map's."""
    return (f.byte_order or regmap.byte_order, f.word_order or regmap.word_order)


def _mode(regmap: RegisterMap, f: Field) -> tuple[str, str]:
    byte_order, word_order = orders(regmap, f)
    if f.type == "str":
        return (">" if byte_order == "big" else "<", ">")
    if f.width == 1:
        word_order = byte_order  # one register: only the byte order matters
    return _MODES[(byte_order, word_order)]


def value_of(f: Field, raw: object) -> object:
    """The engineering value of a raw unpacked field (text stripped, scale applied)."""
    if isinstance(raw, bytes):
        return raw.rstrip(b"\x00 ").decode("ascii", errors="replace")
    if f.type == "float32" and isinstance(raw, float):
        raw = float(f"{raw:.7g}")  # the float32's own precision, not its binary expansion
    if f.scale == 1.0:
        return raw
    return round(raw * f.scale, 6)  # type: ignore[operator]


@dataclass(frozen=True)
class _Group:
    pack: struct.Struct  # the response's words as bytes
    unpack: struct.Struct  # those bytes as raw field values
    targets: tuple[object, ...]  # one per field, in unpack order: whatever the caller passed


@dataclass(frozen=True)
class Unpacker:
    """Decodes fixed fields out of a response of ``count`` words (or bits)."""

    count: int
    groups: tuple[_Group, ...]
    bit_targets: tuple[tuple[int, object], ...]  # (offset, target) of bit fields

    def raw(self, words: Sequence[int]) -> Iterable[tuple[object, object]]:
        """(target, raw value) of every field; raises CodecError on a register out of 16 bits."""
        if self.bit_targets:
            return [(t, 1 if words[i] else 0) for i, t in self.bit_targets]
        if len(self.groups) == 1:
            g = self.groups[0]
            return zip(g.targets, g.unpack.unpack_from(_pack(g.pack, words)), strict=True)
        out: list[tuple[object, object]] = []
        for g in self.groups:
            out += zip(g.targets, g.unpack.unpack_from(_pack(g.pack, words)), strict=True)
        return out


def _pack(packer: struct.Struct, words: Sequence[int]) -> bytes:
    try:
        return packer.pack(*words)
    except struct.error as exc:
        raise CodecError(f"register value out of 0..65535 ({exc})") from None


@dataclass
class _Lane:
    mode: tuple[str, str]
    end: int = 0
    members: list[tuple[int, Field, object]] = field(default_factory=list)


def compile_unpacker(
    regmap: RegisterMap, count: int, fields: Sequence[tuple[int, Field, object]], bits: bool = False
) -> Unpacker:
    """An unpacker for ``(offset, field, target)`` triples in a response of ``count`` words."""
    if bits:
        return Unpacker(count, (), tuple((offset, target) for offset, _f, target in fields))
    lanes: list[_Lane] = []
    for offset, f, target in sorted(fields, key=lambda t: t[0]):
        mode = _mode(regmap, f)
        lane = next((ln for ln in lanes if ln.mode == mode and ln.end <= offset), None)
        if lane is None:  # a new order, or a field overlapping the previous one: another struct
            lane = _Lane(mode)
            lanes.append(lane)
        lane.members.append((offset, f, target))
        lane.end = offset + f.width
    return Unpacker(count, tuple(_group(ln.mode, count, ln.members) for ln in lanes), ())


def _group(mode: tuple[str, str], count: int, members: list[tuple[int, Field, object]]) -> _Group:
    layout, position = [mode[1]], 0
    for offset, f, _target in members:
        if offset > position:
            layout.append(f"{2 * (offset - position)}x")
        layout.append(f"{2 * f.width}s" if f.type == "str" else _STRUCT_CODES[f.type])
        position = offset + f.width
    return _Group(
        struct.Struct(f"{mode[0]}{count}H"),
        struct.Struct("".join(layout)),
        tuple(target for _o, _f, target in members),
    )


_COMPILED: dict[tuple[int, int], tuple[RegisterMap, Block, Unpacker]] = {}


def _block_unpacker(regmap: RegisterMap, block: Block) -> Unpacker:
    key = (id(regmap), id(block))
    hit = _COMPILED.get(key)
    if hit is None:  # the map and block are kept in the entry so their ids cannot be reused
        unpacker = compile_unpacker(regmap, block.size, [(f.offset, f, f) for f in block.fields], block.bits)
        hit = _COMPILED[key] = (regmap, block, unpacker)
    return hit[2]


def decode(regmap: RegisterMap, block: Block, registers: Sequence[int]) -> dict[str, object]:
    """Values of every field of ``block`` from ``registers``, which start at the block's base.

    Device codes stay device codes here; tables are applied by :mod:`protocols.canonical`.
    """
    if len(registers) < block.size:
        raise CodecError(f"{block.name}: need {block.size} registers, got {len(registers)}")
    unpacker = _block_unpacker(regmap, block)
    words = registers[: block.size]
    try:
        fields = cast(Iterable[tuple[Field, object]], unpacker.raw(words))
        return {f.name: value_of(f, raw) for f, raw in fields}
    except CodecError as exc:
        raise CodecError(f"{block.name}: {exc}") from None


def decode_field(regmap: RegisterMap, f: Field, words: Sequence[int], bits: bool = False) -> object:
    """The value of one field from its own registers (or bit), e.g. a command's read-back."""
    if len(words) < f.width:
        raise CodecError(f"{f.name}: need {f.width} registers, got {len(words)}")
    ((_target, raw),) = compile_unpacker(regmap, f.width, [(0, f, f)], bits).raw(words[: f.width])
    return value_of(f, raw)


def _encode_text(f: Field, value: object, byte_order: Order) -> list[int]:
    try:
        data = str(value).encode("ascii")
    except UnicodeEncodeError:
        raise CodecError(f"{f.name}: {value!r} is not ASCII text") from None
    if len(data) > 2 * f.width:
        raise CodecError(f"{f.name}: {value!r} longer than {2 * f.width} characters")
    data = data.ljust(2 * f.width, b"\x00")
    return [int.from_bytes(data[i : i + 2], byte_order) for i in range(0, len(data), 2)]


def _msb_first(f: Field, value: object) -> bytes:
    """The raw value of a numeric field as big-endian bytes."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise CodecError(f"{f.name}: expected a number, got {value!r}")
    scaled = value / f.scale
    if not math.isfinite(scaled):
        raise CodecError(f"{f.name}: {value} {f.unit} out of range for {f.type} x{f.scale}")
    if f.type in FLOAT_TYPES:
        try:
            return struct.pack(">f" if f.type == "float32" else ">d", scaled)
        except OverflowError:
            raise CodecError(f"{f.name}: {value} {f.unit} out of range for {f.type}") from None
    raw = value if isinstance(value, int) and f.scale == 1.0 else round(scaled)  # exact beyond 2**53
    low, high = INT_RANGE[f.type]
    if not low <= raw <= high:
        raise CodecError(f"{f.name}: {value} {f.unit} out of range for {f.type} x{f.scale}")
    return raw.to_bytes(2 * f.width, "big", signed=f.type.startswith("i"))


def encode_value(f: Field, value: object, byte_order: Order, word_order: Order) -> list[int]:
    """The registers (or bits) of one field holding ``value``."""
    if f.type == "str":
        return _encode_text(f, value, byte_order)
    msb_first = _msb_first(f, value)
    if f.type == "bool":
        return [int.from_bytes(msb_first, "big")]
    words = [int.from_bytes(msb_first[i : i + 2], byte_order) for i in range(0, len(msb_first), 2)]
    return words if word_order == "big" else list(reversed(words))


def encode(regmap: RegisterMap, block: Block, values: Mapping[str, object]) -> list[int]:
    """Registers of ``block`` (from its base) holding ``values``; fields not given are 0."""
    unknown = set(values) - {f.name for f in block.fields}
    if unknown:
        raise CodecError(f"{block.name}: unknown fields {sorted(unknown)}")
    words = [0] * block.size
    for f in block.fields:
        if f.name in values:
            encoded = encode_value(f, values[f.name], *orders(regmap, f))
            words[f.offset : f.offset + f.width] = encoded
    return words


def encode_field(regmap: RegisterMap, block: Block, name: str, value: object) -> list[int]:
    """Registers of one field, for a write of just that field at its own address."""
    f = block.field(name)
    return encode_value(f, value, *orders(regmap, f))


def pack_u16(words: Sequence[int]) -> bytes:
    """Registers as big-endian bytes (for logging and hex dumps)."""
    return struct.pack(f">{len(words)}H", *words)
