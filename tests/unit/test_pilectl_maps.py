"""pilectl map check and map show: every problem listed with exit 1, the map as a table or JSON."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from gateway.pilectl import main

SIM_FILE = Path(__file__).parents[2] / "protocols" / "maps" / "pilegate-sim-v1.toml"


def test_map_check_accepts_a_good_map_and_lists_unconfirmed_registers(tmp_path):
    text = SIM_FILE.read_text().replace(
        'heartbeat = { address = 10, type = "u16",',
        'heartbeat = { address = 10, type = "u16", unconfirmed = true,',
    )
    path = tmp_path / "mine.toml"
    path.write_text(text)
    result = CliRunner().invoke(main, ["map", "check", str(path)])
    assert result.exit_code == 0, result.output
    assert "OK: map pilegate-sim-v1, 25 registers, 1 unconfirmed: telemetry.heartbeat" in result.output


def test_map_check_lists_every_problem_and_exits_1(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(
        SIM_FILE.read_text()
        .replace('type = "i16", scale = 0.1', 'type = "i17", scale = 0.1')
        .replace('ack_status = "ack_status"', 'ack_status = "ack_state"')
    )
    result = CliRunner().invoke(main, ["map", "check", str(path), "--json"])
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert report["ok"] is False
    assert any(p.startswith("telemetry.temperature_C.type: unknown type 'i17'") for p in report["problems"])
    assert "command.ack_status: no register 'ack_state' in [readback]" in report["problems"]
    text = CliRunner().invoke(main, ["map", "check", str(path)]).output
    assert "2 problem(s)" in text


def test_map_show_prints_registers_with_port_addresses_and_tables():
    result = CliRunner().invoke(main, ["map", "show", "pilegate-sim-v1"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "map pilegate-sim-v1: pilegate simulated pile, register layout v1"
    assert "commands: sequenced" in result.output
    state = next(line for line in lines if line.startswith("telemetry  state"))
    assert state.split()[2:5] == ["holding", "0", "100"]
    assert "2=charging" in state
    assert any(line.split()[:5] == ["readback", "ack_seq", "holding", "24", "124"] for line in lines)


def test_map_show_json_and_an_unknown_map(tmp_path):
    data = json.loads(CliRunner().invoke(main, ["map", "show", str(SIM_FILE), "--json"]).output)
    assert data["name"] == "pilegate-sim-v1"
    assert data["port_bases"] == [100, 140, 180, 220]
    assert data["recipe"]["style"] == "sequenced"
    energy = next(r for r in data["registers"] if r["name"] == "energy_Wh")
    assert (energy["function"], energy["port1_address"], energy["type"]) == (3, 106, "u32")
    result = CliRunner().invoke(main, ["map", "show", "acme"])
    assert result.exit_code == 1
    assert "unknown register map 'acme'" in result.output
