"""Payload decoder properties: any input is either decoded or refused with PayloadError (never another
exception), valid payloads round-trip through to_json/from_json byte for byte, and the telemetry fast
path decides exactly as the full field-by-field validation does."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, get_args
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import payloads
from protocols.payloads import (
    FAULT_NAMES,
    PORT_STATES,
    CommandMessage,
    CommandResult,
    EventType,
    GatewayState,
    GatewayStatus,
    PayloadError,
    PileEvent,
    PileState,
    PileStatus,
    ResultStatus,
    Telemetry,
)

DECODERS: list[type[Any]] = [Telemetry, GatewayStatus, PileStatus, PileEvent, CommandMessage, CommandResult]
TS_MIN, TS_MAX = 946_684_800_000, 4_102_444_800_000  # 2000-01-01 and 2100-01-01 in ms, the accepted range
FAST = settings(max_examples=40, deadline=None)

# ---- arbitrary input ----------------------------------------------------------------------------

JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20)
)  # floats include NaN and ±Infinity, which Python's json reads and writes


def containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """JSON arrays and objects of ``inner`` values."""
    return st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)


JSON_VALUES = st.recursive(JSON_SCALARS, containers, max_leaves=12)
KNOWN_KEYS = sorted({f.name for decoder in DECODERS for f in dataclasses.fields(decoder)})  # = JSON keys
JSON_OBJECTS = st.dictionaries(st.sampled_from(KNOWN_KEYS) | st.text(max_size=8), JSON_VALUES, max_size=12)


def decode_or_refuse(decoder: type[Any], raw: bytes | str) -> object:
    """The decoded payload, or the PayloadError that refused it; any other exception fails."""
    try:
        return decoder.from_json(raw)
    except PayloadError as exc:
        return exc


@FAST
@given(raw=st.binary(max_size=200) | st.text(max_size=200))
def test_arbitrary_bytes_and_text_are_decoded_or_refused_with_payload_error(raw):
    for decoder in DECODERS:
        decode_or_refuse(decoder, raw)


@settings(max_examples=80, deadline=None)
@given(value=JSON_VALUES | JSON_OBJECTS)
def test_arbitrary_json_values_are_decoded_or_refused_with_payload_error(value):
    raw = json.dumps(value)
    for decoder in DECODERS:
        decode_or_refuse(decoder, raw)


# ---- valid payloads -----------------------------------------------------------------------------

TS = st.integers(TS_MIN, TS_MAX)
POSITIVE = st.integers(1, 2**63 - 1)  # what a database INTEGER holds
COUNTER = st.integers(0, 2**63 - 1)
U32 = st.integers(0, 2**32 - 1)
FAULTS = st.sampled_from(FAULT_NAMES) | st.integers(0, 10**6).map(lambda n: f"code_{n}")


def number(low: float, high: float) -> st.SearchStrategy[float]:
    return st.integers(math.ceil(low), math.floor(high)) | st.floats(low, high)


OPTIONAL_TEXT = st.none() | st.text()
FINITE_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    containers,
    max_leaves=8,
)  # NaN would decode unequal to itself


def choice(literal: object) -> st.SearchStrategy[Any]:
    """Any value of a Literal type."""
    return st.sampled_from(get_args(literal))


def command(op: str, params: st.SearchStrategy[dict[str, int]]) -> st.SearchStrategy[CommandMessage]:
    return st.builds(
        CommandMessage, id=st.text(min_size=1, max_size=64), op=st.just(op), expires_at=TS, params=params
    )


TELEMETRY = st.builds(
    Telemetry,
    ts=TS,
    session=POSITIVE,
    seq=POSITIVE,
    state=st.sampled_from(PORT_STATES),
    voltage_V=number(0, 2000),
    current_A=number(-1000, 1000),
    power_W=number(-2e6, 2e6),
    energy_Wh=U32,
    temperature_C=number(-60, 200),
    fault=FAULTS,
    heartbeat=COUNTER,
    active_limit_W=st.none() | COUNTER,
    active_target_Wh=st.none() | COUNTER,
    replayed=st.booleans(),
)
PAYLOADS: dict[str, st.SearchStrategy[Any]] = {
    "telemetry": TELEMETRY,
    "gateway_status": st.builds(
        GatewayStatus,
        state=choice(GatewayState),
        session=POSITIVE,
        ts=st.none() | TS,
        version=st.none() | st.text(min_size=1),
        piles=st.lists(st.text()).map(tuple),
    ),
    "pile_status": st.builds(
        PileStatus,
        state=choice(PileState),
        ts=TS,
        kind=st.sampled_from([None, "fast", "trickle"]),
        ports=st.none() | st.integers(1, 99),
        rated_power_W=st.none() | st.integers(1, 10**7),
        vendor=OPTIONAL_TEXT,
        model=OPTIONAL_TEXT,
        serial=OPTIONAL_TEXT,
        firmware=OPTIONAL_TEXT,
        error=OPTIONAL_TEXT,
    ),
    "pile_event": st.builds(
        PileEvent,
        ts=TS,
        session=POSITIVE,
        seq=POSITIVE,
        type=choice(EventType),
        port=st.integers(1, 99),
        fault=FAULTS,
        energy_Wh=st.none() | U32,
        detail=OPTIONAL_TEXT,
        replayed=st.booleans(),
    ),
    "command": st.one_of(
        command("start", st.dictionaries(st.sampled_from(["energy_Wh", "power_W"]), U32)),
        command("stop", st.just({})),
        command("limit", st.fixed_dictionaries({"power_W": U32})),
    ),
    "command_result": st.builds(
        CommandResult,
        id=st.text(),
        status=choice(ResultStatus),
        ts=TS,
        reason=OPTIONAL_TEXT,
        readback=st.none() | st.dictionaries(st.text(max_size=8), FINITE_JSON),
    ),
}


@pytest.mark.parametrize("kind", sorted(PAYLOADS))
@FAST
@given(data=st.data())
def test_valid_payloads_round_trip_and_re_encode_to_the_same_bytes(kind, data):
    payload = data.draw(PAYLOADS[kind])
    raw = payload.to_json()
    again = type(payload).from_json(raw)
    assert again == payload
    assert again.to_json() == raw
    assert type(payload).from_json(raw.decode()) == payload  # text is read like bytes


# ---- valid payloads, one field broken -----------------------------------------------------------


@st.composite
def broken(draw: st.DrawFn) -> tuple[type[Any], dict[str, Any]]:
    """A valid payload object with one field removed, nulled or replaced by any JSON value, or
    another payload's field added."""
    payload = draw(st.sampled_from(sorted(PAYLOADS)).flatmap(lambda kind: PAYLOADS[kind]))
    obj = json.loads(payload.to_json())
    name = draw(st.sampled_from(sorted(obj)) | st.sampled_from(KNOWN_KEYS))
    how = draw(st.sampled_from(["remove", "null", "replace"]))
    if how == "remove":
        obj.pop(name, None)
    else:
        obj[name] = None if how == "null" else draw(JSON_VALUES)
    return type(payload), obj


