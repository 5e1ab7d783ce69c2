"""Scenario replay: golden outputs, the scenario grammar, malformed lines and the click command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from central.config import load_params
from central.domain.params import StationParams
from central.replay import ScenarioError, parse_scenario, replay, replay_command, to_json_line

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"
GOLDEN = sorted(SCENARIOS.glob("*.scn"))


def run(lines: list[str], params: StationParams | None = None) -> list[dict[str, Any]]:
    return list(replay(lines, params or StationParams()))


def test_every_scenario_has_params_and_expected_output():
    assert len(GOLDEN) >= 6
    for scenario in GOLDEN:
        assert scenario.with_suffix(".toml").exists()
        assert scenario.with_suffix(".jsonl").exists()


@pytest.mark.parametrize("scenario", GOLDEN, ids=lambda p: p.stem)
def test_replay_matches_the_golden_output(scenario):
    params = load_params(scenario.with_suffix(".toml"))
    produced = [to_json_line(row) for row in replay(scenario.read_text().splitlines(), params)]
    expected = scenario.with_suffix(".jsonl").read_text().splitlines()
    assert produced == expected


def test_cli_writes_json_lines_to_stdout():
    scenario = SCENARIOS / "02_fault_priority.scn"
    result = CliRunner().invoke(
        replay_command, [str(scenario), "--params", str(scenario.with_suffix(".toml"))]
    )
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == scenario.with_suffix(".jsonl").read_text().splitlines()


def test_output_objects_have_the_documented_fields_in_order():
    rows = run(["06:00 (A,V1,F,30)", "06:30 (A,V2,T,10)"])
    assert list(rows[0]) == ["time", "event", "piles", "waiting", "fault_queue"]
    assert rows[1]["piles"]["F1"] == {
        "status": "working",
        "queue": [{"car": "V1", "charged_kwh": 15.0, "cost": 18.0}],
    }
    assert list(rows[-1]) == ["end", "bills"]
    detail = rows[-1]["bills"][0]["details"][0]
    assert list(detail) == [
        "pile",
        "start",
        "stop",
        "kwh",
        "minutes",
        "charge_cost",
        "service_cost",
        "total",
        "periods",
    ]


def test_one_object_per_event_line_even_at_the_same_instant():
    rows = run(["08:00 (A,V1,F,10)", "08:00 (A,V2,F,10)", "08:00 (A,V3,F,10)"])
    assert [r["event"] for r in rows[:-1]] == ["(A,V1,F,10)", "(A,V2,F,10)", "(A,V3,F,10)"]
    assert [q["car"] for q in rows[2]["piles"]["F1"]["queue"]] == ["V1", "V3"]


def test_blank_lines_and_comments_are_ignored():
    lines = ["# header", "", "   ", "08:00 (A,V1,F,10)   # trailing note", "#08:10 (A,V2,F,10)"]
    rows = run(lines)
    assert len(rows) == 2
    assert rows[0]["event"] == "(A,V1,F,10)"


def test_refused_events_are_reported_and_the_replay_goes_on():
    rows = run(["08:00 (C,V1,O,5)", "08:01 (A,V1,F,10)"])
    assert rows[0]["error"]["code"] == "RESOURCE_NOT_FOUND"
    assert "error" not in rows[1]


def test_absurd_amount_is_refused_not_crashing():
    rows = run(["08:00 (A,V1,F,1e400)"])
    assert rows[0]["error"]["code"] == "VALIDATION_ERROR"
    assert rows[-1] == {"end": "08:00", "bills": []}


def test_earlier_time_of_day_means_the_next_day():
    rows = run(["23:50 (A,V1,T,20)", "00:10 (A,V2,F,10)"])
    assert rows[1]["time"] == "00:10+1"
    assert rows[-1]["end"] == "01:50+1"
    assert rows[-1]["bills"][0]["details"][0]["stop"] == "01:50+1"


def test_start_time_before_the_first_event():
    params = StationParams(start_time=None)
    assert run(["09:00 (A,V1,F,30)"], params)[0]["time"] == "09:00"
    late_start = StationParams().updated({"start_time": "10:00"})
    assert run(["09:00 (A,V1,F,30)"], late_start)[0]["time"] == "09:00+1"


def test_cars_that_can_never_charge_are_listed_as_unfinished():
    rows = run(["08:00 (A,V1,F,30)", "08:30 (B,F1,O,0)", "08:30 (B,F2,O,0)"])
    final = rows[-1]
    assert final["unfinished"] == ["V1"]
    assert final["bills"][0]["details"][0]["kwh"] == 15.0
    assert rows[-2]["fault_queue"] == [{"car": "V1", "mode": "F", "kwh": 15.0}]


def test_empty_scenario_gives_only_the_final_object():
    assert run(["# nothing"]) == [{"end": "00:00", "bills": []}]


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("0800 (A,V1,F,10)", "expected 'HH:MM (TYPE,ID,MODE,VALUE)'"),
        ("24:00 (A,V1,F,10)", "not a time of day"),
        ("08:00 (A,V1,F)", "expected 4 fields"),
        ("08:00 (D,V1,F,10)", "TYPE must be"),
        ("08:00 (A,V 1,F,10)", "ID"),
        ("08:00 (A,V1,X,10)", "MODE must be F, T or O"),
        ("08:00 (A,V1,F,ten)", "VALUE must be a number"),
        ("08:00 (A,V1,F,0)", "must be > 0"),
        ("08:00 (A,V1,O,3)", "needs VALUE 0"),
        ("08:00 (B,F9,O,0)", "unknown pile 'F9'"),
        ("08:00 (B,F1,F,0)", "MODE O"),
        ("08:00 (B,F1,O,2)", "0 (fault) or 1 (recovery)"),
        ("08:00 (C,V1,O,-5)", "-1 (unchanged)"),
        ("08:00 A,V1,F,10", "expected 'HH:MM (TYPE,ID,MODE,VALUE)'"),
    ],
)
def test_malformed_lines_are_rejected_with_line_number_and_reason(line, problem):
    with pytest.raises(ScenarioError) as info:
        parse_scenario(["# ok", "08:00 (A,V0,F,10)", line], StationParams())
    assert info.value.problems[0][0] == 3
    assert problem in info.value.problems[0][1]


def test_every_malformed_line_is_reported_at_once():
    with pytest.raises(ScenarioError) as info:
        parse_scenario(["bad", "08:00 (A,V1,F,10)", "also bad"], StationParams())
    assert [n for n, _ in info.value.problems] == [1, 3]


def test_cli_rejects_malformed_scenario_with_exit_code_2(tmp_path):
    scenario = tmp_path / "bad.scn"
    scenario.write_text("08:00 (A,V1,F,10)\n08:05 (A,V2,Q,10)\n")
    result = CliRunner().invoke(replay_command, [str(scenario)])
    assert result.exit_code == 2
    assert f"{scenario}:2: MODE must be F, T or O" in result.stderr
    assert result.stdout == ""


def test_cli_rejects_bad_params_with_every_problem(tmp_path):
    params = tmp_path / "station.toml"
    params.write_text('WaitingAreaSize = -1\ntimezone = "Nowhere/Land"\n')
    scenario = tmp_path / "ok.scn"
    scenario.write_text("08:00 (A,V1,F,10)\n")
    result = CliRunner().invoke(replay_command, [str(scenario), "--params", str(params)])
    assert result.exit_code == 2
    assert "WaitingAreaSize" in result.stderr
    assert "timezone" in result.stderr


def test_cli_rejects_non_utf8_scenario(tmp_path):
    scenario = tmp_path / "binary.scn"
    scenario.write_bytes(b"08:00 (A,V1,F,10)\n\xff\xfe\x00\n")
    result = CliRunner().invoke(replay_command, [str(scenario)])
    assert result.exit_code == 2
    assert "UTF-8" in result.stderr


def test_output_is_valid_json_lines():
    scenario = SCENARIOS / "05_midnight_periods.scn"
    for line in scenario.with_suffix(".jsonl").read_text().splitlines():
        assert isinstance(json.loads(line), dict)
