"""The central service's database: one writer thread, pooled readers, named migrations, on SQLite
(the embedded default) or PostgreSQL.

Every write is a plain function of a :class:`~central.adapters.database.Db` run on the single
writer thread inside one transaction (``await store.write(fn)``), so writes never interleave and a
crash leaves each one either whole or absent. Reads run on a small pool of reader threads, each
with a connection of its own (SQLite's WAL, or a psycopg pool with one transaction per read), so
the event loop never blocks on the database. ``Store(database, migrations)`` takes a path or a
``sqlite:///`` / ``postgresql://`` URL; :func:`database_lock` gives the "one central per
database" lock of that engine.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import queue
import socket
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, TypeVar

import psycopg
import structlog
from psycopg_pool import ConnectionPool

from central.adapters import postgres
from central.adapters.database import (
    POSTGRESQL,
    DatabaseUrl,
    Db,
    Migrations,
    SqliteDatabase,
    connect_sqlite,
    parse_database_url,
)

log = structlog.get_logger(__name__)
T = TypeVar("T")

_STOP = object()


class StoreClosed(Exception):
    """The store was closed; no more reads or writes."""


class DatabaseLocked(Exception):
    """Another process holds the database (one central per database)."""


class DatabaseUnreachable(Exception):
    """The database server refused or did not answer the connection."""


class Lock(Protocol):
    """ "One central per database", held from ``acquire()`` until ``release()`` or process exit."""

    def acquire(self) -> None: ...

    def release(self) -> None: ...


class DatabaseLock:
    """An exclusive ``flock`` on ``<database>.lock`` beside the SQLite file, held while the process
    runs: a second central on the same database is refused, and the OS releases the lock when the
    holder exits or is killed (kill -9 leaves no stale lock). The file names the holder (pid, host)."""

    def __init__(self, db_path: Path | str) -> None:
        self.db_path = Path(db_path)
        self.path = self.db_path.with_name(self.db_path.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise :class:`DatabaseLocked` naming the database and its holder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown process"
            os.close(fd)
            raise DatabaseLocked(in_use(str(self.db_path), holder)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


def in_use(database: str, holder: str) -> str:
    """The refusal a second central gets, on either engine."""
    return (
        f"database {database} is in use by another central ({holder}); "
        "stop it first (one central per database)"
    )


class PgDatabaseLock:
    """The PostgreSQL form of :class:`DatabaseLock`: an advisory lock held on a live session."""

    def __init__(self, url: DatabaseUrl) -> None:
        self.url = url
        self._lock = postgres.AdvisoryLock(url.target)

    def acquire(self) -> None:
        try:
            self._lock.acquire()
        except postgres.AdvisoryLockTaken as exc:
            raise DatabaseLocked(in_use(str(self.url), str(exc))) from None
        except psycopg.OperationalError as exc:
            raise DatabaseUnreachable(f"cannot reach database {self.url}: {exc}") from None

    def release(self) -> None:
        self._lock.release()


def database_lock(database: Path | str | DatabaseUrl) -> Lock:
    """The "one central per database" lock of the database's engine."""
    url = parse_database_url(database)
    return PgDatabaseLock(url) if url.dialect == POSTGRESQL else DatabaseLock(url.path)


def connect(path: Path | str) -> SqliteDatabase:
    """A SQLite connection with the pragmas every pilegate connection uses."""
    return connect_sqlite(path)


class _Engine(Protocol):
    """How a store reaches its engine: the writer's connection and reads on pooled connections."""

    def writer(self) -> Db: ...

    def read(self, fn: Callable[[Db], T]) -> T: ...

    def close(self) -> None: ...


