"""Commands to piles: publish, persist, retry, and report each command's final outcome once.

Every attempt has its own unique id, a row in ``commands`` (status sent, accepted, done, rejected,
failed or expired; ``attempt`` counts from 1) and is published with QoS 1, never retained, to the
port's ``cmd`` topic with ``expires_at`` = the command's original expiry. ``accepted`` is
intermediate. An attempt that ends ``failed`` or ``expired``, has no final result within
``result_timeout_s``, or cannot be published (no broker connection) is retried with a NEW id
(``attempt + 1``) up to ``retries`` times while the original expiry has not passed, and until a
start is sent to the same port: a pending stop or start then ends ``expired`` (it was for the
port's previous segment; a retried stop would stop the new one, a retried start would start the
previous segment's charge, with its amount, after or instead of the new one). ``rejected``
is final at once: the pile or the gateway said no. ``done`` is final too, even when it answers an
attempt already given up on (the pile did it; a retry would only be refused). Then
:attr:`CommandSender.on_outcome` gets one :class:`CommandOutcome` per command. Results for unknown
ids, repeated results, and non-``done`` results of superseded attempts are counted and ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal, Protocol

import structlog

from central.adapters import command_log
from central.adapters.storage import Store
from protocols import topics
from protocols.payloads import CommandMessage, CommandResult, PayloadError

log = structlog.get_logger(__name__)

Op = Literal["start", "stop", "limit"]
FINAL_STATUSES = ("done", "rejected", "failed", "expired")
RECENT_IDS = 10_000  # finished command ids remembered to tell a duplicate result from an unknown one


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class CommandError(ValueError):
    """A command cannot be sent as asked (unknown op, bad params, pile id or port)."""


class CommandFenced(RuntimeError):
    """This instance no longer owns the station (its lease is lost): it must not command piles."""


class CommandPublisher(Protocol):
    """The MQTT side the sender needs (central.adapters.mqtt.CentralMqtt)."""

    @property
    def connected(self) -> bool: ...
    async def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None: ...
    async def wait_connected(self, timeout_s: float) -> None: ...


@dataclass(frozen=True)
class CommandOutcome:
    """A command's final outcome. ``command_id`` is the id :meth:`CommandSender.send` returned."""

    command_id: str
    pile_no: str
    port: int
    op: str
    params: Mapping[str, int]
    car: str | None
    status: str  # done | rejected | failed | expired
    reason: str | None
    attempts: int
    last_command_id: str = ""  # the id of the attempt that decided it


@dataclass
class _Command:
    first_id: str
    pile_no: str
    port: int
    op: Op
    params: dict[str, int]
    car: str | None
    topic: str
    expires_ms: int
    attempt: int = 0
    current_id: str = ""  # the attempt awaiting its result ("" between attempts)
    deadline_ms: int = 0
    sending: bool = False
    finished: bool = False
    ids: list[str] = field(default_factory=list)
    answered: set[str] = field(default_factory=set)  # ids with a final result or accepted
    accepted: set[str] = field(default_factory=set)


