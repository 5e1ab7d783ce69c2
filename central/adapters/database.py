"""The engine-neutral database connection the repositories write their SQL against.

Repositories take a :class:`Db`: ``execute``/``executemany``/``query`` with ``?`` (or ``:name``)
placeholders in the SQLite dialect the project has always written, ``table(name)`` for row-level
insert/upsert/update, ``insert_rows`` for bulk loads and ``transaction()``. Two implementations:
:class:`SqliteDatabase` (sqlite-utils over the standard ``sqlite3``) here, and
:class:`central.adapters.postgres.PgDatabase` (psycopg 3), which translates the few SQLite-isms
(placeholders, ``INSERT OR IGNORE``, ``LIKE``, ``COLLATE NOCASE``) in one place. Driver errors
surface as :class:`IntegrityError` on both, so callers never import a driver.

Migrations are named and ordered once (:class:`Migrations`); both engines record what they applied,
SQLite in the ``_sqlite_migrations`` table sqlite-utils always used (existing files keep their
history), PostgreSQL in ``pilegate_migrations``.
"""

from __future__ import annotations

import contextlib
import datetime
import sqlite3
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import psycopg
import sqlite_utils
import sqlite_utils.db

SQLITE, POSTGRESQL = "sqlite", "postgresql"
Params = Sequence[Any] | Mapping[str, Any] | None


class MigrationRefused(Exception):
    """A migration cannot be applied to what this database holds; the message says what to settle
    first. Nothing of that migration is applied."""


class IntegrityError(Exception):
    """A constraint refused a statement (UNIQUE, FOREIGN KEY, CHECK, NOT NULL), on either engine.

    ``unique`` says whether it was a UNIQUE (or primary key) violation."""

    def __init__(self, message: str, *, unique: bool) -> None:
        super().__init__(message)
        self.unique = unique


# what a statement may raise on either engine (a savepoint's caller catches these and goes on)
DATABASE_ERRORS = (IntegrityError, sqlite3.Error, psycopg.Error)


class DatabaseUrlError(ValueError):
    """A ``database`` setting that names no engine pilegate runs on."""


@dataclass(frozen=True)
class DatabaseUrl:
    """Where the central's data lives: ``sqlite:///path`` or ``postgresql://user@host:port/db``."""

    dialect: str
    target: str  # the SQLite file path, or the PostgreSQL connection URL as given

    @property
    def path(self) -> Path:
        """The SQLite file (only for ``sqlite`` URLs)."""
        return Path(self.target)

    def __str__(self) -> str:
        return f"sqlite:///{self.target}" if self.dialect == SQLITE else _hide_password(self.target)