@settings(max_examples=150, deadline=None)
@given(case=broken())
def test_a_valid_payload_with_one_field_broken_is_decoded_or_refused_with_payload_error(case):
    decoder, obj = case
    outcome = decode_or_refuse(decoder, json.dumps(obj))
    if isinstance(outcome, PayloadError):
        assert str(outcome)  # the message names the problem


def _telemetry_outcome(raw: str) -> object:
    outcome = decode_or_refuse(Telemetry, raw)
    return type(outcome) if isinstance(outcome, PayloadError) else outcome


@st.composite
def telemetry_objects(draw: st.DrawFn) -> dict[str, Any]:
    """Valid telemetry objects with up to three fields removed, nulled or replaced."""
    obj: dict[str, Any] = json.loads(draw(TELEMETRY).to_json())
    keys = sorted({*obj, "heartbeat", "active_limit_W", "active_target_Wh", "replayed"})
    for name in draw(st.lists(st.sampled_from(keys), max_size=3)):
        how = draw(st.sampled_from(["remove", "null", "replace"]))
        if how == "remove":
            obj.pop(name, None)
        else:
            obj[name] = None if how == "null" else draw(JSON_VALUES)
    return obj


@settings(max_examples=120, deadline=None)
@given(obj=telemetry_objects())
def test_telemetry_fast_path_decides_exactly_as_the_full_validation(obj):
    raw = json.dumps(obj)
    with_fast_path = _telemetry_outcome(raw)
    with mock.patch.object(payloads, "_telemetry_fast", return_value=None):
        full_validation = _telemetry_outcome(raw)
    assert with_fast_path == full_validation


# ---- found by these properties (fixed) ------------------------------------------------------------------

VALID_TELEMETRY = json.loads(
    Telemetry(TS_MIN, 1, 1, "charging", 230.0, 10.0, 2300, 0, 20.0, "none").to_json()
)


@pytest.mark.parametrize(("name", "value"), [("state", []), ("fault", {})])
def test_telemetry_with_a_list_or_object_as_state_or_fault_is_refused_with_payload_error(name, value):
    with pytest.raises(PayloadError, match=name):
        Telemetry.from_json(json.dumps({**VALID_TELEMETRY, name: value}))


@pytest.mark.parametrize("decoder", DECODERS, ids=lambda d: d.__name__)
@pytest.mark.parametrize(
    "raw",
    [b'{"ts":' + b"1" * 4301 + b"}", b'{"ts":' + b"[" * 5000 + b"]" * 5000 + b"}"],
    ids=["4301-digit-int", "5000-deep-array"],
)
def test_pathological_json_inside_the_size_limit_is_refused_with_payload_error(decoder, raw):
    assert len(raw) <= payloads.MAX_PAYLOAD_BYTES
    with pytest.raises(PayloadError):
        decoder.from_json(raw)
