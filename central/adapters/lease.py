"""Who runs which station: each station is owned by exactly one central instance at a time.

On PostgreSQL (:class:`PgLeases`) a station's lease is a session-level advisory lock, the same kind
as the "one central per database" lock (``central/adapters/postgres.py: AdvisoryLock``), keyed per
station (:func:`station_key`) and held on one dedicated connection per instance. PostgreSQL drops a
session's locks when the session ends, so an instance killed with -9 leaves nothing behind: its
stations are free at once and another instance takes them at its next try.

The rules, per instance:

- **Trying.** Every ``try_interval_s`` (1 s) the instance writes its heartbeat, reads the station set
  (a callable: it may change while the central runs) and tries, in one statement, the lock of every
  station it does not own (``pg_try_advisory_lock``: never waits). For each one it gets it awaits
  ``on_acquired(code)`` (the runtime starts: it restores queue and live sessions from the database).
  A station that left the set is released (below).
- **Liveness and fencing.** A monitor runs ``SELECT 1`` every ``check_interval_s`` (1 s) on the lease
  connection with a deadline (``check_deadline_s``, 2 s). A failure or a miss means every lease may be
  gone: the connection is closed, ``on_lost(code)`` is awaited for every owned station (the runtime
  stops at once), and the instance connects again (capped doubling from 0.5 s to 5 s) and competes
  afresh. Statements of the trying round run under the same deadline, and the server stops any
  statement after ``statement_timeout`` (2 s). The connection uses TCP keepalives on both sides
  (libpq's ``keepalives*`` and the server's ``tcp_keepalives_*``/``tcp_user_timeout`` for the
  session), so a server cut off from a live instance drops its session, and its locks, within about
  8 s (another instance takes over a second later), while the instance itself stops its stations
  after about 3 s without an answer: the old owner stops before a new one can start. The exception
  is a session the server ends while the instance lives on (``pg_terminate_backend``, a server
  restart): another instance may acquire at its next try while the old owner notices only within
  ``check_interval_s + check_deadline_s`` (3 s), so two runtimes of the station may overlap for up
  to that long. Forwarded calls cannot be applied twice even then (they are claimed with a
  conditional UPDATE: ``central/adapters/station_calls.py``); what a runtime does by itself
  (commands, writes) should check :meth:`PgLeases.owns` before it acts, which turns false as soon
  as the loss is seen.
- **Spreading.** Instances announce themselves in ``central_instances`` (id, host, pid, HTTP URL,
  heartbeat in the server's clock, the server process of the lease session) and count as live while
  their heartbeat is younger than ``stale_after_s`` (5 s) and the server still has that session (so
  an instance killed with -9 stops counting at once, and one cut off from the server within
  ``stale_after_s``). Fair share = ceil(stations / live instances). An instance owning more than
  its fair share releases one station, the one it acquired last, gracefully: ``on_lost`` first (the
  runtime stops), then the unlock, so another instance takes it at its next try. Hysteresis: at most
  one release per ``release_gap_s`` (5 s), and a station the instance released (or failed to start)
  is not tried again by it for ``cooldown_s`` (3 s), so the released station goes to the instance
  short of its share, not back. A free station is otherwise always taken, even beyond the fair share:
  an unowned station is worse than an uneven spread.
- **Serving.** An instance that cannot serve (``serving()`` false: the central's broker connection
  has been down for a while, so its stations can neither hear their piles nor command them) says so
  in its heartbeat. While another live instance can serve, it hands every station over (``on_lost``
  first, then the unlock) and tries none; the others leave it out of the fair share. With nobody
  else to serve, it keeps its stations (an unowned station is worse) and competes as usual.
- **Leaving.** ``close()`` awaits ``on_lost`` for every station, deletes the instance's row and ends
  the session (the locks go with it), so the others take over at their next try. Rows stale for an
  hour are deleted by whichever instance sees them.

``on_lost`` can tell the two ways of losing apart: :attr:`PgLeases.fencing` is True while it runs
because the session failed (stop at once; another instance may own the station already), False for
a hand-over or ``close()`` (a call being applied may finish first).

Callbacks for one station never overlap: ``on_acquired`` and ``on_lost`` are awaited one at a time by
one task, and an ``on_lost`` always follows its ``on_acquired`` (also when ``on_acquired`` raised:
the station is then released and cooled down). A lease lost while ``on_acquired`` runs is acted on
once it returns, so ``on_acquired`` should be short (restoring from the database).

On SQLite several centrals on one file stay refused by the "one central per database" lock
(``central/adapters/storage.py: DatabaseLock``) that the composition root takes first, so
:class:`SingleLeases` simply owns every station of the set; :func:`station_leases` picks the engine's
kind, and the composition root has one code path.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import math
import os
import random
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import psycopg
import structlog

from central.adapters.database import POSTGRESQL, DatabaseUrl, Db, parse_database_url

log = structlog.get_logger(__name__)

STATION_KEY_NAMESPACE = "pilegate-station-lease:"

StationSet = Callable[[], Iterable[str] | Awaitable[Iterable[str]]]
StationCallback = Callable[[str], Awaitable[None]]
Serving = Callable[[], bool]
"""Whether this instance can serve stations now (the central: its broker connection is up)."""


def _always() -> bool:
    return True


def station_key(code: str) -> int:
    """The advisory-lock key of a station's lease: the first 8 bytes of
    sha256(``pilegate-station-lease:`` + code), big-endian, as a signed 64-bit integer. Stable across
    versions and hosts; another namespace string gives other locks their own keys."""
    return namespaced_key(STATION_KEY_NAMESPACE, code)


def namespaced_key(namespace: str, code: str) -> int:
    """A stable signed 64-bit advisory-lock key for ``code`` within ``namespace``."""
    digest = hashlib.sha256(f"{namespace}{code}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@dataclass(frozen=True)
class Instance:
    """A running central instance as the others see it in ``central_instances``."""

    id: str
    host: str
    pid: int
    http_url: str | None = None

    @classmethod
    def here(cls, http_url: str | None = None) -> Instance:
        """This process: ``host-pid-random`` (new for every start, so a restart is a new instance)."""
        host, pid = socket.gethostname(), os.getpid()
        return cls(f"{host}-{pid}-{secrets.token_hex(3)}", host, pid, http_url)


class Leases(Protocol):
    """The stations this instance owns; ``on_acquired``/``on_lost`` follow every change."""

    instance: Instance

    @property
    def owned(self) -> frozenset[str]: ...

    def owns(self, code: str) -> bool: ...

    @property
    def fencing(self) -> bool: ...

    async def start(self) -> None: ...

    async def refresh(self, timeout_s: float = ...) -> None: ...

    async def wait_released(self, code: str, timeout_s: float = ...) -> bool: ...

    async def close(self) -> None: ...


async def _codes(stations: StationSet) -> set[str]:
    found = stations()
    if inspect.isawaitable(found):
        found = await found
    return set(found)


@dataclass
class _Callbacks:
    """``on_acquired``/``on_lost`` with their errors logged, never raised into the lease's loop."""

    on_acquired: StationCallback
    on_lost: StationCallback
    instance: Instance
    owned: set[str] = field(default_factory=set)

    async def acquired(self, code: str) -> bool:
        self.owned.add(code)
        log.info("station_acquired", station=code, instance=self.instance.id)
        try:
            await self.on_acquired(code)
        except Exception:
            log.exception("station_start_failed", station=code, instance=self.instance.id)
            await self.lost(code)
            return False
        return True

    async def lost(self, code: str) -> None:
        self.owned.discard(code)
        log.info("station_lost", station=code, instance=self.instance.id)
        try:
            await self.on_lost(code)
        except Exception:
            log.exception("station_stop_failed", station=code, instance=self.instance.id)


