"""Upgrading a database the new schema cannot take as it is: the central refuses to start with
exit code 2 and a message naming what to settle, applies nothing, and starts once it is settled."""

from __future__ import annotations

from pathlib import Path

from central.adapters.database import Migrations
from central.adapters.schema import ORDER_MIGRATIONS, migrations
from central.adapters.storage import connect
from tests.e2e.harness import central_config, free_port, run_central, spawn

NOW = "2025-06-02T02:00:00+00:00"


def database_before_one_active_request(path: Path) -> None:
    """A database migrated up to (not including) 0005, where one driver won the race the index now
    forbids: a waiting request at north and another at south."""
    before = Migrations(migrations.name)
    for name, fn in migrations.steps:
        if name == "0005_one_active_request_per_driver":
            break
        before(name=name, rebuilds=name in migrations.rebuilds)(fn)
    db = connect(path)
    try:
        before.apply(db)
        ORDER_MIGRATIONS.apply(db)
        with db.transaction():
            db.execute(
                "INSERT INTO users (username, password_hash, register_time) VALUES ('ann', 'h', ?)", [NOW]
            )
            for car, station in (("car1", "north"), ("car2", "south")):
                db.execute(
                    "INSERT INTO charging_requests (id, station, user_id, queue_number, charging_mode, "
                    "requested_amount, current_status, created_at) VALUES (?, ?, 1, 'F1', 'fast', '10', "
                    "'waiting', ?)",
                    [car, station, NOW],
                )
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
        assert "0005_one_active_request_per_driver" not in migrations.applied(db)  # nothing applied
        with db.transaction():
            db.execute("UPDATE charging_requests SET current_status = 'cancelled' WHERE id = 'car2'")
    finally:
        db.conn.close()
    central = run_central(tmp_path, config_path, name="central-settled", timeout_s=30)
    try:
        assert central.answering()
    finally:
        central.proc.stop()
