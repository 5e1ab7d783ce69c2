"""Register codec properties: encode and decode are inverse for every field type, scale and byte/word
order, on the shipped map and on generated maps, and the orders mean what they say (a byte swap
inside each register, the register order of a 32-bit field)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from protocols.registers import (
    MAPS,
    SIM_V1,
    Block,
    CodecError,
    Field,
    FieldType,
    Order,
    RegisterMap,
    decode,
    encode,
    encode_field,
)

ORDERS: list[tuple[Order, Order]] = [
    ("big", "big"),
    ("big", "little"),
    ("little", "big"),
    ("little", "little"),
]
RANGES = {
    "u16": (0, 0xFFFF),
    "i16": (-0x8000, 0x7FFF),
    "u32": (0, 0xFFFF_FFFF),
    "i32": (-0x8000_0000, 0x7FFF_FFFF),
}
NUMERIC: tuple[FieldType, ...] = ("u16", "i16", "u32", "i32")
SCALES = (1.0, 0.1, 0.01, 0.001)
SHIPPED = [
    (regmap, block)
    for regmap in MAPS.values()
    for block in (*regmap.identity_blocks, *regmap.port_blocks)
    # the types and orders this file models; tests/unit/test_codec_types.py covers the others
    if not block.bits
    and all(f.type in (*NUMERIC, "str") and f.byte_order is f.word_order is None for f in block.fields)
]
FAST = settings(max_examples=30, deadline=None)


def in_orders(regmap: RegisterMap) -> dict[tuple[Order, Order], RegisterMap]:
    """The map in each byte/word order (built once: the codec caches per map object)."""
    return {(b, w): dataclasses.replace(regmap, byte_order=b, word_order=w) for b, w in ORDERS}


SHIPPED_IN_ORDERS = {regmap.name: in_orders(regmap) for regmap in MAPS.values()}


def scaled(raw: int, scale: float) -> object:
    """The engineering value the codec gives for a raw register value."""
    return raw if scale == 1.0 else round(raw * scale, 6)


def text_for(width: int) -> st.SearchStrategy[str]:
    """ASCII text that fits ``width`` registers and survives the codec's NUL/space padding."""
    return st.text(st.characters(min_codepoint=1, max_codepoint=127), max_size=2 * width).filter(
        lambda s: not s.endswith((" ", "\x00"))
    )


def field_value(f: Field) -> st.SearchStrategy[object]:
    """Any value the field can hold exactly (numbers as raw * scale, boundaries included)."""
    if f.type == "str":
        return text_for(f.width)
    low, high = RANGES[f.type]
    raws = st.one_of(
        st.sampled_from([low, low + 1, -1 if low else 1, 0, high - 1, high]), st.integers(low, high)
    )
    return raws.filter(lambda r: low <= r <= high).map(lambda raw: scaled(raw, f.scale))


def block_values(block: Block) -> st.SearchStrategy[dict[str, object]]:
    return st.fixed_dictionaries({f.name: field_value(f) for f in block.fields})


@st.composite
def block_registers(draw: st.DrawFn, block: Block, byte_order: Order) -> list[int]:
    """Registers of a block: any bit pattern for numbers, padded ASCII for strings, 0 in gaps."""
    words = [0] * block.size
    for f in block.fields:
        if f.type == "str":
            data = draw(text_for(f.width)).encode("ascii").ljust(2 * f.width, b"\x00")
            chunk = [int.from_bytes(data[i : i + 2], byte_order) for i in range(0, len(data), 2)]
        else:
            chunk = draw(st.lists(st.integers(0, 0xFFFF), min_size=f.width, max_size=f.width))
        words[f.offset : f.offset + f.width] = chunk
    return words


