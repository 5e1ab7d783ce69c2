"""Payload codecs: round trips for every topic, and rejections that name the field."""

import json

import pytest

from protocols import topics
from protocols.payloads import (
    CommandMessage,
    CommandResult,
    GatewayStatus,
    PayloadError,
    PileEvent,
    PileStatus,
    Telemetry,
)

TS = 1_763_700_000_000
TELEMETRY = Telemetry(TS, 3, 41, "charging", 401.2, 74.5, 29890, 123456, 41.5, "none", 17, 30000, 5000)


@pytest.mark.parametrize(
    "payload",
    [
        TELEMETRY,
        GatewayStatus("online", 3, TS, "0.1.0", ("F1", "T1")),
        GatewayStatus("lost", 3),
        PileStatus("comm_fault", TS, "fast", 1, 30000, "pilegate", "SIM", "F1", "1.0", "timeout"),
        PileEvent(TS, 3, 2, "fault_raised", 1, "over_temperature", 1000),
        CommandMessage("c-1", "start", TS + 30_000, {"energy_Wh": 5000, "power_W": 30000}),
        CommandResult("c-1", "done", TS, None, {"ack_seq": 1}),
    ],
)
def test_payload_round_trips(payload):
    assert type(payload).from_json(payload.to_json()) == payload


def test_replayed_flag_only_appears_when_set():
    assert b"replayed" not in TELEMETRY.to_json()
    marked = json.loads(TELEMETRY.to_json())
    marked["replayed"] = True
    assert Telemetry.from_json(json.dumps(marked)).replayed is True


def _telemetry_with(**changes):
    obj = json.loads(TELEMETRY.to_json())
    obj.update(changes)
    return json.dumps({k: v for k, v in obj.items() if v is not ...})


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "not UTF-8 JSON"),
        (b"\xff\xfe", "not UTF-8 JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (_telemetry_with(seq=...), "missing field 'seq'"),
        (_telemetry_with(seq=0), "'seq'"),
        (_telemetry_with(ts=1_763_700_000), "milliseconds since the epoch"),
        (_telemetry_with(energy_Wh=-1), "32-bit meter"),
        (_telemetry_with(energy_Wh=1.5), "'energy_Wh' must be int"),
        (_telemetry_with(state="flying"), "'state'"),
        (_telemetry_with(voltage_V="230"), "'voltage_V' must be"),
        (_telemetry_with(voltage_V=True), "'voltage_V' must be"),
        (_telemetry_with(fault="melted"), "'fault'"),
        # beyond a database INTEGER: stored, the batch would fail, and with acks be retried forever
        (_telemetry_with(seq=2**63), "'seq'.*1..2\\^63-1"),
        (_telemetry_with(session=2**64), "'session'.*1..2\\^63-1"),
        (_telemetry_with(heartbeat=2**63), "'heartbeat'.*0..2\\^63-1"),
        (_telemetry_with(heartbeat=-1), "'heartbeat'"),
        (_telemetry_with(active_limit_W=10**30), "'active_limit_W'"),
        (b"{" + b'"x":' * 0 + b'"pad":"' + b"a" * 70_000 + b'"}', "exceeds"),
    ],
)
def test_malformed_telemetry_is_rejected_with_the_reason(raw, message):
    with pytest.raises(PayloadError, match=message):
        Telemetry.from_json(raw)


def test_nan_is_rejected():
    with pytest.raises(PayloadError, match="finite"):
        Telemetry.from_json(_telemetry_with(power_W=float("nan")))


def test_vendor_fault_code_is_accepted():
    assert Telemetry.from_json(_telemetry_with(fault="code_77")).fault == "code_77"


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({"id": "a", "op": "fly", "expires_at": TS}, "'op'"),
        ({"id": "", "op": "stop", "expires_at": TS}, "1-64 characters"),
        ({"id": "a", "op": "limit", "params": {}, "expires_at": TS}, "power_W is required"),
        ({"id": "a", "op": "start", "params": {"energy_kWh": 5}, "expires_at": TS}, "unknown"),
        ({"id": "a", "op": "start", "params": {"energy_Wh": -5}, "expires_at": TS}, "energy_Wh"),
        ({"id": "a", "op": "stop"}, "missing field 'expires_at'"),
    ],
)
def test_malformed_command_is_rejected_with_the_reason(obj, message):
    with pytest.raises(PayloadError, match=message):
        CommandMessage.from_json(json.dumps(obj))


def test_topics_round_trip_through_parse():
    assert topics.parse(topics.telemetry("s1", "F1", 2)) == topics.ParsedTopic(
        "telemetry", "s1", pile="F1", port=2
    )
    assert topics.parse(topics.cmd_result("s1", "F1", 1)).kind == "cmd_result"
    assert topics.parse(topics.gw_status("s1", "gw1")).gateway == "gw1"


@pytest.mark.parametrize(
    ("topic", "message"),
    [
        ("other/v1/s/pile/F1/status", "not under pilegate"),
        ("pilegate/v9/s/pile/F1/status", "unsupported version"),
        ("pilegate/v1/s/pile/F1/port/x/telemetry", "port 'x'"),
        ("pilegate/v1/s/pile/F1/voltage", "not a topic"),
    ],
)
def test_foreign_topics_are_rejected(topic, message):
    with pytest.raises(topics.TopicError, match=message):
        topics.parse(topic)


def test_wildcards_are_not_valid_ids():
    with pytest.raises(topics.TopicError, match="pile"):
        topics.telemetry("s1", "F+", 1)
