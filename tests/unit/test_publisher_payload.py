"""The publisher's telemetry JSON (built with msgspec) is the document Telemetry.to_json writes."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.publisher import telemetry_from_values, telemetry_payload
from protocols.payloads import Telemetry

number = st.one_of(st.integers(-(2**40), 2**40), st.floats(allow_nan=False, allow_infinity=False))
anything = st.one_of(st.none(), number, st.booleans(), st.text(max_size=5))
values = st.fixed_dictionaries(
    {},
    optional={
        "state": st.one_of(st.integers(0, 9), anything),
        "voltage_V": anything,
        "current_A": anything,
        "power_W": anything,
        "energy_Wh": number,
        "temperature_C": anything,
        "fault": st.one_of(st.integers(0, 300), anything),
        "heartbeat": st.integers(0, 65535),
        "active_limit_W": anything,
        "active_target_Wh": anything,
    },
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values, st.integers(0, 2**45), st.integers(1, 2**40), st.integers(1, 2**40))
def test_telemetry_payload_is_the_document_to_json_writes(v, ts_ms, session, seq) -> None:
    fast = telemetry_payload(v, ts_ms, session, seq)
    reference = telemetry_from_values(v, ts_ms, session, seq).to_json()
    assert list(json.loads(fast).items()) == list(json.loads(reference).items())


def test_a_typical_reading_round_trips_through_the_central_decoder() -> None:
    reading = {
        "state": 2,
        "voltage_V": 230.5,
        "current_A": 16.25,
        "power_W": 3745,
        "energy_Wh": 123456,
        "temperature_C": 31.5,
        "fault": 0,
        "heartbeat": 17,
        "active_limit_W": 7000,
        "active_target_Wh": None,
    }
    decoded = Telemetry.from_json(telemetry_payload(reading, 1_700_000_000_000, 5, 9))
    assert decoded == telemetry_from_values(reading, 1_700_000_000_000, 5, 9)
    assert (decoded.power_W, decoded.active_limit_W, decoded.active_target_Wh) == (3745, 7000, None)