@st.composite
def synthetic_blocks(draw: st.DrawFn) -> Block:
    """A block of 1-8 fields of every type and scale, packed in offset order with optional gaps,
    listed in any order."""
    specs = draw(
        st.lists(
            st.tuples(
                st.sampled_from((*NUMERIC, "str")),
                st.sampled_from(SCALES),
                st.integers(1, 6),  # string registers
                st.integers(0, 2),  # gap before the field
            ),
            min_size=1,
            max_size=8,
        )
    )
    fields, offset = [], 0
    for i, (kind, scale, length, gap) in enumerate(specs):
        offset += gap
        if kind == "str":
            f = Field(f"f{i}", offset, "str", length=length)
        else:
            f = Field(f"f{i}", offset, kind, scale=scale)
        fields.append(f)
        offset += f.width
    return Block("synthetic", base=draw(st.integers(0, 50)), fields=tuple(draw(st.permutations(fields))))


def synthetic_map(block: Block, byte_order: Order, word_order: Order) -> RegisterMap:
    return RegisterMap(
        "synthetic",
        identity_blocks=(block,),
        port_blocks=(block,),
        port_bases=(100,),
        byte_order=byte_order,
        word_order=word_order,
    )


def reorder(block: Block, big_words: Sequence[int], byte_order: Order, word_order: Order) -> list[int]:
    """What a device with these orders stores, from the big/big registers: bytes swapped inside
    every register for little byte order, the two registers of a 32-bit number swapped for little
    word order (strings are a byte sequence and keep their register order)."""
    words = list(big_words)
    if byte_order == "little":
        words = [((w & 0xFF) << 8) | (w >> 8) for w in words]
    if word_order == "little":
        for f in block.fields:
            if f.type != "str" and f.width == 2:
                words[f.offset], words[f.offset + 1] = words[f.offset + 1], words[f.offset]
    return words


def assert_round_trips(regmap: RegisterMap, block: Block, values: Mapping[str, object]) -> None:
    words = encode(regmap, block, values)
    assert len(words) == block.size
    assert all(0 <= w <= 0xFFFF for w in words)
    assert decode(regmap, block, words) == values


# ---- the shipped map --------------------------------------------------------------------------


@pytest.mark.parametrize(("regmap", "block"), SHIPPED, ids=lambda x: getattr(x, "name", None))
@FAST
@given(data=st.data())
def test_shipped_values_round_trip_through_registers_in_every_order(regmap, block, data):
    values = data.draw(block_values(block))
    for ordered in SHIPPED_IN_ORDERS[regmap.name].values():
        assert_round_trips(ordered, getattr(ordered, block.name), values)


@pytest.mark.parametrize(("regmap", "block"), SHIPPED, ids=lambda x: getattr(x, "name", None))
@FAST
@given(data=st.data())
def test_shipped_registers_round_trip_through_values_in_every_order(regmap, block, data):
    for (byte_order, _), ordered in SHIPPED_IN_ORDERS[regmap.name].items():
        words = data.draw(block_registers(block, byte_order))
        ordered_block = getattr(ordered, block.name)
        assert encode(ordered, ordered_block, decode(ordered, ordered_block, words)) == words


@pytest.mark.parametrize(("byte_order", "word_order"), ORDERS)
def test_every_shipped_field_holds_its_type_boundaries_and_refuses_one_past(byte_order, word_order):
    """Numbers: the smallest and largest raw value, and one beyond; text: the longest that fits."""
    for shipped_map, shipped_block in SHIPPED:
        ordered = SHIPPED_IN_ORDERS[shipped_map.name][(byte_order, word_order)]
        block = getattr(ordered, shipped_block.name)
        for f in block.fields:
            if f.type == "str":
                longest = "x" * (2 * f.width)
                assert decode(ordered, block, encode(ordered, block, {f.name: longest}))[f.name] == longest
                with pytest.raises(CodecError, match=f.name):
                    encode_field(ordered, block, f.name, longest + "x")
                continue
            low, high = RANGES[f.type]
            for raw in (low, high):
                value = scaled(raw, f.scale)
                assert decode(ordered, block, encode(ordered, block, {f.name: value}))[f.name] == value
            for raw in (low - 1, high + 1):
                with pytest.raises(CodecError, match=f"{f.name}.*out of range"):
                    encode_field(ordered, block, f.name, scaled(raw, f.scale))


