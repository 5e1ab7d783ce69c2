"""Demo parts that need no processes: ``--fresh``, the live view's session kWh, the stations' and
central instances' names and configs, a database URL as printed."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from pilegate.demo import (
    LiveView,
    central_toml,
    clear_data_dir,
    demo_stations,
    shown_database,
)


def test_fresh_removes_what_the_demo_wrote_and_nothing_else(tmp_path: Path) -> None:
    for name in ("central", "gateway", "broker", "secrets"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "x").write_text("x")
    for name in ("central.toml", "gateway.toml", "station.toml", "central.log", "sim.ready.json"):
        (tmp_path / name).write_text("x")
    for name in ("central-2.toml", "central-2.log", "central-12.log"):  # further central instances
        (tmp_path / name).write_text("x")
    (tmp_path / "central-2").mkdir()
    (tmp_path / "stations" / "station1").mkdir(parents=True)
    (tmp_path / "central-notes.txt").write_text("mine")
    (tmp_path / "notes.txt").write_text("mine")
    clear_data_dir(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["central-notes.txt", "notes.txt"]


def telemetry(view: LiveView, state: str, energy_wh: int, station: str = "demo", pile: str = "F1") -> None:
    payload = {"state": state, "energy_Wh": energy_wh, "power_W": 30000 if state == "charging" else 0}
    view.on_message(f"pilegate/v1/{station}/pile/{pile}/port/1/telemetry", json.dumps(payload).encode())


def online(view: LiveView, station: str, pile: str) -> None:
    view.on_message(f"pilegate/v1/{station}/pile/{pile}/status", b'{"state": "online"}')


def test_the_live_view_shows_the_sessions_kwh_not_the_meter_total() -> None:
    view = LiveView()
    telemetry(view, "available", 120_000)
    telemetry(view, "charging", 120_000)
    telemetry(view, "charging", 125_500)
    assert "5.50kWh this session" in view.render()
    telemetry(view, "finished", 126_000)
    assert "6.00kWh this session" in view.render()
    telemetry(view, "charging", 126_000)  # the next car
    assert "0.00kWh this session" in view.render()


def test_several_stations_show_one_line_each_with_their_charging_ports() -> None:
    view = LiveView(per_station=True)
    for station in ("station1", "station2", "station10"):
        for pile in ("F1", "F2"):
            online(view, station, pile)
            telemetry(view, "available", 1_000, station, pile)
    telemetry(view, "charging", 1_000, "station2", "F1")
    telemetry(view, "charging", 3_500, "station2", "F1")  # F1 at both stations: kept apart
    lines = view.render().splitlines()[1:]
    assert [line.split()[0] for line in lines] == ["station1", "station2", "station10"]
    assert "0/2 charging" in lines[0] and "1/2 charging" in lines[1]
    assert "2.50kWh this session" in lines[1]


def test_one_station_is_demo_in_the_data_dir_several_have_directories_of_their_own(tmp_path: Path) -> None:
    [one] = demo_stations(tmp_path, 1)
    assert (one.code, one.directory) == ("demo", tmp_path)
    several = demo_stations(tmp_path, 3)
    assert [s.code for s in several] == ["station1", "station2", "station3"]
    assert several[2].directory == tmp_path / "stations" / "station3"


def options(tmp_path: Path, database: str | None = None) -> dict[str, object]:
    params = tmp_path / "station.toml"
    params.write_text("FastChargingPileNum = 1\nTrickleChargingPileNum = 1\n")
    return {"params": params, "time_scale": 60.0, "database": database}


def test_each_central_instance_has_its_own_broker_user_client_id_and_data_dir(tmp_path: Path) -> None:
    url = 'postgresql://pilegate:se"cret@db/pilegate'
    codes = ["station1", "station2"]
    first = tomllib.loads(central_toml(1883, tmp_path, options(tmp_path, url), 1, codes))
    second = tomllib.loads(central_toml(1883, tmp_path, options(tmp_path, url), 2, codes))
    assert first["central"]["database"] == second["central"]["database"] == url
    assert (first["mqtt"]["username"], second["mqtt"]["username"]) == (
        "pilegate-central",
        "pilegate-central-2",
    )
    assert first["mqtt"]["client_id"] != second["mqtt"]["client_id"]
    assert first["central"]["data_dir"] != second["central"]["data_dir"]
    assert first["central"]["station"] == "station1" and list(first["stations"]) == ["station2"]


def test_one_station_keeps_the_demo_config_of_before(tmp_path: Path) -> None:
    config = tomllib.loads(central_toml(1883, tmp_path, options(tmp_path), 1, ["demo"]))
    assert config["central"]["station"] == "demo" and "stations" not in config
    assert (
        config["central"]["station_name"] == "pilegate demo station" and "database" not in config["central"]
    )
    assert config["mqtt"] == {
        "url": "mqtt://127.0.0.1:1883",
        "client_id": "pilegate-central-demo",
        "username": "pilegate-central",
        "password_file": str(tmp_path.resolve() / "secrets" / "pilegate-central.password"),
    }


def test_a_printed_database_url_hides_its_password() -> None:
    assert shown_database("postgresql://pilegate:s3cret@db:5432/x") == "postgresql://pilegate:***@db:5432/x"
    assert shown_database("postgresql://pilegate@db/x") == "postgresql://pilegate@db/x"
