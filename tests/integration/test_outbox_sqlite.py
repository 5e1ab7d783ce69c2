"""The outbox on a real SQLite file: durability across close/reopen, WAL, migrations, id order."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlite_utils import Database

from gateway.outbox import MIGRATIONS, Kind, Outbox, OutboxError, OutboxLimits, OutMessage, wall_ms


def msg(kind: Kind, n: int, topic: str = "t") -> OutMessage:
    return OutMessage(topic, b'{"n":%d}' % n, 1, kind == "status", kind, wall_ms())


def test_messages_survive_close_and_reopen_in_order(tmp_path: Path):
    path = tmp_path / "outbox.db"
    outbox = Outbox(path)
    outbox.append_many([msg("telemetry", i) for i in range(3)])
    outbox.append_many([msg("event", 3), msg("cmd_result", 4)])
    outbox.ack([outbox.peek(1)[0].id])
    outbox.close()

    reopened = Outbox(path)
    try:
        rows = reopened.peek(100)
        assert [r.payload for r in rows] == [b'{"n":%d}' % i for i in (1, 2, 3, 4)]
        assert [r.kind for r in rows] == ["telemetry", "telemetry", "event", "cmd_result"]
        assert reopened.depth() == 4
        assert reopened.size_bytes() == sum(len(r.payload) + 1 for r in rows)
    finally:
        reopened.close()


def test_drop_counters_and_session_survive_reopen_and_sessions_keep_increasing(tmp_path: Path):
    path = tmp_path / "outbox.db"
    outbox = Outbox(path, OutboxLimits(max_messages=1))
    outbox.append_many([msg("telemetry", 0), msg("telemetry", 1)])
    sessions = [outbox.next_session(), outbox.next_session()]
    outbox.close()

    reopened = Outbox(path, OutboxLimits(max_messages=1))
    try:
        sessions.append(reopened.next_session())
        assert sessions[0] < sessions[1] < sessions[2]
        assert reopened.stats()["dropped_telemetry"] == 1
        assert reopened.stats()["session"] == sessions[2]
    finally:
        reopened.close()


def test_ids_keep_increasing_after_the_outbox_was_emptied(tmp_path: Path):
    """The uplink's cursor relies on ids never going backwards, even across reopen."""
    path = tmp_path / "outbox.db"
    outbox = Outbox(path)
    outbox.append_many([msg("event", i) for i in range(3)])
    last_id = outbox.peek(10)[-1].id
    outbox.ack(m.id for m in outbox.peek(10))
    outbox.close()
    reopened = Outbox(path)
    try:
        reopened.append_many([msg("event", 9)])
        assert reopened.peek(10, after_id=last_id)[0].payload == b'{"n":9}'
    finally:
        reopened.close()


def test_database_uses_wal_and_records_its_migration_once(tmp_path: Path):
    path = tmp_path / "outbox.db"
    Outbox(path).close()
    Outbox(path).close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        applied = conn.execute("SELECT migration_set, name FROM _sqlite_migrations").fetchall()
    assert applied == [
        ("pilegate.gateway.outbox", "001_outbox_and_counters"),
        ("pilegate.gateway.outbox", "002_quarantine"),
    ]


def test_a_database_from_before_the_quarantine_migration_is_upgraded_in_place(tmp_path: Path):
    path = tmp_path / "outbox.db"
    db = Database(path)
    MIGRATIONS.apply(db, stop_before="002_quarantine")
    db.execute(
        "INSERT INTO outbox (topic, payload, qos, retain, kind, created_ms, size)"
        " VALUES ('t', x'7b7d', 1, 0, 'event', 1, 3)"
    )
    db.execute("UPDATE counters SET value = value + 1 WHERE name IN ('depth')")
    db.execute("UPDATE counters SET value = value + 3 WHERE name IN ('bytes')")
    db.close()

    outbox = Outbox(path)
    try:
        row = outbox.peek(1)[0]
        assert outbox.quarantine(row.id, "broker refused it")
        assert (outbox.depth(), outbox.size_bytes(), outbox.stats()["quarantined"]) == (0, 0, 1)
    finally:
        outbox.close()


def test_quarantined_rows_are_kept_with_their_reason(tmp_path: Path):
    path = tmp_path / "outbox.db"
    outbox = Outbox(path)
    outbox.append_many([msg("event", 1), msg("event", 2)])
    first = outbox.peek(1)[0]
    assert outbox.quarantine(first.id, "not authorized")
    assert not outbox.quarantine(first.id, "again")
    assert [r.payload for r in outbox.peek(10)] == [b'{"n":2}']
    outbox.close()
    with sqlite3.connect(path) as conn:
        kept = conn.execute("SELECT id, payload, kind, reason FROM quarantine").fetchall()
    assert kept == [(first.id, b'{"n":1}', "event", "not authorized")]


def test_status_coalescing_holds_across_reopen(tmp_path: Path):
    path = tmp_path / "outbox.db"
    outbox = Outbox(path)
    outbox.append_many([msg("status", 0, topic="s")])
    outbox.close()
    reopened = Outbox(path)
    try:
        reopened.append_many([msg("status", 1, topic="s")])
        assert [r.payload for r in reopened.peek(10)] == [b'{"n":1}']
        assert reopened.stats()["dropped_status"] == 1
    finally:
        reopened.close()


def test_a_file_that_is_not_an_outbox_database_gives_a_named_error(tmp_path: Path):
    path = tmp_path / "outbox.db"
    path.write_bytes(b"this is not SQLite" * 100)
    with pytest.raises(OutboxError, match=r"cannot open outbox .*outbox\.db"):
        Outbox(path)
