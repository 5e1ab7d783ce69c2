"""Map files: the shipped maps and the documented example load; every kind of mistake is named."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from protocols.maploader import MapError, get_map, load_map, matches, parse_map, shipped_names
from protocols.registers import (
    SIM_V1,
    CurrentRecipe,
    FaultCode,
    Field,
    PortState,
    SequencedRecipe,
    decode,
    encode,
)

DOC = Path(__file__).parents[2] / "docs" / "register-maps.md"

MINIMAL = """
[map]
name = "t"
document = "test"
[telemetry]
energy_Wh = { address = 2, type = "u32" }
[telemetry.state]
address = 0
documented = [0, 1]
values = { 0 = "available", 1 = "charging" }
"""


def problems(text: str) -> list[str]:
    with pytest.raises(MapError) as info:
        parse_map(tomllib.loads(text), "t.toml")
    return info.value.problems


def one_problem(text: str) -> str:
    found = problems(text)
    assert len(found) == 1, found
    return found[0]


def doc_example() -> str:
    blocks = re.findall(r"```toml\n(.*?)```", DOC.read_text(), re.S)
    return str(next(b for b in blocks if b.startswith("[map]")))


def test_minimal_map_loads_with_defaults():
    regmap = parse_map(tomllib.loads(MINIMAL))
    assert regmap.port_bases == (0,)
    assert regmap.recipe is None
    assert regmap.telemetry.field("energy_Wh").unit == "Wh"
    assert regmap.telemetry.field("state").table == {0: PortState.AVAILABLE, 1: PortState.CHARGING}


def test_sim_v1_file_is_the_layout_the_simulator_serves():
    assert "pilegate-sim-v1" in shipped_names()
    assert SIM_V1.port_bases == (100, 140, 180, 220)
    assert (SIM_V1.telemetry.base, SIM_V1.telemetry.size) == (0, 11)
    assert (SIM_V1.control.base, SIM_V1.control.size) == (16, 6)
    assert (SIM_V1.readback.base, SIM_V1.readback.size) == (24, 6)
    assert SIM_V1.sim is not None and SIM_V1.sim.base == 36
    assert (SIM_V1.identity.base, SIM_V1.identity.size) == (0, 33)
    assert isinstance(SIM_V1.recipe, SequencedRecipe)
    assert dict(SIM_V1.recipe.codes) == {"start": 1, "stop": 2, "limit": 3}


def test_documented_example_loads_with_its_features():
    regmap = parse_map(tomllib.loads(doc_example()), "doc")
    assert isinstance(regmap.recipe, CurrentRecipe)
    assert regmap.recipe.stop == "disable"
    assert [b.function for b in regmap.blocks_of("control")] == [1, 3]
    state = regmap.telemetry.field("state")
    assert state.type == "str" and state.table["C"] == PortState.CHARGING
    assert dict(regmap.telemetry.field("fault").bits) == {
        0: FaultCode.RESIDUAL_CURRENT,
        1: FaultCode.OVERCURRENT,
        3: FaultCode.OVER_TEMPERATURE,
    }
    assert regmap.telemetry.field("temperature_C").unconfirmed


def test_get_map_finds_a_file_by_path_and_refuses_unknown_names(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text(MINIMAL)
    assert get_map(str(path)).name == "t"
    with pytest.raises(MapError, match="unknown register map 'acme'"):
        get_map("acme")


def test_unreadable_and_malformed_files_are_named(tmp_path):
    with pytest.raises(MapError, match="cannot read"):
        load_map(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[map\n")
    with pytest.raises(MapError, match="not valid TOML"):
        load_map(bad)


def test_every_problem_is_listed_at_once():
    text = MINIMAL.replace('type = "u32" }', 'type = "u33" }\nvoltage_V = { type = "u16" }')
    found = problems(text.replace('document = "test"', ""))
    assert any("map.document: required" in p for p in found)
    assert any("telemetry.energy_Wh.type: unknown type 'u33'" in p for p in found)
    assert any("telemetry.voltage_V.address: required" in p for p in found)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("", "[telemetry.foo]\naddress = 9\n"), "telemetry.foo: unknown canonical name"),
        (("", "[telemetry.voltage_V]\naddress = 9\ntype = 'string'\n"), "a string needs its length"),
        (("", "[telemetry.voltage_V]\naddress = 9\nlength = 2\n"), "only strings have a length"),
        (
            ("", "[telemetry.voltage_V]\naddress = 3\n"),
            "telemetry.energy_Wh and telemetry.voltage_V overlap at 3..3",
        ),
        (("", "[telemetry.voltage_V]\naddress = 70000\n"), "address: 70000 is not 0..65535"),
        (("", "[telemetry.voltage_V]\naddress = 9\nfunction = 7\n"), "function: 7 is not 1, 2, 3 or 4"),
        (("", "[telemetry.voltage_V]\naddress = 9\nfunction = 1\ntype = 'u16'\n"), "type must be bool"),
        (("", "[telemetry.voltage_V]\naddress = 9\ntype = 'bool'\n"), "bool is for coils"),
        (("", "[telemetry.voltage_V]\naddress = 9\nscale = 0\n"), "scale: 0 is not non-zero"),
        (("", "[telemetry.voltage_V]\naddress = 9\nbyte_order = 'middle'\n"), "is not big or little"),
        (("", "[telemetry.energy_Wh]\n"), None),  # duplicate key: TOML itself refuses (see below)
        (("", "[control.x]\naddress = 9\nfunction = 4\n"), "cannot be written"),
        (("", "[control.x]\naddress = 9\nfunction = 2\n"), "cannot be written"),
        (("", "[readback.x]\naddress = 9\nvalues = { 0 = 'none' }\n"), "for telemetry state and fault only"),
        (("", "[telemetry.fault]\naddress = 9\n"), "fault needs a values table"),
        (("", "[telemetry.fault]\naddress = 9\nvalues = { 1 = 'smoke' }\n"), "'smoke' is not one of"),
        (("", "[telemetry.fault]\naddress = 9\nbits = { 16 = 'internal' }\n"), "bit 16 outside 0..15"),
        (
            ("", "[telemetry.fault]\naddress = 9\nvalues = { x1 = 'internal' }\n"),
            "code 'x1' is not an integer",
        ),
        (("", "[telemetry.energy_Wh2]\naddress = 9\n"), "unknown canonical name"),
        (("", "[readback.state]\naddress = 9\n"), "readback.state: name already used in [telemetry]"),
        (("", "[telemetry.voltage_V]\naddress = 9\nunit = 'kV'\n"), "voltage_V is in V; convert with scale"),
        (
            ("", "[telemetry.voltage_V]\naddress = 9\ncolour = 'red'\n"),
            "telemetry.voltage_V: unknown key 'colour'",
        ),
        (("", "[flux]\n"), "unknown table 'flux'"),
        (("", "[match]\nvendor = 'x'\n"), "match.vendor: not an identity register"),
        (("", "[ports]\ncount = 2\n"), "2 ports need a stride or explicit bases"),
        (("", "[ports]\ncount = 2\nbases = [0]\n"), "1 bases for count = 2 ports"),
        (
            ("", "[ports]\ncount = 2\nbase = 0\nstride = 3\n"),
            "ports.stride: 3 is smaller than a port's span of 4",
        ),
        (("", "[ports]\ncount = 2\nbases = [0, 2]\n"), "ports: port 1 and port 2 overlap at 2..3"),
        (
            ("", "[identity]\nx = { address = 2 }\n"),
            "identity.x and port 1 telemetry.energy_Wh overlap at 2..2",
        ),
        (("", "[identity]\nx = { address = 1 }\ny = { address = 4 }\n"), None),  # between fields: fine
        (
            ("", "[identity]\nx = { address = 10, type = 'u32' }\ny = { address = 11 }\n"),
            "identity.x and identity.y overlap",
        ),
        (
            ('values = { 0 = "available", 1 = "charging" }', 'values = { 0 = "available" }'),
            "documented codes [1] are missing",
        ),
        (('name = "t"', 'name = "T t"'), "map.name: 'T t' is not lower-case"),
        (('document = "test"', 'document = "test"\nmax_read = 200'), "map.max_read: 200 is not 1..125"),
        (('document = "test"', 'document = "test"\nphases = 4'), "map.phases: 4 is not 1, 2 or 3"),
    ],
)
def test_each_kind_of_mistake_is_named(change, message):
    old, new = change
    text = MINIMAL.replace(old, new) if old else MINIMAL + new
    if message is None and old == "" and new.startswith("[telemetry.energy_Wh]"):
        with pytest.raises(tomllib.TOMLDecodeError):
            tomllib.loads(text)
        return
    if message is None:
        parse_map(tomllib.loads(text))
        return
    assert any(message in p for p in problems(text)), problems(text)


def test_missing_state_and_energy_are_required():
    found = problems('[map]\nname = "t"\ndocument = "d"\n')
    assert "telemetry.state: required (pilegate needs a port's state to run it)" in found
    assert any(p.startswith("telemetry.energy_Wh: required") for p in found)


SEQUENCED = """
[control]
c = { address = 10 }
s = { address = 11 }
t = { address = 12, type = "u32" }
p = { address = 14, type = "u32" }
[readback]
a = { address = 20 }
b = { address = 21 }
[command]
style = "sequenced"
command = "c"
sequence = "s"
target_energy = "t"
power_limit = "p"
ack_sequence = "a"
ack_status = "b"
"""


def test_sequenced_recipe_loads_with_default_codes_and_statuses():
    regmap = parse_map(tomllib.loads(MINIMAL + SEQUENCED))
    assert isinstance(regmap.recipe, SequencedRecipe)
    assert dict(regmap.recipe.statuses)[1] == "ok"


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('command = "c"', 'command = "nope"', "command.command: no register 'nope' in [control]"),
        ('ack_status = "b"', 'ack_status = "c"', "command.ack_status: no register 'c' in [readback]"),
        ('style = "sequenced"', 'style = "magic"', "command.style: 'magic' is not sequenced or current"),
        (
            'ack_status = "b"',
            'ack_status = "b"\ncodes = { start = 1 }',
            "command.codes: expected start, stop",
        ),
        ('ack_status = "b"', 'ack_status = "b"\nstatuses = { 1 = "fine" }', "command.statuses.1"),
    ],
)
def test_sequenced_recipe_mistakes_are_named(old, new, message):
    assert any(message in p for p in problems(MINIMAL + SEQUENCED.replace(old, new)))


CURRENT = """
[control]
amps = { address = 10, scale = 0.1 }
on = { address = 3, function = 1 }
[command]
style = "current"
current = "amps"
max_current_A = 32
enable = "on"
"""


def test_current_recipe_defaults_confirm_to_its_own_register():
    recipe = parse_map(tomllib.loads(MINIMAL + CURRENT)).recipe
    assert isinstance(recipe, CurrentRecipe)
    assert (recipe.confirm, recipe.min_current_A, recipe.step_A, recipe.stop) == (
        "amps",
        6.0,
        1.0,
        "current_zero",
    )


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("max_current_A = 32", "max_current_A = 3", "min_current_A 6 > max_current_A 3"),
        ("max_current_A = 32", "max_current_A = 32\nstep_A = 0", "command.step_A: 0 is not 0 < A <= 1000"),
        ('enable = "on"', 'stop = "disable"', "disable needs an enable register"),
        ('enable = "on"', 'enable = "off"', "command.enable: no register 'off'"),
        ('current = "amps"', 'current = "on"', "the current limit must be a holding register"),
        (
            "max_current_A = 32",
            'max_current_A = 32\nconfirm = "ghost"',
            "command.confirm: no register 'ghost'",
        ),
        ("max_current_A = 32\n", "", "command.max_current_A: required"),
    ],
)
def test_current_recipe_mistakes_are_named(old, new, message):
    assert any(message in p for p in problems(MINIMAL + CURRENT.replace(old, new)))


def test_match_rule_accepts_wildcards_lists_and_integers():
    regmap = parse_map(
        tomllib.loads(
            MINIMAL.replace("[telemetry]", "[ports]\nbase = 100\n[telemetry]")
            + '[identity]\nvendor = { address = 0, type = "string", length = 4 }\nkind = { address = 4 }\n'
            + '[match]\nvendor = ["ACME*", "Acne"]\nkind = 2\n'
        )
    )
    assert matches(regmap, {"vendor": "acme-x ", "kind": 2})
    assert matches(regmap, {"vendor": "Acne", "kind": 2})
    assert not matches(regmap, {"vendor": "ACME", "kind": 1})
    assert not matches(regmap, {"vendor": "Bcme", "kind": 2})
    assert matches(SIM_V1, {"vendor": "pilegate", "model": "SIM-DC"})


SAMPLES = {"u16": 513, "i16": -2, "u32": 70_000, "i32": -70_000, "u64": 2**40, "i64": -(2**40)}


def sample(f: Field) -> object:
    """A value the field holds exactly, whatever its type and scale."""
    if f.type == "str":
        return "AB"[: 2 * f.width]
    if f.type == "bool":
        return 1
    if f.type in ("float32", "float64"):
        return 0.5 * f.scale
    return round(SAMPLES[f.type] * f.scale, 6)


@pytest.mark.parametrize("name", shipped_names())
def test_every_shipped_map_loads_names_its_document_and_round_trips_its_registers(name):
    regmap = get_map(name)
    assert regmap.name == name
    assert regmap.header.document
    for block in (*regmap.identity_blocks, *regmap.port_blocks):
        values = {f.name: sample(f) for f in block.fields}
        assert decode(regmap, block, encode(regmap, block, values)) == values, block.name


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("[readback.x]\naddress = 9\nmask = 0xFF\n", "mask and shift are for integer state and fault"),
        ("[telemetry.fault]\naddress = 9\nmask = 0x10000\nvalues = { 1 = 'other' }\n", "mask: 65536 is not"),
        ("[telemetry.fault]\naddress = 9\nshift = 16\nvalues = { 1 = 'other' }\n", "shift: 16 is not 0..15"),
        ("[control.x]\naddress = 9\nwrite_function = 5\n", "write_function: 5 is not 6 or 16"),
        (
            "[control.x]\naddress = 9\ntype = 'u32'\nwrite_function = 6\n",
            "6 writes one register; u32 needs 16",
        ),
        ("[readback.x]\naddress = 9\nwrite_function = 6\n", "only for [control] holding registers"),
        ("[identity]\nv = { address = 50 }\n[match]\nv = { min = 5 }\n", "match.v: a range is"),
        ("[identity]\nv = { address = 50 }\n[match]\nv = []\n", "an empty list accepts nothing"),
        ("[readback.x]\naddress = 9\noverrides = []\n", "only the state register has overrides"),
        ("[readback.x]\naddress = 9\nenergy_kind = 'session'\n", "energy_kind: only for telemetry energy_Wh"),
    ],
)
def test_each_kind_of_mistake_in_the_newer_keys_is_named(extra, message):
    assert any(message in p for p in problems(MINIMAL + extra)), problems(MINIMAL + extra)


def test_map_header_identity_unit_and_current_recipe_refresh_are_checked():
    text = MINIMAL.replace('document = "test"', 'document = "test"\nidentity_unit = 300')
    assert any("map.identity_unit: 300 is not 0..255" in p for p in problems(text))
    bad = MINIMAL + CURRENT.replace("max_current_A = 32", "max_current_A = 32\nrefresh_s = 0.5")
    assert any("command.refresh_s: 0.5 is not 0 or 1..3600" in p for p in problems(bad))
    good = parse_map(
        tomllib.loads(MINIMAL + CURRENT.replace("max_current_A = 32", "max_current_A = 32\nrefresh_s = 25"))
    )
    assert isinstance(good.recipe, CurrentRecipe) and good.recipe.refresh_s == 25.0


def test_match_reads_integers_by_their_digits_and_by_ranges():
    regmap = parse_map(
        tomllib.loads(
            MINIMAL.replace("[telemetry]", "[ports]\nbase = 100\n[telemetry]")
            + "[identity]\nproduct = { address = 0, type = 'u32' }\namps = { address = 2 }\n"
            + "[match]\nproduct = '3?????'\namps = [{ min = 6000, max = 32000 }, 1]\n"
        )
    )
    assert matches(regmap, {"product": 311_010, "amps": 16_000})
    assert matches(regmap, {"product": 300_000, "amps": 1})
    assert not matches(regmap, {"product": 411_010, "amps": 16_000})
    assert not matches(regmap, {"product": 3_110_100, "amps": 16_000})
    assert not matches(regmap, {"product": 311_010, "amps": 40_000})


def test_state_overrides_and_session_energy_are_checked():
    text = MINIMAL.replace(
        'values = { 0 = "available", 1 = "charging" }',
        'values = { 0 = "available", 1 = "charging" }\n'
        'overrides = [{ register = "ghost", equals = 1, state = "plugged" },'
        ' { register = "s", equals = 1, state = "asleep", from = ["charging", "dozing"] },'
        ' { register = "t", equals = 1, state = "plugged" }]',
    ).replace('type = "u32" }', 'type = "u32", energy_kind = "daily" }')
    text += '[readback]\ns = { address = 20 }\nt = { address = 30, type = "float32" }\n'
    found = problems(text)
    assert "telemetry.state.overrides: no register 'ghost' in [telemetry] or [readback]" in found
    assert any("overrides[1]: 'asleep' is not one of" in p for p in found)
    assert any("overrides[1]: 'dozing' is not one of" in p for p in found)
    assert "telemetry.state.overrides: t is float32, not an integer register" in found
    assert "telemetry.energy_Wh.energy_kind: 'daily' is not meter or session" in found


def test_current_recipe_max_current_must_be_a_polled_register():
    bad = MINIMAL + CURRENT.replace("max_current_A = 32", 'max_current_A = 32\nmax_current = "amps"')
    assert "command.max_current: no register 'amps' in [readback]" in problems(bad)
