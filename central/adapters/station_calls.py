"""A change to a station's queue takes effect once, under the station's owner, and its answer returns
to the instance that was asked.

A REST request may reach any central instance; only the station's owner (``central/adapters/
lease.py``) may change its queue. :meth:`PgStationCalls.call` on the owner applies the change at
once through the handler; on any other instance it writes a row to ``station_calls``
(``central/adapters/fleet_schema.py``) and announces it with ``NOTIFY pilegate_station_calls``, and
the owner, which LISTENs on a connection of its own, applies it and stores the answer:

- **Once, in order.** The owner serves a station from ``serve(code)`` (its lease's ``on_acquired``)
  to ``unserve(code)`` (``on_lost``). It claims that station's pending calls one at a time in id
  order with ``UPDATE ... SET status = 'claimed' WHERE id = (the oldest pending) AND status =
  'pending' RETURNING``: two instances can never both claim a call. Callers insert a station's calls
  under a transaction-level advisory lock of that station (another key space than the lease), so
  ids are committed in id order and id order is arrival order. Calls applied on the owner itself
  take the same per-station lock in the process as forwarded ones.
- **The answer.** The handler ``(station, kind, payload) -> result`` is awaited; its result (JSON)
  is stored with status ``done``, or its error with status ``failed``: kind, message, HTTP status
  and details (:class:`CallError`), so the caller answers exactly as the owner would. A
  :class:`~central.domain.errors.DomainError` (and any class in ``reraise``) is raised again on the
  caller as the same class with the same message; any other error as :class:`StationCallFailed`
  with the owner's status and code. Every answer is announced with ``NOTIFY
  pilegate_station_calls_done`` (the call's id); the caller waits for it, reading the row at least
  every ``poll_s`` in case a notification was missed (a reconnect).
- **At most once, always answered.** A call's row says who claimed it. An owner that dies (or loses
  its lease) while applying leaves it ``claimed``; the next owner, in ``serve`` and then whenever
  it is idle, answers every call of that station claimed by another instance as failed ("owner
  stopped while applying; check the request state"), never applies it, and the old owner's late
  answer is discarded (it is stored only while the row is still claimed by it). ``unserve`` lets
  the call being applied finish for up to ``drain_s`` so a graceful hand-over answers it normally;
  after a lost lease (``unserve(code, drain=False)`` when ``central/adapters/lease.py:
  PgLeases.fencing``) it is cancelled at once. The composition root's ``on_lost`` calls ``unserve``
  before it stops the station's runtime.
- **Time limits.** A call carries ``expires_ms`` (its caller's timeout, in the database server's
  clock); an owner never claims it later, and marks it failed instead. A caller whose call is still
  pending at its deadline withdraws it (pending -> failed, conditional) and raises
  :class:`StationCallTimeout` saying it was not applied; a call claimed but unanswered after
  ``claimed_grace_s`` more raises :class:`StationCallTimeout` saying the outcome is unknown.
- **Pruning.** Answered calls older than ``keep_s`` (1 hour), and unanswered ones expired that long
  ago, are deleted by any instance serving a station, at most once a minute.

On SQLite one instance owns every station, so :class:`LocalStationCalls` applies every call
in-process under the same per-station lock and the table stays empty; :func:`station_calls` picks
the engine's kind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import psycopg
import structlog
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from central.adapters.database import POSTGRESQL, DatabaseUrl, parse_database_url
from central.adapters.lease import namespaced_key
from central.domain.errors import DomainError

log = structlog.get_logger(__name__)

CALLS_CHANNEL = "pilegate_station_calls"  # payload: the station's code
DONE_CHANNEL = "pilegate_station_calls_done"  # payload: the call's id
CALLS_KEY_NAMESPACE = "pilegate-station-calls:"  # the insert lock's keys (not the lease's)
OWNER_STOPPED = "owner stopped while applying; check the request state"
EXPIRED = "no central instance owning the station took the call in time; not applied"

Handler = Callable[[str, str, Any], Awaitable[Any]]


class StationCallError(Exception):
    """A call to a station's owner that got no answer of the owner's."""


class StationNotRunning(StationCallError):
    """No runtime of this station runs in this instance (SQLite: the station is not started)."""


class StationCallTimeout(StationCallError):
    """The owner did not answer in time; ``applied`` is False (withdrawn) or None (unknown)."""

    def __init__(self, message: str, *, applied: bool | None) -> None:
        super().__init__(message)
        self.applied = applied


@dataclass(frozen=True)
class CallError:
    """A handler's error as stored: ``kind`` (``domain:<Class>``, ``error:<Class>``, ``api:<code>``,
    ``internal:<Class>``, ``owner_stopped``, ``expired``, ``timeout``), message, HTTP status and
    details."""

    kind: str
    message: str
    status: int | None = None
    details: Mapping[str, Any] | None = None


class StationCallFailed(StationCallError):
    """The owner answered with an error that is not re-raised as its own class: status, code and
    details are what the owner's API would have answered."""

    def __init__(self, error: CallError) -> None:
        super().__init__(error.message)
        self.error = error
        self.status = error.status
        self.code = error.kind.partition(":")[2] or error.kind
        self.details = dict(error.details) if error.details is not None else None


