"""The gateway's durable outbox: every outgoing MQTT message is stored here until the broker acks it.

One SQLite file (WAL, ``synchronous=NORMAL``: survives a process crash; a power cut can lose at
most the last few commits but never corrupts the file). Rows are sent oldest first (by ``id``,
which never goes backwards thanks to ``AUTOINCREMENT``) and deleted only once acknowledged.

Bounds (:class:`OutboxLimits`) are enforced on every :meth:`Outbox.append_many` with running
counts kept in the ``counters`` table (no scan per append). Drop policy, in order:

* status messages are retained latest-state messages: a new status row *replaces* any queued
  status row of the same topic (coalesced; counted as a dropped ``status``);
* telemetry older than ``max_age_s`` is dropped;
* while over ``max_messages`` or ``max_bytes``, the oldest telemetry is dropped;
* events and command results are never dropped: if only they remain the outbox grows past its
  bounds (logged once per append at WARNING).

Every drop is counted by kind in ``counters`` and shown by :meth:`Outbox.stats`. A row the broker
will not take (see :meth:`Outbox.quarantine`) is moved to the ``quarantine`` table, not deleted.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import structlog
from sqlite_utils import Database, Migrations

log = structlog.get_logger(__name__)

Kind = Literal["telemetry", "event", "status", "cmd_result"]
KINDS: tuple[str, ...] = get_args(Kind)
_ACK_CHUNK = 500  # ids per DELETE statement (well under SQLite's variable limit)
_DROP_CHUNK = 1000  # telemetry rows examined per step when shedding bytes


class OutboxError(Exception):
    """The outbox cannot do what was asked."""


class InvalidMessageError(OutboxError, ValueError):
    """An OutMessage has a field the outbox cannot store or the broker cannot take."""


class OutboxClosedError(OutboxError):
    """The outbox was used after close()."""


def wall_ms() -> int:
    """Milliseconds since the Unix epoch (UTC)."""
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class OutMessage:
    """One MQTT message to publish; ``created_ms`` is when the gateway made it (wall clock, ms)."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    kind: Kind
    created_ms: int

    def __post_init__(self) -> None:
        problem = _message_problem(self)
        if problem:
            raise InvalidMessageError(f"OutMessage({self.topic!r}): {problem}")


def _message_problem(m: OutMessage) -> str | None:
    if not isinstance(m.topic, str) or not m.topic or "+" in m.topic or "#" in m.topic:
        return "topic must be a non-empty string without wildcards"
    if not isinstance(m.payload, bytes):
        return f"payload must be bytes, got {type(m.payload).__name__}"
    if m.qos not in (0, 1, 2):
        return f"qos must be 0, 1 or 2, got {m.qos!r}"
    if m.kind not in KINDS:
        return f"kind must be one of {', '.join(KINDS)}, got {m.kind!r}"
    if not isinstance(m.created_ms, int) or m.created_ms < 0:
        return f"created_ms must be a non-negative int, got {m.created_ms!r}"
    return None


@dataclass(frozen=True, slots=True)
class StoredMessage(OutMessage):
    """An OutMessage as stored: ``id`` orders sending and is what :meth:`Outbox.ack` takes."""

    id: int


