"""A throwaway PostgreSQL server from Debian's binaries, for the tests and the benches.

``initdb`` and ``pg_ctl`` in a temporary directory, listening on a free port of 127.0.0.1 only (and
a Unix socket inside that directory), trust authentication for the ``postgres`` role, C collation.
As root the server runs through ``runuser -u postgres`` (PostgreSQL refuses to run as root) with the
directory owned by postgres. A server that may run on 5432 is never used.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from pilegate.broker import free_port

# a module-level ``pytestmark = BOTH_ENGINES`` runs the module's tests on SQLite and on PostgreSQL
BOTH_ENGINES = pytest.mark.parametrize("database", ["sqlite", "postgresql"], indirect=True)
# durability settings a test server does without (a crash loses the server, not a result)
FAST_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")


class NoPostgres(RuntimeError):
    """Debian's PostgreSQL binaries are not installed (scripts/system-deps installs them)."""


def pg_bin_dir() -> Path:
    """The newest ``/usr/lib/postgresql/*/bin`` that has initdb and pg_ctl."""
    found = sorted(
        (Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if not found:
        raise NoPostgres(
            "no /usr/lib/postgresql/*/bin/initdb: run scripts/system-deps (Debian package postgresql)"
        )
    return found[-1]


@dataclass
class PgServer:
    """A running server: ``url(db)`` connects to one of its databases as ``postgres``."""

    directory: Path
    port: int
    bin_dir: Path

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def admin(self) -> psycopg.Connection[tuple[object, ...]]:
        """An autocommit connection to the ``postgres`` database (CREATE/DROP DATABASE)."""
        return psycopg.connect(self.url(), autocommit=True)

    def stop(self) -> None:
        try:
            _run_as_owner(
                [str(self.bin_dir / "pg_ctl"), "-D", str(self.directory / "data"), "-m", "immediate", "stop"]
            )
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


def _as_postgres() -> bool:
    return os.geteuid() == 0


def _run_as_owner(argv: Sequence[str]) -> None:
    command = ["runuser", "-u", "postgres", "--", *argv] if _as_postgres() else list(argv)
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:2])} failed: {result.stderr.strip() or result.stdout.strip()}")


OWNER_FILE = "owner.pid"  # the pid of the process that started the server


def stop_orphans(bin_dir: Path) -> None:
    """Stop the servers of earlier runs whose process died without stopping them (a test run killed
    by a timeout leaves its server running: pg_ctl detaches it)."""
    for owner_file in Path(tempfile.gettempdir()).glob(f"pilegate-pg-*/{OWNER_FILE}"):
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(owner_file.read_text()), 0)
            continue  # its owner still runs
        with contextlib.suppress(RuntimeError):
            PgServer(owner_file.parent, 0, bin_dir).stop()


def start_server(*, settings: Sequence[str] = FAST_SETTINGS) -> PgServer:
    """initdb + pg_ctl start on a free port; stop it with :meth:`PgServer.stop`."""
    bin_dir = pg_bin_dir()
    stop_orphans(bin_dir)
    directory = Path(tempfile.mkdtemp(prefix="pilegate-pg-"))
    (directory / OWNER_FILE).write_text(str(os.getpid()))
    if _as_postgres():
        owner = pwd.getpwnam("postgres")
        os.chown(directory, owner.pw_uid, owner.pw_gid)
    data = directory / "data"
    _run_as_owner(
        [
            str(bin_dir / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-locale",
            "-E",
            "UTF8",
        ]
    )
    port = free_port()
    options = " ".join(
        [f"-p {port}", "-c listen_addresses=127.0.0.1", f"-k {directory}", *(f"-c {s}" for s in settings)]
    )
    _run_as_owner(
        [str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(directory / "log"), "-w", "start"]
    )
    return PgServer(directory, port, bin_dir)


@contextlib.contextmanager
def running_server(*, settings: Sequence[str] = FAST_SETTINGS) -> Iterator[PgServer]:
    server = start_server(settings=settings)
    try:
        yield server
    finally:
        server.stop()


def create_database(server: PgServer, name: str, *, template: str | None = None) -> str:
    """A new database (a copy of ``template`` when given); its URL."""
    with server.admin() as conn:
        copy = f" TEMPLATE {template}" if template else ""
        conn.execute(f"CREATE DATABASE {name}{copy}")
    return server.url(name)


def drop_database(server: PgServer, name: str) -> None:
    with server.admin() as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