class CommandSender:
    """Sends commands and follows them to a final outcome; see the module docstring."""

    def __init__(
        self,
        mqtt: CommandPublisher,
        store: Store,
        station: str,
        *,
        clock_ms: Callable[[], int] = wall_ms,
        result_timeout_s: float = 10.0,
        retries: int = 2,
        retry_delay_s: float = 0.5,
        tick_s: float = 0.05,
        owns: Callable[[], bool] | None = None,
    ) -> None:
        """``owns``: whether this instance still owns the station (``central/adapters/lease.py:
        Leases.owns``); checked before every publish, a refusal is counted (``fenced``) and the
        attempt fails as unpublished."""
        if result_timeout_s <= 0 or retries < 0 or retry_delay_s < 0 or tick_s <= 0:
            raise ValueError("need result_timeout_s > 0, retries >= 0, retry_delay_s >= 0, tick_s > 0")
        self.station = topics.check_id("station", station)
        self._mqtt, self._store, self._clock_ms = mqtt, store, clock_ms
        self._owns = owns
        self._timeout_ms = round(result_timeout_s * 1000)
        self.retries, self._retry_delay_s, self._tick_s = retries, retry_delay_s, tick_s
        self.on_outcome: Callable[[CommandOutcome], None] | None = None
        self._pending: dict[str, _Command] = {}  # first id -> command
        self._by_id: dict[str, _Command] = {}  # every attempt id of a pending command
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        self._writes: set[Future[Any]] = set()
        self._timer: asyncio.Task[None] | None = None
        self.counts: dict[str, int] = {
            "commands": 0,
            "attempts": 0,
            "retries": 0,
            "publish_errors": 0,
            "timeouts": 0,
            "results": 0,
            "duplicates": 0,
            "unknown": 0,
            "late": 0,
            "store_errors": 0,
            "fenced": 0,
            **{f"outcome_{s}": 0 for s in FINAL_STATUSES},
        }

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the timer that gives up on attempts without a result."""
        if self._timer is None:
            self._timer = asyncio.get_running_loop().create_task(self._tick_loop(), name="command-timer")

    async def stop(self) -> None:
        """Stop the timer and pending retries; commands still open get no outcome."""
        tasks = [t for t in (self._timer, *self._tasks) if t is not None]
        self._timer = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        writes = [asyncio.wrap_future(w) for w in self._writes]
        await asyncio.gather(*writes, return_exceptions=True)

    def stats(self) -> dict[str, int]:
        return {**self.counts, "pending": len(self._pending)}

    # -- sending -----------------------------------------------------------------------------

    async def send(
        self,
        pile_no: str,
        port: int,
        op: Op,
        params: Mapping[str, int],
        *,
        car: str | None = None,
        expires_in_s: float = 30.0,
    ) -> str:
        """Send a command; returns its id at once after the first publish attempt.

        Raises :class:`CommandError` for a bad op, params, pile id or port. A publish that fails
        is not an error here: it is retried, and the final outcome goes to ``on_outcome``.
        """
        topic = _checked(self.station, pile_no, port, op, params, expires_in_s)
        if op == "start":
            self._supersede(pile_no, port)
        now = self._clock_ms()
        cmd = _Command(
            _new_id(),
            pile_no,
            port,
            op,
            dict(params),
            car,
            topic,
            expires_ms=now + round(expires_in_s * 1000),
        )
        self._pending[cmd.first_id] = cmd
        self.counts["commands"] += 1
        await self._attempt(cmd, cmd.first_id)
        return cmd.first_id

    def _supersede(self, pile_no: str, port: int) -> None:
        """End the retries of the port's pending stops and starts: they were for its previous
        segment; a stop retried after this start would stop the new one, a start would run the
        previous segment's charge (its amount) after or instead of the new one."""
        for cmd in list(self._pending.values()):
            if (cmd.pile_no, cmd.port) == (pile_no, port) and cmd.op in ("stop", "start"):
                reason = "superseded by a start on the port"
                self._finish(cmd, "expired", reason, cmd.current_id or cmd.ids[-1])

    async def _attempt(self, cmd: _Command, command_id: str | None = None) -> None:
        cid = command_id or _new_id()
        cmd.attempt += 1
        cmd.current_id, cmd.sending = cid, True
        cmd.ids.append(cid)
        self._by_id[cid] = cmd
        self.counts["attempts"] += 1
        message = CommandMessage(cid, cmd.op, cmd.expires_ms, cmd.params)
        try:
            self._fence()
            await self._insert(cmd, cid)
            await self._publish(cmd, message.to_json())
        except Exception as exc:
            self.counts["publish_errors"] += 1
            error = str(exc) or type(exc).__name__
            log.warning("command not published", pile=cmd.pile_no, id=cid, attempt=cmd.attempt, error=error)
            if cmd.current_id == cid:  # not already answered meanwhile
                cmd.sending = False
                self._attempt_ended(
                    cmd, cid, "failed", f"not published: {error}", delay_s=self._retry_delay_s
                )
            return
        finally:
            if cmd.current_id == cid:  # also when cancelled: the timer then gives up on it
                cmd.sending = False
        log.info("command sent", pile=cmd.pile_no, port=cmd.port, op=cmd.op, id=cid, attempt=cmd.attempt)

    def _fence(self) -> None:
        """Refuse (counted) once the station's lease is lost: a stale owner during a lease overlap."""
        if self._owns is not None and not self._owns():
            self.counts["fenced"] += 1
            raise CommandFenced(f"station {self.station} is no longer owned by this instance")

    async def _publish(self, cmd: _Command, payload: bytes) -> None:
        if not self._mqtt.connected and cmd.attempt > 1:  # a retry may wait for the broker
            wait_s = min(self._timeout_ms, cmd.expires_ms - self._clock_ms()) / 1000
            with contextlib.suppress(TimeoutError):
                await self._mqtt.wait_connected(max(wait_s, 0.0))
        self._fence()  # again: a retry may have waited for the broker
        cmd.deadline_ms = self._clock_ms() + self._timeout_ms  # the result is due from now on
        await self._mqtt.publish(cmd.topic, payload, qos=1, retain=False)

    async def _insert(self, cmd: _Command, cid: str) -> None:
        row = {
            "id": cid,
            "station": self.station,
            "pile_no": cmd.pile_no,
            "port": cmd.port,
            "op": cmd.op,
            "params": json.dumps(cmd.params, separators=(",", ":")),
            "car": cmd.car,
            "status": "sent",
            "reason": None,
            "attempt": cmd.attempt,
            "created_ms": self._clock_ms(),
            "expires_ms": cmd.expires_ms,
            "updated_ms": None,
        }
        try:
            await self._store.write(partial(command_log.insert_command, row=row))
        except Exception:  # the audit row is not worth losing the command for
            self.counts["store_errors"] += 1
            log.exception("command row not stored", id=cid)

    # -- results -----------------------------------------------------------------------------

    def on_result(self, pile_no: str, port: int, result: CommandResult) -> None:
        """A ``cmd/result`` from the gateway (called by ingest on the loop); never raises."""
        self.counts["results"] += 1
        cmd = self._by_id.get(result.id)
        if cmd is None or (cmd.pile_no, cmd.port) != (pile_no, port):
            self.counts["duplicates" if result.id in self._recent else "unknown"] += 1
            if result.id in self._recent and result.status in FINAL_STATUSES:
                self._mark(result.id, result.status, result.reason)  # keep the audit row true
            return
        if result.status == "accepted":
            self._on_accepted(cmd, result)
            return
        if result.id in cmd.answered - cmd.accepted:
            self.counts["duplicates"] += 1
            return
        cmd.answered.add(result.id)
        cmd.accepted.discard(result.id)
        if result.status == "done":
            self._finish(cmd, "done", result.reason, result.id)
        elif result.id != cmd.current_id:
            self.counts["late"] += 1  # a superseded attempt's failure changes nothing
            self._mark(result.id, result.status, result.reason)
        elif result.status == "rejected":
            self._finish(cmd, "rejected", result.reason, result.id)
        else:
            self._attempt_ended(cmd, result.id, result.status, result.reason, delay_s=0.0)

    def _on_accepted(self, cmd: _Command, result: CommandResult) -> None:
        if result.id in cmd.answered:
            self.counts["duplicates"] += 1
            return
        cmd.answered.add(result.id)
        cmd.accepted.add(result.id)
        self._mark(result.id, "accepted", result.reason)

    def _attempt_ended(
        self, cmd: _Command, cid: str, status: str, reason: str | None, *, delay_s: float
    ) -> None:
        """The current attempt failed: retry with a new id if allowed, else the final outcome."""
        if cmd.finished:
            return
        cmd.current_id = ""
        now = self._clock_ms()
        if cmd.attempt <= self.retries and now < cmd.expires_ms:
            self._mark(cid, status, reason)
            self.counts["retries"] += 1
            self._spawn(self._retry(cmd, delay_s), f"command-retry:{cmd.first_id}")
            return
        if now >= cmd.expires_ms and status == "failed":
            status, reason = "expired", f"{reason}; the command expired before it was done"
        self._finish(cmd, status, reason, cid)

    async def _retry(self, cmd: _Command, delay_s: float) -> None:
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        if not cmd.finished:
            await self._attempt(cmd)

    def _finish(self, cmd: _Command, status: str, reason: str | None, last_id: str) -> None:
        if cmd.finished:
            return
        self._mark(last_id, status, reason)
        cmd.finished, cmd.current_id = True, ""
        self._pending.pop(cmd.first_id, None)
        for cid in cmd.ids:
            self._by_id.pop(cid, None)
            self._recent[cid] = None
        while len(self._recent) > RECENT_IDS:
            self._recent.popitem(last=False)
        self.counts[f"outcome_{status}"] += 1
        level = log.info if status == "done" else log.warning
        level(
            "command finished",
            pile=cmd.pile_no,
            port=cmd.port,
            op=cmd.op,
            id=cmd.first_id,
            status=status,
            reason=reason,
            attempts=cmd.attempt,
        )
        outcome = CommandOutcome(
            cmd.first_id,
            cmd.pile_no,
            cmd.port,
            cmd.op,
            dict(cmd.params),
            cmd.car,
            status,
            reason,
            cmd.attempt,
            last_id,
        )
        if self.on_outcome is not None:
            try:
                self.on_outcome(outcome)
            except Exception:
                log.exception("on_outcome failed", id=cmd.first_id)

    # -- timer -------------------------------------------------------------------------------

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self._tick_s)
            self.expire_overdue()

    def expire_overdue(self) -> None:
        """Give up on every attempt whose result is overdue (the timer calls this)."""
        now = self._clock_ms()
        for cmd in list(self._pending.values()):
            if cmd.current_id and not cmd.sending and now >= cmd.deadline_ms:
                self.counts["timeouts"] += 1
                self._attempt_ended(
                    cmd,
                    cmd.current_id,
                    "failed",
                    f"no result within {self._timeout_ms / 1000:g} s",
                    delay_s=0.0,
                )

    # -- bookkeeping -------------------------------------------------------------------------

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _mark(self, cid: str, status: str, reason: str | None) -> None:
        """Update an attempt's row (queued on the writer thread; failures are logged)."""
        try:
            future = self._store.submit(
                partial(
                    command_log.update_command, cid=cid, status=status, reason=reason, now_ms=self._clock_ms()
                )
            )
        except Exception:
            self.counts["store_errors"] += 1
            log.exception("command row not updated", id=cid)
            return
        self._writes.add(future)
        future.add_done_callback(self._write_done)

    def _write_done(self, future: Future[Any]) -> None:
        self._writes.discard(future)
        if not future.cancelled() and future.exception() is not None:
            self.counts["store_errors"] += 1
            log.error("command row not updated", error=str(future.exception()))


def _new_id() -> str:
    return uuid.uuid4().hex


def _checked(
    station: str, pile_no: str, port: int, op: str, params: Mapping[str, int], expires_in_s: float
) -> str:
    """The command topic, after checking everything the gateway would reject as malformed."""
    if not expires_in_s > 0:
        raise CommandError(f"expires_in_s must be positive, got {expires_in_s}")
    try:
        topic = topics.cmd(station, pile_no, port)
        probe = CommandMessage("probe", op, 946_684_800_000, dict(params))  # type: ignore[arg-type]
        CommandMessage.from_json(probe.to_json())
    except (topics.TopicError, PayloadError) as exc:
        raise CommandError(str(exc)) from None
    return topic
