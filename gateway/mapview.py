"""A register map for humans and scripts: the rows ``pilectl map show`` prints (or emits as JSON)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from protocols.canonical import FAULT_NAMES, STATE_NAMES
from protocols.codec import orders
from protocols.regmodel import Block, Field, RegisterMap

FUNCTION_LABELS = {1: "coil", 2: "discrete", 3: "holding", 4: "input"}
_STATE_BY_CODE = {v: k for k, v in STATE_NAMES.items()}
_FAULT_BY_CODE = {v: k for k, v in FAULT_NAMES.items()}


def _table(f: Field) -> str:
    names = _STATE_BY_CODE if f.name == "state" else _FAULT_BY_CODE
    if f.bits:
        return ", ".join(f"bit {bit}={names[code]}" for bit, code in f.bits)
    return ", ".join(f"{code}={names[value]}" for code, value in f.values)


def _row(regmap: RegisterMap, block: Block, f: Field, per_port: bool) -> dict[str, Any]:
    address = block.base + f.offset
    byte_order, word_order = orders(regmap, f)
    return {
        "section": block.kind,
        "name": f.name,
        "function": block.function,
        "address": address,
        "port1_address": regmap.port_bases[0] + address if per_port else address,
        "type": "string" if f.type == "str" else f.type,
        "registers": f.width,
        "scale": f.scale,
        "unit": f.unit,
        "order": f"{byte_order}/{word_order}",
        "table": _table(f),
        "unconfirmed": f.unconfirmed,
        "note": f.note,
    }


def map_rows(regmap: RegisterMap) -> list[dict[str, Any]]:
    """One row per register: identity first (absolute), then per port (relative and for port 1)."""
    rows = [_row(regmap, b, f, False) for b in regmap.identity_blocks for f in b.fields]
    rows += [_row(regmap, b, f, True) for b in regmap.port_blocks for f in b.fields]
    return rows


def map_summary(regmap: RegisterMap) -> dict[str, Any]:
    """The whole map as JSON-able data."""
    return {
        "name": regmap.name,
        **asdict(regmap.header),
        "byte_order": regmap.byte_order,
        "word_order": regmap.word_order,
        "max_read": regmap.max_read,
        "nominal_voltage_V": regmap.nominal_voltage_V,
        "phases": regmap.phases,
        "port_bases": list(regmap.port_bases),
        "port_stride": regmap.port_stride,
        "match": {name: list(values) for name, values in regmap.match},
        "recipe": asdict(regmap.recipe) if regmap.recipe else None,
        "registers": map_rows(regmap),
    }


def _recipe_line(regmap: RegisterMap) -> str:
    recipe = regmap.recipe
    if recipe is None:
        return "commands: none (read-only family)"
    items = asdict(recipe).items()
    details = ", ".join(f"{k}={_plain(v)}" for k, v in items if k != "style" and v is not None)
    return f"commands: {recipe.style} ({details})"


def _plain(value: object) -> str:
    """Pair tuples (codes, statuses) as ``a:1 b:2``; anything else as it prints."""
    if isinstance(value, tuple) and all(isinstance(v, tuple) and len(v) == 2 for v in value):
        return "{" + " ".join(f"{a}:{b}" for a, b in value) + "}"
    return str(value)


def format_map(regmap: RegisterMap) -> str:
    """The map as a table: header lines, then one line per register."""
    h = regmap.header
    ports = (
        f"ports: {regmap.max_ports}, base {regmap.port_bases[0]}, stride {regmap.port_stride}"
        if regmap.port_stride
        else f"ports: {regmap.max_ports}, bases {', '.join(map(str, regmap.port_bases))}"
    )
    lines = [
        f"map {regmap.name}: {h.title}".rstrip(": "),
        f"document: {h.document}" + (f" (version {h.document_version})" if h.document_version else ""),
        f"{ports}; orders {regmap.byte_order}/{regmap.word_order}; largest read {regmap.max_read}; "
        f"{regmap.phases} phase(s) at {regmap.nominal_voltage_V:g} V",
        _recipe_line(regmap),
        f"{'section':<10} {'name':<18} {'fc':<8} {'addr':>5} {'port1':>5} {'type':<8} {'n':>3} "
        f"{'scale':>7} {'unit':<4}  notes (table, UNCONFIRMED, note)",
    ]
    for r in map_rows(regmap):
        notes = "; ".join(x for x in (r["table"], "UNCONFIRMED" if r["unconfirmed"] else "", r["note"]) if x)
        lines.append(
            f"{r['section']:<10} {r['name']:<18} {FUNCTION_LABELS[r['function']]:<8} {r['address']:>5} "
            f"{r['port1_address']:>5} {r['type']:<8} {r['registers']:>3} {r['scale']:>7g} {r['unit']:<4}  "
            f"{notes}".rstrip()
        )
    return "\n".join(lines)
