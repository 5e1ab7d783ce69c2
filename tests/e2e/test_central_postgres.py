"""The central as a real process on PostgreSQL: it builds its schema on an empty database, keeps an
account across a kill -9, and a second central on the same database is refused, naming the holder;
the advisory lock dies with its holder's session."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.e2e.harness import Api, CentralProcess, central_config, free_port, spawn, wait_until
from tests.postgres_server import PgServer, create_database

pytest_plugins = ("tests.integration.central_fixtures",)
PASSWORD = "correct-horse-9"


def central_on(workdir: Path, database: str) -> Path:
    """A central config (no broker: the central keeps retrying, its HTTP side serves) on ``database``."""
    config = central_config("s1", free_port(), workdir / "central-data", 60, 1, 1)
    path = workdir / "central.toml"
    path.write_text(config.replace("[central]\n", f'[central]\ndatabase = "{database}"\n', 1))
    return path


def start(workdir: Path, config_path: Path, name: str = "central") -> CentralProcess:
    port = free_port()
    proc = spawn(name, ["central", "--config", str(config_path), "--port", str(port)], workdir)
    central = CentralProcess(proc, config_path, f"http://127.0.0.1:{port}")
    wait_until(central.answering, 30, "central HTTP", proc)
    return central


def login(central: CentralProcess) -> int:
    status, _ = Api(central.url).call("POST", "/api/auth/login/", {"username": "admin", "password": PASSWORD})
    return status


def test_a_central_on_postgresql_refuses_a_second_and_kill_9_frees_the_database(
    tmp_path, postgres_server: PgServer
):
    url = create_database(postgres_server, "pilegate_e2e_lock")
    config_path = central_on(tmp_path, url)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pilegate.cli",
            "create-user",
            "--config",
            str(config_path),
            "--username",
            "admin",
            "--admin",
        ],
        env={**os.environ, "PILEGATE_PASSWORD": PASSWORD},
        check=True,
        capture_output=True,
        timeout=60,
    )
    first = start(tmp_path, config_path)
    try:
        assert login(first) == 200
        second = spawn(
            "central-2", ["central", "--config", str(config_path), "--port", str(free_port())], tmp_path
        )
        second.popen.wait(60)
        assert second.popen.returncode == 2
        message = second.log()
        assert "pilegate_e2e_lock" in message and "in use by another central" in message
        assert f"pid {first.proc.popen.pid}" in message and "host" in message

        first.proc.stop(signal.SIGKILL)
        third = first.restart(tmp_path)  # the killed session's lock is gone with it
        try:
            assert login(third) == 200  # the account outlived the kill
        finally:
            third.proc.stop()
    finally:
        first.proc.stop()