# ---- generated maps ---------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(block=synthetic_blocks(), data=st.data())
def test_generated_maps_round_trip_in_every_order_and_the_orders_mean_what_they_say(block, data):
    values = data.draw(block_values(block))
    big_words = encode(synthetic_map(block, "big", "big"), block, values)
    for byte_order, word_order in ORDERS:
        regmap = synthetic_map(block, byte_order, word_order)
        words = reorder(block, big_words, byte_order, word_order)
        assert encode(regmap, block, values) == words
        assert decode(regmap, block, words) == values


@settings(max_examples=60, deadline=None)
@given(block=synthetic_blocks(), orders=st.sampled_from(ORDERS), data=st.data())
def test_generated_maps_registers_round_trip_through_values(block, orders, data):
    regmap = synthetic_map(block, *orders)
    words = data.draw(block_registers(block, orders[0]))
    assert encode(regmap, block, decode(regmap, block, words)) == words


@FAST
@given(
    kind=st.sampled_from(NUMERIC),
    scale=st.sampled_from(SCALES[1:]),
    orders=st.sampled_from(ORDERS),
    position=st.floats(0, 1),
)
def test_a_scaled_value_comes_back_within_half_a_step(kind, scale, orders, position):
    block = Block("b", 0, (Field("x", 0, kind, scale=scale),))
    regmap = synthetic_map(block, *orders)
    low, high = RANGES[kind]
    value = (low + (high - low) * position) * scale  # anywhere in the field's range
    back = decode(regmap, block, encode(regmap, block, {"x": value}))["x"]
    assert isinstance(back, float | int)
    assert math.isclose(back, value, abs_tol=scale / 2 + 1e-6, rel_tol=0)


# ---- rejections -------------------------------------------------------------------------------

ANY_VALUE = st.one_of(
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(st.characters(max_codepoint=127), max_size=20),
    st.booleans(),
    st.none(),
)
SHIPPED_FIELDS = [(regmap, block, f) for regmap, block in SHIPPED for f in block.fields]


@FAST
@given(target=st.sampled_from(SHIPPED_FIELDS), orders=st.sampled_from(ORDERS), value=ANY_VALUE)
def test_encode_takes_what_fits_and_refuses_the_rest_with_codec_error(target, orders, value):
    shipped_map, block, f = target
    regmap = SHIPPED_IN_ORDERS[shipped_map.name][orders]
    if f.type == "str":
        fits = len(str(value)) <= 2 * f.width  # ASCII input: one byte a character
    else:
        low, high = RANGES[f.type]
        fits = isinstance(value, int | float) and not isinstance(value, bool)
        fits = fits and math.isfinite(value / f.scale) and low <= round(value / f.scale) <= high
    if not fits:
        with pytest.raises(CodecError, match=f.name):
            encode_field(regmap, getattr(regmap, block.name), f.name, value)
        return
    words = encode_field(regmap, getattr(regmap, block.name), f.name, value)
    assert len(words) == f.width
    assert all(0 <= w <= 0xFFFF for w in words)


@pytest.mark.parametrize(
    ("field_name", "value"),
    [("voltage_V", math.nan), ("voltage_V", math.inf), ("voltage_V", 1e308), ("vendor", "é")],
)
def test_encode_refuses_nan_infinite_huge_and_non_ascii_values_with_codec_error(field_name, value):
    block = SIM_V1.identity if field_name == "vendor" else SIM_V1.telemetry
    with pytest.raises(CodecError, match=field_name):
        encode_field(SIM_V1, block, field_name, value)


@pytest.mark.parametrize(("byte_order", "word_order"), ORDERS)
@FAST
@given(bad=st.one_of(st.integers(max_value=-1), st.integers(min_value=0x10000)), position=st.integers(0, 10))
@example(bad=0x10000, position=0)
def test_decode_refuses_registers_outside_16_bits_with_codec_error(byte_order, word_order, bad, position):
    regmap = SHIPPED_IN_ORDERS[SIM_V1.name][(byte_order, word_order)]
    words = [0] * regmap.telemetry.size
    words[position] = bad
    with pytest.raises(CodecError, match="telemetry"):
        decode(regmap, regmap.telemetry, words)