@dataclass(frozen=True)
class OutboxLimits:
    """What the outbox keeps while the broker is unreachable (see the module's drop policy)."""

    max_messages: int = 1_000_000
    max_bytes: int = 512 * 2**20
    max_age_s: float = 7 * 86400

    def __post_init__(self) -> None:
        for name in ("max_messages", "max_bytes", "max_age_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"OutboxLimits.{name} must be positive")


def _size(topic: str, payload: bytes) -> int:
    """Bytes a row counts against ``max_bytes``: payload plus UTF-8 topic."""
    return len(payload) + len(topic.encode())


MIGRATIONS = Migrations("pilegate.gateway.outbox")
COUNTERS = ("depth", "bytes", "session", *(f"dropped_{kind}" for kind in KINDS), "quarantined")
_COLUMNS = "topic, payload, qos, retain, kind, created_ms, size"


@MIGRATIONS(name="001_outbox_and_counters")
def _create_schema(db: Database) -> None:
    db.execute(
        "CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL,"
        " payload BLOB NOT NULL, qos INTEGER NOT NULL, retain INTEGER NOT NULL,"
        " kind TEXT NOT NULL, created_ms INTEGER NOT NULL, size INTEGER NOT NULL)"
    )
    db.execute("CREATE INDEX outbox_telemetry_age ON outbox(created_ms) WHERE kind = 'telemetry'")
    db.execute("CREATE INDEX outbox_status_topic ON outbox(topic) WHERE kind = 'status'")
    db.table("counters").create({"name": str, "value": int}, pk="name", not_null={"value"})
    names = (
        "depth",
        "bytes",
        "session",
        "dropped_telemetry",
        "dropped_event",
        "dropped_status",
        "dropped_cmd_result",
    )
    db.table("counters").insert_all({"name": name, "value": 0} for name in names)


@MIGRATIONS(name="002_quarantine")
def _create_quarantine(db: Database) -> None:
    db.execute(
        "CREATE TABLE quarantine (id INTEGER PRIMARY KEY, topic TEXT NOT NULL,"
        " payload BLOB NOT NULL, qos INTEGER NOT NULL, retain INTEGER NOT NULL,"
        " kind TEXT NOT NULL, created_ms INTEGER NOT NULL, size INTEGER NOT NULL,"
        " reason TEXT NOT NULL, quarantined_ms INTEGER NOT NULL)"
    )
    db.execute("INSERT OR IGNORE INTO counters (name, value) VALUES ('quarantined', 0)")


def _open_database(path: Path) -> Database:
    """The outbox database at ``path``, in WAL mode, migrated to the current schema."""
    db = Database(sqlite3.connect(str(path), check_same_thread=False))
    try:
        db.enable_wal()
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=5000")
        MIGRATIONS.apply(db)
    except BaseException:
        db.close()
        raise
    return db


class Outbox:
    """Durable FIFO of OutMessages with bounded size; safe to call from several threads."""

    def __init__(
        self,
        path: str | Path,
        limits: OutboxLimits = OutboxLimits(),
        *,
        wall_ms: Callable[[], int] = wall_ms,
    ) -> None:
        self.path = Path(path)
        self.limits = limits
        self._wall_ms = wall_ms
        self._lock = threading.Lock()
        self._closed = False
        try:
            self._db = _open_database(self.path)
            self._counts = self._load_counters()
        except sqlite3.Error as exc:
            raise OutboxError(f"cannot open outbox {self.path}: {exc}") from exc
        log.debug("outbox opened", path=str(self.path), depth=self._counts["depth"])

    def _load_counters(self) -> dict[str, int]:
        rows = self._db.execute("SELECT name, value FROM counters").fetchall()
        counts = {name: 0 for name in COUNTERS}
        counts.update({str(name): int(value) for name, value in rows})
        return counts

    def close(self) -> None:
        """Close the database; idempotent."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()

    def _check_open(self) -> None:
        if self._closed:
            raise OutboxClosedError(f"outbox {self.path} is closed")

    # -- writing -----------------------------------------------------------------------------

    def append_many(self, messages: Sequence[OutMessage]) -> None:
        """Store ``messages`` (in order) and apply the bounds, all in one transaction."""
        if not messages:
            return
        for message in messages:
            if not isinstance(message, OutMessage):
                raise InvalidMessageError(f"expected OutMessage, got {type(message).__name__}")
        with self._lock:
            self._check_open()
            self._transact(lambda delta: self._append(messages, delta))

    def _transact(self, work: Callable[[dict[str, int]], None]) -> None:
        """Run ``work(delta)`` in one transaction that also persists the counter changes."""
        delta: dict[str, int] = {}
        with self._db.atomic():
            work(delta)
            self._db.conn.executemany(
                "UPDATE counters SET value = value + ? WHERE name = ?",
                [(change, name) for name, change in delta.items() if change],
            )
        for name, change in delta.items():
            self._counts[name] += change

    def _append(self, messages: Sequence[OutMessage], delta: dict[str, int]) -> None:
        latest_status = {m.topic: i for i, m in enumerate(messages) if m.kind == "status"}
        if latest_status:
            self._coalesce_status(list(latest_status), delta)
        rows = [
            (m.topic, m.payload, m.qos, int(m.retain), m.kind, m.created_ms, _size(m.topic, m.payload))
            for i, m in enumerate(messages)
            if m.kind != "status" or latest_status[m.topic] == i
        ]
        _bump(delta, "dropped_status", len(messages) - len(rows))
        self._db.conn.executemany(
            "INSERT INTO outbox (topic, payload, qos, retain, kind, created_ms, size)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        _bump(delta, "depth", len(rows))
        _bump(delta, "bytes", sum(row[6] for row in rows))
        self._enforce_bounds(delta)

    def _coalesce_status(self, topics: list[str], delta: dict[str, int]) -> None:
        for topic in topics:
            sizes = self._db.conn.execute(
                "DELETE FROM outbox WHERE kind = 'status' AND topic = ? RETURNING size", (topic,)
            ).fetchall()
            self._account_drop("status", [size for (size,) in sizes], delta)

    def _account_drop(self, kind: str, sizes: list[int], delta: dict[str, int]) -> None:
        _bump(delta, f"dropped_{kind}", len(sizes))
        _bump(delta, "depth", -len(sizes))
        _bump(delta, "bytes", -sum(sizes))

    # -- bounds ------------------------------------------------------------------------------

    def _enforce_bounds(self, delta: dict[str, int]) -> None:
        cutoff_ms = self._wall_ms() - int(self.limits.max_age_s * 1000)
        sizes = self._db.conn.execute(
            "DELETE FROM outbox WHERE kind = 'telemetry' AND created_ms < ? RETURNING size",
            (cutoff_ms,),
        ).fetchall()
        self._account_drop("telemetry", [size for (size,) in sizes], delta)
        excess_messages = self._current(delta, "depth") - self.limits.max_messages
        if excess_messages > 0:
            self._drop_oldest_telemetry(excess_messages, delta)
        while self._current(delta, "bytes") > self.limits.max_bytes:
            if not self._drop_telemetry_for_bytes(delta):
                break
        self._warn_if_still_over(delta)

    def _current(self, delta: dict[str, int], name: str) -> int:
        return self._counts[name] + delta.get(name, 0)

    def _drop_oldest_telemetry(self, count: int, delta: dict[str, int]) -> None:
        sizes = self._db.conn.execute(
            "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE kind = 'telemetry'"
            " ORDER BY created_ms, id LIMIT ?) RETURNING size",
            (count,),
        ).fetchall()
        self._account_drop("telemetry", [size for (size,) in sizes], delta)

    def _drop_telemetry_for_bytes(self, delta: dict[str, int]) -> bool:
        """Drop the oldest telemetry rows that cover the byte excess; False if none is left."""
        excess = self._current(delta, "bytes") - self.limits.max_bytes
        rows = self._db.conn.execute(
            "SELECT id, size FROM outbox WHERE kind = 'telemetry' ORDER BY created_ms, id LIMIT ?",
            (_DROP_CHUNK,),
        ).fetchall()
        if not rows:
            return False
        victims, freed = [], 0
        for row_id, size in rows:
            if freed >= excess:
                break
            victims.append(row_id)
            freed += size
        sizes = self._delete_ids(victims)
        self._account_drop("telemetry", sizes, delta)
        return True

    def _warn_if_still_over(self, delta: dict[str, int]) -> None:
        depth, size = self._current(delta, "depth"), self._current(delta, "bytes")
        if depth > self.limits.max_messages or size > self.limits.max_bytes:
            log.warning(
                "outbox over its bounds with nothing droppable left",
                depth=depth,
                bytes=size,
                max_messages=self.limits.max_messages,
                max_bytes=self.limits.max_bytes,
            )

    def _delete_ids(self, ids: Sequence[int]) -> list[int]:
        """Delete rows by id (chunked); the sizes of the rows that existed."""
        sizes: list[int] = []
        for start in range(0, len(ids), _ACK_CHUNK):
            chunk = ids[start : start + _ACK_CHUNK]
            marks = ",".join("?" * len(chunk))
            sizes.extend(
                size
                for (size,) in self._db.conn.execute(
                    f"DELETE FROM outbox WHERE id IN ({marks}) RETURNING size",  # noqa: S608
                    chunk,
                )
            )
        return sizes

    # -- reading and acknowledging -----------------------------------------------------------

    def peek(self, limit: int, after_id: int = 0) -> list[StoredMessage]:
        """Up to ``limit`` stored messages with ``id > after_id``, oldest first."""
        if limit <= 0:
            return []
        with self._lock:
            self._check_open()
            rows = self._db.conn.execute(
                "SELECT topic, payload, qos, retain, kind, created_ms, id FROM outbox"
                " WHERE id > ? ORDER BY id LIMIT ?",
                (after_id, limit),
            ).fetchall()
        return [_stored(row) for row in rows]

    def ack(self, ids: Iterable[int]) -> None:
        """Delete acknowledged rows (in one transaction); unknown ids are ignored."""
        id_list = list(ids)
        if not id_list:
            return
        with self._lock:
            self._check_open()
            self._transact(lambda delta: self._ack(id_list, delta))

    def _ack(self, ids: list[int], delta: dict[str, int]) -> None:
        sizes = self._delete_ids(ids)
        _bump(delta, "depth", -len(sizes))
        _bump(delta, "bytes", -sum(sizes))

    def quarantine(self, row_id: int, reason: str) -> bool:
        """Move a row the broker will not take out of the queue (kept in ``quarantine``)."""
        with self._lock:
            self._check_open()
            moved: list[int] = []
            self._transact(lambda delta: moved.extend(self._quarantine(row_id, reason, delta)))
        return bool(moved)

    def _quarantine(self, row_id: int, reason: str, delta: dict[str, int]) -> list[int]:
        self._db.conn.execute(
            f"INSERT INTO quarantine (id, {_COLUMNS}, reason, quarantined_ms)"  # noqa: S608
            f" SELECT id, {_COLUMNS}, ?, ? FROM outbox WHERE id = ?",
            (reason, self._wall_ms(), row_id),
        )
        sizes = self._delete_ids([row_id])
        _bump(delta, "quarantined", len(sizes))
        _bump(delta, "depth", -len(sizes))
        _bump(delta, "bytes", -sum(sizes))
        return sizes

    def discard_status(self, topics: Iterable[str]) -> None:
        """Drop queued status rows of ``topics``: a newer status for them is being sent directly."""
        topic_list = list(dict.fromkeys(topics))
        if not topic_list:
            return
        with self._lock:
            self._check_open()
            self._transact(lambda delta: self._coalesce_status(topic_list, delta))

    # -- counters ----------------------------------------------------------------------------

    def depth(self) -> int:
        """Messages stored (not yet acknowledged)."""
        return self._counts["depth"]

    def size_bytes(self) -> int:
        """Bytes stored, as counted against ``max_bytes`` (payload + topic)."""
        return self._counts["bytes"]

    def stats(self) -> dict[str, int]:
        """depth, bytes, session (last handed out), dropped_<kind> for every kind, quarantined."""
        return dict(self._counts)

    def report(self, recent: int = 10) -> dict[str, object]:
        """Read only, for ``pilectl outbox``: the counters, the next message to send (the oldest
        stored: created_ms, kind, topic; ``None`` when empty) and the ``recent`` latest quarantined
        rows (without payloads)."""
        with self._lock:
            self._check_open()
            head = self._db.conn.execute(
                "SELECT created_ms, kind, topic FROM outbox ORDER BY id LIMIT 1"
            ).fetchone()
            rows = self._db.conn.execute(
                "SELECT id, topic, kind, created_ms, quarantined_ms, size, reason FROM quarantine"
                " ORDER BY quarantined_ms DESC, id DESC LIMIT ?",
                (recent,),
            ).fetchall()
        names = ("id", "topic", "kind", "created_ms", "quarantined_ms", "size", "reason")
        return {
            "counters": dict(self._counts),
            "limits": asdict(self.limits),
            "oldest": dict(zip(("created_ms", "kind", "topic"), head, strict=True)) if head else None,
            "quarantine": [dict(zip(names, row, strict=True)) for row in rows],
        }

    def next_session(self) -> int:
        """A new session number, persisted: strictly increasing across restarts.

        It is at least the current Unix time in seconds, so a gateway whose outbox file was lost
        or replaced still never reuses a session number the central has already seen.
        """
        with self._lock:
            self._check_open()
            session = max(self._counts["session"] + 1, self._wall_ms() // 1000)
            self._transact(lambda delta: _bump(delta, "session", session - self._counts["session"]))
        return session


def _bump(delta: dict[str, int], name: str, change: int) -> None:
    delta[name] = delta.get(name, 0) + change


def _stored(row: Any) -> StoredMessage:
    topic, payload, qos, retain, kind, created_ms, row_id = row
    return StoredMessage(topic, bytes(payload), qos, bool(retain), kind, created_ms, row_id)
