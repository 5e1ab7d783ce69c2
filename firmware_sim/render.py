"""A register map's encoder for the simulator: a port's readings rendered as the family's registers.

The inverse of the gateway's read plan. pilegate's port state and fault become the family's codes
(the map's value tables in reverse, IEC 61851 text states included; a fault as its bit in a bit
field), readings are scaled and fitted into the map's types (an energy meter floors to the
register's resolution and wraps like a real counter), and the identity registers say what the pile
is and satisfy the map's ``[match]`` rule, so a scan recognises the family.

Pure: no sockets, no clock. :class:`MapEncoder` is built once per map and checks at build time that
the map can show every state the simulator's physics produces.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

from protocols.codec import encode_value, orders
from protocols.maploader import fits
from protocols.regmodel import (
    FLOAT_TYPES,
    INT_RANGE,
    Block,
    CodecError,
    FaultCode,
    Field,
    PortState,
    RegisterMap,
    StateRule,
)

# A state the family has no code for is shown as the nearest one it has.
STATE_FALLBACKS: dict[PortState, tuple[PortState, ...]] = {
    PortState.AVAILABLE: (PortState.AVAILABLE,),
    PortState.PLUGGED: (PortState.PLUGGED, PortState.FINISHED),
    PortState.CHARGING: (PortState.CHARGING,),
    PortState.FINISHED: (PortState.FINISHED, PortState.PLUGGED),
    PortState.FAULTED: (PortState.FAULTED, PortState.UNAVAILABLE),
    PortState.UNAVAILABLE: (PortState.UNAVAILABLE, PortState.FAULTED),
}
# A family whose state register has no fault code (the fault shows in its fault register only)
# shows a faulted port as stopped with the vehicle connected.
FAULT_REGISTER_FALLBACKS = (PortState.FINISHED, PortState.PLUGGED)
# A fault the family does not name is shown as its "other" or "internal" code, else as a code
# (or bit) its table does not list, which the gateway reads as "other".
FAULT_FALLBACKS = (FaultCode.OTHER, FaultCode.INTERNAL)
RENDERED_SECTIONS = ("telemetry", "readback", "sim")

Kind = Literal["state", "fault", "energy", "number", "text"]


class MapNotServableError(ValueError):
    """The simulator cannot serve a pile of this family; ``problems`` says why."""

    def __init__(self, map_name: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"map {map_name} cannot be simulated: " + "; ".join(problems))


_STRUCT_CODES = {"u16": "H", "i16": "h", "u32": "I", "i32": "i", "u64": "Q", "i64": "q",
                 "float32": "f", "float64": "d", "bool": "H"}  # fmt: skip


@dataclass(frozen=True)
class RenderedBlock:
    """One per-port block the simulator renders, with each field's kind of value.

    ``packer`` (register blocks whose fields are all big-endian and do not overlap) packs the
    fields' raw values in one ``struct`` call, and ``words`` reads the bytes back as registers:
    the path every read of a charging port takes. Other blocks encode field by field.
    """

    block: Block
    fields: tuple[tuple[Field, Kind], ...]
    packer: struct.Struct | None = None
    words: struct.Struct | None = None

    @cached_property
    def runs(self) -> tuple[tuple[int, int], ...]:
        """(first, end) offsets of the block's runs of adjacent fields: the registers it owns.

        Only these are written into a device's table; the holes between them may belong to
        another block (a family's read-back registers can sit amid its telemetry)."""
        runs: list[list[int]] = []
        for f, _ in self.fields:
            if runs and f.offset <= runs[-1][1]:
                runs[-1][1] = max(runs[-1][1], f.offset + f.width)
            else:
                runs.append([f.offset, f.offset + f.width])
        return tuple((first, end) for first, end in runs)


def _rendered(regmap: RegisterMap, block: Block) -> RenderedBlock:
    fields = tuple((f, _kind(f)) for f in sorted(block.fields, key=lambda f: f.offset))
    layout, position = [">"], 0
    for f, _ in fields:
        if block.bits or f.offset < position or orders(regmap, f) != ("big", "big"):
            return RenderedBlock(block, fields)
        layout.append(f"{2 * (f.offset - position)}x" if f.offset > position else "")
        layout.append(f"{2 * f.width}s" if f.type == "str" else _STRUCT_CODES[f.type])
        position = f.offset + f.width
    layout.append(f"{2 * (block.size - position)}x" if block.size > position else "")
    return RenderedBlock(block, fields, struct.Struct("".join(layout)), struct.Struct(f">{block.size}H"))


def _kind(f: Field) -> Kind:
    if f.name == "state" and f.values:
        return "state"
    if f.name == "fault" and (f.values or f.bits):
        return "fault"
    if f.type == "str":
        return "text"
    return "energy" if f.name == "energy_Wh" else "number"


Want = int | str | tuple[int, int]


def _example(want: Want, numeric: bool) -> int | str:
    """A value that fits a ``[match]`` entry: a range's low end, wildcards filled in."""
    if isinstance(want, tuple):
        return want[0]
    if isinstance(want, str):
        if numeric:
            return int(want.replace("*", "").replace("?", "0") or "0")
        return want.replace("*", "").replace("?", "X")
    return want


class MapEncoder:
    """Turns canonical port values into a family's registers (see the module docstring)."""

    def __init__(self, regmap: RegisterMap) -> None:
        self.regmap = regmap
        self.blocks = tuple(_rendered(regmap, b) for b in regmap.port_blocks if b.kind in RENDERED_SECTIONS)
        self._state_field = self._telemetry_field("state")
        self._fault_field = self._telemetry_field("fault")
        self.state_plans = self._state_plans()
        self._fault_codes: dict[FaultCode, int | str] = {}

    def _telemetry_field(self, name: str) -> Field | None:
        found = self.regmap.fields_by_name.get(name)
        return found[1] if found is not None and found[0].kind == "telemetry" else None

    # ------------------------------------------------------------------------------ codes

    def _state_plans(self) -> dict[PortState, StatePlan]:
        f = self._state_field
        if f is None or not f.values:
            raise MapNotServableError(self.regmap.name, ["telemetry.state has no values table"])
        direct = {PortState(canonical) for _code, canonical in f.values}
        by_rule: dict[PortState, int] = {}  # a state only an override rule shows: the first such rule
        for i, rule in enumerate(f.overrides):
            if _rule_base(rule, direct) is not None:
                by_rule.setdefault(PortState(rule.state), i)
        plans: dict[PortState, StatePlan] = {}
        missing = []
        for state, chain in STATE_FALLBACKS.items():
            if state in (PortState.FAULTED, PortState.UNAVAILABLE) and self._fault_field is not None:
                chain = (*chain, *FAULT_REGISTER_FALLBACKS)
            shown = next((s for s in chain if s in direct or s in by_rule), None)
            if shown is None:
                missing.append(state.name.lower())
            else:
                plans[state] = _plan(f, shown, direct, by_rule.get(shown))
        needed = [m for m in missing if m != "unavailable"]  # the physics never goes unavailable
        if needed:
            problem = f"telemetry.state has no code for {', '.join(needed)} (nor a fallback)"
            raise MapNotServableError(self.regmap.name, [problem])
        return plans

    def state_code(self, state: PortState) -> int | str:
        """The family's state register value for ``state`` (or its nearest state the family has)."""
        plan = self.state_plans.get(state) or self.state_plans[PortState.FAULTED]
        return plan.code

    def state_registers(self, state: PortState) -> tuple[tuple[str, int], ...]:
        """Values of the registers the state's ``overrides`` read, so they give ``state``."""
        plan = self.state_plans.get(state) or self.state_plans[PortState.FAULTED]
        return plan.registers

    @property
    def state_codes(self) -> dict[PortState, int | str]:
        return {state: plan.code for state, plan in self.state_plans.items()}

    def fault_code(self, fault: FaultCode) -> int | str:
        """The family's code (or bit mask) for ``fault``; 0 without a fault register."""
        f = self._fault_field
        if f is None:
            return 0
        code = self._fault_codes.get(fault)
        if code is None:
            code = self._fault_codes[fault] = self._find_fault_code(f, fault)
        return code

    def _find_fault_code(self, f: Field, fault: FaultCode) -> int | str:
        named = {canonical for _bit, canonical in f.bits} | {canonical for _c, canonical in f.values}
        for candidate in (fault, *FAULT_FALLBACKS):
            if candidate == FaultCode.NONE or candidate in named:
                return _device_value(f, candidate)
        return _unnamed_code(f)

    # ------------------------------------------------------------------------------ values

    def raw(self, f: Field, kind: Kind, value: object) -> int | float | bytes:
        """The register value of ``value`` in ``f`` before scaling is undone: codes translated,
        text cut (as bytes), numbers clamped to the type (a meter floored and wrapped)."""
        if kind == "state":
            return _code_raw(f, self.state_code(PortState(_as_int(value))))
        if kind == "fault":
            return _code_raw(f, self.fault_code(FaultCode(_as_int(value))))
        if f.type == "str" or isinstance(value, str):
            return _code_raw(f, str(value))
        if f.type in FLOAT_TYPES:
            return _as_number(value) / f.scale
        return _raw_int(f, _as_number(value), wrap=kind == "energy")

    def fit(self, f: Field, kind: Kind, value: object) -> object:
        """``value`` made encodable in ``f`` (the engineering value of :meth:`raw`)."""
        raw = self.raw(f, kind, value)
        if isinstance(raw, bytes):
            return raw.decode("ascii")
        return raw if f.scale == 1.0 or kind in ("state", "fault") else raw * f.scale

    def encode_block(self, rendered: RenderedBlock, values: Mapping[str, object]) -> list[int]:
        """The block's registers (or bits) for ``values``; fields without a value are 0."""
        if rendered.packer is not None and rendered.words is not None:
            raws = [
                self.raw(f, kind, value)
                if (value := values.get(f.name)) is not None
                else _ZERO[f.type == "str"]
                for f, kind in rendered.fields
            ]
            try:
                return list(rendered.words.unpack(rendered.packer.pack(*raws)))
            except (struct.error, OverflowError):
                pass  # a float beyond float32: the generic path names the problem
        words = [0] * rendered.block.size
        for f, kind in rendered.fields:
            value = values.get(f.name)
            if value is None:
                continue
            encoded = encode_value(f, self.fit(f, kind, value), *orders(self.regmap, f))
            words[f.offset : f.offset + f.width] = encoded
        return words

    def encode_field(self, f: Field, value: object) -> list[int]:
        """One field's registers for ``value`` (fitted like a rendered value)."""
        return encode_value(f, self.fit(f, _kind(f), value), *orders(self.regmap, f))

    def identity(self, values: Mapping[str, object]) -> list[tuple[Block, list[int]]]:
        """Every identity block's registers: ``values`` by name, changed where ``[match]`` needs."""
        wanted = dict(values)
        types = {f.name: f.type for b in self.regmap.identity_blocks for f in b.fields}
        for name, accepted in self.regmap.match:
            if not any(fits(wanted.get(name), want) for want in accepted):
                wanted[name] = _example(accepted[0], types.get(name) != "str")
        out = []
        for block in self.regmap.identity_blocks:
            words = [0] * block.size
            for f in block.fields:
                if f.name in wanted:
                    kind: Kind = "text" if f.type == "str" else "number"
                    words[f.offset : f.offset + f.width] = self.encode_field_as(f, kind, wanted[f.name])
            out.append((block, words))
        return out

    def encode_field_as(self, f: Field, kind: Kind, value: object) -> list[int]:
        return encode_value(f, self.fit(f, kind, value), *orders(self.regmap, f))


@dataclass(frozen=True)
class StatePlan:
    """How a family shows one state: its state register's value, and the values of the registers
    its override rules read (the rule giving the state matches, the rules before it do not)."""

    code: int | str
    registers: tuple[tuple[str, int], ...] = ()


def _shifted(f: Field, code: int | str) -> int | str:
    return code << f.shift if isinstance(code, int) else code


def _rule_base(rule: StateRule, direct: set[PortState]) -> PortState | None:
    """A state the register can show directly under which ``rule`` applies."""
    if rule.only_from:
        candidates = [PortState(s) for s in rule.only_from]
    else:
        candidates = [PortState(rule.state), PortState.AVAILABLE, *sorted(direct)]
    return next((s for s in candidates if s in direct), None)


def _plan(f: Field, shown: PortState, direct: set[PortState], rule_index: int | None) -> StatePlan:
    rules = f.overrides
    base = shown if rule_index is None else _rule_base(rules[rule_index], direct)
    assert base is not None  # rule_index is only given for rules with a base
    registers: dict[str, int] = {}
    for i, rule in enumerate(rules):
        value = registers.get(rule.register, 0)
        if i == rule_index:
            registers[rule.register] = _matching(value, rule)
            break
        applies = not rule.only_from or int(base) in rule.only_from
        registers[rule.register] = _not_matching(value, rule) if applies else value
    return StatePlan(_shifted(f, f.device_code(int(base))), tuple(registers.items()))


def _matching(value: int, rule: StateRule) -> int:
    return (value & ~rule.mask) | (rule.equals & rule.mask) if rule.mask else rule.equals


def _not_matching(value: int, rule: StateRule) -> int:
    if rule.mask:
        if value & rule.mask == rule.equals:
            value = (value & ~rule.mask) | ((rule.equals ^ rule.mask) & rule.mask)
        return value
    return value if value != rule.equals else rule.equals + 1 if rule.equals == 0 else 0


def _device_value(f: Field, fault: FaultCode) -> int | str:
    if f.bits:
        if fault == FaultCode.NONE:
            return 0
        return 1 << next(bit for bit, canonical in f.bits if canonical == fault) << f.shift
    if fault == FaultCode.NONE and all(canonical != FaultCode.NONE for _c, canonical in f.values):
        return "" if f.type == "str" else 0
    return _shifted(f, f.device_code(int(fault)))


def _unnamed_code(f: Field) -> int | str:
    """A code (or bit) the field's table does not list: the gateway reads it as ``other``."""
    if f.bits:
        used = {bit for bit, _c in f.bits}
        free = next((b for b in range(16 * f.width) if b not in used), None)
        if free is None:
            raise CodecError(f"{f.name}: every bit is named; no bit left for an unnamed fault")
        return 1 << free << f.shift
    if f.type == "str":
        used_text = {str(c).strip().upper() for c, _v in f.values}
        return next(t for t in ("?", "X", "XX", "ERR") if t not in used_text)
    used = {c for c, _v in f.values if isinstance(c, int)}
    return _shifted(f, next(c for c in range(1, 0x10000) if c not in used))


def _as_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise CodecError(f"expected an integer state or fault, got {value!r}")
    return value


def _as_number(value: object) -> float:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if not isinstance(value, int | float):
        raise CodecError(f"expected a number, got {value!r}")
    return float(value)


_ZERO: dict[bool, int | bytes] = {False: 0, True: b""}


def _code_raw(f: Field, code: int | str) -> int | bytes:
    """A device code (or text) as the raw value of ``f``: ASCII bytes for a string register."""
    if f.type == "str":
        return str(code).encode("ascii", errors="replace")[: 2 * f.width]
    return code if isinstance(code, int) else 0


def _raw_int(f: Field, value: float, *, wrap: bool) -> int:
    """``value`` within the field's raw range: a counter floors and wraps, a reading is clamped."""
    low, high = INT_RANGE[f.type]
    scaled = value / f.scale
    if wrap:
        raw = math.floor(scaled + 1e-9)  # a meter never shows energy it has not counted
        return raw % (high + 1) if low == 0 else max(low, min(high, raw))
    return max(low, min(high, round(scaled)))
