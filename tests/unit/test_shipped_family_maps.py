"""The shipped maps of real charger families: they load, decode register words the way their vendor
documents (as cited in docs/maps-provenance.md) say, translate every documented state and fault,
and turn currents into the words the families take."""

from __future__ import annotations

import struct
from collections.abc import Sequence

import pytest

from protocols import canonical
from protocols.codec import decode, encode_field
from protocols.maploader import get_map, matches, shipped_names
from protocols.registers import SIM_V1, Block, CurrentRecipe, FaultCode, PortState, RegisterMap

FAMILIES = ("abb-terra-ac", "keba-p30", "alfen-ng9xx", "bender-cc61x")
PROVENANCE = "docs/maps-provenance.md"


def registers(block: Block, words: dict[int, Sequence[int]]) -> list[int]:
    """The block's registers, zero but for ``words`` given by absolute address."""
    out = [0] * block.size
    for address, values in words.items():
        offset = address - block.base
        out[offset : offset + len(values)] = list(values)
    return out


def telemetry(regmap: RegisterMap, words: dict[int, Sequence[int]]) -> dict[str, object]:
    """Decoded telemetry with the state and fault tables applied (canonical values)."""
    values = decode(regmap, regmap.telemetry, registers(regmap.telemetry, words))
    for f in regmap.telemetry.fields:
        convert = canonical.converter(f)
        if convert is not None:
            values[f.name] = convert(values[f.name])
    return values


def f32(value: float) -> list[int]:
    return list(struct.unpack(">2H", struct.pack(">f", value)))


def f64(value: float) -> list[int]:
    return list(struct.unpack(">4H", struct.pack(">d", value)))


@pytest.mark.parametrize("name", FAMILIES)
def test_family_is_shipped_with_its_document_and_a_current_recipe(name):
    regmap = get_map(name)
    assert name in shipped_names()
    assert regmap.header.document and regmap.header.document_version
    assert isinstance(regmap.recipe, CurrentRecipe)
    assert regmap.recipe.min_current_A == 6.0


@pytest.mark.parametrize("name", FAMILIES)
def test_every_unconfirmed_register_says_why(name):
    regmap = get_map(name)
    fields = [f for b in (*regmap.identity_blocks, *regmap.port_blocks) for f in b.fields]
    unconfirmed = [f for f in fields if f.unconfirmed]
    assert all(f.note for f in unconfirmed), [f.name for f in unconfirmed if not f.note]


@pytest.mark.parametrize("name", FAMILIES)
def test_every_documented_state_is_translated(name):
    state = get_map(name).telemetry.field("state")
    convert = canonical.state_converter(state)
    assert state.documented
    assert all(code in state.table for code in state.documented)
    raw = [code << state.shift if isinstance(code, int) else code for code in state.documented]
    assert {convert(word) for word in raw} >= {PortState.AVAILABLE, PortState.CHARGING}


def test_abb_decodes_its_32_bit_registers_and_the_state_byte():
    abb = get_map("abb-terra-ac")
    values = telemetry(
        abb,
        {
            0x400D: [0x0400],  # state C2 in the high byte
            0x4008: [0, 0x0080],  # over temperature bit
            0x4010: [0, 16_000],  # mA
            0x4016: [0, 2_301],  # 0.1 V
            0x401C: [0, 11_040],  # W
            0x401E: [0x0001, 0x0002],  # Wh, high word first
        },
    )
    assert values["state"] == PortState.CHARGING
    assert values["fault"] == FaultCode.OVER_TEMPERATURE
    assert values["current_L1_A"] == 16.0
    assert values["voltage_L1_V"] == 230.1
    assert values["power_W"] == 11_040
    assert values["energy_Wh"] == 65_538


@pytest.mark.parametrize(
    ("word", "state"),
    [
        (0x0000, PortState.AVAILABLE),
        (0x0100, PortState.PLUGGED),
        (0x0300, PortState.PLUGGED),
        (0x8400, PortState.CHARGING),  # bit 15: charging below the commanded current
        (0x0500, PortState.FINISHED),
        (0x0401, PortState.CHARGING),  # the low byte is spare: the mask ignores it
        (0x0600, PortState.UNAVAILABLE),  # a code the document does not list
    ],
)
def test_abb_state_word(word, state):
    assert telemetry(get_map("abb-terra-ac"), {0x400D: [word]})["state"] == state


@pytest.mark.parametrize(
    ("error", "fault"),
    [
        (0x0000, FaultCode.NONE),
        (0x0002, FaultCode.RESIDUAL_CURRENT),
        (0x0400, FaultCode.CONTACTOR_FAULT),
        (0x4000 | 0x0080, FaultCode.OVER_TEMPERATURE),  # the lowest set bit wins
        (0x0100, FaultCode.OTHER),  # a bit the document does not list
    ],
)
def test_abb_error_bits(error, fault):
    assert telemetry(get_map("abb-terra-ac"), {0x4008: [0, error]})["fault"] == fault


