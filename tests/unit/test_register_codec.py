"""Register codec: every field round-trips in every byte/word order; bad values are named."""

import dataclasses

import pytest

from protocols.registers import SIM_V1, CodecError, decode, encode, encode_field, get_map

ORDERS = [(b, w) for b in ("big", "little") for w in ("big", "little")]

TELEMETRY = {
    "state": 2,
    "voltage_V": 402.5,
    "current_A": -12.34,
    "power_W": 30000,
    "energy_Wh": 4_000_000_000,
    "temperature_C": -5.5,
    "fault": 3,
    "heartbeat": 65535,
}
IDENTITY = {
    "vendor": "pilegate",
    "model": "SIM-F30",
    "serial": "F1-0001",
    "firmware": "1.2.3",
    "num_ports": 2,
    "rated_power_W": 30000,
    "max_current_A": 80.5,
    "kind": 1,
}
CONTROL = {"command": 1, "command_seq": 65535, "target_energy_Wh": 2**32 - 1, "power_limit_W": 7400}
READBACK = {"ack_seq": 7, "ack_status": 4, "active_target_Wh": 5000, "active_limit_W": 0}


@pytest.mark.parametrize(("byte_order", "word_order"), ORDERS)
@pytest.mark.parametrize(
    ("block_name", "values"),
    [("telemetry", TELEMETRY), ("identity", IDENTITY), ("control", CONTROL), ("readback", READBACK)],
)
def test_every_field_round_trips(byte_order, word_order, block_name, values):
    regmap = dataclasses.replace(SIM_V1, byte_order=byte_order, word_order=word_order)
    block = getattr(regmap, block_name)
    assert decode(regmap, block, encode(regmap, block, values)) == values


def test_big_endian_u32_puts_high_word_first():
    words = encode_field(SIM_V1, SIM_V1.telemetry, "energy_Wh", 0x0001_0002)
    assert words == [0x0001, 0x0002]


def test_little_word_order_puts_low_word_first():
    regmap = dataclasses.replace(SIM_V1, word_order="little")
    assert encode_field(regmap, regmap.telemetry, "energy_Wh", 0x0001_0002) == [0x0002, 0x0001]


def test_little_byte_order_swaps_bytes_within_a_register():
    regmap = dataclasses.replace(SIM_V1, byte_order="little")
    assert encode_field(regmap, regmap.telemetry, "state", 0x0102) == [0x0201]


def test_scaled_value_is_stored_as_integer_raw():
    assert encode_field(SIM_V1, SIM_V1.telemetry, "voltage_V", 230.1) == [2301]


def test_negative_value_uses_twos_complement():
    assert encode_field(SIM_V1, SIM_V1.telemetry, "temperature_C", -0.1) == [0xFFFF]


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("energy_Wh", 2**32, "out of range"),
        ("state", -1, "out of range"),
        ("voltage_V", "high", "expected a number"),
    ],
)
def test_out_of_range_value_is_rejected_by_name(name, value, message):
    with pytest.raises(CodecError, match=f"{name}.*{message}"):
        encode(SIM_V1, SIM_V1.telemetry, {name: value})


def test_unknown_field_is_rejected():
    with pytest.raises(CodecError, match="unknown fields"):
        encode(SIM_V1, SIM_V1.control, {"comand": 1})


def test_short_register_list_is_rejected():
    with pytest.raises(CodecError, match="need 11 registers, got 3"):
        decode(SIM_V1, SIM_V1.telemetry, [0, 0, 0])


def test_too_long_string_is_rejected():
    with pytest.raises(CodecError, match="longer than 8 characters"):
        encode(SIM_V1, SIM_V1.identity, {"firmware": "1.2.3-beta.4"})


def test_port_addresses_follow_the_stride():
    assert SIM_V1.port_address(1, SIM_V1.telemetry) == 100
    assert SIM_V1.port_address(2, SIM_V1.control) == 100 + 40 + 16
    with pytest.raises(CodecError, match="port 5 outside"):
        SIM_V1.port_address(5, SIM_V1.telemetry)


def test_unknown_map_is_named():
    with pytest.raises(CodecError, match="unknown register map 'acme'"):
        get_map("acme")
