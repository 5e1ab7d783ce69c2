"""The central store: migrations applied once, one writer, transactions whole or absent."""

import sqlite3

import pytest

from central.adapters.schema import migrations
from central.adapters.storage import Store, StoreClosed


@pytest.fixture
async def store(tmp_path):
    store = Store(tmp_path / "central.db", [migrations])
    await store.open()
    yield store
    await store.close()


async def test_migrations_create_the_schema_and_system_roles(store):
    roles = await store.read(lambda db: [r["permission_level"] for r in db["roles"].rows])
    assert roles == [1, 2, 3, 4]
    tables = await store.read(lambda db: set(db.table_names()))
    assert {"users", "orders", "piles", "ports", "telemetry", "notifications"} <= tables


async def test_reopening_applies_nothing_twice(tmp_path):
    for _ in range(2):
        store = Store(tmp_path / "c.db", [migrations])
        await store.open()
        count = await store.read(lambda db: db["roles"].count)
        await store.close()
        assert count == 4


async def test_a_failing_write_leaves_nothing_behind(store):
    def half_then_fail(db):
        db["params"].insert({"key": "x", "value": "1"})
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await store.write(half_then_fail)
    assert await store.read(lambda db: db["params"].count) == 0


async def test_constraint_violation_is_an_error_not_a_partial_write(store):
    await store.write(
        lambda db: db["users"].insert({"username": "ann", "password_hash": "h", "register_time": "t"})
    )
    with pytest.raises(sqlite3.IntegrityError):
        await store.write(lambda db: db.execute("UPDATE users SET balance_cents = -1 WHERE username = 'ann'"))
    assert await store.read(lambda db: db["users"].get(1)["balance_cents"]) == 0


async def test_closed_store_refuses_work(tmp_path):
    store = Store(tmp_path / "c.db", [migrations])
    await store.open()
    await store.close()
    with pytest.raises(StoreClosed):
        await store.write(lambda db: None)
