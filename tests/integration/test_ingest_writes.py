"""Ingest's batched writes on both engines (``central.adapters.telemetry`` over ``Db.insert_rows`` and
``Db.execute_values``): readings and live fields land as given, a staging table is never read
twice, and on PostgreSQL writing the same ports' live fields again and again does not grow the
tables (HOT updates in pages with room; a staging table that empties itself when the transaction
ends)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from central.adapters import postgres, stations, telemetry
from central.adapters.database import POSTGRESQL, Db, connect_sqlite, parse_database_url
from central.adapters.ingest import iso_ms
from central.adapters.schema import migrations
from central.adapters.storage import Store
from tests.postgres_server import BOTH_ENGINES

pytest_plugins = ("tests.integration.central_fixtures",)
pytestmark = BOTH_ENGINES

STATION = "s1"
NOW = "2025-01-01T00:00:00.000+00:00"
T0 = 1_735_689_600_000
PILES = 50  # two ports each


@pytest.fixture
async def store(database: Path | str) -> AsyncIterator[Store]:
    store = Store(database, [migrations])
    await store.open()

    def register(db: Db) -> None:
        station_id = stations.station_id(db, STATION, now=NOW)
        for n in range(PILES):
            pile_id = stations.create_pile(
                db, station_id=station_id, station=STATION, pile_no=f"P{n}", pile_type=1, power_kw=30, now=NOW
            )
            stations.add_ports(db, pile_id, (1, 2), NOW)

    await store.write(register)
    yield store
    await store.close()


def port_rows(k: int) -> list[tuple[Any, ...]]:
    """Every port's live fields as reading ``k`` sets them (meter 1000 + k Wh)."""
    ts = T0 + 1000 * k
    return [
        (f"P{n}", str(port), 400.0, 30, 12.0, 40.5, 1000 + k, (1000 + k) / 1000, 2, 0, ts, iso_ms(ts))
        for n in range(PILES)
        for port in (1, 2)
    ]


def meters(db: Db) -> dict[tuple[str, str], tuple[int, int] | None]:
    """Each port's ``(meter_wh, last_telemetry_ms)``, None before its first reading."""
    rows = db.query(
        "SELECT piles.pile_no, ports.port_no, ports.meter_wh, ports.last_telemetry_ms FROM ports "
        "JOIN piles ON piles.id = ports.pile_id"
    )
    return {
        (r["pile_no"], r["port_no"]): None
        if r["meter_wh"] is None
        else (int(r["meter_wh"]), int(r["last_telemetry_ms"]))
        for r in rows
    }


async def test_readings_with_whole_numbers_in_real_columns_are_stored_as_given(store: Store) -> None:
    """A JSON reading may carry ``400`` where ``400.5`` is usual: the (binary, on PostgreSQL) bulk
    load takes an int for a real column, and stores every column as given."""
    rows = [
        (STATION, "P1", 1, T0, 7, 1, "charging", 400, 32.5, 13_000, 123_456, 41, "none", 0),
        (STATION, "P1", 2, T0 + 1, 7, 1, "available", 230.5, 0, 0.0, 2**32 - 1, -5.25, "code_7", 1),
    ]
    await store.write(lambda db: telemetry.insert_readings(db, rows))
    stored = await store.read(
        lambda db: [
            tuple(r.values())
            for r in db.query(f"SELECT {', '.join(telemetry.READING_COLUMNS)} FROM telemetry ORDER BY ts")  # noqa: S608
        ]
    )
    assert stored == rows
    assert [type(r[7]) for r in stored] == [float, float]  # voltage_v is a real column on both


async def test_live_fields_written_twice_in_one_transaction_take_the_second(store: Store) -> None:
    """Two writes of the same width in one transaction: the second reads only its own rows."""

    def twice(db: Db) -> None:
        telemetry.update_port_live(db, port_rows(1), NOW, STATION)
        telemetry.update_port_live(db, port_rows(2)[:2], NOW, STATION)

    await store.write(twice)
    found = await store.read(meters)
    assert found[("P0", "1")] == (1002, T0 + 2000)
    assert found[("P0", "2")] == (1002, T0 + 2000)
    assert found[("P1", "1")] == (1001, T0 + 1000)  # only in the first write
    assert len(found) == 2 * PILES


