"""Ingest of the gateways' MQTT traffic: telemetry, pile and gateway status, events, command results.

:meth:`Ingest.handle` is the :class:`~central.adapters.mqtt.CentralMqtt` callback. It never
raises: a message with a foreign or broken topic, or a payload its codec rejects, is counted by
reason, logged (rate-limited) and dropped.

* Telemetry and events are de-duplicated per stream (one topic) by ``(session, seq)`` with
  bounded memory (:class:`Deduplicator`): a replayed backlog of an older session is accepted
  exactly once, a jump in ``seq`` counts a gap.
* Accepted telemetry is buffered and written in ONE transaction per ``flush_interval_s`` (or
  sooner when ``flush_rows`` are waiting): the ``telemetry`` rows, and the live fields of each
  ``ports`` row from its latest reading only; a replayed (older) reading never overwrites newer
  live fields (guarded by ``last_telemetry_ms``). Status changes are queued into the same
  transaction, in order, ahead of the telemetry.
* The first status of a pile the database does not know registers it (station by code = the MQTT
  station id, pile, ports) so the demo's piles are real records.
* A pile is bound to the gateway whose birth listed it first (the ``piles.gateway`` column; an
  operator changes it, e.g. ``PUT /api/ChargingPiles/{id}`` with ``gateway``, then :meth:`Ingest.bind`).
  A birth's claim on a pile bound to another gateway is ignored and counted (``foreign_gateway``).
* A gateway ``lost``/``offline`` makes each pile bound to it ``offline``; until its next birth the
  pile's statuses are ignored (``ignored_status``: retained leftovers) and its telemetry and events
  are dropped (``foreign_gateway``: its gateway cannot have sent them). Topics name the pile, not
  the publisher, so while the gateway is up only the broker's ACL (a gateway may publish its own
  piles' topics only) tells its messages from a forger's; the binding guards against forged
  births and wills.
* Split over two processes (``pilegate central`` with its ``pilegate ingest`` child): the
  central's Ingest runs with ``store_telemetry=False`` (it tells its listener everything and
  stores status changes, not telemetry), the ingest process's with ``store_status=False`` (it
  stores telemetry and the live fields it sets, and follows statuses in memory only). With
  ``acks`` (the ingest process's MQTT client in manual-ack mode) a message is acknowledged to the
  broker only once the batch holding it committed; a write starts after ``flush_interval_s`` or
  once ``flush_rows`` messages wait for their acknowledgement (the broker sends at most its
  in-flight window unacknowledged), never sooner than ``WRITE_GAP_S`` after the last one (another
  process's writer waiting on SQLite's lock gets its turn); a batch that failed is written again
  with the next, so nothing the broker handed over is lost, and a restarted process seeds its
  de-duplication from the rows stored last (:meth:`Ingest.seed`), so the messages the broker sends
  again are not stored twice.
* The listener sees readings after de-duplication in the order received, pile states only on
  change, every event and command result; nothing it raises can stop ingest.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, Protocol

import structlog

from central.adapters import stations, telemetry
from central.adapters.database import DATABASE_ERRORS, Db
from central.adapters.storage import Store
from protocols import topics
from protocols.payloads import (
    CommandResult,
    GatewayStatus,
    PayloadError,
    PileEvent,
    PileStatus,
    Telemetry,
)
from protocols.registers import FaultCode

log = structlog.get_logger(__name__)

# operator dictionary (admin API): pile/port status 0 offline, 1 idle, 2 in use, 3 fault
OFFLINE, IDLE, IN_USE, FAULT = 0, 1, 2, 3
PORT_STATUS = {
    "available": IDLE,
    "plugged": IN_USE,
    "charging": IN_USE,
    "finished": IDLE,  # the session is over: the port takes the next car
    "faulted": FAULT,
    "unavailable": OFFLINE,
}
FAULT_TYPES = {f.name.lower(): int(f) for f in FaultCode}
PILE_TYPES = {"fast": 1, "trickle": 2}
FALLBACK_POWER_KW = {1: 30.0, 2: 10.0}  # for a pile that does not state its rating
NO_LIVE_DATA = ("offline", "comm_fault")  # pile states in which its ports' readings are stale
LOG_EVERY_S = 10.0
TOPIC_CACHE_SIZE = 65_536
WRITE_GAP_S = 0.005  # with acks: pause between writes (SQLite's busy handler polls, it is not fair)


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def iso_ms(ms: int) -> str:
    """An epoch-milliseconds instant as the ISO 8601 UTC string the schema stores."""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


class IngestListener(Protocol):
    """What ingest tells the charging service (implemented by its live input, ``ChargingService.live``)."""

    def on_telemetry(self, pile_no: str, port: int, reading: Telemetry) -> None: ...
    def on_pile_state(self, pile_no: str, state: str) -> None: ...
    def on_command_result(self, pile_no: str, port: int, result: CommandResult) -> None: ...
    def on_pile_event(self, pile_no: str, event: PileEvent) -> None: ...


class Acks(Protocol):
    """Manual MQTT acknowledgements (central.adapters.mqtt.CentralMqtt with manual_ack)."""

    @property
    def unacked(self) -> int: ...
    def mark(self) -> tuple[int, int]: ...
    def ack(self, mark: tuple[int, int]) -> None: ...


class CommandResultSink(Protocol):
    """The command layer's bookkeeping (central.adapters.commands.CommandSender)."""

    def on_result(self, pile_no: str, port: int, result: CommandResult) -> None: ...


