"""The central service's SQLite database: one writer thread, WAL readers, named migrations.

Every write is a plain function of a sqlite-utils ``Database`` run on the single writer thread
inside one transaction (``await store.write(fn)``), so writes never interleave and a crash leaves
each one either whole or absent. Reads run on a small pool of reader threads with their own
connections (WAL lets them proceed while the writer writes), so the event loop never blocks on disk.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import queue
import socket
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import sqlite_utils
import structlog
from sqlite_utils import Migrations

log = structlog.get_logger(__name__)
T = TypeVar("T")

_STOP = object()


class StoreClosed(Exception):
    """The store was closed; no more reads or writes."""


class DatabaseLocked(Exception):
    """Another process holds the database (one central per database)."""


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
            raise DatabaseLocked(
                f"database {self.db_path} is in use by another central ({holder}); "
                "stop it first (one central per database)"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


def connect(path: Path | str) -> sqlite_utils.Database:
    """A connection with the pragmas every pilegate connection uses."""
    conn = sqlite3.connect(
        str(path), check_same_thread=False, timeout=30, isolation_level=None
    )  # autocommit; transactions are explicit
    db = sqlite_utils.Database(conn)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable at checkpoint, never corrupt
    db.execute("PRAGMA foreign_keys=ON")
    db.execute("PRAGMA busy_timeout=30000")
    return db


class Store:
    """One database file, one writer thread, reader threads; ``open()`` applies migrations."""

    def __init__(self, path: Path | str, migrations: Sequence[Migrations], *, readers: int = 4) -> None:
        self.path = Path(path)
        self._migrations = migrations
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._readers = ThreadPoolExecutor(readers, thread_name_prefix="sqlite-read")
        self._local = threading.local()
        self._closed = False
        self._finished: Future[None] = Future()  # set by the writer thread as it exits

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        ready: Future[None] = Future()
        self._writer = threading.Thread(
            target=self._write_loop, args=(ready,), name="sqlite-writer", daemon=True
        )
        self._writer.start()
        await asyncio.wrap_future(ready)

    def _write_loop(self, ready: Future[None]) -> None:
        try:
            db = connect(self.path)
            for migrations in self._migrations:
                migrations.apply(db)
        except BaseException as exc:
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
                with db.conn:  # one transaction per job
                    db.execute("BEGIN IMMEDIATE")
                    result = fn(db)
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)
        db.conn.close()
        self._finished.set_result(None)

    def submit(self, fn: Callable[[sqlite_utils.Database], T]) -> Future[T]:
        """Queue a write; the returned future completes when its transaction has committed."""
        if self._closed:
            raise StoreClosed(str(self.path))
        future: Future[T] = Future()
        self._jobs.put((fn, future))
        return future

    async def write(self, fn: Callable[[sqlite_utils.Database], T]) -> T:
        """Run ``fn(db)`` on the writer thread in one transaction and return its result."""
        return await asyncio.wrap_future(self.submit(fn))

    def _reader_db(self) -> sqlite_utils.Database:
        db: sqlite_utils.Database | None = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = connect(self.path)
        return db

    async def read(self, fn: Callable[[sqlite_utils.Database], T]) -> T:
        """Run ``fn(db)`` on a reader thread with its own connection."""
        if self._closed:
            raise StoreClosed(str(self.path))
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, lambda: fn(self._reader_db()))

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
