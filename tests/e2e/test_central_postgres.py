"""The central as a real process on PostgreSQL: it builds its schema on an empty database, keeps an
account across a kill -9, and a second central on the same database joins it (several centrals share
a PostgreSQL database; docs/fleet.md): both serve, the station is owned by exactly one of them (its
advisory lock), and a kill -9 of the owner hands the station to the other."""

from __future__ import annotations

import signal
from pathlib import Path

from tests.e2e.harness import (
    Api,
    CentralProcess,
    central_config,
    create_admin,
    free_port,
    run_central,
    wait_until,
)
from tests.postgres_server import PgServer, create_database

pytest_plugins = ("tests.integration.central_fixtures",)
PASSWORD = "correct-horse-9"


def central_on(workdir: Path, database: str) -> Path:
    """A central config (no broker: the central keeps retrying, its HTTP side serves) on ``database``."""
    config = central_config("s1", free_port(), workdir / "central-data", 60, 1, 1)
    path = workdir / "central.toml"
    path.write_text(config.replace("[central]\n", f'[central]\ndatabase = "{database}"\n', 1))
    return path


def login(central: CentralProcess) -> int:
    status, _ = Api(central.url).call("POST", "/api/auth/login/", {"username": "admin", "password": PASSWORD})
    return status


def lease_holders(server: PgServer, database: str) -> list[str]:
    """The instances (``hostname-httpport``) whose sessions hold a station lease on ``database``."""
    with server.admin() as conn:
        rows = conn.execute(
            "SELECT a.application_name FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
            "JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND d.datname = %s",
            [database],
        ).fetchall()
    return [str(r[0]).removeprefix("pilegate-lease ") for r in rows]


def test_centrals_on_postgresql_share_the_database_and_a_kill_9_hands_the_station_over(
    tmp_path, postgres_server: PgServer
):
    url = create_database(postgres_server, "pilegate_e2e_lock")
    config_path = central_on(tmp_path, url)
    create_admin(config_path, PASSWORD)
    first = run_central(tmp_path, config_path)
    second = run_central(tmp_path, config_path, "central-2")
    try:
        assert login(first) == 200 and login(second) == 200  # one database, one set of accounts
        db = "pilegate_e2e_lock"
        wait_until(lambda: len(lease_holders(postgres_server, db)) == 1, 15, "one station owner")
        (holder,) = lease_holders(postgres_server, db)
        by_port = {c.url.rsplit(":", 1)[1]: c for c in (first, second)}
        owner = by_port[holder.rsplit("-", 1)[1]]
        (other,) = [c for c in (first, second) if c is not owner]

        owner.proc.stop(signal.SIGKILL)
        other_name = f"-{other.url.rsplit(':', 1)[1]}"
        wait_until(
            lambda: [h[-len(other_name) :] for h in lease_holders(postgres_server, db)] == [other_name],
            15,
            "the other central owns the station",
        )
        assert login(other) == 200
        back = owner.restart(tmp_path)  # as systemd would restart it
        try:
            assert login(back) == 200  # the account outlived the kill
            assert len(lease_holders(postgres_server, db)) == 1  # still exactly one owner
        finally:
            back.proc.stop()
    finally:
        second.proc.stop()
        first.proc.stop()