def test_abb_identity_is_recognised_and_the_simulator_is_not():
    abb = get_map("abb-terra-ac")
    words = [0x5411, 0x0400, 0x0B19, 0x1234, 0x0102, 0x0304]  # 'T', 11 kW, plant 4, ...
    identity = decode(abb, abb.identity, words)
    assert (identity["plant"], identity["firmware"]) == (0x0400, 0x01020304)
    assert matches(abb, identity)
    assert matches(abb, {**identity, "model": "G\x0b".strip()})  # 11 kW read as decimal: whitespace
    assert not matches(abb, {**identity, "model": "pilegate"})
    assert not matches(abb, {**identity, "model": "X\x11"})
    sim_identity = {"vendor": "pilegate", "model": "SIM-AC", "serial": "1", "firmware": "1"}
    assert matches(SIM_V1, sim_identity) and not matches(abb, sim_identity)


def test_abb_current_limit_is_written_in_milliamperes_high_word_first():
    abb = get_map("abb-terra-ac")
    assert abb.control.base == 0x4100
    assert encode_field(abb, abb.control, "set_current_A", 16) == [0, 16_000]
    assert encode_field(abb, abb.control, "set_current_A", 0) == [0, 0]  # stop


def test_keba_scales_milliwatts_and_tenth_watt_hours():
    keba = get_map("keba-p30")
    values = telemetry(
        keba,
        {
            1000: [0, 3],
            1008: [0, 15_500],  # mA
            1020: [0x00A3, 0x3158],  # 10695000 mW
            1036: [0x0001, 0xE240],  # 123456 x 0.1 Wh
            1040: [0, 231],  # V
        },
    )
    assert values["state"] == PortState.CHARGING
    assert values["fault"] == FaultCode.NONE
    assert values["current_L1_A"] == 15.5
    assert values["power_W"] == 10_695.0
    assert values["energy_Wh"] == 12_345  # whole Wh, truncated
    assert values["voltage_L1_V"] == 231


@pytest.mark.parametrize(
    ("code", "state"),
    [
        (0, PortState.UNAVAILABLE),
        (1, PortState.AVAILABLE),
        (2, PortState.PLUGGED),
        (4, PortState.FAULTED),
        (5, PortState.FINISHED),  # suspended: what a stop by the enable register leaves
    ],
)
def test_keba_charging_state(code, state):
    assert telemetry(get_map("keba-p30"), {1000: [0, code]})["state"] == state


def test_keba_any_error_code_is_a_fault():
    assert telemetry(get_map("keba-p30"), {1006: [0, 0x3C]})["fault"] == FaultCode.OTHER


def test_keba_is_commanded_by_current_and_enable_one_value_per_read():
    keba = get_map("keba-p30")
    recipe = keba.recipe
    assert isinstance(recipe, CurrentRecipe)
    assert (recipe.enable, recipe.stop, recipe.confirm) == ("enable_station", "disable", "current_in_force_A")
    assert keba.max_read == 2
    assert encode_field(keba, keba.control, "set_current_A", 16) == [16_000]
    assert keba.control.base == 5004 and keba.control.size == 11  # 5004 .. 5014


def test_alfen_decodes_floats_and_the_mode_3_string():
    alfen = get_map("alfen-ng9xx")
    values = telemetry(
        alfen,
        {
            306: f32(231.5),
            320: f32(15.75),
            344: f32(10_890.0),
            374: f64(1_234_567.9),
            1201: [0x4332, 0, 0, 0, 0],  # "C2"
        },
    )
    assert values["state"] == PortState.CHARGING
    assert values["voltage_L1_V"] == 231.5
    assert values["current_L1_A"] == 15.75
    assert values["power_W"] == 10_890.0
    assert values["energy_Wh"] == 1_234_567


@pytest.mark.parametrize(
    ("text", "state"),
    [
        (b"A\x00", PortState.AVAILABLE),
        (b"B1", PortState.PLUGGED),
        (b"C1", PortState.FINISHED),  # 0 A written: the vehicle waits
        (b"D2", PortState.CHARGING),
        (b"E\x00", PortState.UNAVAILABLE),
        (b"F\x00", PortState.FAULTED),
    ],
)
def test_alfen_mode_3_state(text, state):
    word = int.from_bytes(text, "big")
    assert telemetry(get_map("alfen-ng9xx"), {1201: [word, 0, 0, 0, 0]})["state"] == state


