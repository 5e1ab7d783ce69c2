"""Codec of the wider types: 64-bit integers and floats round-trip in every order, per-field orders
override the map's, and the orders mean what they say."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.codec import decode, decode_field, encode, encode_value
from protocols.regmodel import Block, CodecError, Field, FieldType, Order, RegisterMap

ORDERS: list[tuple[Order, Order]] = [(b, w) for b in ("big", "little") for w in ("big", "little")]
FAST = settings(max_examples=40, deadline=None)


def one_field_map(
    f: Field, byte_order: Order = "big", word_order: Order = "big"
) -> tuple[RegisterMap, Block]:
    block = Block("b", 0, (f,))
    return RegisterMap("t", (), (block,), (0,), byte_order=byte_order, word_order=word_order), block


def device_words(msb_first: bytes, byte_order: Order, word_order: Order) -> list[int]:
    """What a device with these orders stores for a big-endian byte string (an independent model)."""
    words = [msb_first[i : i + 2] for i in range(0, len(msb_first), 2)]
    if word_order == "little":
        words.reverse()
    return [int.from_bytes(w if byte_order == "big" else w[::-1], "big") for w in words]


INTEGERS = {"u64": (0, 2**64 - 1, ">Q"), "i64": (-(2**63), 2**63 - 1, ">q")}


@pytest.mark.parametrize(("byte_order", "word_order"), ORDERS)
@pytest.mark.parametrize("kind", ["u64", "i64"])
@FAST
@given(data=st.data())
def test_64_bit_integers_round_trip_and_match_the_order_model(byte_order, word_order, kind, data):
    low, high, code = INTEGERS[kind]
    value = data.draw(st.integers(low, high))
    regmap, block = one_field_map(Field("x", 0, kind), byte_order, word_order)
    words = encode(regmap, block, {"x": value})
    assert words == device_words(struct.pack(code, value), byte_order, word_order)
    assert decode(regmap, block, words) == {"x": value}


@pytest.mark.parametrize(("byte_order", "word_order"), ORDERS)
@FAST
@given(value=st.floats(allow_nan=False, allow_infinity=False))
def test_float64_round_trips_exactly_in_every_order(byte_order, word_order, value):
    regmap, block = one_field_map(Field("x", 0, "float64"), byte_order, word_order)
    words = encode(regmap, block, {"x": value})
    assert words == device_words(struct.pack(">d", value), byte_order, word_order)
    assert decode(regmap, block, words) == {"x": value}


@pytest.mark.parametrize(("byte_order", "word_order"), ORDERS)
@FAST
@given(value=st.floats(width=32, allow_nan=False, allow_infinity=False))
def test_float32_round_trips_to_its_own_precision(byte_order, word_order, value):
    regmap, block = one_field_map(Field("x", 0, "float32"), byte_order, word_order)
    words = encode(regmap, block, {"x": value})
    assert words == device_words(struct.pack(">f", value), byte_order, word_order)
    decoded = decode(regmap, block, words)["x"]
    assert isinstance(decoded, float)
    assert decoded == float(f"{value:.7g}")
    assert math.isclose(decoded, value, rel_tol=1e-6, abs_tol=1e-38)


def test_float32_reads_as_the_number_written_not_its_binary_expansion():
    regmap, block = one_field_map(Field("v", 0, "float32"))
    assert decode(regmap, block, encode(regmap, block, {"v": 230.1})) == {"v": 230.1}


def test_float32_overflow_is_a_codec_error():
    regmap, block = one_field_map(Field("v", 0, "float32"))
    with pytest.raises(CodecError, match="out of range for float32"):
        encode(regmap, block, {"v": 1e39})


@pytest.mark.parametrize(("kind", "value"), [("u64", -1), ("u64", 2**64), ("i64", 2**63)])
def test_64_bit_values_out_of_range_are_refused(kind: FieldType, value):
    regmap, block = one_field_map(Field("x", 0, kind))
    with pytest.raises(CodecError, match="out of range"):
        encode(regmap, block, {"x": value})


def test_per_field_orders_override_the_maps():
    fields = (
        Field("a", 0, "u32"),
        Field("b", 2, "u32", word_order="little"),
        Field("c", 4, "u16", byte_order="little"),
    )
    block = Block("b", 0, fields)
    regmap = RegisterMap("t", (), (block,), (0,))
    words = [0x0001, 0x0002, 0x0001, 0x0002, 0x1234]
    assert decode(regmap, block, words) == {"a": 0x0001_0002, "b": 0x0002_0001, "c": 0x3412}
    assert encode(regmap, block, {"a": 0x0001_0002, "b": 0x0002_0001, "c": 0x3412}) == words


def test_strings_keep_register_order_and_swap_bytes_for_little_byte_order():
    f = Field("s", 0, "str", length=2)
    assert encode_value(f, "ABC", "big", "little") == [0x4142, 0x4300]
    assert encode_value(f, "ABC", "little", "big") == [0x4241, 0x0043]
    regmap, block = one_field_map(f, "little", "little")
    assert decode(regmap, block, [0x4241, 0x0043]) == {"s": "ABC"}


def test_bit_blocks_read_zero_or_one_per_address():
    block = Block("coils", 0, (Field("on", 0, "bool"), Field("lock", 3, "bool")), function=1)
    regmap = RegisterMap("t", (), (block,), (0,))
    assert decode(regmap, block, [True, False, False, 0]) == {"on": 1, "lock": 0}
    assert encode(regmap, block, {"on": 1, "lock": 1}) == [1, 0, 0, 1]
    assert decode_field(regmap, block.fields[1], [True], bits=True) == 1


def test_decode_field_reads_one_register_run():
    f = Field("amps", 7, "u16", scale=0.1)
    regmap, _ = one_field_map(f)
    assert decode_field(regmap, f, [161]) == 16.1
    with pytest.raises(CodecError, match="need 1 registers"):
        decode_field(regmap, f, [])
