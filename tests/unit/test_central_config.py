"""Central config validation: every problem at once, by entry name; the example is valid."""

import socket
import tomllib
from pathlib import Path

import pytest

from central.app import _mqtt_settings
from central.config import load_config, parse_config
from pilegate.settings import ConfigError

EXAMPLE = Path(__file__).parents[2] / "config" / "central.example.toml"


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(tomllib.loads(text), "central.toml")
    return info.value.problems


def test_shipped_example_is_valid_and_reads_the_station_file():
    config = load_config(EXAMPLE)
    assert config.http_port == 5045
    assert config.params.fast_pile_num == 2 and config.params.trickle_pile_num == 3
    assert config.mqtt.username == "pilegate-central"


def test_defaults_need_no_file():
    config = parse_config({})
    assert config.station == "station1" and config.time_scale == 1.0
    assert config.db_path.name == "central.db"


def test_every_problem_is_listed_by_entry():
    found = problems("""
[central]
station = "a/b"
time_scale = 0
colour = "blue"
[http]
port = 70000
[mqtt]
url = "http://broker"
[station]
WaitingAreaSize = -1
[dashboard]
""")
    assert "unknown table 'dashboard'" in found
    assert "central: unknown key 'colour'" in found
    assert "central.time_scale: 0 is not 0 < scale <= 3600" in found
    assert "http.port: 70000 is not 0..65535" in found
    assert any(p.startswith("central.station 'a/b' must be") for p in found)
    assert any(p.startswith("mqtt.url: 'http://broker'") for p in found)
    assert any(p.startswith("station.WaitingAreaSize") for p in found)


def test_a_missing_params_file_is_named(tmp_path):
    (tmp_path / "c.toml").write_text('[station]\nparams_file = "nope.toml"\n')
    with pytest.raises(ConfigError, match=r"station\.params_file: cannot read"):
        load_config(tmp_path / "c.toml")


def test_the_database_defaults_to_sqlite_in_the_data_dir_and_takes_either_url(tmp_path):
    assert parse_config({"central": {"data_dir": "/srv/c"}}).database_url == "sqlite:////srv/c/central.db"
    relative = parse_config({"central": {"database": "sqlite:///db/c.db"}}, "central.toml", tmp_path)
    assert relative.database_url == f"sqlite:///{tmp_path}/db/c.db"
    assert relative.db_path == tmp_path / "db" / "c.db"
    url = "postgresql://pilegate@db:5432/pilegate"
    assert parse_config({"central": {"database": url}}).database_url == url


def test_an_unknown_database_url_is_named():
    found = problems('[central]\ndatabase = "mysql://db/x"\n')
    assert found == [
        "central.database: expected sqlite:///path or postgresql://user@host:port/db, got 'mysql://db/x'"
    ]


def test_further_stations_are_tables_with_their_own_parameters():
    config = parse_config(
        tomllib.loads(
            '[central]\nstation = "north"\n'
            '[stations.south]\nname = "South"\ntimezone = "Europe/Berlin"\nFastChargingPileNum = 1\n'
            "[stations.east]\n"
        )
    )
    assert list(config.stations) == ["north", "south", "east"]  # the default station first
    south = config.stations["south"]
    assert (south.name, south.params.timezone, south.params.fast_pile_num) == ("South", "Europe/Berlin", 1)
    assert config.stations["east"].name == "east"


def test_station_codes_are_topic_ids_and_not_the_default_station():
    found = problems(
        '[central]\nstation = "north"\n[stations.north]\n[stations."bad/code"]\n'
        '[stations.south]\nWaitingAreaSize = -1\nname = ""\n'
    )
    assert any(p.startswith("stations.north:") and "default station" in p for p in found), found
    assert any("bad/code" in p for p in found), found
    assert any(p.startswith("stations.south.name") for p in found), found
    assert any(p.startswith("stations.south.WaitingAreaSize") for p in found), found


def test_centrals_sharing_postgresql_get_a_client_id_each_unless_one_is_set():
    pg = {"central": {"database": "postgresql://db.example/pilegate", "instance": "a"}}
    assert _mqtt_settings(parse_config(pg)).client_id == "pilegate-central-a"
    assert _mqtt_settings(parse_config({})).client_id == "pilegate-central"  # SQLite: one central
    own = {**pg, "mqtt": {"client_id": "site-7"}}
    assert _mqtt_settings(parse_config(own)).client_id == "site-7"


def test_the_url_other_centrals_reach_this_one_at():
    assert parse_config({"http": {"port": 5046}}).peer_url == "http://127.0.0.1:5046"
    assert parse_config({"http": {"host": "::1", "port": 5046}}).peer_url == "http://[::1]:5046"
    wildcard = parse_config({"http": {"host": "0.0.0.0", "port": 5046}}).peer_url
    assert wildcard == f"http://{socket.gethostname()}:5046"
    given = parse_config({"http": {"advertise_url": "https://c1.site.lan:8443/"}})
    assert given.peer_url == "https://c1.site.lan:8443"
    assert problems('[http]\nadvertise_url = "c1:5045"') == [
        "http.advertise_url: 'c1:5045' is not an http:// or https:// URL"
    ]