class SingleLeases:
    """SQLite (one instance per database): every station of the set is owned here, from
    :meth:`start` until it leaves the set or :meth:`close`."""

    def __init__(
        self,
        stations: StationSet,
        on_acquired: StationCallback,
        on_lost: StationCallback,
        *,
        instance: Instance | None = None,
        try_interval_s: float = 1.0,
    ) -> None:
        self.instance = instance or Instance.here()
        self._stations = stations
        self._callbacks = _Callbacks(on_acquired, on_lost, self.instance)
        self._interval_s = try_interval_s
        self._task: asyncio.Task[None] | None = None
        self._following = asyncio.Lock()

    @property
    def owned(self) -> frozenset[str]:
        return frozenset(self._callbacks.owned)

    def owns(self, code: str) -> bool:
        return code in self._callbacks.owned

    @property
    def fencing(self) -> bool:
        return False  # nobody else can take a station here

    async def refresh(self, timeout_s: float = 5.0) -> None:
        """Follow the station set now (a station added starts, one removed stops, before this
        returns)."""
        await self._follow()

    async def wait_released(self, code: str, timeout_s: float = 5.0) -> bool:
        """Whether no runtime of ``code`` runs (here, the only instance: after :meth:`refresh`)."""
        return code not in self._callbacks.owned

    async def start(self) -> None:
        """Own every station of the set now (``on_acquired`` awaited), then follow the set."""
        await self._follow()
        self._task = asyncio.create_task(self._run(), name="station-leases")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self._follow()
            except Exception:
                log.exception("station_set_failed", instance=self.instance.id)

    async def _follow(self) -> None:
        async with self._following:
            codes = await _codes(self._stations)
            for code in sorted(self._callbacks.owned - codes):
                await self._callbacks.lost(code)
            for code in sorted(codes - self._callbacks.owned):
                await self._callbacks.acquired(code)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for code in sorted(self._callbacks.owned):
            await self._callbacks.lost(code)