def test_alfen_current_is_a_float32_that_reads_back_itself():
    alfen = get_map("alfen-ng9xx")
    assert encode_field(alfen, alfen.control, "max_current_A", 13.5) == f32(13.5)
    recipe = alfen.recipe
    assert isinstance(recipe, CurrentRecipe)
    assert (recipe.current, recipe.confirm, recipe.stop) == ("max_current_A", "max_current_A", "current_zero")


def provenance_section(name: str) -> str:
    """The family's section of the research notes (from its heading to the next one)."""
    with open(PROVENANCE, encoding="utf-8") as notes:
        text = notes.read()
    start = text.index(f"(`{name}`)")
    end = text.find("\n## ", start)
    return text[start : end if end > 0 else None]


@pytest.mark.parametrize("name", FAMILIES)
def test_every_address_in_the_map_is_in_the_research_notes(name):
    regmap = get_map(name)
    notes = provenance_section(name)
    hexadecimal = "0x4" in notes  # ABB's document numbers its registers in hex
    (base,) = regmap.port_bases
    blocks = [(b, 0) for b in regmap.identity_blocks] + [(b, base) for b in regmap.port_blocks]
    missing = []
    for block, port_base in blocks:
        for f in block.fields:
            address = port_base + block.base + f.offset
            written = f"0x{address:04X}" if hexadecimal else str(address)
            if written not in notes:
                missing.append(f"{f.name} at {written}")
    assert not missing


def test_bender_decodes_milliamperes_and_watt_hours():
    bender = get_map("bender-cc61x")
    values = telemetry(
        bender,
        {
            122: [3],  # C
            212: [0, 15_800],  # mA
            218: [0x0001, 0x1F40],  # 73536 Wh, the vendor page's own word-order example
            220: [0, 10_900],  # W
        },
    )
    assert values["state"] == PortState.CHARGING
    assert values["current_L1_A"] == 15.8
    assert values["energy_Wh"] == 73_536
    assert values["power_W"] == 10_900


@pytest.mark.parametrize(
    ("code", "state"),
    [
        (0, PortState.UNAVAILABLE),
        (1, PortState.AVAILABLE),
        (2, PortState.PLUGGED),
        (4, PortState.CHARGING),
        (5, PortState.FAULTED),
    ],
)
def test_bender_vehicle_state(code, state):
    assert telemetry(get_map("bender-cc61x"), {122: [code]})["state"] == state


def test_bender_hems_limit_is_whole_amperes_read_back_from_itself():
    bender = get_map("bender-cc61x")
    assert encode_field(bender, bender.control, "hems_current_limit_A", 16) == [16]
    recipe = bender.recipe
    assert isinstance(recipe, CurrentRecipe)
    assert (recipe.current, recipe.confirm, recipe.stop) == ("hems_current_limit_A",) * 2 + ("current_zero",)


def test_abb_session_energy_and_the_units_own_maximum():
    abb = get_map("abb-terra-ac")
    assert abb.telemetry.field("energy_Wh").energy_kind == "session"
    recipe = abb.recipe
    assert isinstance(recipe, CurrentRecipe) and recipe.max_current == "user_max_A"
    readback = decode(abb, abb.readback, registers(abb.readback, {0x4006: [0, 16_000]}))
    assert readback["user_max_A"] == 16.0


def test_keba_is_recognised_by_its_product_code_and_a_plugged_vehicle_overrides_not_ready():
    keba = get_map("keba-p30")
    identity = decode(keba, keba.identity, [0, 12_345_678 >> 16, 0x0004, 0xBEE2, 0x0301, 0x0A00])
    assert identity["product"] == 311_010  # 0x0004BEE2
    assert matches(keba, identity)
    assert not matches(keba, {**identity, "product": 4_110_010})  # a P40
    state = keba.telemetry.field("state")
    assert [(o.register, o.mask, o.equals) for o in state.overrides] == [("cable_state", 4, 4)]
    assert keba.control.field("enable_station").write_function == 6
    recipe = keba.recipe
    assert isinstance(recipe, CurrentRecipe)
    assert (recipe.enable_readable, recipe.max_current) == (False, "max_supported_A")


def test_alfen_identity_answers_on_the_station_unit_and_the_current_is_refreshed():
    alfen = get_map("alfen-ng9xx")
    assert alfen.identity_unit == 200
    assert matches(alfen, {"vendor": "Alfen NV", "model": "ALF_1000"})
    recipe = alfen.recipe
    assert isinstance(recipe, CurrentRecipe) and recipe.refresh_s == 25
    assert telemetry(alfen, {300: [0x0003]})["fault"] == FaultCode.NONE  # status flags only
    assert telemetry(alfen, {300: [0x000B]})["fault"] == FaultCode.METER_FAULT