class _Sqlite:
    """SQLite: the writer's connection, and one connection per reader thread (WAL)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._all: list[SqliteDatabase] = []
        path.parent.mkdir(parents=True, exist_ok=True)

    def writer(self) -> Db:
        return connect_sqlite(self.path)

    def read(self, fn: Callable[[Db], T]) -> T:
        db: SqliteDatabase | None = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = connect_sqlite(self.path)
            self._all.append(db)
        return fn(db)

    def close(self) -> None:
        for db in self._all:
            db.conn.close()


class _Postgres:
    """PostgreSQL: the writer's own session, and a psycopg pool for reads (one transaction each)."""

    def __init__(self, url: str, readers: int) -> None:
        self.url = url
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=readers,
            kwargs={"application_name": "pilegate-central-read"},
            configure=postgres.configure,
            open=True,
        )

    def writer(self) -> Db:
        return postgres.connect(self.url)

    def read(self, fn: Callable[[Db], T]) -> T:
        with self._pool.connection() as conn:  # commits (or rolls back) when the read is done
            return fn(postgres.PgDatabase(conn))

    def close(self) -> None:
        self._pool.close()


class Store:
    """One database, one writer thread, reader threads; ``open()`` applies migrations.

    ``database`` is a SQLite path, or a ``sqlite:///path`` or ``postgresql://...`` URL."""

    def __init__(
        self, database: Path | str | DatabaseUrl, migrations: Sequence[Migrations], *, readers: int = 4
    ) -> None:
        self.url = parse_database_url(database)
        self._migrations = migrations
        self._reader_count = readers
        self._engine: _Engine | None = None
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._readers = ThreadPoolExecutor(readers, thread_name_prefix="store-read")
        self._closed = False
        self._finished: Future[None] = Future()  # set by the writer thread as it exits

    @property
    def dialect(self) -> str:
        return self.url.dialect

    @property
    def path(self) -> Path:
        """The SQLite file (SQLite stores only)."""
        return self.url.path

    async def open(self) -> None:
        ready: Future[None] = Future()
        self._writer = threading.Thread(
            target=self._write_loop, args=(ready,), name="store-writer", daemon=True
        )
        self._writer.start()
        await asyncio.wrap_future(ready)

    def _start(self) -> Db:
        """On the writer thread: reach the engine, apply the migrations, return the writer's connection."""
        if self.url.dialect == POSTGRESQL:
            self._engine = _Postgres(self.url.target, self._reader_count)
        else:
            self._engine = _Sqlite(self.url.path)
        db = self._engine.writer()
        for migrations in self._migrations:
            migrations.apply(db)
        return db

    def _write_loop(self, ready: Future[None]) -> None:
        try:
            db = self._start()
        except BaseException as exc:
            if self._engine is not None:
                self._engine.close()
            ready.set_exception(exc)
            self._finished.set_result(None)
            return
        ready.set_result(None)
        while True:
            job = self._jobs.get()
            if job is _STOP:
                break
            fn, future = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                db = self._live(db)
                with db.transaction():  # one transaction per job
                    result = fn(db)
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)
        _close(db)
        self._finished.set_result(None)

    def _live(self, db: Db) -> Db:
        """The writer's connection, opened again if the server dropped it (PostgreSQL restarts)."""
        if isinstance(db, postgres.PgDatabase) and db.conn.closed and self._engine is not None:
            log.warning("store_reconnecting", database=str(self.url))
            return self._engine.writer()
        return db

    def submit(self, fn: Callable[[Db], T]) -> Future[T]:
        """Queue a write; the returned future completes when its transaction has committed."""
        if self._closed:
            raise StoreClosed(str(self.url))
        future: Future[T] = Future()
        self._jobs.put((fn, future))
        return future

    async def write(self, fn: Callable[[Db], T]) -> T:
        """Run ``fn(db)`` on the writer thread in one transaction and return its result."""
        return await asyncio.wrap_future(self.submit(fn))

    async def read(self, fn: Callable[[Db], T]) -> T:
        """Run ``fn(db)`` on a reader thread with a connection of its own."""
        if self._closed or self._engine is None:
            raise StoreClosed(str(self.url))
        engine = self._engine
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, engine.read, fn)

    async def close(self) -> None:
        """Finish queued writes, then stop the writer and the readers."""
        if self._closed:
            return
        self._closed = True
        self._jobs.put(_STOP)
        if self._writer is not None:
            await asyncio.wrap_future(self._finished)
            self._writer.join()  # already past its last statement
        self._readers.shutdown(wait=True)
        if self._engine is not None:
            self._engine.close()


def _close(db: Db) -> None:
    if isinstance(db, postgres.PgDatabase | SqliteDatabase):
        db.conn.close()
