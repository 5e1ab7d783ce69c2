"""The README's technician walkthrough stays true: its five lines of gateway config load as shown."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from gateway.pilectl import main

README = Path(__file__).resolve().parents[2] / "README.md"


def walkthrough_config() -> str:
    text = README.read_text()
    section = text[text.index("Five lines of gateway config") :]
    match = re.search(r"```toml\n(.*?)```", section, re.DOTALL)
    assert match, "the walkthrough's toml block"
    return "\n".join(line.strip() for line in match.group(1).splitlines())


def test_the_walkthrough_config_is_five_lines_that_check_out(tmp_path):
    config = walkthrough_config()
    assert len(config.strip().splitlines()) == 5
    path = tmp_path / "gateway.toml"
    path.write_text(config)
    result = CliRunner().invoke(main, ["check-config", str(path)])
    assert result.exit_code == 0, result.output
    assert "OK: gateway gw1 of station station1, 1 buses, 1 piles" in result.output