def encode_error(exc: BaseException, reraise: Sequence[type[BaseException]] = ()) -> CallError:
    """A handler's exception as a :class:`CallError`: a domain error (or one of ``reraise``) by its
    class; anything with an integer ``status`` and a string ``code`` (the web layer's API errors)
    by those; anything else as internal (status 500)."""
    if isinstance(exc, DomainError):
        return CallError(f"domain:{type(exc).__name__}", str(exc), details={"code": exc.code})
    if isinstance(exc, tuple(reraise)):
        return CallError(f"error:{type(exc).__name__}", str(exc))
    status, code = getattr(exc, "status", None), getattr(exc, "code", None)
    if isinstance(status, int) and isinstance(code, str):
        details = getattr(exc, "details", None)
        message = getattr(exc, "message", None)
        return CallError(
            f"api:{code}",
            message if isinstance(message, str) else str(exc),
            status,
            details if isinstance(details, Mapping) else None,
        )
    return CallError(f"internal:{type(exc).__name__}", str(exc) or type(exc).__name__, 500)


def _subclasses(cls: type[BaseException]) -> dict[str, type[BaseException]]:
    found = {cls.__name__: cls}
    for sub in cls.__subclasses__():
        found.update(_subclasses(sub))
    return found


def decode_error(error: CallError, reraise: Sequence[type[BaseException]] = ()) -> BaseException:
    """The exception a caller raises for a stored :class:`CallError` (see :func:`encode_error`)."""
    family, _, name = error.kind.partition(":")
    if family in ("domain", "error"):
        classes = _subclasses(DomainError)
        for extra in reraise:
            classes.update(_subclasses(extra))
        cls = classes.get(name)
        if cls is not None:
            return cls(error.message)
    return StationCallFailed(error)


class StationCalls(Protocol):
    """Changes to a station's queue: applied here when this instance owns it, else forwarded."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def serve(self, station: str) -> None: ...

    async def unserve(self, station: str, *, drain: bool = True) -> None: ...

    async def call(self, station: str, kind: str, payload: Any, *, timeout_s: float = ...) -> Any: ...


class _Applier:
    """The owner's side in this process: the stations served and one lock per station."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.served: set[str] = set()
        self._locks: dict[str, asyncio.Lock] = {}

    async def apply(self, station: str, kind: str, payload: Any) -> Any:
        async with self._locks.setdefault(station, asyncio.Lock()):
            return await self.handler(station, kind, payload)


class LocalStationCalls:
    """SQLite (one instance owns every station): every call is applied in this process."""

    def __init__(self, handler: Handler) -> None:
        self._applier = _Applier(handler)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._applier.served.clear()

    async def serve(self, station: str) -> None:
        self._applier.served.add(station)

    async def unserve(self, station: str, *, drain: bool = True) -> None:
        self._applier.served.discard(station)

    async def call(self, station: str, kind: str, payload: Any, *, timeout_s: float = 10.0) -> Any:
        if station not in self._applier.served:
            raise StationNotRunning(f"station {station!r} is not running")
        return await self._applier.apply(station, kind, payload)