# ---- de-duplication ----------------------------------------------------------------------------


class _Window:
    """One session of one stream: the highest seq seen and a bitmap of the seqs just below it."""

    __slots__ = ("highest", "seen", "session")

    def __init__(self, session: int, seq: int) -> None:
        self.session, self.highest, self.seen = session, seq, 1  # bit i: highest - i was seen


class Deduplicator:
    """Drops repeated ``(stream, session, seq)``; counts gaps; memory bounded per stream and in total.

    Per stream it keeps up to ``max_sessions`` sessions, each as the highest seq plus a
    ``window``-bit bitmap of the seqs below it. A seq above the highest is new (a jump counts a
    gap); one inside the window is new unless its bit is set; one below the window, or of a
    session older than every session kept, cannot be told from a duplicate and is dropped as
    ``stale``. A session not seen before is new whether it is newer or older than the ones kept,
    so a backlog of an old session replayed after an outage (seqs ascending) is accepted once.
    At most ``max_streams`` streams are kept; the least recently used is forgotten first.
    """

    def __init__(self, window: int = 4096, *, max_sessions: int = 8, max_streams: int = 200_000) -> None:
        if window < 1 or max_sessions < 1 or max_streams < 1:
            raise ValueError("window, max_sessions and max_streams must be >= 1")
        self.window, self.max_sessions, self.max_streams = window, max_sessions, max_streams
        self._mask = (1 << window) - 1
        self._streams: OrderedDict[str, list[_Window]] = OrderedDict()
        self._floors: dict[str, int] = {}  # stream -> highest session forgotten
        self.duplicates = self.stale = self.gaps = self.missing = self.late = 0
        self.evicted_streams = 0

    def __len__(self) -> int:
        return len(self._streams)

    def sessions(self, stream: str) -> list[int]:
        """The sessions kept for ``stream``, oldest first."""
        return [w.session for w in self._streams.get(stream, ())]

    def accept(self, stream: str, session: int, seq: int) -> bool:
        """True if this message is new (and remember it), False if it is to be dropped."""
        windows = self._streams.get(stream)
        if windows is None:
            self._add_stream(stream, session, seq)
            return True
        self._streams.move_to_end(stream)
        newest = windows[-1]
        if newest.session == session:
            return self._in_window(newest, seq)
        for w in windows:
            if w.session == session:
                return self._in_window(w, seq)
        return self._new_session(stream, windows, session, seq)

    def _add_stream(self, stream: str, session: int, seq: int) -> None:
        self._streams[stream] = [_Window(session, seq)]
        if len(self._streams) > self.max_streams:
            old, _ = self._streams.popitem(last=False)
            self._floors.pop(old, None)
            self.evicted_streams += 1

    def _in_window(self, w: _Window, seq: int) -> bool:
        if seq > w.highest:
            shift = seq - w.highest
            if shift > 1:
                self.gaps += 1
                self.missing += shift - 1
            w.seen = ((w.seen << shift) | 1) & self._mask if shift < self.window else 1
            w.highest = seq
            return True
        offset = w.highest - seq
        if offset >= self.window:
            self.stale += 1
            return False
        bit = 1 << offset
        if w.seen & bit:
            self.duplicates += 1
            return False
        w.seen |= bit
        self.late += 1
        return True

    def _new_session(self, stream: str, windows: list[_Window], session: int, seq: int) -> bool:
        full = len(windows) >= self.max_sessions
        if session <= self._floors.get(stream, 0) or (full and session < windows[0].session):
            self.stale += 1
            return False
        if session > windows[-1].session and seq > 1:  # a newer session that began unseen
            self.gaps += 1
            self.missing += seq - 1
        bisect.insort(windows, _Window(session, seq), key=lambda w: w.session)
        if len(windows) > self.max_sessions:
            self._floors[stream] = windows.pop(0).session
        return True


