"""Device values to pilegate's canonical ones and back: state and fault tables, derived readings.

A map names its telemetry by pilegate's canonical names (``CANONICAL``); the read plan applies the
converters here once per field, so the publisher and the trackers see ``state`` as a
:class:`PortState`, ``fault`` as a :class:`FaultCode` and numbers in canonical units whatever the
family publishes. The simulator uses the inverse (:func:`device_value`) to render a family's codes.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping

from protocols.regmodel import CodecError, FaultCode, Field, PortState, RegisterMap, StateRule

CANONICAL: dict[str, str] = {
    "state": "",
    "voltage_V": "V",
    "current_A": "A",
    "power_W": "W",
    "energy_Wh": "Wh",
    "temperature_C": "°C",
    "fault": "",
    "heartbeat": "",
    "voltage_L1_V": "V",
    "voltage_L2_V": "V",
    "voltage_L3_V": "V",
    "current_L1_A": "A",
    "current_L2_A": "A",
    "current_L3_A": "A",
}
TABLE_FIELDS = ("state", "fault")
STATE_NAMES = {s.name.lower(): int(s) for s in PortState}
FAULT_NAMES = {f.name.lower(): int(f) for f in FaultCode}
_PHASE_V = ("voltage_L1_V", "voltage_L2_V", "voltage_L3_V")
_PHASE_A = ("current_L1_A", "current_L2_A", "current_L3_A")

Converter = Callable[[object], object]


def _text_key(value: object) -> object:
    return value.strip().upper() if isinstance(value, str) else value


def _masked(f: Field, convert: Converter) -> Converter:
    """``convert`` applied to the code in the register's ``mask``/``shift`` bits."""
    if not f.mask and not f.shift:
        return convert
    mask, shift = f.mask or -1, f.shift
    return lambda value: convert((value & mask) >> shift if isinstance(value, int) else value)


def state_converter(f: Field) -> Converter:
    """Device state code -> PortState value; a code the table lacks reads as unavailable."""
    return _masked(f, _lookup(f, int(PortState.UNAVAILABLE)))


def fault_converter(f: Field) -> Converter:
    """Device fault code (or bit field) -> FaultCode value; an unnamed code reads as ``other``."""
    if f.bits:
        bits = tuple(sorted(f.bits))
        return _masked(f, lambda value: _first_bit(bits, value))
    return _masked(f, _lookup(f, int(FaultCode.OTHER)))


def _lookup(f: Field, unknown: int) -> Converter:
    """A table lookup (text codes compared stripped and upper-case); the hot path of every poll."""
    table = {_text_key(k): v for k, v in f.values}
    if f.type == "str":
        return lambda value: table.get(_text_key(value), unknown)
    get = table.get
    return lambda value: get(value, unknown)


def _first_bit(bits: tuple[tuple[int, int], ...], value: object) -> int:
    """The fault of the lowest set bit; bits named ``none`` (status flags) are ignored."""
    if not isinstance(value, int) or value == 0:
        return int(FaultCode.NONE)
    named = 0
    for bit, code in bits:
        if value >> bit & 1:
            if code != FaultCode.NONE:
                return code
            named |= 1 << bit
    return int(FaultCode.NONE if value == named else FaultCode.OTHER)  # OTHER: a bit the map lacks


def _whole_Wh(value: object) -> object:
    """Energy as whole Wh, truncated: a meter never reads more than it has counted."""
    return int(value) if isinstance(value, int | float) else value


def converter(f: Field) -> Converter | None:
    """What turns the field's decoded value into its canonical value (None: it already is)."""
    if f.name == "state":
        return state_converter(f)
    if f.name == "fault":
        return fault_converter(f)
    if f.name == "energy_Wh" and (f.scale != 1.0 or f.type.startswith("float")):
        return _whole_Wh
    return None


def device_value(f: Field, canonical: int) -> int | str:
    """The device's value for a canonical state or fault (bit fields: the bit; shifted codes:
    the code in its bits, other bits 0)."""
    if f.bits:
        if canonical == FaultCode.NONE:
            return 0
        for bit, fault in f.bits:
            if fault == canonical:
                return 1 << bit << f.shift
        raise CodecError(f"{f.name}: no bit for fault {canonical} in its bits table")
    code = f.device_code(canonical)
    return code << f.shift if isinstance(code, int) else code


def _mean(values: MutableMapping[str, object], names: tuple[str, ...]) -> float | None:
    present = [v for n in names if isinstance(v := values.get(n), int | float)]
    return round(sum(present) / len(present), 6) if present else None


def deriver(regmap: RegisterMap) -> Callable[[MutableMapping[str, object]], None] | None:
    """Fills in readings the family does not publish (voltage and current from the phases, power
    from V x I x phases or the sum over phases) and applies state overrides. None when there is
    nothing to do."""
    readings = _readings(regmap)
    state = next((f for b in regmap.blocks_of("telemetry") for f in b.fields if f.name == "state"), None)
    rules = state.overrides if state else ()
    if not rules:
        return readings

    def derive(values: MutableMapping[str, object]) -> None:
        if readings is not None:
            readings(values)
        _override(rules, values)

    return derive


def _override(rules: tuple[StateRule, ...], values: MutableMapping[str, object]) -> None:
    for rule in rules:
        value = values.get(rule.register)
        if not isinstance(value, int) or (value & rule.mask if rule.mask else value) != rule.equals:
            continue
        if not rule.only_from or values.get("state") in rule.only_from:
            values["state"] = rule.state
            return


def _readings(regmap: RegisterMap) -> Callable[[MutableMapping[str, object]], None] | None:
    names = {f.name for b in regmap.blocks_of("telemetry") for f in b.fields}
    needs_v = "voltage_V" not in names and any(n in names for n in _PHASE_V)
    needs_a = "current_A" not in names and any(n in names for n in _PHASE_A)
    per_phase = all(n in names for n in (*_PHASE_V[: regmap.phases], *_PHASE_A[: regmap.phases]))
    has_vi = ("voltage_V" in names or needs_v) and ("current_A" in names or needs_a)
    needs_p = "power_W" not in names and has_vi
    if not (needs_v or needs_a or needs_p):
        return None
    phases = regmap.phases

    def derive(values: MutableMapping[str, object]) -> None:
        if needs_v:
            values["voltage_V"] = _mean(values, _PHASE_V) or 0.0
        if needs_a:
            values["current_A"] = _mean(values, _PHASE_A) or 0.0
        if needs_p:
            values["power_W"] = _power_W(values, phases, per_phase)

    return derive


def _power_W(values: MutableMapping[str, object], phases: int, per_phase: bool) -> int:
    if per_phase:
        pairs = zip(_PHASE_V[:phases], _PHASE_A[:phases], strict=True)
        return round(sum(_num(values, v) * _num(values, a) for v, a in pairs))
    return round(_num(values, "voltage_V") * _num(values, "current_A") * phases)


def _num(values: MutableMapping[str, object], name: str) -> float:
    value = values.get(name)
    return float(value) if isinstance(value, int | float) else 0.0
