"""pilectl commands that need no running gateway: check-config and plan from a file."""

import json
from pathlib import Path

from click.testing import CliRunner

from gateway.pilectl import main, port_state_name

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


def test_config_after_the_sub_command_names_the_gateway(tmp_path):
    config = tmp_path / "gw.toml"
    token = tmp_path / "control.token"
    token.write_text("a-token-of-some-length\n")
    token.chmod(0o600)
    text = Path(EXAMPLE).read_text().replace('"127.0.0.1:8470"', '"127.0.0.1:9"')
    config.write_text(text.replace("command_timeout_s", f'control_token_file = "{token}"\ncommand_timeout_s'))
    env = {"PILECTL_TOKEN": None, "PILECTL_TOKEN_FILE": None, "PILECTL_CONFIG": None}
    for argv in (["--config", str(config), "telemetry"], ["telemetry", "--config", str(config)]):
        result = CliRunner().invoke(main, argv, env=env)
        assert result.exit_code == 1, result.output
        assert "cannot reach the gateway at http://127.0.0.1:9/telemetry" in result.output


def test_port_states_print_by_name():
    assert [port_state_name(code) for code in (0, 2, 4, 5, 17, None)] == [
        "available",
        "charging",
        "faulted",
        "unavailable",
        "17",
        "None",
    ]