# ---- ingest ------------------------------------------------------------------------------------


@dataclass
class _Gateway:
    state: str
    session: int
    piles: tuple[str, ...] = ()


@dataclass
class _Batch:
    """What one flush writes, in one transaction."""

    ops: list[Callable[[Db], None]] = field(default_factory=list)
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    ports: dict[tuple[str, int], tuple[Telemetry, int]] = field(default_factory=dict)
    piles: dict[str, Telemetry] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.ops or self.rows or self.ports or self.piles)

    def then(self, later: _Batch) -> _Batch:
        """This batch followed by ``later`` (a failed batch written again with the next one)."""
        return _Batch(
            self.ops + later.ops,
            self.rows + later.rows,
            {**self.ports, **later.ports},
            {**self.piles, **later.piles},
        )


class _RateLimitedLog:
    """Logs the first occurrence of a key at WARNING, then at most once per LOG_EVERY_S."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[float, int]] = {}

    def warn(self, key: str, event: str, **kw: Any) -> None:
        now = time.monotonic()
        last, suppressed = self._last.get(key, (-LOG_EVERY_S, 0))
        if now - last < LOG_EVERY_S:
            self._last[key] = (last, suppressed + 1)
            return
        self._last[key] = (now, 0)
        log.warning(event, suppressed=suppressed, **kw)


class Ingest:
    """Turns the station's MQTT messages into stored rows and listener calls; see the module doc."""

    def __init__(
        self,
        store: Store,
        station: str,
        listener: IngestListener,
        *,
        flush_interval_s: float = 0.1,
        dedup_window: int = 4096,
        clock_ms: Callable[[], int] = wall_ms,
        flush_rows: int = 5000,
        commands: CommandResultSink | None = None,
        store_telemetry: bool = True,
        store_status: bool = True,
        acks: Acks | None = None,
    ) -> None:
        self.station = topics.check_id("station", station)
        self.subscription = topics.station_filter(station)
        self.commands = commands
        self.store_telemetry, self.store_status, self._acks = store_telemetry, store_status, acks
        self._store, self._listener, self._clock_ms = store, listener, clock_ms
        self._flush_interval_s, self._flush_rows = flush_interval_s, flush_rows
        self._telemetry = Deduplicator(dedup_window)
        self._events = Deduplicator(dedup_window)
        self._topics: dict[str, topics.ParsedTopic] = {}
        self._batch = _Batch()
        self._latest_ts: dict[tuple[str, int], int] = {}
        self._port_status: dict[str, dict[int, int]] = {}  # pile -> port -> status code
        self._gateways: dict[str, _Gateway] = {}
        self._pile_gateway: dict[str, str] = {}
        self._pile_state: dict[str, str] = {}  # what the listener was last told
        self._kick = asyncio.Event()
        self._flush_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._warn = _RateLimitedLog()
        self.malformed: dict[str, int] = {}
        self.counts = {
            "received": 0,
            "stored": 0,
            "events": 0,
            "command_results": 0,
            "ignored_status": 0,
            "foreign_gateway": 0,
            "own_commands": 0,
            "listener_errors": 0,
            "store_errors": 0,
            "flushes": 0,
        }

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Load which gateway serves which pile, then start the flush task."""
        if self._task is not None:
            return
        self._stopping = False
        mapping = await self._store.read(partial(stations.pile_gateways, station=self.station))
        for pile_no, gateway in mapping:
            self._pile_gateway.setdefault(pile_no, gateway)
        self._task = asyncio.get_running_loop().create_task(self._flush_loop(), name="ingest-flush")

    async def stop(self) -> None:
        """Let the flush task finish its current write, then write what is still buffered."""
        task, self._task = self._task, None
        if task is not None:
            self._stopping = True
            self._kick.set()
            await task
        await self.flush()

    async def _flush_loop(self) -> None:
        # never cancelled mid-write: a cancelled store.write could drop a queued batch
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._flush_interval_s):
                    await self._kick.wait()
            self._kick.clear()
            errors = self.counts["store_errors"]
            await self.flush()
            if self.counts["store_errors"] != errors and not self._stopping:
                await asyncio.sleep(self._flush_interval_s)  # a kept batch: do not retry at message rate
            elif self._acks is not None and not self._stopping:
                await asyncio.sleep(WRITE_GAP_S)  # another process's writer gets the SQLite lock here

    async def flush(self) -> int:
        """Write the buffered batch in one transaction; the number of telemetry rows stored.
        With ``acks``, acknowledge what it holds once committed; a batch that failed is kept for
        the next flush (unacknowledged), without ``acks`` it is dropped and counted."""
        async with self._flush_lock:
            batch, self._batch = self._batch, _Batch()
            mark = self._acks.mark() if self._acks is not None else None
            if batch:
                write = partial(
                    _write_batch,
                    station=self.station,
                    batch=batch,
                    piles=self._pile_live_rows(batch),
                    now_iso=iso_ms(self._clock_ms()),
                )
                try:
                    await self._store.write(write)
                except Exception:
                    self.counts["store_errors"] += 1
                    log.exception("ingest batch not stored", rows=len(batch.rows), ops=len(batch.ops))
                    if self._acks is not None:
                        self._batch = batch.then(self._batch)
                    return 0
                self.counts["flushes"] += 1
                self.counts["stored"] += len(batch.rows)
            if mark is not None and self._acks is not None:
                self._acks.ack(mark)
            return len(batch.rows)

    async def seed(self, rows: int) -> int:
        """Feed the de-duplication the last ``rows`` readings stored (a restarted ingest process:
        the broker sends again what it had not acknowledged, some of which may be stored)."""
        seen = await self._store.read(partial(telemetry.last_readings, rows=rows))
        prefix = f"{topics.ROOT}/{topics.VERSION}/{self.station}/pile/"
        seen = [row for row in seen if row[0] == self.station]
        for _, pile, port, session, seq in seen:
            self._telemetry.accept(f"{prefix}{pile}/port/{port}/telemetry", session, seq)
        self._telemetry.duplicates = self._telemetry.gaps = self._telemetry.missing = 0
        self._telemetry.late = self._telemetry.stale = 0
        return len(seen)

    # -- reading the state -------------------------------------------------------------------

    def pile_state(self, pile_no: str) -> str:
        """The pile's last known state ("offline" if never seen)."""
        return self._pile_state.get(pile_no, "offline")

    def stats(self) -> dict[str, object]:
        t, e = self._telemetry, self._events
        return {
            **self.counts,
            "duplicates": t.duplicates + e.duplicates,
            "gaps": t.gaps + e.gaps,
            "missing": t.missing + e.missing,
            "late": t.late + e.late,
            "stale": t.stale + e.stale,
            "streams": len(t) + len(e),
            "malformed_by_reason": dict(self.malformed),
            "buffered": len(self._batch.rows),
            "gateways": {
                gw: {"state": g.state, "session": g.session, "piles": list(g.piles)}
                for gw, g in self._gateways.items()
            },
        }

    # -- the MQTT callback -------------------------------------------------------------------

    def handle(self, topic: str, payload: bytes) -> None:
        """Take one message; never raises."""
        self.counts["received"] += 1
        if self._acks is not None and self._acks.unacked >= self._flush_rows:
            self._kick.set()  # the broker sends no more than its in-flight window unacknowledged
        parsed = self._parse(topic)
        if parsed is None:
            return
        try:
            self._dispatch(parsed, topic, payload)
        except PayloadError as exc:
            self._malformed(f"payload:{parsed.kind}", topic, str(exc))
        except Exception:
            self._malformed("internal", topic, "ingest failed on this message")
            log.exception("ingest failed on a message", topic=topic)

    def _parse(self, topic: str) -> topics.ParsedTopic | None:
        parsed = self._topics.get(topic)
        if parsed is not None:
            return parsed
        try:
            parsed = topics.parse(topic)
        except topics.TopicError as exc:
            self._malformed("topic", topic, str(exc))
            return None
        if parsed.station != self.station:
            self._malformed("topic", topic, f"station {parsed.station!r} is not {self.station!r}")
            return None
        if len(self._topics) >= TOPIC_CACHE_SIZE:
            self._topics.clear()
        self._topics[topic] = parsed
        return parsed

    def _dispatch(self, parsed: topics.ParsedTopic, topic: str, payload: bytes) -> None:
        kind = parsed.kind
        if kind == "telemetry":
            assert parsed.pile is not None and parsed.port is not None
            self._on_telemetry(parsed.pile, parsed.port, topic, Telemetry.from_json(payload))
        elif kind == "pile_status":
            assert parsed.pile is not None
            self._on_pile_status(parsed.pile, PileStatus.from_json(payload))
        elif kind == "gw_status":
            assert parsed.gateway is not None
            self._on_gateway_status(parsed.gateway, GatewayStatus.from_json(payload))
        elif kind == "event":
            assert parsed.pile is not None
            self._on_event(parsed.pile, topic, PileEvent.from_json(payload))
        elif kind == "cmd_result":
            assert parsed.pile is not None and parsed.port is not None
            self._on_result(parsed.pile, parsed.port, CommandResult.from_json(payload))
        else:
            self.counts["own_commands"] += 1  # our own cmd messages, echoed by the subscription

    def _malformed(self, reason: str, topic: str, error: str) -> None:
        self.malformed[reason] = self.malformed.get(reason, 0) + 1
        self._warn.warn(
            reason, "malformed message dropped", reason=reason, topic=topic[:200], error=error[:300]
        )

    def _notify(self, what: str, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except Exception as exc:
            self.counts["listener_errors"] += 1
            self._warn.warn(f"listener:{what}", "listener failed", call=what, error=repr(exc)[:300])

    # -- telemetry ---------------------------------------------------------------------------

    def _on_telemetry(self, pile: str, port: int, topic: str, reading: Telemetry) -> None:
        if self._from_foreign_gateway(pile) or not self._telemetry.accept(
            topic, reading.session, reading.seq
        ):
            return
        batch = self._batch
        if self.store_telemetry:
            batch.rows.append(_telemetry_row(self.station, pile, port, reading))
        key = (pile, port)
        if reading.ts >= self._latest_ts.get(key, 0):
            self._latest_ts[key] = reading.ts
            code = self._port_code(pile, reading)
            self._port_status.setdefault(pile, {})[port] = code
            if self.store_telemetry:
                batch.ports[key] = (reading, code)
                batch.piles[pile] = reading
        self._notify("on_telemetry", self._listener.on_telemetry, pile, port, reading)
        if len(batch.rows) >= self._flush_rows:
            self._kick.set()

    def _port_code(self, pile: str, reading: Telemetry) -> int:
        if self._pile_state.get(pile) in NO_LIVE_DATA:
            return OFFLINE
        if reading.fault != "none":
            return FAULT
        return PORT_STATUS.get(reading.state, OFFLINE)

    def _pile_code(self, pile: str) -> int:
        state = self._pile_state.get(pile, "online")  # no status yet: judge by its ports
        if state != "online":
            return FAULT if state in ("faulted", "comm_fault") else OFFLINE
        codes = self._port_status.get(pile, {}).values()
        return FAULT if FAULT in codes else IN_USE if IN_USE in codes else IDLE

    def _pile_live_rows(self, batch: _Batch) -> list[tuple[Any, ...]]:
        return [
            (pile, r.temperature_C, self._pile_code(pile), iso_ms(r.ts)) for pile, r in batch.piles.items()
        ]

    # -- status ------------------------------------------------------------------------------

    def _on_pile_status(self, pile: str, status: PileStatus) -> None:
        gateway = self._gateways.get(self._pile_gateway.get(pile, ""))
        if gateway is not None and gateway.state != "online":
            self.counts["ignored_status"] += 1  # a stale retained status of a gateway that is down
            return
        if status.state in NO_LIVE_DATA:
            self._port_status.pop(pile, None)
        self._set_state(pile, status.state)
        self._queue_op(
            partial(
                _apply_pile_status,
                station=self.station,
                pile_no=pile,
                status=status,
                gateway=self._pile_gateway.get(pile),
                pile_code=self._pile_code(pile),
                now_iso=iso_ms(self._clock_ms()),
            )
        )

    def _on_gateway_status(self, gw: str, status: GatewayStatus) -> None:
        known = self._gateways.get(gw)
        if known is not None and status.session < known.session:
            self.counts["ignored_status"] += 1  # e.g. the will of a connection already replaced
            return
        if status.state == "online":
            self._gateways[gw] = _Gateway("online", status.session, self._claim_piles(gw, status.piles))
            return
        piles = tuple(p for p, g in self._pile_gateway.items() if g == gw)
        self._gateways[gw] = _Gateway(status.state, status.session, piles)
        for pile in piles:
            self._port_status.pop(pile, None)
            self._set_state(pile, "offline")
        if piles:
            self._queue_op(
                partial(
                    stations.piles_offline, pile_nos=piles, now=iso_ms(self._clock_ms()), station=self.station
                )
            )
        log.info("gateway down: its piles are offline", gateway=gw, state=status.state, piles=list(piles))

    def _claim_piles(self, gw: str, piles: tuple[str, ...]) -> tuple[str, ...]:
        """The birth's piles that are ``gw``'s: those bound to it, and unbound ones, which bind to it
        now; a claim on a pile bound to another gateway is ignored and counted."""
        mine: list[str] = []
        for pile in piles:
            owner = self._pile_gateway.setdefault(pile, gw)
            if owner != gw:
                self.counts["foreign_gateway"] += 1
                self._warn.warn(
                    f"foreign:{gw}", "gateway claims a pile bound to another gateway: ignored",
                    gateway=gw, pile=pile, bound_to=owner,
                )  # fmt: skip
                continue
            mine.append(pile)
        if mine:
            self._queue_op(
                partial(stations.bind_gateway, gateway=gw, pile_nos=tuple(mine), station=self.station)
            )
        return tuple(mine)

    def _queue_op(self, op: Callable[[Db], None]) -> None:
        """A status change for the next batch (unless another process stores the statuses)."""
        if self.store_status:
            self._batch.ops.append(op)

    def bind(self, pile_no: str, gateway: str | None) -> None:
        """An operator bound ``pile_no`` to ``gateway`` (None: to the next gateway that reports it)."""
        if gateway is None:
            self._pile_gateway.pop(pile_no, None)
        else:
            self._pile_gateway[pile_no] = gateway
        log.info("pile gateway set by an operator", pile=pile_no, gateway=gateway)

    def _from_foreign_gateway(self, pile: str) -> bool:
        """Whether a message about ``pile`` cannot come from its gateway, which is known to be down
        (count it); topics name the pile, not the gateway, so that is all ingest can tell."""
        gateway = self._gateways.get(self._pile_gateway.get(pile, ""))
        if gateway is None or gateway.state == "online":
            return False
        self.counts["foreign_gateway"] += 1
        return True

    def _set_state(self, pile: str, state: str) -> None:
        if self._pile_state.get(pile) == state:
            return
        self._pile_state[pile] = state
        log.info("pile state", pile=pile, state=state)
        self._notify("on_pile_state", self._listener.on_pile_state, pile, state)

    # -- events and command results ----------------------------------------------------------

    def _on_event(self, pile: str, topic: str, event: PileEvent) -> None:
        if self._from_foreign_gateway(pile) or not self._events.accept(topic, event.session, event.seq):
            return
        self.counts["events"] += 1
        self._notify("on_pile_event", self._listener.on_pile_event, pile, event)

    def _on_result(self, pile: str, port: int, result: CommandResult) -> None:
        self.counts["command_results"] += 1
        self._notify("on_command_result", self._listener.on_command_result, pile, port, result)
        if self.commands is not None:
            self._notify("commands.on_result", self.commands.on_result, pile, port, result)


# ---- database functions (run on the store's writer thread, inside one transaction) -------------


def _write_batch(db: Db, *, station: str, batch: _Batch, piles: list[tuple[Any, ...]], now_iso: str) -> None:
    for op in batch.ops:
        _isolated(db, op)
    telemetry.insert_readings(db, batch.rows)
    ports = [
        (pile, str(port), r.voltage_V, r.current_A, r.power_W / 1000, r.temperature_C, r.energy_Wh,
         r.energy_Wh / 1000, code, _fault_type(r.fault), r.ts, iso_ms(r.ts))
        for (pile, port), (r, code) in batch.ports.items()
    ]  # fmt: skip
    telemetry.update_port_live(db, ports, now_iso, station)
    telemetry.update_pile_live(db, piles, now_iso, station)


def _isolated(db: Db, op: Callable[[Db], None]) -> None:
    """Run one status change in a savepoint: if it fails, the batch's telemetry is still stored."""
    db.execute("SAVEPOINT ingest_op")
    try:
        op(db)
    except DATABASE_ERRORS:
        db.execute("ROLLBACK TO ingest_op")
        log.exception("status change not stored", op=getattr(op, "func", op).__name__)
    db.execute("RELEASE ingest_op")


def _telemetry_row(station: str, pile: str, port: int, r: Telemetry) -> tuple[Any, ...]:
    return (station, pile, port, r.ts, r.session, r.seq, r.state, r.voltage_V, r.current_A, r.power_W,
            r.energy_Wh, r.temperature_C, r.fault, 1 if r.replayed else 0)  # fmt: skip


def _fault_type(fault: str) -> int:
    if fault.startswith("code_"):
        return int(fault[5:])
    return FAULT_TYPES.get(fault, 0)


def _apply_pile_status(
    db: Db,
    *,
    station: str,
    pile_no: str,
    status: PileStatus,
    gateway: str | None,
    pile_code: int,
    now_iso: str,
) -> None:
    """Register an unknown pile (when its kind is known) or update the live fields of a known one."""
    known = stations.pile_by_no(db, pile_no, station=station)
    online = status.state in ("online", "faulted")
    if known is None:
        if status.kind is None:
            return  # nothing to register it as yet; a later status with the identity will
        pile_id, total_ports = _register_pile(db, station, pile_no, status, gateway, now_iso), 0
    else:
        pile_id, total_ports = known
        stations.update_pile_identity(
            db,
            pile_id,
            online=online,
            firmware=status.firmware,
            vendor=status.vendor,
            gateway=gateway,
            now=now_iso,
        )
    stations.set_pile_status(db, pile_id, pile_code, iso_ms(status.ts))
    if status.ports is not None and status.ports > total_ports:
        stations.add_ports(db, pile_id, range(total_ports + 1, status.ports + 1), now_iso)
        stations.set_total_ports(db, pile_id, status.ports)
    if status.state in NO_LIVE_DATA:
        stations.ports_offline(db, pile_id, now_iso)


def _register_pile(
    db: Db,
    station: str,
    pile_no: str,
    status: PileStatus,
    gateway: str | None,
    now_iso: str,
) -> str:
    """Record a pile a gateway reports for the first time (its ports follow from its status)."""
    pile_type = PILE_TYPES[status.kind or "fast"]
    power_kw = status.rated_power_W / 1000 if status.rated_power_W else FALLBACK_POWER_KW[pile_type]
    pile_id = stations.create_pile(
        db,
        station_id=stations.station_id(db, station, now=now_iso),
        station=station,
        pile_no=pile_no,
        pile_type=pile_type,
        power_kw=power_kw,
        now=now_iso,
        online=status.state in ("online", "faulted"),
        extra={"manufacturer": status.vendor, "software_version": status.firmware, "gateway": gateway},
    )
    log.info("pile registered", pile=pile_no, type=pile_type, power_kw=power_kw, ports=status.ports)
    return pile_id