_INSERT = (
    "INSERT INTO station_calls (station, kind, payload, caller, created_ms, expires_ms) "
    "VALUES (%s, %s, %s, %s, pilegate_now_ms(), pilegate_now_ms() + %s) RETURNING id"
)
_EXPIRE = (
    "WITH failed AS (UPDATE station_calls SET status = 'failed', error_kind = 'expired', "
    "error = %s, error_status = 503, done_ms = pilegate_now_ms() "
    "WHERE station = %s AND status = 'pending' AND expires_ms < pilegate_now_ms() RETURNING id) "
    "SELECT pg_notify('pilegate_station_calls_done', id::text) FROM failed"
)
_CLAIM = (
    "UPDATE station_calls SET status = 'claimed', owner = %s, claimed_ms = pilegate_now_ms() "
    "WHERE id = (SELECT id FROM station_calls WHERE station = %s AND status = 'pending' "
    "ORDER BY id LIMIT 1) AND status = 'pending' RETURNING id, kind, payload"
)
_UNCLAIM = (
    "UPDATE station_calls SET status = 'pending', owner = NULL, claimed_ms = NULL "
    "WHERE id = %s AND status = 'claimed' AND owner = %s"
)
_ORPHANS = (
    "WITH failed AS (UPDATE station_calls SET status = 'failed', error_kind = 'owner_stopped', "
    "error = %s, error_status = 503, done_ms = pilegate_now_ms() "
    "WHERE station = %s AND status = 'claimed' AND owner IS DISTINCT FROM %s RETURNING id) "
    "SELECT pg_notify('pilegate_station_calls_done', id::text) FROM failed"
)
_DONE = (
    "WITH answered AS (UPDATE station_calls SET status = 'done', result = %s, done_ms = pilegate_now_ms() "
    "WHERE id = %s AND status = 'claimed' AND owner = %s RETURNING id) "
    "SELECT pg_notify('pilegate_station_calls_done', id::text) FROM answered"
)
_FAILED = (
    "WITH answered AS (UPDATE station_calls SET status = 'failed', error_kind = %s, error = %s, "
    "error_status = %s, error_details = %s, done_ms = pilegate_now_ms() "
    "WHERE id = %s AND status = 'claimed' AND owner = %s RETURNING id) "
    "SELECT pg_notify('pilegate_station_calls_done', id::text) FROM answered"
)
_WITHDRAW = (
    "UPDATE station_calls SET status = 'failed', error_kind = 'timeout', error = %s, "
    "error_status = 504, done_ms = pilegate_now_ms() WHERE id = %s AND status = 'pending' RETURNING id"
)
_READ = (
    "SELECT id, station, status, owner, result, error_kind, error, error_status, error_details "
    "FROM station_calls WHERE id = %s"
)
_PRUNE = (
    "DELETE FROM station_calls WHERE (status IN ('done', 'failed') AND done_ms < pilegate_now_ms() - %s) "
    "OR (status IN ('pending', 'claimed') AND expires_ms < pilegate_now_ms() - %s)"
)


@dataclass(frozen=True)
class CallTiming:
    """The clocks of forwarded calls (see the module docstring)."""

    poll_s: float = 0.5
    claimed_grace_s: float = 5.0
    drain_s: float = 2.0
    keep_s: float = 3600.0
    prune_every_s: float = 60.0
    reconnect_max_s: float = 5.0


