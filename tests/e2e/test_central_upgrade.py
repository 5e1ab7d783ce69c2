"""Upgrading a database the new schema cannot take as it is: the central refuses to start with
exit code 2 and a message naming what to settle, applies nothing, and starts once it is settled."""

from __future__ import annotations

from pathlib import Path

from central.adapters.schema import ORDER_MIGRATIONS, migrations
from central.adapters.storage import connect
from tests.e2e.harness import central_config, free_port, run_central, spawn
from tests.migration_helpers import ONE_ACTIVE, driver_with_two_active_requests, migrations_before


def database_before_one_active_request(path: Path) -> None:
    """A database migrated up to (not including) 0005, where one driver won the race the index now
    forbids: a waiting request at north and another at south."""
    db = connect(path)
    try:
        migrations_before(ONE_ACTIVE).apply(db)
        ORDER_MIGRATIONS.apply(db)
        driver_with_two_active_requests(db)
    finally:
        db.conn.close()


def test_a_database_with_a_driver_holding_two_active_requests_is_named_until_settled(tmp_path: Path) -> None:
    data = tmp_path / "central-data"
    data.mkdir()
    database_before_one_active_request(data / "central.db")
    config_path = tmp_path / "central.toml"
    config_path.write_text(central_config("north", free_port(), data, 60, 1, 0))

    refused = spawn(
        "central-old", ["central", "--config", str(config_path), "--port", str(free_port())], tmp_path
    )
    refused.popen.wait(60)
    assert refused.popen.returncode == 2, refused.log_tail()
    message = refused.log()
    assert "cannot upgrade database" in message and "user 1 (2 requests)" in message, message
    assert "Traceback" not in message

    db = connect(data / "central.db")
    try:
        assert ONE_ACTIVE not in migrations.applied(db)  # nothing applied
        with db.transaction():
            db.execute("UPDATE charging_requests SET current_status = 'cancelled' WHERE id = 'car2'")
    finally:
        db.conn.close()
    central = run_central(tmp_path, config_path, name="central-settled", timeout_s=30)
    try:
        assert central.answering()
    finally:
        central.proc.stop()
