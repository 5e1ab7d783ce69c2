"""Gateway config validation: every problem reported at once, by entry name."""

import tomllib
from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config, parse_config, pile_map

EXAMPLE = Path(__file__).parents[2] / "config" / "gateway.example.toml"

BASE = """
[gateway]
id = "gw1"
station = "s1"
poll_period_s = 1.0
[[bus]]
name = "b1"
transport = "tcp"
host = "127.0.0.1"
port = 5020
[[pile]]
id = "F1"
bus = "b1"
unit = 1
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(tomllib.loads(text), "test.toml")
    return info.value.problems


def test_shipped_example_is_valid():
    config = load_config(EXAMPLE)
    assert [p.id for p in config.piles] == ["F1", "T1", "T2"]
    assert config.bus("rtu0").transport == "rtu"


def test_minimal_config_gets_defaults():
    config = parse_config(tomllib.loads(BASE))
    assert config.mqtt.host == "127.0.0.1" and config.mqtt.port == 1883
    assert config.mqtt.client_id == "pilegate-gw-s1-gw1"
    assert config.piles[0].map == "pilegate-sim-v1"


def test_duplicate_unit_on_one_bus_is_named():
    text = BASE + '[[pile]]\nid = "F2"\nbus = "b1"\nunit = 1\n'
    assert problems(text) == ["pile[F2].unit: unit 1 on bus 'b1' already used by pile F1"]


def test_same_unit_on_different_buses_is_fine():
    text = BASE + (
        '[[bus]]\nname = "b2"\ntransport = "tcp"\nhost = "127.0.0.1"\n'
        '[[pile]]\nid = "F2"\nbus = "b2"\nunit = 1\n'
    )
    assert len(parse_config(tomllib.loads(text)).piles) == 2


def test_every_problem_is_listed_together():
    text = BASE.replace('transport = "tcp"', 'transport = "tcp"\ntimeout_s = 2.0') + (
        '[[pile]]\nid = "F1"\nbus = "nowhere"\nunit = 300\n[mqtt]\nurl = "http://broker"\n'
    )
    found = problems(text)
    assert "bus[b1].timeout_s: 2.0 must be shorter than gateway.poll_period_s (1.0)" in found
    assert "pile[F1]: duplicate pile id" in found
    assert "pile[F1].bus: unknown bus 'nowhere'" in found
    assert "pile[F1].unit: 300 is not 1..255" in found
    assert any(p.startswith("mqtt.url: 'http://broker'") for p in found)


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (("\n[[bus]]", "\n[[bus]]\nbaud = 9600"), "bus[b1]: unknown key 'baud'"),
        (('transport = "tcp"', 'transport = "udp"'), "bus[b1].transport: 'udp' is not tcp or rtu"),
        (('host = "127.0.0.1"\n', ""), "bus[b1].host: required for transport tcp"),
        (("unit = 1", 'unit = 1\nmap = "acme"'), "pile[F1].map: unknown register map 'acme'; shipped: "),
        (("unit = 1", "unit = 1\nports = 9"), "pile[F1].ports: 9 is not 1..4"),
        (("unit = 1", 'unit = 1\nkind = "medium"'), "pile[F1].kind: 'medium' is not fast or trickle"),
        (('id = "F1"', 'id = "F/1"'), "pile[F/1].id 'F/1' must be"),
        (('station = "s1"', ""), "gateway.station: required"),
        (("poll_period_s = 1.0", 'poll_period_s = "fast"'), "gateway.poll_period_s: expected"),
    ],
)
def test_single_problem_is_named(edit, expected):
    old, new = edit
    found = problems(BASE.replace(old, new, 1))
    assert any(p.startswith(expected) for p in found), found


def test_rtu_bus_needs_a_device_and_a_standard_rate():
    text = BASE.replace('transport = "tcp"', 'transport = "rtu"\nbaudrate = 12345')
    found = problems(text)
    assert "bus[b1].device: required for transport rtu" in found
    assert "bus[b1].baudrate: 12345 is not a standard rate" in found


def test_control_api_must_stay_on_loopback():
    found = problems(
        BASE.replace("poll_period_s = 1.0", 'poll_period_s = 1.0\ncontrol_listen = "0.0.0.0:8470"')
    )
    assert any(p.startswith("gateway.control_listen") for p in found)


def test_unreadable_and_invalid_files_are_reported(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[gateway\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_password_file_is_read_relative_to_the_config(tmp_path):
    (tmp_path / "pw").write_text("s3cret\n")
    (tmp_path / "gw.toml").write_text(BASE + '[mqtt]\npassword_file = "pw"\n')
    assert load_config(tmp_path / "gw.toml").mqtt.password == "s3cret"


def test_control_token_file_defaults_to_the_data_dir_and_is_relative_to_the_config(tmp_path):
    (tmp_path / "gw.toml").write_text(BASE.replace("poll_period_s", 'data_dir = "data"\npoll_period_s'))
    assert load_config(tmp_path / "gw.toml").control_token_file == tmp_path / "data" / "control.token"
    (tmp_path / "gw.toml").write_text(
        BASE.replace("poll_period_s", 'control_token_file = "secrets/ctl.token"\npoll_period_s')
    )
    assert load_config(tmp_path / "gw.toml").control_token_file == tmp_path / "secrets" / "ctl.token"
    assert EXAMPLE.read_text().count("control_token_file") >= 1


def test_map_file_path_is_relative_to_the_config_and_its_problems_are_named(tmp_path):
    maps = tmp_path / "maps"
    maps.mkdir()
    good = (Path(__file__).parents[2] / "protocols" / "maps" / "pilegate-sim-v1.toml").read_text()
    (maps / "mine.toml").write_text(good.replace('name = "pilegate-sim-v1"', 'name = "mine"'))
    config = parse_config(tomllib.loads(BASE + 'map = "maps/mine.toml"\n'), "test.toml", tmp_path)
    assert config.piles[0].map == str(maps / "mine.toml")
    (maps / "bad.toml").write_text(good.replace('type = "u32", unit = "Wh"', 'type = "u99", unit = "Wh"'))
    with pytest.raises(ConfigError) as info:
        parse_config(tomllib.loads(BASE + 'map = "maps/bad.toml"\n'), "test.toml", tmp_path)
    assert any("pile[F1].map (" in p and "unknown type 'u99'" in p for p in info.value.problems)


def test_tcp_piles_take_unit_255_and_rtu_piles_stay_within_247():
    config = parse_config(tomllib.loads(BASE.replace("unit = 1", "unit = 255")), "test.toml")
    assert config.piles[0].unit == 255
    rtu = BASE.replace('transport = "tcp"', 'transport = "rtu"\ndevice = "/dev/ttyUSB0"')
    assert "pile[F1].unit: 250 is not an RTU address (1..247)" in problems(
        rtu.replace("unit = 1", "unit = 250")
    )
    assert any(
        p.startswith("pile[F1].unit: 256 is not 1..255")
        for p in problems(BASE.replace("unit = 1", "unit = 256"))
    )


def test_a_pile_may_set_its_own_phase_count_over_its_maps():
    config = parse_config(tomllib.loads(BASE + "phases = 3\n"), "test.toml")
    regmap = pile_map(config.piles[0])
    assert (regmap.name, regmap.phases) == ("pilegate-sim-v1", 3)
    assert pile_map(config.piles[0]) is regmap  # one object per map and phase count
    assert pile_map(parse_config(tomllib.loads(BASE), "test.toml").piles[0]).phases == 1
    assert any(p.startswith("pile[F1].phases: 4 is not 1, 2 or 3") for p in problems(BASE + "phases = 4\n"))