class LeaseLost(Exception):
    """The lease connection failed or missed its deadline: every lease may be gone."""


_HEARTBEAT = (
    "INSERT INTO central_instances (id, host, pid, http_url, started_ms, heartbeat_ms, session_pid, serving) "
    "VALUES (%s, %s, %s, %s, pilegate_now_ms(), pilegate_now_ms(), pg_backend_pid(), %s) "
    "ON CONFLICT (id) DO UPDATE SET heartbeat_ms = EXCLUDED.heartbeat_ms, "
    "session_pid = EXCLUDED.session_pid, serving = EXCLUDED.serving"
)
# live: a fresh heartbeat and a lease session the server still has (a killed instance's ends at once);
# counted: the live instances that can serve (for the fair share), and those of them that are not this one
_LIVE = (
    "SELECT count(*), count(*) FILTER (WHERE i.id <> %s) FROM central_instances i "
    "WHERE i.heartbeat_ms > pilegate_now_ms() - %s AND i.serving = 1 "
    "AND EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = i.session_pid)"
)
_FORGET = "DELETE FROM central_instances WHERE heartbeat_ms < pilegate_now_ms() - 3600000"
_TRY = "SELECT k, pg_try_advisory_lock(k) FROM unnest(%s::bigint[]) AS k"
# whether a session of this database holds the lease of the key (a bigint key is classid:objid)
_HELD = (
    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 "
    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    "AND ((classid::bigint << 32) | objid::bigint) = %s)"
)

# the HTTP URL of the live instance whose lease session holds the key
_OWNER_URL = (
    "SELECT i.http_url FROM pg_locks l JOIN central_instances i ON i.session_pid = l.pid "
    "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    "AND ((l.classid::bigint << 32) | l.objid::bigint) = ? ORDER BY i.heartbeat_ms DESC LIMIT 1"
)


def owner_url(db: Db, code: str) -> str | None:
    """Where the instance that runs station ``code`` now serves HTTP (its ``http_url``), by who
    holds the station's lease; None when nobody does or on SQLite (one central runs every station)."""
    if db.dialect != POSTGRESQL:
        return None
    row = db.execute(_OWNER_URL, [station_key(code)]).fetchone()
    return None if row is None or row[0] is None else str(row[0])


@dataclass(frozen=True)
class LeaseTiming:
    """The lease's clocks (see the module docstring); tests shorten none of them."""

    try_interval_s: float = 1.0
    check_interval_s: float = 1.0
    check_deadline_s: float = 2.0
    statement_timeout_ms: int = 2000
    stale_after_s: float = 5.0
    release_gap_s: float = 5.0
    cooldown_s: float = 3.0
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 5.0
    keepalive_idle_s: int = 5
    keepalive_interval_s: int = 1
    keepalive_count: int = 3