def _hide_password(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    auth, at, host = rest.rpartition("@")
    if not at or ":" not in auth:
        return url
    return f"{scheme}{sep}{auth.split(':', 1)[0]}:***@{host}"


def parse_database_url(value: str | Path | DatabaseUrl) -> DatabaseUrl:
    """A ``DatabaseUrl`` from a URL or a plain SQLite path (:class:`DatabaseUrlError` otherwise)."""
    if isinstance(value, DatabaseUrl):
        return value
    if isinstance(value, Path):
        return DatabaseUrl(SQLITE, str(value))
    if value.startswith("sqlite:///"):
        path = value.removeprefix("sqlite:///")  # sqlite:///relative/path, sqlite:////absolute/path
        if not path:
            raise DatabaseUrlError("sqlite:/// URL names no file")
        return DatabaseUrl(SQLITE, path)
    if value.startswith(("postgresql://", "postgres://")):
        return DatabaseUrl(POSTGRESQL, value)
    if "://" in value:
        raise DatabaseUrlError(f"unsupported database URL {value!r}: use sqlite:///path or postgresql://...")
    return DatabaseUrl(SQLITE, value)


class Cursor(Protocol):
    """What a statement returns on either engine."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Table(Protocol):
    """Row-level writes and reads of one table (the part of sqlite-utils' ``Table`` pilegate uses)."""

    last_rowid: int | None
    last_pk: Any

    def insert(self, record: Mapping[str, Any], **options: Any) -> Table: ...

    def insert_all(self, records: Iterable[Mapping[str, Any]], **options: Any) -> Table: ...

    def upsert(self, record: Mapping[str, Any], *, pk: str, **options: Any) -> Table: ...

    def update(self, pk_value: Any, updates: Mapping[str, Any] | None = None, **options: Any) -> Table: ...

    def get(self, pk_value: Any) -> dict[str, Any]: ...

    def count_where(self, where: str | None = None, where_args: Params = None) -> int: ...

    @property
    def count(self) -> int: ...

    @property
    def rows(self) -> Iterator[dict[str, Any]]: ...


class Db(Protocol):
    """One connection, on either engine; the repositories' only handle on the database."""

    dialect: str

    def execute(self, sql: str, parameters: Params = None) -> Cursor: ...

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> Cursor: ...

    def query(self, sql: str, params: Params = None) -> Iterator[dict[str, Any]]: ...

    # a Table (sqlite-utils' own Table on SQLite, whose typed signatures are wider than the protocol's)
    def table(self, table_name: str) -> Any: ...

    def __getitem__(self, table_name: str) -> Any: ...

    def table_names(self) -> list[str]: ...

    def insert_rows(
        self, table_name: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], *, typed: bool = False
    ) -> None:
        """Bulk-load ``rows``; ``typed``: each value is of its column's type (a faster load on PostgreSQL)."""

    def execute_values(
        self, sql: str, rows: Sequence[Sequence[Any]], *tail: Any, types: Sequence[str] | None = None
    ) -> None:
        """Run ``sql`` whose ``(VALUES {values})`` is a table of ``rows`` (cast each column where it
        is used: its values may arrive as text); ``tail`` are the parameters after the values.
        ``types``: each column's type, ``text``, ``bigint`` or ``double precision``, when every value
        is of it (str; int; int or float) or None (a faster load on PostgreSQL)."""

    def transaction(self) -> contextlib.AbstractContextManager[None]: ...


MAX_SQL_VARIABLES = 32_000  # SQLite's default limit is 32766 since 3.32


class SqliteDatabase(sqlite_utils.Database):
    """sqlite-utils' ``Database`` as a :class:`Db`: constraint errors become :class:`IntegrityError`."""

    dialect = SQLITE

    def execute(self, sql: str, parameters: Params = None) -> sqlite3.Cursor:
        try:
            return self.conn.execute(sql, () if parameters is None else parameters)
        except sqlite3.IntegrityError as exc:
            raise IntegrityError(str(exc), unique="UNIQUE" in str(exc)) from exc

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> sqlite3.Cursor:
        try:
            return self.conn.executemany(sql, rows)
        except sqlite3.IntegrityError as exc:
            raise IntegrityError(str(exc), unique="UNIQUE" in str(exc)) from exc

    def query(self, sql: str, params: Params = None) -> Generator[dict[Any, Any], None, None]:
        cursor = self.execute(sql, params)
        keys = [d[0] for d in cursor.description or ()]
        for row in cursor:
            yield dict(zip(keys, row, strict=True))

    def __getitem__(self, table_name: str) -> sqlite_utils.db.Table:
        return self.table(table_name)

    def insert_rows(
        self, table_name: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], *, typed: bool = False
    ) -> None:
        """Multi-row INSERTs, as many rows per statement as SQLite's variable limit allows (one
        step per chunk: ``executemany`` would release and re-take the GIL around every row);
        ``typed`` changes nothing here."""
        sql = f"INSERT INTO {table_name} ({', '.join(columns)}) VALUES {{values}}"  # noqa: S608
        self.execute_values(sql, rows)

    def execute_values(
        self, sql: str, rows: Sequence[Sequence[Any]], *tail: Any, types: Sequence[str] | None = None
    ) -> None:
        """As many rows per statement as the variable limit allows (``types`` changes nothing here)."""
        if not rows:
            return
        width = len(rows[0])
        per_statement = max(1, (MAX_SQL_VARIABLES - len(tail)) // width)
        for start in range(0, len(rows), per_statement):
            chunk = rows[start : start + per_statement]
            values = ",".join(["(" + ",".join("?" * width) + ")"] * len(chunk))
            self.execute(sql.format(values=values), [v for row in chunk for v in row] + list(tail))

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction, taken at once (``BEGIN IMMEDIATE``): whole or absent."""
        with self.conn:
            self.execute("BEGIN IMMEDIATE")
            yield


def connect_sqlite(path: Path | str) -> SqliteDatabase:
    """A SQLite connection with the pragmas every pilegate connection uses."""
    conn = sqlite3.connect(
        str(path), check_same_thread=False, timeout=30, isolation_level=None
    )  # autocommit; transactions are explicit
    db = SqliteDatabase(conn)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable at checkpoint, never corrupt
    db.execute("PRAGMA foreign_keys=ON")
    db.execute("PRAGMA busy_timeout=30000")
    return db


# --- migrations -------------------------------------------------------------------------------------

MigrationFn = Callable[[Db], None]
MIGRATION_TABLES = {SQLITE: "_sqlite_migrations", POSTGRESQL: "pilegate_migrations"}
_MIGRATION_DDL = {
    SQLITE: (
        "CREATE TABLE IF NOT EXISTS _sqlite_migrations "
        "(id INTEGER PRIMARY KEY, migration_set TEXT, name TEXT, applied_at TEXT)",
        "CREATE UNIQUE INDEX IF NOT EXISTS idx__sqlite_migrations_migration_set_name "
        "ON _sqlite_migrations (migration_set, name)",
    ),
    POSTGRESQL: (
        "CREATE TABLE IF NOT EXISTS pilegate_migrations (id BIGINT GENERATED BY DEFAULT AS IDENTITY "
        "PRIMARY KEY, migration_set TEXT NOT NULL, name TEXT NOT NULL, applied_at TEXT NOT NULL, "
        "UNIQUE (migration_set, name))",
    ),
}
# PostgreSQL: centrals starting together apply each migration once (transaction-scoped lock)
_MIGRATION_LOCK = "SELECT pg_advisory_xact_lock(7368013846519)"


class Migrations:
    """A named, ordered set of migrations, applied on either engine, each in its own transaction
    together with the record of it. A migration is ``fn(db)``; where the engines need different SQL
    it looks at ``db.dialect``. New changes are new migrations appended, never edits."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.steps: list[tuple[str, MigrationFn]] = []
        self.rebuilds: set[str] = set()  # migrations that rebuild a table others reference

    def __call__(self, *, name: str, rebuilds: bool = False) -> Callable[[MigrationFn], MigrationFn]:
        """Register a migration. ``rebuilds``: it rebuilds a table that other tables reference (SQLite's
        "create new, copy, drop, rename" procedure), so on SQLite it runs with foreign keys off
        (a pragma that only takes effect outside a transaction) and checks them before it commits."""

        def register(fn: MigrationFn) -> MigrationFn:
            if any(step == name for step, _ in self.steps):
                raise ValueError(f"migration {name!r} is already in set {self.name!r}")
            self.steps.append((name, fn))
            if rebuilds:
                self.rebuilds.add(name)
            return fn

        return register

    def applied(self, db: Db) -> list[str]:
        """Names applied on this database, in the order they were applied."""
        table = MIGRATION_TABLES[db.dialect]
        if table not in db.table_names():
            return []
        sql = f"SELECT name FROM {table} WHERE migration_set = ? ORDER BY id"  # noqa: S608
        return [row[0] for row in db.execute(sql, [self.name])]

    def apply(self, db: Db) -> None:
        """Apply the pending migrations in order, each whole or not at all."""
        with db.transaction():
            for statement in _MIGRATION_DDL[db.dialect]:
                db.execute(statement)
        for name, fn in self.steps:
            keys_off = name in self.rebuilds and db.dialect == SQLITE
            if keys_off:
                db.execute("PRAGMA foreign_keys=OFF")
            try:
                with db.transaction():
                    if db.dialect == POSTGRESQL:
                        db.execute(_MIGRATION_LOCK)
                    if name in self.applied(db):
                        continue
                    fn(db)
                    if keys_off and db.execute("PRAGMA foreign_key_check").fetchone() is not None:
                        raise IntegrityError(f"migration {name!r} broke a foreign key", unique=False)
                    self._record(db, name)
            finally:
                if keys_off:
                    db.execute("PRAGMA foreign_keys=ON")

    def _record(self, db: Db, name: str) -> None:
        table = MIGRATION_TABLES[db.dialect]
        db.execute(
            f"INSERT INTO {table} (migration_set, name, applied_at) VALUES (?, ?, ?)",  # noqa: S608
            [self.name, name, str(datetime.datetime.now(datetime.UTC))],
        )
