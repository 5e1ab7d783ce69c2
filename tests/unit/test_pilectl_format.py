"""How pilectl renders scan, tail and outbox answers for people, and parses register values."""

from __future__ import annotations

import time

import click
import pytest

from gateway.pilectl import register_value, unit_range
from gateway.pilectl_format import format_outbox, format_tail_item, identity_text, match_label
from gateway.scan import UNIT_IDS

TS_MS = 1_700_000_000_123
CLOCK = time.strftime("%H:%M:%S", time.localtime(TS_MS / 1000)) + ".123"


def test_tail_lines_name_states_events_and_gaps():
    reading = {
        "kind": "telemetry",
        "ts": TS_MS,
        "pile": "T1",
        "port": 1,
        "state": "charging",
        "voltage_V": 230.1,
        "current_A": 16.0,
        "power_W": 3680,
        "energy_Wh": 1234,
        "temperature_C": 31.5,
        "fault": "over_temperature",
        "active_limit_W": 3700,
    }
    line = format_tail_item(reading)
    assert line is not None and line.startswith(f"{CLOCK} T1/1 ")
    for part in (
        "charging",
        "230.1 V",
        "16.0 A",
        "3680 W",
        "1234 Wh",
        "31.5 °C",
        "FAULT over_temperature",
        "limit 3700 W",
    ):
        assert part in line
    event = {
        "kind": "event",
        "ts": TS_MS,
        "pile": "T1",
        "port": 2,
        "type": "fault_raised",
        "fault": "meter_fault",
        "energy_Wh": 10,
    }
    assert format_tail_item(event) == f"{CLOCK} T1/2       EVENT fault_raised fault meter_fault at 10 Wh"
    status = {"kind": "status", "ts": TS_MS, "pile": "F1", "state": "comm_fault", "error": "no reply"}
    assert format_tail_item(status) == f"{CLOCK} F1         PILE comm_fault (no reply)"
    assert (
        format_tail_item({"kind": "dropped", "count": 7})
        == "-- 7 items dropped: this reader did not keep up --"
    )
    assert format_tail_item({"kind": "heartbeat", "ts": TS_MS}) is None


def test_outbox_report_for_people():
    data = {
        "counters": {
            "depth": 3,
            "bytes": 900,
            "session": 5,
            "dropped_telemetry": 4,
            "dropped_event": 0,
            "dropped_status": 1,
            "dropped_cmd_result": 0,
            "quarantined": 1,
        },
        "limits": {"max_messages": 1000, "max_bytes": 10_000, "max_age_s": 600.0},
        "oldest": {"created_ms": TS_MS, "kind": "event", "topic": "pilegate/v1/s/pile/T1/event"},
        "oldest_age_s": 12.25,
        "quarantine": [
            {
                "id": 9,
                "kind": "telemetry",
                "topic": "pilegate/v1/s/x",
                "quarantined_ms": TS_MS,
                "reason": "payload too large",
                "size": 70000,
                "created_ms": TS_MS,
            }
        ],
    }
    text = format_outbox(data).splitlines()
    assert (
        text[0]
        == "depth       3 messages, 900 bytes (bounds 1000 messages, 10000 bytes, telemetry kept 600 s)"
    )
    assert text[1] == "oldest      event from 12.2 s ago (pilegate/v1/s/pile/T1/event)"
    assert text[2] == "dropped     telemetry 4, event 0, status 1, cmd_result 0"
    assert text[4] == f"  #9 telemetry pilegate/v1/s/x at {CLOCK}: payload too large"
    empty = format_outbox({**data, "oldest": None, "oldest_age_s": None, "quarantine": []})
    assert "oldest      - (empty)" in empty


def test_identity_and_register_values():
    identity = {"vendor": "ACME", "model": "W22", "serial": "", "num_ports": 2, "rated_power_W": 22000}
    assert identity_text(identity) == "ACME W22, 2 ports, 22000 W"
    assert register_value("0x04d2") == register_value("1234") == 1234
    for bad in ("65536", "-1", "ten"):
        with pytest.raises(click.BadParameter):
            register_value(bad)
    assert unit_range("5") == range(5, 6) and unit_range("1-255") == range(1, 256)  # a TCP host
    assert unit_range("1-247", UNIT_IDS) == range(1, 248)
    for bad in ("0-3", "9-3", "1-256", "a-b"):
        with pytest.raises(click.BadParameter):
            unit_range(bad)
    with pytest.raises(click.BadParameter, match=r"on an RTU line are 1\.\.247"):
        unit_range("255", UNIT_IDS)
    numbers = {"serial": 20512345, "product": 311201, "firmware": 50990080}
    assert identity_text(numbers) == "serial 20512345, product 311201, firmware 50990080"


def test_scan_matches_say_how_sure_they_are_and_where_the_identity_came_from():
    base = {"map": "m", "identity": {}, "confirmed": True, "role": "pile", "identity_unit": None}
    assert match_label(base) == "m"
    assert match_label({**base, "confirmed": False}) == "m (unconfirmed)"
    assert match_label({**base, "role": "station"}) == "m station"
    assert match_label({**base, "identity_unit": 200}) == "m (identity on unit 200)"
