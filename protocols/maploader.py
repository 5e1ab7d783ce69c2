"""Register map files (TOML) to :class:`RegisterMap`, validated completely at load.

Every problem of a file is collected and raised together in one :class:`MapError`, each named by
its place in the file (``telemetry.voltage_V.type: ...``), so a technician fixes a map in one
pass. ``docs/register-maps.md`` is the format reference. Shipped maps live in ``protocols/maps``
(package data) and are found by name; any other map is found by its path.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, cast

from pilegate.settings import NUMBER, ConfigError, check, take
from protocols.canonical import CANONICAL, FAULT_NAMES, STATE_NAMES, TABLE_FIELDS
from protocols.regmodel import (
    BIT_FUNCTIONS,
    PORT_SECTIONS,
    WIDTH,
    WRITABLE_FUNCTIONS,
    Block,
    CodecError,
    CurrentRecipe,
    Field,
    FieldType,
    MapHeader,
    Order,
    Recipe,
    RegisterMap,
    SequencedRecipe,
    StateRule,
)

MAP_SUFFIX = ".toml"
TYPE_NAMES: dict[str, FieldType] = {
    **{t: cast(FieldType, t) for t in WIDTH},
    "string": "str",
    "str": "str",
}
FUNCTION_NAMES = {1: "coils", 2: "discrete inputs", 3: "holding registers", 4: "input registers"}
SECTIONS = ("map", "ports", "identity", "match", "command", *PORT_SECTIONS)
REQUIRED_TELEMETRY = ("state", "energy_Wh")
SEQUENCED_STATUSES = ("ok", "rejected_state", "rejected_fault", "rejected_param", "rejected")
OPS = ("start", "stop", "limit")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_MAP_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")

MAP_KEYS: dict[str, tuple[Any, str]] = {
    "name": (..., "map name, lower-case (the file name of a shipped map)"),
    "title": ("", "the family in words"),
    "vendor": ("", "manufacturer"),
    "document": (..., "the vendor document the map follows"),
    "document_version": ("", "its version or date"),
    "byte_order": ("big", "byte order inside a register: big | little"),
    "word_order": ("big", "register order of wider values: big | little"),
    "function": (3, "default function code of registers: 3 holding, 4 input, 1 coils, 2 discrete"),
    "max_read": (125, "largest read the device accepts, in registers"),
    "nominal_voltage_V": (230.0, "line-to-neutral voltage for power <-> current"),
    "phases": (1, "phases the pile charges on (1 or 3)"),
    "identity_unit": (None, "unit id that answers the identity registers, if not the pile's own"),
}
PORT_KEYS: dict[str, tuple[Any, str]] = {
    "count": (1, "most ports a pile of the family has"),
    "base": (None, "address of port 1's registers (with stride)"),
    "stride": (None, "registers between one port's registers and the next port's"),
    "bases": (None, "explicit base address of each port (instead of base and stride)"),
}
FIELD_KEYS: dict[str, tuple[Any, str]] = {
    "address": (..., "register address (per-port sections: relative to the port's base)"),
    "function": (None, "function code; default the map's (coils/discrete inputs: 1/2)"),
    "type": (None, "u16 i16 u32 i32 u64 i64 float32 float64 string bool; default u16 (bool for bits)"),
    "length": (None, "registers of a string"),
    "scale": (1.0, "canonical value = raw x scale"),
    "unit": ("", "unit of the scaled value (canonical fields: the canonical unit)"),
    "byte_order": (None, "override of the map's byte order"),
    "word_order": (None, "override of the map's word order"),
    "values": (None, "state/fault table: device code -> canonical name"),
    "bits": (None, "fault bit field: bit number -> fault name"),
    "documented": (None, "the codes the vendor documents for this register"),
    "unconfirmed": (False, "true when the address could not be confirmed in the vendor document"),
    "note": ("", "free text"),
    "mask": (None, "state/fault: the bits holding the code (code = (raw & mask) >> shift)"),
    "shift": (0, "state/fault: how far the code sits from bit 0"),
    "write_function": (None, "control holding register: 6 (write single) or 16 (write multiple, default)"),
    "overrides": (None, "state: rules by which a second register overrides the state"),
    "energy_kind": ("meter", "energy_Wh: meter (cumulative) | session (restarts at 0 every session)"),
}
RULE_KEYS: dict[str, tuple[Any, str]] = {
    "register": (..., "a polled register ([telemetry] or [readback])"),
    "equals": (..., "the value (after mask) that triggers the rule"),
    "state": (..., "the port state it means"),
    "mask": (0, "bits of the register compared; 0: all"),
    "from": (None, "apply only when the state register says one of these states"),
}
SEQUENCED_KEYS: dict[str, tuple[Any, str]] = {
    "style": (..., "sequenced"),
    "command": (..., "control register taking the command code"),
    "sequence": (..., "control register taking the sequence number"),
    "target_energy": (..., "control register taking the energy target in Wh"),
    "power_limit": (..., "control register taking the power limit in W"),
    "ack_sequence": (..., "read-back register echoing the sequence number"),
    "ack_status": (..., "read-back register with the command's status"),
    "codes": ({"start": 1, "stop": 2, "limit": 3}, "command codes by op"),
    "statuses": (
        {"1": "ok", "2": "rejected_state", "3": "rejected_fault", "4": "rejected_param"},
        "ack status code -> ok | rejected_state | rejected_fault | rejected_param | rejected",
    ),
}
CURRENT_KEYS: dict[str, tuple[Any, str]] = {
    "style": (..., "current"),
    "current": (..., "control register taking the current limit (its scale gives A)"),
    "min_current_A": (6.0, "smallest current the pile charges with"),
    "max_current_A": (..., "largest current the pile takes"),
    "step_A": (1.0, "resolution of the current limit"),
    "confirm": (None, "register read back to confirm (default: the current register)"),
    "confirm_tolerance_A": (0.0, "how far the read-back may be from the set current"),
    "enable": (None, "control register or coil that enables charging"),
    "enable_on": (1, "value written to enable"),
    "enable_off": (0, "value written to disable"),
    "stop": ("current_zero", "how stop works: current_zero | disable"),
    "enable_readable": (True, "false: the enable register cannot be read back (stop confirmed by the write)"),
    "refresh_s": (0, "rewrite the last current this often (families that fall back after a timeout)"),
    "max_current": (None, "polled register (in A) with the unit's own maximum, capping max_current_A"),
}


class MapError(ConfigError, CodecError):
    """A register map file has problems; ``problems`` lists each one by its place in the file."""


@dataclass
class _Parsed:
    """A field as read from the file, before it is placed in a block."""

    section: str
    function: int
    address: int
    field: Field


# ------------------------------------------------------------------------------ fields


def _parse_code(key: str, text: bool) -> int | str | None:
    if text:
        return key.strip().upper()
    try:
        return int(key, 0)
    except ValueError:
        return None


def _table(
    raw: Any, where: str, names: Mapping[str, int], text: bool, problems: list[str]
) -> tuple[tuple[int | str, int], ...]:
    if not isinstance(raw, Mapping):
        problems.append(f"{where}: expected a table of code = name")
        return ()
    out: list[tuple[int | str, int]] = []
    for key, name in raw.items():
        code = _parse_code(str(key), text)
        if code is None:
            problems.append(f"{where}: code {key!r} is not an integer (write 5 or 0x05)")
        elif name not in names:
            problems.append(f"{where}.{key}: {name!r} is not one of {', '.join(names)}")
        else:
            out.append((code, names[name]))
    return tuple(out)


def _bits(raw: Any, where: str, width: int, problems: list[str]) -> tuple[tuple[int, int], ...]:
    table = _table(raw, where, FAULT_NAMES, False, problems)
    for bit, _code in table:
        if not 0 <= int(bit) < 16 * width:
            problems.append(f"{where}: bit {bit} outside 0..{16 * width - 1} of the register")
    return tuple((int(b), c) for b, c in table)


def _documented(raw: Any, where: str, text: bool, problems: list[str]) -> tuple[int | str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        problems.append(f"{where}: expected a list of codes")
        return ()
    kinds: tuple[type, ...] = (str,) if text else (int,)
    bad = [v for v in raw if isinstance(v, bool) or not isinstance(v, kinds)]
    if bad:
        problems.append(f"{where}: {bad} are not {'text' if text else 'integer'} codes")
    return tuple(v.strip().upper() if isinstance(v, str) else v for v in raw if v not in bad)


def _type_and_function(
    f: Mapping[str, Any], where: str, default_fc: int, problems: list[str]
) -> tuple[FieldType, int]:
    function = f["function"] if f["function"] is not None else default_fc
    check(problems, f"{where}.function", function, int, lambda v: v in FUNCTION_NAMES, "1, 2, 3 or 4")
    function = function if function in FUNCTION_NAMES else 3
    raw_type = f["type"] if f["type"] is not None else ("bool" if function in BIT_FUNCTIONS else "u16")
    if raw_type not in TYPE_NAMES:
        problems.append(f"{where}.type: unknown type {raw_type!r} (known: {', '.join(TYPE_NAMES)})")
        raw_type = "u16"
    kind = TYPE_NAMES[raw_type]
    if function in BIT_FUNCTIONS and kind != "bool":
        problems.append(f"{where}.type: {FUNCTION_NAMES[function]} hold single bits: type must be bool")
    if function not in BIT_FUNCTIONS and kind == "bool":
        problems.append(f"{where}.type: bool is for coils and discrete inputs (function 1 or 2)")
    return kind, function


def _length(f: Mapping[str, Any], where: str, kind: FieldType, problems: list[str]) -> int:
    length = f["length"]
    if kind == "str":
        if length is None:
            problems.append(f"{where}.length: a string needs its length in registers")
            return 1
        check(problems, f"{where}.length", length, int, lambda v: 1 <= v <= 125, "1..125")
        return length if isinstance(length, int) and 1 <= length <= 125 else 1
    if length is not None:
        problems.append(f"{where}.length: only strings have a length ({kind} is {WIDTH[kind]} wide)")
    return 0


def _field_checks(name: str, section: str, f: Mapping[str, Any], where: str, problems: list[str]) -> None:
    check(problems, f"{where}.address", f["address"], int, lambda v: 0 <= v <= 0xFFFF, "0..65535")
    check(problems, f"{where}.scale", f["scale"], NUMBER, lambda v: v != 0 and math.isfinite(v), "non-zero")
    for key in ("byte_order", "word_order"):
        check(problems, f"{where}.{key}", f[key], str, lambda v: v in ("big", "little"), "big or little")
    check(problems, f"{where}.unconfirmed", f["unconfirmed"], bool)
    check(problems, f"{where}.note", f["note"], str)
    check(problems, f"{where}.unit", f["unit"], str)
    if not _NAME.match(name):
        problems.append(f"{where}: register names are letters, digits and _ (starting with a letter)")
    if section == "telemetry" and name not in CANONICAL:
        problems.append(f"{where}: unknown canonical name (telemetry names: {', '.join(CANONICAL)})")
    unit = CANONICAL.get(name) if section == "telemetry" else None
    if unit and f["unit"] and f["unit"] != unit:
        problems.append(
            f"{where}.unit: {name} is in {unit}; convert with scale (e.g. kWh -> Wh: scale = 1000)"
        )


def _tables(
    name: str,
    section: str,
    f: Mapping[str, Any],
    where: str,
    kind: FieldType,
    width: int,
    problems: list[str],
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    text = kind == "str"
    is_table_field = section == "telemetry" and name in TABLE_FIELDS
    if (f["values"] is not None or f["bits"] is not None) and not is_table_field:
        problems.append(f"{where}: values and bits tables are for telemetry state and fault only")
        return out
    if not is_table_field:
        return out
    names = STATE_NAMES if name == "state" else FAULT_NAMES
    if f["bits"] is not None:
        if name != "fault" or text:
            problems.append(f"{where}.bits: a bit field is for a numeric fault register only")
        else:
            out["bits"] = _bits(f["bits"], f"{where}.bits", width, problems)
    if f["values"] is not None:
        out["values"] = _table(f["values"], f"{where}.values", names, text, problems)
    if "values" not in out and "bits" not in out:
        problems.append(f"{where}: {name} needs a values table (device code = {name} name)")
    out["documented"] = _documented(
        f["documented"], f"{where}.documented", text and "bits" not in out, problems
    )
    _documented_covered(out, where, problems)
    return out


def _documented_covered(tables: Mapping[str, Any], where: str, problems: list[str]) -> None:
    """Every code the vendor documents must be in the table (bit numbers for a bit field)."""
    known = {code for code, _ in tables.get("values", ())} | {bit for bit, _ in tables.get("bits", ())}
    missing = [code for code in tables["documented"] if code not in known]
    if missing:
        problems.append(f"{where}: documented codes {missing} are missing from its table")


def _parse_field(name: str, raw: Any, section: str, default_fc: int, problems: list[str]) -> _Parsed | None:
    where = f"{section}.{name}"
    if not isinstance(raw, Mapping):
        problems.append(f'{where}: expected a table (e.g. {{ address = 0, type = "u16" }})')
        return None
    f = take(raw, FIELD_KEYS, where, problems)
    kind, function = _type_and_function(f, where, default_fc, problems)
    length = _length(f, where, kind, problems)
    _field_checks(name, section, f, where, problems)
    extras = _field_extras(name, section, f, where, kind, function, length, problems)
    if not isinstance(f["address"], int) or isinstance(f["address"], bool):
        return None
    field = Field(
        name,
        f["address"],
        kind,
        scale=float(f["scale"]) if isinstance(f["scale"], NUMBER) and f["scale"] else 1.0,
        unit=str(f["unit"] or (CANONICAL.get(name, "") if section == "telemetry" else "")),
        length=length,
        byte_order=cast(Order | None, f["byte_order"] if f["byte_order"] in ("big", "little") else None),
        word_order=cast(Order | None, f["word_order"] if f["word_order"] in ("big", "little") else None),
        unconfirmed=f["unconfirmed"] is True,
        note=str(f["note"] or ""),
        **extras,
    )
    return _Parsed(section, function, f["address"], field)


def _field_extras(
    name: str,
    section: str,
    f: Mapping[str, Any],
    where: str,
    kind: FieldType,
    function: int,
    length: int,
    problems: list[str],
) -> dict[str, Any]:
    """The keyword arguments of the keys only some registers take (tables, masks, writes, rules)."""
    width = length if kind == "str" else WIDTH[kind]
    if section == "control" and function not in WRITABLE_FUNCTIONS:
        problems.append(
            f"{where}.function: {function} ({FUNCTION_NAMES[function]}) cannot be written; "
            "control registers are holding registers (3) or coils (1)"
        )
    _code_bits(name, section, f, where, kind, problems)
    return {
        **_tables(name, section, f, where, kind, width, problems),
        "mask": f["mask"] if isinstance(f["mask"], int) else 0,
        "shift": f["shift"] if isinstance(f["shift"], int) and f["shift"] > 0 else 0,
        "write_function": _write_function(section, f, where, kind, function, problems),
        "overrides": _overrides(name, section, f["overrides"], where, problems),
        "energy_kind": _energy_kind(name, section, f["energy_kind"], where, problems),
    }


def _overrides(name: str, section: str, raw: Any, where: str, problems: list[str]) -> tuple[StateRule, ...]:
    if raw is None:
        return ()
    if section != "telemetry" or name != "state":
        problems.append(f"{where}.overrides: only the state register has overrides")
        return ()
    if not isinstance(raw, list):
        problems.append(f"{where}.overrides: expected a list of {{ register, equals, state }} tables")
        return ()
    return tuple(r for i, item in enumerate(raw) if (r := _rule(item, f"{where}.overrides[{i}]", problems)))


def _rule(raw: Any, where: str, problems: list[str]) -> StateRule | None:
    r = take(raw, RULE_KEYS, where, problems)
    check(problems, f"{where}.register", r["register"], str)
    check(problems, f"{where}.equals", r["equals"], int)
    check(problems, f"{where}.mask", r["mask"], int, lambda v: v >= 0, ">= 0")
    states = [r["state"], *(r["from"] if isinstance(r["from"], list) else [])]
    if r["from"] is not None and not isinstance(r["from"], list):
        problems.append(f"{where}.from: expected a list of states")
    for state in states:
        if state is not None and state not in STATE_NAMES:
            problems.append(f"{where}: {state!r} is not one of {', '.join(STATE_NAMES)}")
    if not (isinstance(r["register"], str) and type(r["equals"]) is int and r["state"] in STATE_NAMES):
        return None
    only_from = tuple(STATE_NAMES[s] for s in states[1:] if s in STATE_NAMES)
    mask = r["mask"] if isinstance(r["mask"], int) else 0
    return StateRule(r["register"], r["equals"], STATE_NAMES[r["state"]], mask, only_from)


def _energy_kind(name: str, section: str, raw: Any, where: str, problems: list[str]) -> Any:
    if raw == "meter":
        return raw
    if section != "telemetry" or name != "energy_Wh":
        problems.append(f"{where}.energy_kind: only for telemetry energy_Wh")
    elif raw != "session":
        problems.append(f"{where}.energy_kind: {raw!r} is not meter or session")
    else:
        return raw
    return "meter"


def _check_rule_registers(parsed: list[_Parsed], problems: list[str]) -> None:
    """Every override names a polled integer register."""
    polled = {p.field.name: p.field for p in parsed if p.section in ("telemetry", "readback")}
    for p in parsed:
        for rule in p.field.overrides:
            f = polled.get(rule.register)
            if f is None:
                problems.append(
                    f"telemetry.state.overrides: no register {rule.register!r} in [telemetry] or [readback]"
                )
            elif f.type in ("str", "float32", "float64"):
                problems.append(
                    f"telemetry.state.overrides: {rule.register} is {f.type}, not an integer register"
                )


def _code_bits(
    name: str, section: str, f: Mapping[str, Any], where: str, kind: FieldType, problems: list[str]
) -> None:
    if f["mask"] is None and not f["shift"]:
        return
    if section != "telemetry" or name not in TABLE_FIELDS or kind in ("str", "float32", "float64"):
        problems.append(f"{where}: mask and shift are for integer state and fault registers only")
        return
    bits = 16 * WIDTH[kind]
    check(problems, f"{where}.mask", f["mask"], int, lambda v: 0 < v < 2**bits, f"a non-zero {bits}-bit mask")
    check(problems, f"{where}.shift", f["shift"], int, lambda v: 0 <= v < bits, f"0..{bits - 1}")


def _write_function(
    section: str, f: Mapping[str, Any], where: str, kind: FieldType, function: int, problems: list[str]
) -> int:
    value = f["write_function"]
    if value is None:
        return 0
    if section != "control" or function != 3:
        problems.append(f"{where}.write_function: only for [control] holding registers")
    elif value not in (6, 16):
        problems.append(f"{where}.write_function: {value!r} is not 6 or 16")
    elif value == 6 and WIDTH.get(kind, 2) != 1:
        problems.append(f"{where}.write_function: 6 writes one register; {kind} needs 16")
    else:
        return int(value)
    return 0


def _parse_section(
    data: Mapping[str, Any], section: str, default_fc: int, problems: list[str]
) -> list[_Parsed]:
    raw = data.get(section, {})
    if not isinstance(raw, Mapping):
        problems.append(f"{section}: expected a table of registers")
        return []
    parsed = [_parse_field(name, value, section, default_fc, problems) for name, value in raw.items()]
    return [p for p in parsed if p is not None]


# ------------------------------------------------------------------------------ blocks


def _blocks(parsed: list[_Parsed], section: str) -> tuple[Block, ...]:
    """One block per function code, based at its lowest address."""
    functions = sorted({p.function for p in parsed if p.section == section})
    blocks = []
    for fc in functions:
        members = [p for p in parsed if p.section == section and p.function == fc]
        base = min(p.address for p in members)
        fields = tuple(_rebase(p.field, p.address - base) for p in sorted(members, key=lambda p: p.address))
        name = section if len(functions) == 1 else f"{section}.{FUNCTION_NAMES[fc].replace(' ', '_')}"
        blocks.append(Block(name, base, fields, section == "control", fc, section))
    return tuple(blocks)


def _rebase(f: Field, offset: int) -> Field:
    return dataclasses.replace(f, offset=offset)


def _overlaps(spans: list[tuple[int, int, str]]) -> Iterator[tuple[str, str, int, int]]:
    """Pairs of overlapping (start, end, label) spans: (label, label, first, last shared)."""
    ordered = sorted(spans)
    for i, (_start, end, label) in enumerate(ordered):
        for other_start, other_end, other in ordered[i + 1 :]:
            if other_start >= end:
                break
            yield label, other, other_start, min(end, other_end) - 1


def _check_overlaps(parsed: list[_Parsed], bases: tuple[int, ...], stride: int, problems: list[str]) -> None:
    """Registers overlapping within a port, ports overlapping each other, identity over a port."""
    for fc in sorted({p.function for p in parsed}):
        port = [p for p in parsed if p.function == fc and p.section != "identity"]
        spans = [(p.address, p.address + p.field.width, f"{p.section}.{p.field.name}") for p in port]
        for a, b, first, last in _overlaps(spans):
            problems.append(f"{a} and {b} overlap at {first}..{last} ({FUNCTION_NAMES[fc]})")
        if not port:
            continue
        low, high = min(s[0] for s in spans), max(s[1] for s in spans)
        if stride and len(bases) > 1 and stride < high - low:
            problems.append(
                f"ports.stride: {stride} is smaller than a port's span of {high - low} "
                f"{FUNCTION_NAMES[fc]} (offsets {low}..{high - 1})"
            )
            continue
        taken = [(b + low, b + high, f"port {i}") for i, b in enumerate(bases, start=1)]
        for a, b, first, last in _overlaps(taken):
            problems.append(f"ports: {a} and {b} overlap at {first}..{last} ({FUNCTION_NAMES[fc]})")
        ident = [(p.address, p.address + p.field.width, f"identity.{p.field.name}") for p in parsed
                 if p.function == fc and p.section == "identity"]  # fmt: skip
        fields = [
            (b + s, b + e, f"port {i} {label}") for i, b in enumerate(bases, start=1) for s, e, label in spans
        ]
        for a, b, first, last in _overlaps(ident + fields):  # identity may sit between port registers
            if a.startswith("identity") != b.startswith("identity"):
                a, b = (a, b) if a.startswith("identity") else (b, a)
                problems.append(f"{a} and {b} overlap at {first}..{last} ({FUNCTION_NAMES[fc]})")
        if high + max(bases) > 0x10000:
            problems.append(f"ports: the last port's registers end beyond 65535 ({FUNCTION_NAMES[fc]})")


def _check_identity_overlaps(parsed: list[_Parsed], problems: list[str]) -> None:
    for fc in sorted({p.function for p in parsed if p.section == "identity"}):
        spans = [(p.address, p.address + p.field.width, f"identity.{p.field.name}") for p in parsed
                 if p.section == "identity" and p.function == fc]  # fmt: skip
        for a, b, first, last in _overlaps(spans):
            problems.append(f"{a} and {b} overlap at {first}..{last} ({FUNCTION_NAMES[fc]})")


# ------------------------------------------------------------------------------ header, ports, match


def _parse_header(data: Mapping[str, Any], problems: list[str]) -> dict[str, Any]:
    m = take(data.get("map", {}), MAP_KEYS, "map", problems)
    check(
        problems, "map.name", m["name"], str, lambda v: bool(_MAP_NAME.match(v)), "lower-case a-z 0-9 . _ -"
    )
    for key in ("title", "vendor", "document", "document_version"):
        check(problems, f"map.{key}", m[key], str)
    for key in ("byte_order", "word_order"):
        check(problems, f"map.{key}", m[key], str, lambda v: v in ("big", "little"), "big or little")
    check(problems, "map.function", m["function"], int, lambda v: v in FUNCTION_NAMES, "1, 2, 3 or 4")
    check(problems, "map.max_read", m["max_read"], int, lambda v: 1 <= v <= 125, "1..125 (the Modbus limit)")
    check(
        problems,
        "map.nominal_voltage_V",
        m["nominal_voltage_V"],
        NUMBER,
        lambda v: 50 <= v <= 1000,
        "50..1000",
    )
    check(problems, "map.phases", m["phases"], int, lambda v: v in (1, 2, 3), "1, 2 or 3")
    check(problems, "map.identity_unit", m["identity_unit"], int, lambda v: 0 <= v <= 255, "0..255")
    return m


def _parse_ports(data: Mapping[str, Any], problems: list[str]) -> tuple[tuple[int, ...], int]:
    p = take(data.get("ports", {}), PORT_KEYS, "ports", problems)
    check(problems, "ports.count", p["count"], int, lambda v: 1 <= v <= 99, "1..99")
    count = p["count"] if isinstance(p["count"], int) and 1 <= p["count"] <= 99 else 1
    if p["bases"] is not None:
        if p["base"] is not None or p["stride"] is not None:
            problems.append("ports: give either bases or base and stride, not both")
        bases = p["bases"]
        if not isinstance(bases, list) or not all(type(b) is int and 0 <= b <= 0xFFFF for b in bases):
            problems.append("ports.bases: expected a list of addresses 0..65535")
            return (0,) * count, 0
        if len(bases) != count:
            problems.append(f"ports.bases: {len(bases)} bases for count = {count} ports")
        return tuple(bases) or (0,), 0
    base = p["base"] if p["base"] is not None else 0
    stride = p["stride"] if p["stride"] is not None else 0
    check(problems, "ports.base", base, int, lambda v: 0 <= v <= 0xFFFF, "0..65535")
    check(problems, "ports.stride", stride, int, lambda v: v >= 0, ">= 0")
    if count > 1 and not stride:
        problems.append(f"ports: {count} ports need a stride or explicit bases")
    if not (isinstance(base, int) and isinstance(stride, int)):
        return (0,) * count, 0
    return tuple(base + i * stride for i in range(count)), stride


def _parse_match(
    data: Mapping[str, Any], identity: list[_Parsed], problems: list[str]
) -> tuple[tuple[str, tuple[int | str | tuple[int, int], ...]], ...]:
    raw = data.get("match", {})
    if not isinstance(raw, Mapping):
        problems.append("match: expected a table of identity field = accepted value(s)")
        return ()
    names = {p.field.name for p in identity}
    out = []
    for key, value in raw.items():
        where = f"match.{key}"
        if key not in names:
            problems.append(
                f"{where}: not an identity register (identity: {', '.join(sorted(names)) or 'none'})"
            )
            continue
        accepted = [_accepted(v, where, problems) for v in (value if isinstance(value, list) else [value])]
        if accepted and all(a is not None for a in accepted):
            out.append((key, tuple(a for a in accepted if a is not None)))
        elif not accepted:
            problems.append(f"{where}: an empty list accepts nothing")
    return tuple(out)


def _accepted(value: Any, where: str, problems: list[str]) -> int | str | tuple[int, int] | None:
    """One accepted value: text (wildcards), an integer, or ``{ min = , max = }``."""
    if isinstance(value, Mapping):
        low, high = value.get("min"), value.get("max")
        if set(value) <= {"min", "max"} and type(low) is int and type(high) is int and low <= high:
            return (low, high)
        problems.append(f"{where}: a range is {{ min = N, max = M }} with integers N <= M")
        return None
    if isinstance(value, str | int) and not isinstance(value, bool):
        return value
    problems.append(f"{where}: expected text, an integer or {{ min, max }}, got {value!r}")
    return None


def matches(regmap: RegisterMap, identity: Mapping[str, object]) -> bool:
    """Whether decoded identity values fit the map's match rule: text with ``*`` and ``?`` wildcards
    (an integer register is matched by its decimal digits), integers, ranges."""
    if not regmap.match:
        return False
    return all(any(fits(identity.get(name), want) for want in accepted) for name, accepted in regmap.match)


def fits(value: object, want: int | str | tuple[int, int]) -> bool:
    """One ``[match]`` entry's test: text with wildcards (an integer by its decimal digits), an
    integer, or an inclusive range."""
    if isinstance(value, bool):
        return False
    if isinstance(want, tuple):
        return isinstance(value, int) and want[0] <= value <= want[1]
    if isinstance(want, str):
        text = str(value) if isinstance(value, int) else value
        pattern = re.escape(want).replace(r"\*", ".*").replace(r"\?", ".")
        return isinstance(text, str) and re.fullmatch(pattern, text.strip(), re.IGNORECASE) is not None
    return value == want


# ------------------------------------------------------------------------------ command recipe


def _register(
    value: Any, where: str, parsed: list[_Parsed], sections: tuple[str, ...], problems: list[str]
) -> _Parsed | None:
    if not isinstance(value, str):
        problems.append(f"{where}: expected a register name")
        return None
    found = next((p for p in parsed if p.field.name == value and p.section in sections), None)
    if found is None:
        problems.append(f"{where}: no register {value!r} in {' or '.join(f'[{s}]' for s in sections)}")
    return found


def _parse_sequenced(raw: Mapping[str, Any], parsed: list[_Parsed], problems: list[str]) -> Recipe | None:
    c = take(raw, SEQUENCED_KEYS, "command", problems)
    writes = [_register(c[k], f"command.{k}", parsed, ("control",), problems)
              for k in ("command", "sequence", "target_energy", "power_limit")]  # fmt: skip
    for k in ("ack_sequence", "ack_status"):
        _register(c[k], f"command.{k}", parsed, ("readback",), problems)
    if any(w is not None and w.function != 3 for w in writes):
        problems.append("command: a sequenced command writes holding registers (function 3)")
    codes = c["codes"] if isinstance(c["codes"], Mapping) else {}
    if sorted(codes) != sorted(OPS) or not all(type(v) is int and 0 < v <= 0xFFFF for v in codes.values()):
        problems.append("command.codes: expected start, stop and limit = integer codes 1..65535")
    statuses = _statuses(c["statuses"], problems)
    if problems:
        return None
    return SequencedRecipe(
        c["command"], c["sequence"], c["target_energy"], c["power_limit"], c["ack_sequence"],
        c["ack_status"], tuple(sorted(codes.items())), statuses,
    )  # fmt: skip


def _statuses(raw: Any, problems: list[str]) -> tuple[tuple[int, str], ...]:
    if not isinstance(raw, Mapping):
        problems.append("command.statuses: expected a table of status code = outcome")
        return ()
    out = []
    for key, outcome in raw.items():
        code = _parse_code(str(key), False)
        if code is None or outcome not in SEQUENCED_STATUSES:
            problems.append(
                f"command.statuses.{key}: expected integer code = one of {', '.join(SEQUENCED_STATUSES)}"
            )
        else:
            out.append((int(code), str(outcome)))
    if "ok" not in {o for _c, o in out}:
        problems.append("command.statuses: no status means ok")
    return tuple(out)


def _parse_current(raw: Mapping[str, Any], parsed: list[_Parsed], problems: list[str]) -> Recipe | None:
    c = take(raw, CURRENT_KEYS, "command", problems)
    confirm = c["confirm"] if c["confirm"] is not None else c["current"]
    _current_registers(c, confirm, parsed, problems)
    _current_values(c, problems)
    if problems:
        return None
    return CurrentRecipe(
        c["current"], float(c["min_current_A"]), float(c["max_current_A"]), float(c["step_A"]), confirm,
        c["enable"], c["enable_on"], c["enable_off"], c["stop"], float(c["confirm_tolerance_A"]),
        c["enable_readable"], float(c["refresh_s"]), c["max_current"],
    )  # fmt: skip


def _current_registers(
    c: Mapping[str, Any], confirm: Any, parsed: list[_Parsed], problems: list[str]
) -> None:
    """The registers a current recipe names exist, in the right tables."""
    current = _register(c["current"], "command.current", parsed, ("control",), problems)
    if current is not None and current.function != 3:
        problems.append("command.current: the current limit must be a holding register (function 3)")
    _register(confirm, "command.confirm", parsed, ("control", "readback", "telemetry"), problems)
    if c["enable"] is not None:
        _register(c["enable"], "command.enable", parsed, ("control",), problems)
    if c["max_current"] is not None:
        _register(c["max_current"], "command.max_current", parsed, ("readback",), problems)
    if c["stop"] == "disable" and c["enable"] is None:
        problems.append("command.stop: disable needs an enable register")


def _current_values(c: Mapping[str, Any], problems: list[str]) -> None:
    """A current recipe's numbers and switches are in range."""
    for key in ("min_current_A", "max_current_A", "step_A"):
        check(problems, f"command.{key}", c[key], NUMBER, lambda v: 0 < v <= 1000, "0 < A <= 1000")
    check(problems, "command.confirm_tolerance_A", c["confirm_tolerance_A"], NUMBER, lambda v: v >= 0, ">= 0")
    for key in ("enable_on", "enable_off"):
        check(problems, f"command.{key}", c[key], int, lambda v: 0 <= v <= 0xFFFF, "0..65535")
    stops = ("current_zero", "disable")
    check(problems, "command.stop", c["stop"], str, lambda v: v in stops, "current_zero or disable")
    check(problems, "command.enable_readable", c["enable_readable"], bool)
    refresh_ok = lambda v: v == 0 or 1 <= v <= 3600  # noqa: E731
    check(problems, "command.refresh_s", c["refresh_s"], NUMBER, refresh_ok, "0 or 1..3600")
    low, high = c["min_current_A"], c["max_current_A"]
    if isinstance(low, NUMBER) and isinstance(high, NUMBER) and low > high:
        problems.append(f"command: min_current_A {low:g} > max_current_A {high:g}")