class PgStationCalls:
    """Forwarded station calls on PostgreSQL: a table, LISTEN/NOTIFY, a claim per call."""

    def __init__(
        self,
        url: str,
        handler: Handler,
        *,
        instance_id: str,
        reraise: Sequence[type[BaseException]] = (),
        timing: CallTiming = CallTiming(),
        pool_size: int = 4,
    ) -> None:
        self.url = url
        self.instance_id = instance_id
        self.timing = timing
        self._applier = _Applier(handler)
        self._reraise = tuple(reraise)
        self._pool = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            kwargs={"autocommit": True, "application_name": f"pilegate-calls {instance_id}"[:63]},
            timeout=5.0,  # waiting for a connection: a caller's deadline is seconds
            open=False,
        )
        self._kicks: dict[str, asyncio.Event] = {}  # served station -> "look for pending calls"
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._answers: dict[int, asyncio.Event] = {}  # call id -> "its answer may be in"
        self._listener: asyncio.Task[None] | None = None
        self._last_prune = 0.0

    # --- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the pool and LISTEN (before the first call, so no answer is missed)."""
        await self._pool.open(wait=True, timeout=10.0)
        listening = asyncio.get_running_loop().create_future()
        self._listener = asyncio.create_task(self._listen(listening), name="station-calls-listen")
        await asyncio.wait({listening, self._listener}, return_when=asyncio.FIRST_COMPLETED)
        if self._listener.done():
            listener, self._listener = self._listener, None
            await self._pool.close()
            exc = listener.exception()
            raise StationCallError(f"cannot LISTEN for station calls: {exc}") from exc

    async def close(self) -> None:
        for station in list(self._workers):
            await self.unserve(station)
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        await self._pool.close()

    # --- the owner's side -------------------------------------------------------------------------

    async def serve(self, station: str) -> None:
        """Apply ``station``'s calls from now on: first answer the calls a previous owner left
        claimed (failed, never applied), then work through the pending ones."""
        if station in self._workers:
            return
        async with self._pool.connection() as conn:
            await conn.execute(_ORPHANS, [OWNER_STOPPED, station, None])  # all: none is ours yet
        self._applier.served.add(station)
        kick = self._kicks[station] = asyncio.Event()
        kick.set()
        self._workers[station] = asyncio.create_task(
            self._work(station, kick), name=f"station-calls-{station}"
        )

    async def unserve(self, station: str, *, drain: bool = True) -> None:
        """Stop claiming ``station``'s calls; the one being applied gets ``drain_s`` to finish, or
        is cancelled at once without ``drain`` (a lost lease: its next owner answers it)."""
        self._applier.served.discard(station)
        worker = self._workers.pop(station, None)
        kick = self._kicks.pop(station, None)
        if kick is not None:
            kick.set()
        if worker is not None:
            done, _ = await asyncio.wait({worker}, timeout=self.timing.drain_s if drain else 0)
            if not done:
                worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker

    async def _work(self, station: str, kick: asyncio.Event) -> None:
        while station in self._applier.served:
            kick.clear()
            try:
                if await self._next(station):
                    continue
                await self._sweep(station)
            except (psycopg.Error, OSError) as exc:
                log.warning("station_calls_failed", station=station, error=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(kick.wait(), self.timing.poll_s * 2)

    async def _next(self, station: str) -> bool:
        """Claim and apply the oldest pending call of ``station``; False when there is none."""
        async with self._pool.connection() as conn:
            await conn.execute(
                _EXPIRE, ["no central instance owning the station took the call in time", station]
            )
            row = await (await conn.execute(_CLAIM, [self.instance_id, station])).fetchone()
        if row is None:
            return False
        call_id, kind, payload = row
        if station not in self._applier.served:  # released while claiming: back for the next owner
            async with self._pool.connection() as conn:
                await conn.execute(_UNCLAIM, [call_id, self.instance_id])
            return False
        try:
            result = json.dumps(await self._applier.apply(station, kind, json.loads(payload)))
        except Exception as exc:  # the owner's answer, stored for the caller to raise
            error = encode_error(exc, self._reraise)
            details = json.dumps(dict(error.details)) if error.details is not None else None
            params: list[Any] = [error.kind, error.message, error.status, details, call_id, self.instance_id]
            async with self._pool.connection() as conn:
                await conn.execute(_FAILED, params)
        else:
            async with self._pool.connection() as conn:
                await conn.execute(_DONE, [result, call_id, self.instance_id])
        return True

    async def _sweep(self, station: str) -> None:
        """While idle: answer calls of ``station`` another instance claimed (only the lease holder
        claims, so their claimer lost the station while applying), and prune now and then."""
        async with self._pool.connection() as conn:
            await conn.execute(_ORPHANS, [OWNER_STOPPED, station, self.instance_id])
        await self._prune()

    async def _prune(self) -> None:
        now = time.monotonic()
        if now - self._last_prune < self.timing.prune_every_s:
            return
        self._last_prune = now
        keep_ms = int(self.timing.keep_s * 1000)
        async with self._pool.connection() as conn:
            await conn.execute(_PRUNE, [keep_ms, keep_ms])

    # --- the caller's side ------------------------------------------------------------------------

    async def call(self, station: str, kind: str, payload: Any, *, timeout_s: float = 10.0) -> Any:
        """Apply ``kind``/``payload`` to ``station`` under its owner and return the owner's result
        (or raise its error); :class:`StationCallTimeout` when no answer comes in ``timeout_s``."""
        if station in self._applier.served:
            return await self._applier.apply(station, kind, payload)
        try:
            call_id = await self._insert(station, kind, json.dumps(payload), timeout_s)
        except (psycopg.Error, OSError) as exc:
            what = f"station {station!r}: the call could not be forwarded to its owner"
            raise StationCallError(f"{what} ({exc}); it was not applied") from exc
        answered = self._answers.setdefault(call_id, asyncio.Event())
        try:
            return await self._wait(call_id, station, answered, timeout_s)
        finally:
            self._answers.pop(call_id, None)

    async def _insert(self, station: str, kind: str, payload: str, timeout_s: float) -> int:
        async with self._pool.connection() as conn, conn.transaction():
            key = namespaced_key(CALLS_KEY_NAMESPACE, station)
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", [key])  # ids commit in id order
            cursor = await conn.execute(
                _INSERT, [station, kind, payload, self.instance_id, int(timeout_s * 1000)]
            )
            row = await cursor.fetchone()
            await conn.execute("SELECT pg_notify(%s, %s)", [CALLS_CHANNEL, station])
        assert row is not None
        return int(row[0])

    async def _wait(self, call_id: int, station: str, answered: asyncio.Event, timeout_s: float) -> Any:
        deadline = time.monotonic() + timeout_s
        withdrawn_tried = False
        row: dict[str, Any] = {"status": "unknown", "owner": None}
        while True:
            answered.clear()
            with contextlib.suppress(psycopg.Error, OSError):  # the database comes back, or time runs out
                row = await self._read(call_id)
            if row["status"] in ("done", "failed"):
                return self._answer(row)
            remaining = deadline - time.monotonic()
            if remaining <= 0 and not withdrawn_tried:
                withdrawn_tried = True
                if row["status"] == "pending" and await self._withdraw(call_id, timeout_s):
                    raise StationCallTimeout(
                        f"station {station!r}: no central instance owning it took the call within "
                        f"{timeout_s:g} s; it was not applied",
                        applied=False,
                    )
                deadline = time.monotonic() + self.timing.claimed_grace_s  # claimed: being applied
                continue
            if remaining <= 0:
                waited_s = timeout_s + self.timing.claimed_grace_s
                who = f"instance {row['owner']} took the call but gave" if row["owner"] else "there was"
                raise StationCallTimeout(
                    f"station {station!r}: {who} no answer within {waited_s:g} s; check the request state",
                    applied=None,
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(answered.wait(), min(remaining, self.timing.poll_s))

    async def _read(self, call_id: int) -> dict[str, Any]:
        async with self._pool.connection() as conn:
            cursor = conn.cursor(row_factory=dict_row)
            await cursor.execute(_READ, [call_id])
            row = await cursor.fetchone()
        if row is None:
            raise StationCallError(f"station call {call_id} is gone (pruned?)")
        return row

    async def _withdraw(self, call_id: int, timeout_s: float) -> bool:
        """Pending -> failed, if nobody claimed it meanwhile; True when withdrawn."""
        message = f"the caller gave up after {timeout_s:g} s; not applied"
        try:
            async with self._pool.connection() as conn:
                row = await (await conn.execute(_WITHDRAW, [message, call_id])).fetchone()
        except (psycopg.Error, OSError):
            return False  # its expiry keeps any owner from applying it; the outcome stays unknown here
        return row is not None

    def _answer(self, row: Mapping[str, Any]) -> Any:
        if row["status"] == "done":
            return json.loads(row["result"])
        details = json.loads(row["error_details"]) if row["error_details"] else None
        error = CallError(row["error_kind"] or "internal", row["error"] or "", row["error_status"], details)
        raise decode_error(error, self._reraise)

    # --- notifications ----------------------------------------------------------------------------

    async def _listen(self, listening: asyncio.Future[None]) -> None:
        """LISTEN on both channels on a connection of its own, reconnecting while the instance runs."""
        delay_s = 0.5
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.url, autocommit=True, application_name=f"pilegate-listen {self.instance_id}"[:63]
                )
            except (psycopg.Error, OSError) as exc:
                if not listening.done():
                    raise
                log.warning("station_calls_listen_failed", error=str(exc))
            else:
                try:
                    async with conn:
                        await conn.execute(f"LISTEN {CALLS_CHANNEL}")
                        await conn.execute("LISTEN pilegate_station_calls_done")
                        if not listening.done():
                            listening.set_result(None)
                        self._wake_all()  # whatever was announced while not listening
                        delay_s = 0.5
                        async for notice in conn.notifies():
                            self._dispatch(notice.channel, notice.payload)
                except (psycopg.Error, OSError) as exc:
                    log.warning("station_calls_listen_lost", error=str(exc))
            await asyncio.sleep(delay_s * random.uniform(0.8, 1.2))
            delay_s = min(delay_s * 2, self.timing.reconnect_max_s)

    def _dispatch(self, channel: str, payload: str) -> None:
        if channel == CALLS_CHANNEL:
            kick = self._kicks.get(payload)
            if kick is not None:
                kick.set()
        elif channel == DONE_CHANNEL and payload.isdigit():
            answered = self._answers.get(int(payload))
            if answered is not None:
                answered.set()

    def _wake_all(self) -> None:
        for event in [*self._kicks.values(), *self._answers.values()]:
            event.set()


def station_calls(
    database: Path | str | DatabaseUrl,
    handler: Handler,
    *,
    instance_id: str,
    reraise: Sequence[type[BaseException]] = (),
) -> StationCalls:
    """The station calls of the database's engine: :class:`PgStationCalls` on PostgreSQL,
    :class:`LocalStationCalls` (every call in-process) on SQLite."""
    url = parse_database_url(database)
    if url.dialect == POSTGRESQL:
        return PgStationCalls(url.target, handler, instance_id=instance_id, reraise=reraise)
    return LocalStationCalls(handler)
