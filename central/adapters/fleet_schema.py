"""The tables several centrals on one database share: who is alive, and queue changes on their way
to a station's owner. A migration set of its own (``pilegate-fleet``), applied beside the central's.

- ``central_instances``: one row per running central instance (its id, host, pid, HTTP URL, when it
  started and its last heartbeat, both in milliseconds of the database server's clock, so the hosts'
  clocks never matter, and the server process of its lease session). :mod:`central.adapters.lease`
  writes it and counts the live rows.
- ``station_calls``: a change to a station's queue that reached an instance not owning the station,
  for the owner to apply once (:mod:`central.adapters.station_calls`). ``payload``, ``result`` and
  ``error_details`` are JSON text; ``status`` moves pending -> claimed -> done | failed, or pending ->
  failed when nobody took it in time.
- ``station_versions``: a counter per station, moved by its owner in the transaction of every write
  of the station's unit of work (``central/adapters/unit_of_work.py``); an instance that does not own
  the station reloads its read view of it when the counter moved.

Both engines get both tables (one code path); only PostgreSQL instances ever write them, since on
SQLite one instance owns every station and applies its calls in-process.
"""

from __future__ import annotations

from central.adapters.database import POSTGRESQL, Db, Migrations
from central.adapters.postgres import pg_ddl

FLEET_MIGRATIONS = Migrations("pilegate-fleet")

_TABLES = (
    """CREATE TABLE central_instances (
    id TEXT PRIMARY KEY,                 -- host-pid-random, new for every start
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    http_url TEXT,
    started_ms INTEGER NOT NULL,         -- the database server clock
    heartbeat_ms INTEGER NOT NULL,       -- the database server clock; stale after a few seconds
    session_pid INTEGER                  -- the server process of its lease session (pg_stat_activity)
)""",
    """CREATE TABLE station_calls (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    station TEXT NOT NULL,               -- the station code
    kind TEXT NOT NULL,                  -- what to do (the verb the handler applies)
    payload TEXT NOT NULL,               -- JSON
    status TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'claimed', 'done', 'failed')),
    result TEXT,                         -- JSON, when done
    error_kind TEXT,                     -- when failed: what kind of error (see station_calls.py)
    error TEXT,                          -- when failed: its message
    error_status INTEGER,                -- when failed: the HTTP status the owner would have answered
    error_details TEXT,                  -- when failed: JSON
    caller TEXT NOT NULL,                -- the instance that wrote the call and waits for it
    owner TEXT,                          -- the instance that claimed it
    created_ms INTEGER NOT NULL,         -- the database server clock, like the three below
    expires_ms INTEGER NOT NULL,         -- not claimed after this: failed, never applied
    claimed_ms INTEGER,
    done_ms INTEGER
)""",
    "CREATE INDEX station_calls_station_status ON station_calls(station, status, id)",
    "CREATE INDEX station_calls_done ON station_calls(done_ms)",
)


# PostgreSQL: the server clock in milliseconds, as the fleet's statements stamp their rows
_NOW_MS_FUNCTION = (
    "CREATE OR REPLACE FUNCTION pilegate_now_ms() RETURNS bigint LANGUAGE sql VOLATILE "
    "RETURN (extract(epoch FROM clock_timestamp()) * 1000)::bigint"
)


@FLEET_MIGRATIONS(name="0001_instances_and_station_calls")
def instances_and_station_calls(db: Db) -> None:
    """``central_instances`` and ``station_calls`` (see the module docstring); on PostgreSQL also
    ``pilegate_now_ms()``."""
    for statement in _TABLES:
        db.execute(pg_ddl(statement) if db.dialect == POSTGRESQL else statement)
    if db.dialect == POSTGRESQL:
        db.execute(_NOW_MS_FUNCTION)


@FLEET_MIGRATIONS(name="0002_station_versions")
def station_versions(db: Db) -> None:
    """``station_versions``: a counter per station that its owner moves in the transaction of every
    write of the station's unit of work, so another instance knows when its read view is stale."""
    statement = "CREATE TABLE station_versions (station TEXT PRIMARY KEY, version INTEGER NOT NULL DEFAULT 0)"
    db.execute(pg_ddl(statement) if db.dialect == POSTGRESQL else statement)


_BUMP = (
    "INSERT INTO station_versions (station, version) VALUES (?, 1) "
    "ON CONFLICT (station) DO UPDATE SET version = station_versions.version + 1"
)


def bump_station_version(db: Db, station: str) -> None:
    """Move ``station``'s version (inside the caller's transaction)."""
    db.execute(_BUMP, [station])


def station_version(db: Db, station: str) -> int:
    """``station``'s version (0 before its first versioned write)."""
    row = db.execute("SELECT version FROM station_versions WHERE station = ?", [station]).fetchone()
    return int(row[0]) if row is not None else 0


@FLEET_MIGRATIONS(name="0003_instance_serving")
def instance_serving(db: Db) -> None:
    """``central_instances.serving``: 0 while the instance cannot serve its stations (its broker
    connection is down), so the others take them over and leave it out of the fair share."""
    statement = "ALTER TABLE central_instances ADD COLUMN serving INTEGER NOT NULL DEFAULT 1"
    db.execute(pg_ddl(statement) if db.dialect == POSTGRESQL else statement)
