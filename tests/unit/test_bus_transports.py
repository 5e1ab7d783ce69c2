"""The ``rtu-tcp`` transport in the gateway config, and how bus rates appear in /metrics and pilectl."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from drivers.specs import RtuTcpTransport, SpecError
from gateway.config import ConfigError, parse_config
from gateway.daemon import bus_spec, poller_samples
from gateway.pilectl import format_bus_rates

EXAMPLE = Path(__file__).parents[2] / "config" / "gateway.example.toml"

RTU_TCP = """
[gateway]
id = "gw1"
station = "s1"
[[bus]]
name = "conv0"
transport = "rtu-tcp"
host = "192.0.2.20"
port = 4001
timeout_s = 0.3
[[pile]]
id = "T1"
bus = "conv0"
unit = 1
[[pile]]
id = "T2"
bus = "conv0"
unit = 2
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(tomllib.loads(text), "test.toml")
    return info.value.problems


def test_rtu_tcp_bus_becomes_one_converter_with_several_units() -> None:
    config = parse_config(tomllib.loads(RTU_TCP))
    spec = bus_spec(config, config.bus("conv0"))
    assert spec.transport == RtuTcpTransport("192.0.2.20", 4001)
    assert [d.unit for d in spec.devices] == [1, 2]
    assert spec.transport.describe() == {"kind": "rtu-tcp", "host": "192.0.2.20", "port": 4001}


def test_rtu_tcp_needs_a_host() -> None:
    assert problems(RTU_TCP.replace('host = "192.0.2.20"\n', "")) == [
        "bus[conv0].host: required for transport rtu-tcp"
    ]


def test_unknown_transport_names_the_three_choices() -> None:
    found = problems(RTU_TCP.replace('"rtu-tcp"', '"rtu-udp"'))
    assert any("bus[conv0].transport" in p and "tcp, rtu or rtu-tcp" in p for p in found)


def test_rtu_tcp_transport_rejects_a_bad_port() -> None:
    with pytest.raises(SpecError, match="port=0 outside"):
        RtuTcpTransport("h", 0)


def test_the_example_rtu_tcp_block_is_valid_once_uncommented() -> None:
    text = EXAMPLE.read_text()
    block = text[text.index("# [[bus]]") :].split("\n\n")[0]
    uncommented = re.sub(r"^# ?", "", block, flags=re.MULTILINE)
    config = parse_config(tomllib.loads(text.replace(block, uncommented)), str(EXAMPLE))
    assert config.bus("conv0").transport == "rtu-tcp"
    assert [p.id for p in config.piles_on("conv0")] == ["T3"]


SNAPSHOT: dict[str, object] = {
    "period_s": 1.0,
    "cycles": 40,
    "overruns": 39,
    "saturations": 1,
    "saturated": True,
    "last_cycle_s": 1.37,
    "max_cycle_s": 1.4,
    "window_s": 9.6,
    "cycles_per_s": 0.729,
    "transactions_per_s": 11.66,
    "line_utilisation": 0.972,
    "piles": {
        "T1": {"readings_per_s": 0.729, "last_reading_age_s": 0.2},
        "T2": {"readings_per_s": None, "last_reading_age_s": None},
    },
}


def test_metrics_carry_rates_per_bus_and_pile_and_leave_unknown_ones_out() -> None:
    samples = {
        (name, tuple(sorted(labels.items()))): value
        for name, _, labels, value in poller_samples("rs485", SNAPSHOT)
    }
    bus = (("bus", "rs485"),)
    assert samples[("pilegate_gateway_bus_saturated", bus)] == 1.0
    assert samples[("pilegate_gateway_bus_transactions_per_second", bus)] == 11.66
    assert samples[("pilegate_gateway_bus_line_utilisation_ratio", bus)] == 0.972
    assert samples[("pilegate_gateway_poll_overruns_total", bus)] == 39
    t1 = (("bus", "rs485"), ("pile", "T1"))
    assert samples[("pilegate_gateway_pile_readings_per_second", t1)] == 0.729
    assert samples[("pilegate_gateway_pile_reading_age_seconds", t1)] == 0.2
    assert not any(("pile", "T2") in labels for _, labels in samples)


def test_pilectl_shows_each_bus_polling_mode_and_achieved_rates() -> None:
    lines = format_bus_rates(
        {
            "rs485": {"poller": SNAPSHOT},
            "tcp-f1": {
                "poller": {**SNAPSHOT, "saturated": False, "line_utilisation": None, "cycles_per_s": None}
            },
        }
    )
    assert re.search(r"^rs485 +back to back +1370ms +0\.73 +11\.7 +97%$", lines[1]), lines[1]
    assert re.search(r"^tcp-f1 +every 1s +1370ms +- +11\.7 +-$", lines[2]), lines[2]
