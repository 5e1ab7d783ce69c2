"""pilectl commands that need no running gateway: check-config and plan from a file."""

import json
from pathlib import Path

from click.testing import CliRunner

from gateway.pilectl import main

EXAMPLE = str(Path(__file__).parents[2] / "config" / "gateway.example.toml")


def test_check_config_accepts_the_example():
    result = CliRunner().invoke(main, ["check-config", EXAMPLE])
    assert result.exit_code == 0, result.output
    assert "OK: gateway gw1 of station station1, 2 buses, 3 piles" in result.output


def test_check_config_lists_every_problem_and_exits_2(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[gateway]\nid = "g"\n[[pile]]\nid = "F1"\nbus = "nope"\n')
    result = CliRunner().invoke(main, ["check-config", str(bad), "--json"])
    assert result.exit_code == 2
    report = json.loads(result.output)
    assert report["ok"] is False
    assert "gateway.station: required" in report["problems"]
    assert "pile[F1].bus: unknown bus 'nope'" in report["problems"]


def test_plan_from_a_config_file_is_one_request_per_single_port_pile():
    result = CliRunner().invoke(main, ["plan", "--config", EXAMPLE, "--json"])
    assert result.exit_code == 0, result.output
    plans = json.loads(result.output)
    assert plans["F1"]["requests"] == [[100, 30]]
    assert set(plans) == {"F1", "T1", "T2"}


def test_unreachable_gateway_is_a_clear_error():
    result = CliRunner().invoke(
        main,
        ["--url", "http://127.0.0.1:9", "status"],
        env={"PILECTL_TOKEN": "a-token-of-some-length", "PILECTL_TOKEN_FILE": None},
    )
    assert result.exit_code == 1
    assert "cannot reach the gateway at http://127.0.0.1:9/status" in result.output