def _parse_recipe(data: Mapping[str, Any], parsed: list[_Parsed], problems: list[str]) -> Recipe | None:
    raw = data.get("command")
    if raw is None:
        return None  # a read-only map: the gateway refuses commands to its piles
    if not isinstance(raw, Mapping):
        problems.append("command: expected a table")
        return None
    own: list[str] = []
    style = raw.get("style")
    if style == "sequenced":
        recipe = _parse_sequenced(raw, parsed, own)
    elif style == "current":
        recipe = _parse_current(raw, parsed, own)
    else:
        own.append(f"command.style: {style!r} is not sequenced or current")
        recipe = None
    problems.extend(own)
    return recipe


# ------------------------------------------------------------------------------ the whole file


def parse_map(data: Mapping[str, Any], source: str = "<map>") -> RegisterMap:
    """A validated map from a parsed TOML document; MapError lists every problem."""
    problems: list[str] = []
    problems.extend(
        f"unknown table {key!r} (tables: {', '.join(SECTIONS)})" for key in data if key not in SECTIONS
    )
    m = _parse_header(data, problems)
    default_fc = m["function"] if m["function"] in FUNCTION_NAMES else 3
    bases, stride = _parse_ports(data, problems)
    parsed = [p for s in ("identity", *PORT_SECTIONS) for p in _parse_section(data, s, default_fc, problems)]
    _check_names(parsed, problems)
    _check_rule_registers(parsed, problems)
    _check_overlaps(parsed, bases, stride, problems)
    _check_identity_overlaps(parsed, problems)
    match = _parse_match(data, [p for p in parsed if p.section == "identity"], problems)
    recipe = _parse_recipe(data, parsed, problems)
    if problems:
        raise MapError(source, problems)
    return RegisterMap(
        name=m["name"],
        identity_blocks=_blocks(parsed, "identity"),
        port_blocks=tuple(b for s in PORT_SECTIONS for b in _blocks(parsed, s)),
        port_bases=bases,
        port_stride=stride,
        byte_order=m["byte_order"],
        word_order=m["word_order"],
        max_read=m["max_read"],
        nominal_voltage_V=float(m["nominal_voltage_V"]),
        phases=m["phases"],
        recipe=recipe,
        match=match,
        header=MapHeader(m["title"], m["vendor"], m["document"], m["document_version"], source),
        identity_unit=m["identity_unit"] or 0,
    )


