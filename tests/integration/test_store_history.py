"""An existing SQLite database keeps its migration history under the engine-neutral migrations."""

import sqlite_utils

from central.adapters.schema import ORDER_MIGRATIONS, core, migrations, payment_proof
from central.adapters.storage import Store, connect


async def test_a_database_migrated_by_sqlite_utils_keeps_its_history(tmp_path):
    """A central.db from before both engines: sqlite-utils' Migrations recorded 0001_core and
    0002_payment_proof; the store applies only what is new and appends to the same history."""
    old = sqlite_utils.Migrations("pilegate-central")
    old(name="0001_core")(core)  # type: ignore[type-var]  # our Db is what sqlite-utils passes
    old(name="0002_payment_proof")(payment_proof)  # type: ignore[type-var]
    database = tmp_path / "central.db"
    db = connect(database)
    old.apply(db)
    db.execute("INSERT INTO users (username, password_hash, register_time) VALUES ('ann', 'h', 't')")
    db.conn.close()

    store = Store(database, [migrations, ORDER_MIGRATIONS])
    await store.open()
    try:
        history = await store.read(
            lambda db: [
                tuple(r) for r in db.execute("SELECT migration_set, name FROM _sqlite_migrations ORDER BY id")
            ]
        )
        users = await store.read(lambda db: db["users"].count)
    finally:
        await store.close()
    assert history == [
        ("pilegate-central", "0001_core"),
        ("pilegate-central", "0002_payment_proof"),
        ("pilegate-central", "0003_stations"),
        ("pilegate-central", "0004_live_rows_fillfactor"),
        ("pilegate-central", "0005_one_active_request_per_driver"),
        ("pilegate-operator-orders", "0001_order_indexes"),
        ("pilegate-operator-orders", "0002_order_counts"),
    ]
    assert users == 1