async def test_a_write_that_rolled_back_leaves_the_next_one_working(store: Store) -> None:
    """The first write of a session creates the staging table; when it rolls back the table goes
    with it, and the next write makes it again."""

    def fail(db: Db) -> None:
        telemetry.update_port_live(db, port_rows(1), NOW, STATION)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await store.write(fail)
    assert set((await store.read(meters)).values()) == {None}  # the ports have no readings yet
    await store.write(lambda db: telemetry.update_port_live(db, port_rows(2), NOW, STATION))
    assert set((await store.read(meters)).values()) == {(1002, T0 + 2000)}


async def test_live_fields_written_outside_a_transaction(store: Store, database: Path | str) -> None:
    """A connection in autocommit mode (no ``transaction()``): the write is still whole."""
    url = parse_database_url(database)
    db = postgres.connect(url.target) if url.dialect == POSTGRESQL else connect_sqlite(url.path)
    try:
        telemetry.update_port_live(db, port_rows(3), NOW, STATION)
        telemetry.update_pile_live(db, [(f"P{n}", 41.0, 2, iso_ms(T0)) for n in range(PILES)], NOW, STATION)
    finally:
        db.conn.close()
    assert set((await store.read(meters)).values()) == {(1003, T0 + 3000)}


async def test_an_older_reading_leaves_newer_live_fields(store: Store) -> None:
    await store.write(lambda db: telemetry.update_port_live(db, port_rows(5), NOW, STATION))
    await store.write(lambda db: telemetry.update_port_live(db, port_rows(4), NOW, STATION))
    assert set((await store.read(meters)).values()) == {(1005, T0 + 5000)}


async def test_rewriting_the_live_fields_does_not_grow_the_tables(store: Store) -> None:
    """300 writes of every port's and pile's live fields, as ingest does several times a second.
    On PostgreSQL each is a new row version: in pages with room (the ``0004_live_rows_fillfactor``
    migration) it stays in its page and the old one is pruned, where full pages made the table
    grow by 100 rows a write until autovacuum came by; the staging table is emptied at commit, where
    a DELETE left dead rows that nothing vacuums."""
    if store.dialect != POSTGRESQL:
        pytest.skip("SQLite updates rows in place")

    def sizes(db: Db) -> tuple[int, int, list[int]]:
        row = db.execute("SELECT pg_relation_size('ports'), pg_relation_size('piles')").fetchone()
        staging = db.execute(  # this session's staging tables (temporary: the writer's own)
            "SELECT pg_relation_size(oid) FROM pg_class WHERE relnamespace = pg_my_temp_schema() "
            "AND relname LIKE 'pilegate_values_%'"
        ).fetchall()
        return int(row[0]), int(row[1]), [int(r[0]) for r in staging]

    def write(db: Db, k: int) -> None:
        telemetry.update_port_live(db, port_rows(k), NOW, STATION)
        piles = [(f"P{n}", 40.0 + k % 7, 2, iso_ms(T0 + 1000 * k)) for n in range(PILES)]
        telemetry.update_pile_live(db, piles, NOW, STATION)

    await store.write(lambda db: write(db, 1))
    first = await store.write(sizes)
    for k in range(2, 301):
        await store.write(lambda db, k=k: write(db, k))  # type: ignore[misc]
    ports, piles, staging = await store.write(sizes)  # on the writer's session: its temp tables
    assert set((await store.read(meters)).values()) == {(1300, T0 + 300_000)}
    assert staging == [0, 0], "a staging table keeps rows after commit"  # the ports' and the piles'
    # in full pages the ports grew 7-fold here (autovacuum had not come by)
    assert ports <= 2 * first[0], (first, ports)
    assert piles <= 2 * first[1], (first, piles)
