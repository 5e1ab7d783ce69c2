"""The control API's token file: created private, reused, refused when unsafe, clear errors."""

import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from gateway.control_token import TokenFileError, load_or_create_token, read_token
from gateway.pilectl import main


def test_a_missing_token_file_is_created_random_and_group_readable_only(tmp_path):
    path = tmp_path / "control.token"
    token = load_or_create_token(path)
    assert len(token) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert load_or_create_token(path) == token  # kept across restarts
    assert load_or_create_token(tmp_path / "other.token") != token


def test_a_token_file_others_may_read_is_refused(tmp_path):
    path = tmp_path / "control.token"
    path.write_text("a-token-long-enough-1234\n")
    path.chmod(0o644)
    with pytest.raises(TokenFileError, match="mode 0644"):
        load_or_create_token(path)
    path.chmod(0o600)
    assert load_or_create_token(path) == "a-token-long-enough-1234"


def test_a_short_token_is_refused(tmp_path):
    path = tmp_path / "control.token"
    path.write_text("short\n")
    path.chmod(0o600)
    with pytest.raises(TokenFileError, match="at least 16 characters"):
        load_or_create_token(path)


def test_permission_denied_names_the_file_and_the_group(tmp_path, monkeypatch):
    path = tmp_path / "control.token"
    load_or_create_token(path)

    def denied(self: Path, *args: object, **kwargs: object) -> str:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_text", denied)
    with pytest.raises(TokenFileError) as info:
        read_token(path)
    message = str(info.value)
    assert str(path) in message and "permission denied" in message
    assert "must be in the gateway's group" in message


def test_pilectl_says_which_token_file_it_cannot_read(tmp_path, monkeypatch):
    monkeypatch.delenv("PILECTL_TOKEN", raising=False)
    missing = tmp_path / "gw" / "control.token"
    result = CliRunner().invoke(main, ["--token-file", str(missing), "status"])
    assert result.exit_code == 1
    assert f"control token file {missing} does not exist" in result.output
