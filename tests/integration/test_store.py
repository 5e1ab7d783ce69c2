"""The central store on both engines: migrations applied once, one writer, transactions whole or
absent, constraint errors engine-neutral, reads that see committed writes."""

import pytest

from central.adapters.database import IntegrityError
from central.adapters.schema import ORDER_MIGRATIONS, migrations
from central.adapters.storage import DatabaseLocked, Store, StoreClosed, database_lock
from tests.postgres_server import BOTH_ENGINES

pytest_plugins = ("tests.integration.central_fixtures",)
pytestmark = BOTH_ENGINES


@pytest.fixture
async def store(database):
    store = Store(database, [migrations])
    await store.open()
    yield store
    await store.close()


async def test_migrations_create_the_schema_and_system_roles(store):
    roles = await store.read(lambda db: [r["permission_level"] for r in db["roles"].rows])
    assert sorted(roles) == [1, 2, 3, 4]
    tables = await store.read(lambda db: set(db.table_names()))
    assert {"users", "orders", "piles", "ports", "telemetry", "notifications"} <= tables


async def test_reopening_applies_nothing_twice(database):
    for _ in range(2):
        store = Store(database, [migrations, ORDER_MIGRATIONS])
        await store.open()
        count = await store.read(lambda db: db["roles"].count)
        applied = await store.read(lambda db: migrations.applied(db) + ORDER_MIGRATIONS.applied(db))
        await store.close()
        assert count == 4
        assert applied == [
            "0001_core",
            "0002_payment_proof",
            "0003_stations",
            "0004_live_rows_fillfactor",
            "0005_one_active_request_per_driver",
            "0001_order_indexes",
            "0002_order_counts",
        ]


async def test_a_failing_write_leaves_nothing_behind(store):
    def half_then_fail(db):
        db["params"].insert({"station": "s1", "key": "x", "value": "1"})
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await store.write(half_then_fail)
    assert await store.read(lambda db: db["params"].count) == 0


async def test_constraint_violation_is_an_error_not_a_partial_write(store):
    user_id = await store.write(
        lambda db: (
            db["users"].insert({"username": "ann", "password_hash": "h", "register_time": "t"}).last_rowid
        )
    )
    with pytest.raises(IntegrityError) as caught:
        await store.write(lambda db: db.execute("UPDATE users SET balance_cents = -1 WHERE username = 'ann'"))
    assert not caught.value.unique
    assert await store.read(lambda db: db["users"].get(user_id)["balance_cents"]) == 0


async def test_a_duplicate_is_a_unique_violation_whatever_the_case_of_the_name(store):
    await store.write(
        lambda db: db["users"].insert({"username": "ann", "password_hash": "h", "register_time": "t"})
    )
    with pytest.raises(IntegrityError) as caught:
        await store.write(
            lambda db: db.execute(
                "INSERT INTO users (username, password_hash, register_time) VALUES ('ANN', 'h', 't')"
            )
        )
    assert caught.value.unique
    found = await store.read(
        lambda db: db.execute("SELECT COUNT(*) FROM users WHERE username = ?", ["aNn"]).fetchone()
    )
    assert found[0] == 1


async def test_upsert_insert_or_ignore_and_identity_ids(store):
    def change(db):
        state = {"state": "1", "updated_at": "t"}
        db["scheduler_state"].upsert({"station": "k", **state}, pk="station")
        db["scheduler_state"].upsert({"station": "k", **state, "state": "2"}, pk="station")
        db.execute(
            "INSERT OR IGNORE INTO scheduler_state (station, state, updated_at) VALUES (?, ?, ?)",
            ["k", "3", "t"],
        )
        role = db.execute(
            "INSERT INTO roles (name, permission_level) VALUES (?, ?) RETURNING id", ["extra", 2]
        ).fetchone()[0]
        return role

    role_id = await store.write(change)
    assert role_id == 5  # after the four system roles, on both engines
    assert await store.read(lambda db: db["scheduler_state"].get("k")["state"]) == "2"


async def test_big_integers_and_sums_come_back_as_ints(store):
    ts_ms = 1_900_000_000_000  # beyond 32 bits
    rows = [
        ("F1", 1, ts_ms + i, 1, i, "charging", 400.0, 10.0, 4000.0, 3_000_000_000 + i, 25.0, "none", 0)
        for i in range(3)
    ]
    await store.write(
        lambda db: db.insert_rows(
            "telemetry",
            [
                "pile_no",
                "port",
                "ts",
                "session",
                "seq",
                "state",
                "voltage_v",
                "current_a",
                "power_w",
                "energy_wh",
                "temperature_c",
                "fault",
                "replayed",
            ],
            rows,
        )
    )
    total, newest = await store.read(
        lambda db: db.execute("SELECT SUM(energy_wh), MAX(ts) FROM telemetry").fetchone()
    )
    assert (total, newest) == (9_000_000_003, ts_ms + 2)
    assert type(total) is int


async def test_closed_store_refuses_work(database):
    store = Store(database, [migrations])
    await store.open()
    await store.close()
    with pytest.raises(StoreClosed):
        await store.write(lambda db: None)


async def test_a_second_central_on_the_same_database_is_refused_until_the_first_stops(database):
    first, second = database_lock(database), database_lock(database)
    first.acquire()
    try:
        with pytest.raises(DatabaseLocked, match=r"in use by another central \(.*pid \d+ on host"):
            second.acquire()
    finally:
        first.release()
    second.acquire()  # released: the next central starts
    second.release()


async def test_a_central_restarted_at_once_is_not_refused(database):
    """Release frees the lock before it returns: on PostgreSQL, closing the session alone left it
    held until the server's backend exited, and a central started right after was refused."""
    lock = database_lock(database)
    lock.acquire()
    for _ in range(25):
        lock.release()
        lock = database_lock(database)  # the next central, at once
        lock.acquire()
    lock.release()