def _check_names(parsed: list[_Parsed], problems: list[str]) -> None:
    seen: dict[str, str] = {}
    for p in parsed:
        if p.section == "identity":
            continue
        other = seen.setdefault(p.field.name, p.section)
        if other != p.section:
            problems.append(f"{p.section}.{p.field.name}: name already used in [{other}]")
    names = {p.field.name for p in parsed if p.section == "telemetry"}
    for name in REQUIRED_TELEMETRY:
        if name not in names:
            problems.append(f"telemetry.{name}: required (pilegate needs a port's {name} to run it)")


def load_map(path: str | Path) -> RegisterMap:
    """Read and validate a map file."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise MapError(str(path), [f"cannot read: {exc.strerror}"]) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise MapError(str(path), [f"not valid TOML: {exc}"]) from None
    return parse_map(data, str(path))


# ------------------------------------------------------------------------------ finding maps


def shipped_dir() -> Path:
    """The directory of the maps shipped with pilegate (package data)."""
    return Path(str(resources.files("protocols") / "maps"))


def shipped_names() -> list[str]:
    """Names of the shipped maps (their file names)."""
    return sorted(p.name.removesuffix(MAP_SUFFIX) for p in shipped_dir().glob(f"*{MAP_SUFFIX}"))


def is_path(ref: str) -> bool:
    """Whether a ``map =`` value names a file rather than a shipped map."""
    return ref.endswith(MAP_SUFFIX) or "/" in ref or "\\" in ref


_LOADED: dict[str, RegisterMap] = {}


def get_map(ref: str) -> RegisterMap:
    """The shipped map called ``ref``, or the map file at path ``ref`` (loaded once per process)."""
    key = str(Path(ref).resolve()) if is_path(ref) else ref
    if key in _LOADED:
        return _LOADED[key]
    if is_path(ref):
        regmap = load_map(ref)
    elif ref in shipped_names():
        regmap = load_map(shipped_dir() / f"{ref}{MAP_SUFFIX}")
        if regmap.name != ref:
            raise MapError(ref, [f"map.name: {regmap.name!r} differs from its file name {ref!r}"])
    else:
        raise MapError(ref, [f"unknown register map {ref!r}; shipped: {', '.join(shipped_names())}"])
    _LOADED[key] = regmap
    return regmap


class ShippedMaps(Mapping[str, RegisterMap]):
    """The shipped maps by name, each loaded on first use."""

    def __getitem__(self, name: str) -> RegisterMap:
        if name not in shipped_names():
            raise KeyError(name)
        return get_map(name)

    def __iter__(self) -> Iterator[str]:
        return iter(shipped_names())

    def __len__(self) -> int:
        return len(shipped_names())
