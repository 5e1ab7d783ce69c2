"""Read plans of maps that use several function codes: merged per code, never across, capped by the
map's largest read; decoded into canonical values (state/fault tables, derived readings)."""

from __future__ import annotations

import tomllib

import pytest

from drivers.plan import ReadRequest, compile_read_plan, format_plan
from protocols.codec import encode
from protocols.maploader import parse_map
from protocols.regmodel import FaultCode, PortState, RegisterMap

MAP = """
[map]
name = "mixed"
document = "test"
function = 4
max_read = {max_read}
phases = 3
[ports]
count = 2
base = 1000
stride = 100
[telemetry]
voltage_L1_V = {{ address = 0, type = "float32" }}
voltage_L2_V = {{ address = 2, type = "float32" }}
voltage_L3_V = {{ address = 4, type = "float32" }}
current_L1_A = {{ address = 6, scale = 0.001 }}
current_L2_A = {{ address = 7, scale = 0.001 }}
current_L3_A = {{ address = 8, scale = 0.001 }}
energy_Wh = {{ address = 10, type = "u32", scale = 0.1, word_order = "little" }}
[telemetry.state]
address = 20
type = "string"
length = 2
values = {{ A1 = "available", B1 = "plugged", C2 = "charging", F = "faulted" }}
[telemetry.fault]
address = 30
type = "u32"
bits = {{ 0 = "residual_current", 17 = "over_temperature" }}
[readback]
limit_A = {{ address = 50, function = 3, scale = 0.1 }}
locked = {{ address = 5, function = 2 }}
enabled = {{ address = 0, function = 1 }}
"""


def mixed(max_read: int = 125) -> RegisterMap:
    return parse_map(tomllib.loads(MAP.format(max_read=max_read)))


def test_each_function_code_has_its_own_requests_merged_across_ports():
    plan = compile_read_plan(mixed(), 2, max_gap=16)
    assert plan.requests == (
        ReadRequest(1000, 1, 1),
        ReadRequest(1100, 1, 1),
        ReadRequest(1005, 1, 2),
        ReadRequest(1105, 1, 2),
        ReadRequest(1050, 1, 3),
        ReadRequest(1150, 1, 3),
        ReadRequest(1000, 32, 4),
        ReadRequest(1100, 32, 4),
    )


def test_ranges_of_one_code_merge_through_holes_but_never_with_another_code():
    plan = compile_read_plan(mixed(), 2, max_gap=100)
    assert [(r.function, r.address, r.count) for r in plan.requests] == [
        (1, 1000, 101),
        (2, 1005, 101),
        (3, 1050, 101),
        (4, 1000, 122),  # port 1 and port 2 up to the last run that fits in 125
        (4, 1130, 2),
    ]


def test_the_maps_largest_read_caps_requests_below_the_devices():
    plan = compile_read_plan(mixed(max_read=12), 1, max_registers=125, max_gap=100)
    assert [(r.address, r.count) for r in plan.requests if r.function == 4] == [
        (1000, 12),
        (1020, 12),  # state, then the fault bits 10 registers on
    ]
    assert plan.max_registers == 125


def image(regmap: RegisterMap, port: int, values: dict[str, object]) -> dict[tuple[int, int], int]:
    """(function, address) -> word of the given values, encoded block by block."""
    out: dict[tuple[int, int], int] = {}
    for block in regmap.port_blocks:
        mine = {f.name: values[f.name] for f in block.fields if f.name in values}
        if mine:
            base = regmap.port_address(port, block)
            out.update(((block.function, base + i), w) for i, w in enumerate(encode(regmap, block, mine)))
    return out


PORT = {
    "voltage_L1_V": 230.1,
    "voltage_L2_V": 229.9,
    "voltage_L3_V": 231.0,
    "current_L1_A": 16.0,
    "current_L2_A": 15.5,
    "current_L3_A": 15.0,
    "energy_Wh": 123_456.7,  # 0.1 Wh steps in the register
    "state": "C2",
    "fault": 1 << 17,
    "limit_A": 16.0,
    "locked": 1,
    "enabled": 1,
}


def decoded(regmap: RegisterMap, values: dict[str, object], max_gap: int = 16) -> dict[str, object]:
    plan = compile_read_plan(regmap, 1, max_gap=max_gap)
    words = image(regmap, 1, values)
    replies = [[words.get((r.function, r.address + i), 0) for i in range(r.count)] for r in plan.requests]
    return plan.decode(replies)[1]


