"""Demo parts that need no processes: ``--fresh`` and the live view's session kWh."""

from __future__ import annotations

import json
from pathlib import Path

from pilegate.demo import LiveView, clear_data_dir


def test_fresh_removes_what_the_demo_wrote_and_nothing_else(tmp_path: Path) -> None:
    for name in ("central", "gateway", "broker", "secrets"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "x").write_text("x")
    for name in ("central.toml", "gateway.toml", "station.toml", "central.log", "sim.ready.json"):
        (tmp_path / name).write_text("x")
    (tmp_path / "notes.txt").write_text("mine")
    clear_data_dir(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def telemetry(view: LiveView, state: str, energy_wh: int) -> None:
    payload = {"state": state, "energy_Wh": energy_wh, "power_W": 30000 if state == "charging" else 0}
    view.on_message("pilegate/v1/demo/pile/F1/port/1/telemetry", json.dumps(payload).encode())


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
