"""``[ingest]``: where telemetry is stored from, and the ingest process's own broker identity."""

import tomllib
from pathlib import Path

import pytest

from central.config import load_config, parse_config
from central.ingest_main import ingest_mqtt_settings, ingest_subscriptions
from pilegate.settings import ConfigError

EXAMPLE = Path(__file__).parents[2] / "config" / "central.example.toml"


def test_by_default_the_central_stores_and_a_child_process_has_its_own_client_id_and_manual_acks():
    assert parse_config({}).ingest.mode == "inline"
    config = parse_config(
        tomllib.loads(
            '[mqtt]\nclient_id = "c1"\nusername = "central"\npassword = "pw"\n[ingest]\nmode = "process"'
        )
    )
    assert config.ingest.mode == "process"
    settings = ingest_mqtt_settings(config)
    assert settings.client_id == "c1-ingest" and settings.manual_ack and not settings.clean_session
    assert (settings.username, settings.password) == ("central", "pw")  # no user of its own: the central's


def test_its_own_broker_user_is_used_when_given(tmp_path):
    (tmp_path / "ingest.pw").write_text("s3cret-ingest\n")
    (tmp_path / "central.toml").write_text(
        '[mqtt]\nusername = "central"\npassword = "pw"\n'
        '[ingest]\nmode = "external"\nusername = "pilegate-ingest"\npassword_file = "ingest.pw"\n'
        'client_id = "ingest-a"\n'
    )
    config = load_config(tmp_path / "central.toml")
    settings = ingest_mqtt_settings(config)
    assert config.ingest.mode == "external"
    assert (settings.username, settings.password, settings.client_id) == (
        "pilegate-ingest",
        "s3cret-ingest",
        "ingest-a",
    )


def test_the_shipped_example_names_the_ingest_user():
    assert load_config(EXAMPLE).ingest.username == "pilegate-ingest"


def test_an_unknown_mode_or_key_is_named():
    with pytest.raises(ConfigError) as info:
        parse_config(tomllib.loads('[ingest]\nmode = "thread"\ncolour = 1'), "central.toml")
    text = "\n".join(info.value.problems)
    assert "ingest.mode" in text and "process | inline | external" in text
    assert "ingest: unknown key 'colour'" in text


def test_it_subscribes_to_telemetry_and_statuses_of_its_station_only():
    assert ingest_subscriptions("s1") == [
        "pilegate/v1/s1/pile/+/port/+/telemetry",
        "pilegate/v1/s1/pile/+/status",
        "pilegate/v1/s1/gw/+/status",
    ]