class PgLeases:
    """Station leases on PostgreSQL advisory locks held on one live session (module docstring)."""

    def __init__(
        self,
        url: str,
        stations: StationSet,
        on_acquired: StationCallback,
        on_lost: StationCallback,
        *,
        instance: Instance | None = None,
        timing: LeaseTiming = LeaseTiming(),
        serving: Serving = _always,
    ) -> None:
        self.url = url
        self.instance = instance or Instance.here()
        self.timing = timing
        self._serving = serving
        self._stations = stations
        self._callbacks = _Callbacks(on_acquired, on_lost, self.instance)
        self._order: list[str] = []  # owned stations, in the order acquired (the last is released first)
        self._cooled: dict[str, float] = {}  # station -> monotonic time it may be tried again
        self._last_release = -math.inf
        self._codes_seen: set[str] = set()
        self._rounds = 0
        self._fencing = False
        self._stopping = asyncio.Event()
        self._session_lost = asyncio.Event()  # of the current session
        self._wake = asyncio.Event()  # "try now" (refresh)
        self._rounds_started = 0
        self._rounds_done = 0
        self._round_finished = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._conn: psycopg.AsyncConnection[Any] | None = None

    @property
    def owned(self) -> frozenset[str]:
        return frozenset(self._callbacks.owned)

    def owns(self, code: str) -> bool:
        """Whether this instance owns ``code`` now: False as soon as the session is found failed,
        before ``on_lost`` has run."""
        return code in self._callbacks.owned and not self._session_lost.is_set()

    @property
    def fencing(self) -> bool:
        """True while ``on_lost`` runs because the session failed (the lease may already be another
        instance's: stop at once, wait for nothing), False for a hand-over or :meth:`close`."""
        return self._fencing

    @property
    def backend_pid(self) -> int | None:
        """The server process of the lease session (None while disconnected)."""
        conn = self._conn
        return None if conn is None or conn.closed else conn.info.backend_pid

    async def start(self) -> None:
        """Start competing (the first try runs at once, in the background)."""
        self._task = asyncio.create_task(self._run(), name="station-leases")

    async def refresh(self, timeout_s: float = 5.0) -> None:
        """Run a trying round now (the station set read afresh: a station that left it is released
        here, a new one tried) and wait until it finished, at most ``timeout_s`` (a session that
        is down or reconnecting does not make the caller fail)."""
        async with self._round_finished:
            seen = self._rounds_started  # a round that began before this call read the old set
            self._wake.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._round_finished.wait_for(lambda: self._rounds_done > seen), timeout_s
                )

    async def wait_released(self, code: str, timeout_s: float = 5.0) -> bool:
        """Wait until no session holds ``code``'s lease (its owner, whichever instance, stopped it
        and let it go: it left the station set); False if one still does after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        async with await psycopg.AsyncConnection.connect(
            self.url, autocommit=True, connect_timeout=max(2, math.ceil(timeout_s))
        ) as conn:
            while True:
                cursor = await conn.execute(_HELD, [station_key(code)])
                row = await cursor.fetchone()
                if not (row and row[0]):
                    return True
                if time.monotonic() >= deadline:
                    return False
                await asyncio.sleep(0.1)

    async def close(self) -> None:
        """Stop every owned station (``on_lost``), leave ``central_instances`` and end the session."""
        self._stopping.set()
        if self._task is not None:
            await self._task
            self._task = None

    # --- the session ------------------------------------------------------------------------------

    async def _run(self) -> None:
        delay_s = self.timing.reconnect_min_s
        while not self._stopping.is_set():
            try:
                conn = await self._connect()
            except (psycopg.Error, OSError, TimeoutError) as exc:
                log.warning("lease_connect_failed", instance=self.instance.id, error=str(exc))
            else:
                delay_s = self.timing.reconnect_min_s
                await self._hold(conn)
            if self._stopping.is_set():
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay_s * random.uniform(0.8, 1.2))
            delay_s = min(delay_s * 2, self.timing.reconnect_max_s)

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        t = self.timing
        server_side = " ".join(
            [
                f"-c statement_timeout={t.statement_timeout_ms}",
                f"-c lock_timeout={t.statement_timeout_ms}",
                "-c synchronous_commit=off",  # a heartbeat waits for no disk
                f"-c tcp_keepalives_idle={t.keepalive_idle_s}",
                f"-c tcp_keepalives_interval={t.keepalive_interval_s}",
                f"-c tcp_keepalives_count={t.keepalive_count}",
                f"-c tcp_user_timeout={1000 * (t.keepalive_idle_s + t.keepalive_count)}",
            ]
        )
        connecting = psycopg.AsyncConnection.connect(
            self.url,
            autocommit=True,
            application_name=f"pilegate-lease {self.instance.id}"[:63],
            connect_timeout=max(2, math.ceil(t.check_deadline_s)),
            keepalives=1,
            keepalives_idle=t.keepalive_idle_s,
            keepalives_interval=t.keepalive_interval_s,
            keepalives_count=t.keepalive_count,
            tcp_user_timeout=1000 * (t.keepalive_idle_s + t.keepalive_count),
            options=server_side,
        )
        return await asyncio.wait_for(connecting, t.check_deadline_s + 3)

    async def _hold(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Compete on this session until it fails or :meth:`close`; then every lease is lost."""
        self._conn = conn
        lost = self._session_lost = asyncio.Event()
        monitor = asyncio.create_task(self._monitor(conn, lost), name="station-lease-monitor")
        try:
            while not self._stopping.is_set() and not lost.is_set():
                self._wake.clear()
                self._rounds_started += 1
                await self._round(conn, lost)
                async with self._round_finished:
                    self._rounds_done += 1
                    self._round_finished.notify_all()
                await _first(self._stopping, lost, self._wake, timeout_s=self.timing.try_interval_s)
        except LeaseLost as exc:
            log.warning("lease_session_lost", instance=self.instance.id, error=str(exc))
        except Exception:  # a bug must not leave stations running unfenced: treat it as a lost session
            log.exception("lease_failed", instance=self.instance.id)
            lost.set()
        finally:
            monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await monitor
            self._rounds_done = self._rounds_started  # a round cut short counts as done
            self._fencing = lost.is_set()
            for code in list(reversed(self._order)):
                await self._callbacks.lost(code)  # fencing: stop before anything else
            self._order.clear()
            self._fencing = False
            if self._stopping.is_set() and not lost.is_set():
                with contextlib.suppress(LeaseLost):
                    await self._db(conn, lost, self._leave(conn))
            self._conn = None
            await conn.close()  # the session ends: every lock it held goes with it

    async def _monitor(self, conn: psycopg.AsyncConnection[Any], lost: asyncio.Event) -> None:
        """``SELECT 1`` every ``check_interval_s`` with a deadline; a failure sets ``lost``."""
        while True:
            await asyncio.sleep(self.timing.check_interval_s)
            try:
                await self._db(conn, lost, conn.execute("SELECT 1"))
            except LeaseLost as exc:
                log.warning("lease_check_failed", instance=self.instance.id, error=str(exc))
                return

    async def _db(self, conn: psycopg.AsyncConnection[Any], lost: asyncio.Event, work: Awaitable[Any]) -> Any:
        """``work`` on the lease session within ``check_deadline_s``; a miss, an error or a session
        found lost by the monitor closes the session, sets ``lost`` and raises :class:`LeaseLost`."""
        task = asyncio.ensure_future(work)
        gone = asyncio.ensure_future(lost.wait())
        try:
            await asyncio.wait(
                {task, gone}, timeout=self.timing.check_deadline_s, return_when=asyncio.FIRST_COMPLETED
            )
        except asyncio.CancelledError:  # the monitor stopped with the session: no statement left behind
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            raise
        finally:
            gone.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await gone
        if task.done() and not task.cancelled() and task.exception() is None:
            return task.result()
        reason = "lost" if lost.is_set() else "no answer within the deadline"
        if task.done() and not task.cancelled() and task.exception() is not None:
            reason = str(task.exception())
        lost.set()
        conn.pgconn.finish()  # at once: a cancel request would wait for the server
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, psycopg.Error, OSError):
            await task
        raise LeaseLost(reason)

    # --- one try ----------------------------------------------------------------------------------

    async def _round(self, conn: psycopg.AsyncConnection[Any], lost: asyncio.Event) -> None:
        try:
            codes = self._codes_seen = await _codes(self._stations)
        except Exception:  # the set could not be read this time: keep the last one
            log.exception("station_set_failed", instance=self.instance.id)
            codes = self._codes_seen
        serving = self._serving()
        live, others = await self._db(conn, lost, self._heartbeat(conn, serving))
        for code in [c for c in reversed(self._order) if c not in codes]:
            await self._release(conn, lost, code, "left the station set")
        if not serving and others:  # deaf and mute here, served there: hand every station over
            for code in list(reversed(self._order)):
                await self._release(conn, lost, code, "this instance cannot serve (broker connection down)")
                if lost.is_set():
                    return
            return
        now = time.monotonic()
        wanted = sorted(c for c in codes - self._callbacks.owned if self._cooled.get(c, 0.0) <= now)
        if wanted:
            got = await self._db(conn, lost, self._try(conn, wanted))
            for code in got:
                self._order.append(code)
                if not await self._callbacks.acquired(code):
                    self._order.remove(code)
                    self._cooled[code] = time.monotonic() + self.timing.cooldown_s
                    await self._db(conn, lost, _unlock(conn, code))
                if lost.is_set():
                    return
        fair = math.ceil(len(codes) / max(1, live))
        surplus = len(self._order) - fair
        if surplus > 0 and time.monotonic() - self._last_release >= self.timing.release_gap_s:
            await self._release(conn, lost, self._order[-1], f"over the fair share ({fair} of {len(codes)})")
            self._last_release = time.monotonic()

    async def _heartbeat(self, conn: psycopg.AsyncConnection[Any], serving: bool) -> tuple[int, int]:
        """Write this instance's heartbeat; the live instances that can serve (this one included
        when it can), and how many of them are others."""
        me = self.instance
        await conn.execute(_HEARTBEAT, [me.id, me.host, me.pid, me.http_url, int(serving)])
        cursor = await conn.execute(_LIVE, [me.id, int(self.timing.stale_after_s * 1000)])
        row = await cursor.fetchone()
        self._rounds += 1
        if self._rounds % 60 == 1:  # now and then, not every second
            await conn.execute(_FORGET)
        return (int(row[0]), int(row[1])) if row else (1, 0)

    async def _try(self, conn: psycopg.AsyncConnection[Any], codes: list[str]) -> list[str]:
        """Take every lock of ``codes`` that is free; the codes taken, in ``codes``' order."""
        keys = {station_key(c): c for c in codes}
        cursor = await conn.execute(_TRY, [list(keys)])
        taken = {keys[key] for key, ok in await cursor.fetchall() if ok}
        return [c for c in codes if c in taken]

    async def _leave(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """A clean stop: forget this instance and unlock every station now, so the others take
        them at their next round rather than after this session's backend has exited."""
        await conn.execute("DELETE FROM central_instances WHERE id = %s", [self.instance.id])
        await conn.execute("SELECT pg_advisory_unlock_all()")

    async def _release(
        self, conn: psycopg.AsyncConnection[Any], lost: asyncio.Event, code: str, why: str
    ) -> None:
        """Stop the station's runtime, then unlock it for another instance to take."""
        log.info("station_releasing", station=code, instance=self.instance.id, reason=why)
        self._order.remove(code)
        await self._callbacks.lost(code)
        self._cooled[code] = time.monotonic() + self.timing.cooldown_s
        await self._db(conn, lost, _unlock(conn, code))


async def _unlock(conn: psycopg.AsyncConnection[Any], code: str) -> None:
    await conn.execute("SELECT pg_advisory_unlock(%s)", [station_key(code)])


async def _first(*events: asyncio.Event, timeout_s: float) -> None:
    """Wait until one of ``events`` is set, or ``timeout_s``."""
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
        await asyncio.gather(*waits, return_exceptions=True)


def station_leases(
    database: Path | str | DatabaseUrl,
    stations: StationSet,
    on_acquired: StationCallback,
    on_lost: StationCallback,
    *,
    instance: Instance | None = None,
    serving: Serving = _always,
) -> Leases:
    """The leases of the database's engine: :class:`PgLeases` on PostgreSQL, :class:`SingleLeases`
    (every station owned here) on SQLite."""
    url = parse_database_url(database)
    if url.dialect == POSTGRESQL:
        return PgLeases(url.target, stations, on_acquired, on_lost, instance=instance, serving=serving)
    return SingleLeases(stations, on_acquired, on_lost, instance=instance)