@pytest.mark.parametrize("max_gap", [0, 16, 100])
def test_decode_gives_canonical_values_and_derives_what_the_family_lacks(max_gap):
    values = decoded(mixed(), PORT, max_gap)
    assert values["state"] == PortState.CHARGING
    assert values["fault"] == FaultCode.OVER_TEMPERATURE
    assert values["energy_Wh"] == 123_456  # whole Wh, truncated
    assert values["voltage_L1_V"] == 230.1
    assert values["voltage_V"] == pytest.approx(230.333333)
    assert values["current_A"] == pytest.approx(15.5)
    assert values["power_W"] == round(230.1 * 16.0 + 229.9 * 15.5 + 231.0 * 15.0)
    assert (values["limit_A"], values["locked"], values["enabled"]) == (16.0, 1, 1)


def test_unknown_codes_read_as_unavailable_and_other_fault():
    values = decoded(mixed(), {**PORT, "state": "X9", "fault": 1 << 3})
    assert values["state"] == PortState.UNAVAILABLE
    assert values["fault"] == FaultCode.OTHER
    assert decoded(mixed(), {**PORT, "fault": 0})["fault"] == FaultCode.NONE
    assert decoded(mixed(), {**PORT, "fault": 1 | 1 << 17})["fault"] == FaultCode.RESIDUAL_CURRENT


def test_format_plan_names_the_function_of_each_request():
    text = format_plan(compile_read_plan(mixed(), 1))
    assert "4 request(s) per cycle" in text
    assert "coils" in text and "discrete" in text and "holding" in text and "input" in text
    assert "p1.telemetry@1000+9" in text


MASKED = """
[map]
name = "masked"
document = "test"
[telemetry]
energy_Wh = { address = 2, type = "u32" }
[telemetry.state]
address = 0
mask = 0x7F00
shift = 8
documented = [0, 1, 2]
values = { 0 = "available", 1 = "plugged", 2 = "charging" }
[telemetry.fault]
address = 1
documented = [0, 1, 2, 3]
bits = { 0 = "none", 1 = "none", 2 = "none", 3 = "meter_fault" }
"""


@pytest.mark.parametrize(
    ("state_word", "fault_word", "state", "fault"),
    [
        (0x0200, 0b0000, PortState.CHARGING, FaultCode.NONE),
        (0x82FF, 0b0011, PortState.CHARGING, FaultCode.NONE),  # flag bit 15, spare low byte, status bits
        (0x0100, 0b1001, PortState.PLUGGED, FaultCode.METER_FAULT),  # a status bit does not hide the fault
        (0x0700, 0b10000, PortState.UNAVAILABLE, FaultCode.OTHER),  # undocumented code, unnamed bit
    ],
)
def test_masked_state_codes_and_status_bits_that_are_not_faults(state_word, fault_word, state, fault):
    plan = compile_read_plan(parse_map(tomllib.loads(MASKED)), 1)
    values = plan.decode([[state_word, fault_word, 0, 0]])[1]
    assert (values["state"], values["fault"]) == (state, fault)


OVERRIDES = """
[map]
name = "two-register-state"
document = "test"
[telemetry]
energy_Wh = { address = 2, type = "u32" }
[telemetry.state]
address = 0
documented = [1, 2, 3]
values = { 1 = "available", 2 = "charging", 3 = "finished" }
overrides = [
    { register = "availability", equals = 0, state = "unavailable" },
    { register = "cable", mask = 4, equals = 4, state = "plugged", from = ["available"] },
]
[readback]
cable = { address = 10 }
availability = { address = 11 }
"""


@pytest.mark.parametrize(
    ("state_code", "cable", "availability", "state"),
    [
        (1, 0b000, 1, PortState.AVAILABLE),
        (1, 0b101, 1, PortState.PLUGGED),  # "not ready" with a vehicle connected
        (2, 0b100, 1, PortState.CHARGING),  # the cable rule applies to available only
        (3, 0b100, 1, PortState.FINISHED),
        (2, 0b100, 0, PortState.UNAVAILABLE),  # out of service whatever the state says
    ],
)
def test_a_second_register_overrides_the_state(state_code, cable, availability, state):
    plan = compile_read_plan(parse_map(tomllib.loads(OVERRIDES)), 1)
    replies = [[state_code, 0, 0, 0, 0, 0, 0, 0, 0, 0, cable, availability]]
    values = plan.decode(replies)[1]
    assert values["state"] == state
    assert (values["cable"], values["availability"]) == (cable, availability)
