"""A single-station database made by the schema before several stations (0001_core,
0002_payment_proof and the order migrations) keeps every row through 0003_stations, on SQLite and
on PostgreSQL, and all of it belongs to the station it ran (the one recorded with a code)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from central.adapters import postgres
from central.adapters.charging import ChargingRows, stored_params
from central.adapters.database import Db, IntegrityError
from central.adapters.schema import ORDER_MIGRATIONS, ActiveRequestsClash, migrations
from central.adapters.stations import create_pile, pile_by_no, station_id
from central.adapters.storage import connect
from tests.migration_helpers import ONE_ACTIVE, driver_with_two_active_requests, migrations_before
from tests.postgres_server import PgServer, create_database, drop_database

pytest_plugins = ("tests.integration.central_fixtures",)

NOW = "2025-06-02T02:00:00+00:00"
_names = itertools.count(1)


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    """An empty database on each engine (not the migrated template the other tests copy)."""
    if request.param == "sqlite":
        lite = connect(tmp_path / "old.db")
        yield lite
        lite.conn.close()
        return
    server: PgServer = request.getfixturevalue("postgres_server")
    name = f"pilegate_old_{next(_names)}"
    pg = postgres.connect(create_database(server, name))
    try:
        yield pg
    finally:
        pg.conn.close()
        drop_database(server, name)


def old_schema(db: Db) -> None:
    """The schema as a single-station central built it."""
    migrations_before("0003_stations").apply(db)
    ORDER_MIGRATIONS.apply(db)


def single_station_rows(db: Db) -> dict[str, Any]:
    """What a central running station 'site-a' wrote: its station, a pile, a request with its
    order and live session, a command, telemetry, its parameters and scheduler state."""
    with db.transaction():
        sid = station_id(db, "site-a", name="Site A", now=NOW)
        db.execute(
            "INSERT INTO piles (id, station_id, pile_no, pile_type, power_rate, total_ports) "
            "VALUES ('p1', ?, 'F1', 1, 30, 1)",
            [sid],
        )
        db.execute("INSERT INTO ports (id, pile_id, port_no) VALUES ('t1', 'p1', '1')")
        db.execute("INSERT INTO users (username, password_hash, register_time) VALUES ('ann', 'h', ?)", [NOW])
        user = db.execute("SELECT id FROM users WHERE username = 'ann'").fetchone()[0]
        db.execute(
            "INSERT INTO charging_requests (id, user_id, queue_number, charging_mode, requested_amount, "
            "current_status, created_at) VALUES ('car1', ?, 'F1', 'fast', '10', 'charging', ?)",
            [user, NOW],
        )
        db.execute(
            "INSERT INTO orders (id, order_no, user_id, request_id, pile_id, pile_no, port_no, status, "
            "start_time, create_time) VALUES ('o1', 'N1', ?, 'car1', 'p1', 'F1', '1', 1, ?, ?)",
            [user, NOW, NOW],
        )
        db.execute("INSERT INTO live_sessions (car, pile_no, port, order_id) VALUES ('car1', 'F1', 1, 'o1')")
        db.execute(
            "INSERT INTO commands (id, pile_no, port, op, params, status, attempt, created_ms, expires_ms) "
            "VALUES ('c1', 'F1', 1, 'start', '{}', 'done', 1, 1, 2)"
        )
        db.execute(
            "INSERT INTO telemetry (pile_no, port, ts, session, seq, state, energy_wh) "
            "VALUES ('F1', 1, 1000, 1, 1, 'charging', 5000)"
        )
        db.execute(
            "INSERT INTO params (key, value, updated_at) VALUES ('station', ?, ?)",
            [json.dumps({"WaitingAreaSize": 9}), NOW],
        )
        db.execute("INSERT INTO params (key, value) VALUES ('clock_anchor', '{\"wall_s\": 1}')")
        db.execute("INSERT INTO scheduler_state (id, state, updated_at) VALUES (1, '{\"x\": 1}', ?)", [NOW])
    return {"station_id": sid, "user": user}


def test_a_single_station_database_keeps_its_rows_and_they_belong_to_its_station(empty_db: Db) -> None:
    db = empty_db
    old_schema(db)
    before = single_station_rows(db)
    migrations.apply(db)  # 0003_stations (and the ones after it) is new

    for table in ("charging_requests", "orders", "live_sessions", "commands", "telemetry", "piles"):
        rows = db.execute(f"SELECT station FROM {table}").fetchall()  # noqa: S608 - our names
        assert [r[0] for r in rows] == ["site-a"], table
    assert stored_params(db, station="site-a") == {"WaitingAreaSize": 9}
    assert stored_params(db, station="other") is None
    charging = ChargingRows(db, "site-a")
    assert charging.scheduler_state() == {"x": 1}
    assert ChargingRows(db, "other").scheduler_state() is None
    assert [r.car for r in charging.active_requests()] == ["car1"]
    assert ChargingRows(db, "other").active_requests() == []
    assert pile_by_no(db, "F1", station="site-a") == ("p1", 1)
    # the port and its pile are still linked, and the order still points at its pile
    assert db.execute("SELECT pile_id FROM ports WHERE id = 't1'").fetchone()[0] == "p1"
    assert db.execute("SELECT pile_id FROM orders WHERE id = 'o1'").fetchone()[0] == "p1"

    with db.transaction():  # another station may have an F1 of its own, the same station may not
        other = station_id(db, "other", now=NOW)
        create_pile(db, station_id=other, station="other", pile_no="F1", pile_type=1, power_kw=30, now=NOW)
    with pytest.raises(IntegrityError) as caught, db.transaction():
        create_pile(
            db,
            station_id=before["station_id"],
            station="site-a",
            pile_no="F1",
            pile_type=1,
            power_kw=30,
            now=NOW,
        )
    assert caught.value.unique
    with db.transaction():  # the scheduler state is kept per station
        ChargingRows(db, "other").save_scheduler_state({"y": 2}, datetime.now(UTC))
    assert ChargingRows(db, "site-a").scheduler_state() == {"x": 1}


def test_one_active_request_per_driver_is_refused_over_drivers_that_hold_two_until_settled(
    empty_db: Db,
) -> None:
    db = empty_db
    migrations_before(ONE_ACTIVE).apply(db)
    user = driver_with_two_active_requests(db)
    with pytest.raises(ActiveRequestsClash, match=rf"user {user} \(2 requests\)"):
        migrations.apply(db)
    with db.transaction():
        db.execute("UPDATE charging_requests SET current_status = 'cancelled' WHERE id = 'car2'")
    migrations.apply(db)
    assert ONE_ACTIVE in migrations.applied(db)
    with pytest.raises(IntegrityError) as caught, db.transaction():
        db.execute("UPDATE charging_requests SET current_status = 'charging' WHERE id = 'car2'")
    assert caught.value.unique
