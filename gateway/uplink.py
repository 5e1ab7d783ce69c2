"""The gateway's MQTT uplink: drains the outbox to the broker, oldest first, surviving broker outages.

The connection is a :class:`gateway.mqtt_link.MqttLink` (MQTT 3.1.1 as an asyncio protocol, built
for a thousand publishes and PUBACKs a second); its keepalive runs from the connection task.
Connecting is a cancellable coroutine with a timeout, so :meth:`Uplink.start` and the loop never
wait on an unreachable broker.

Delivery contract:

* rows are published in outbox order with at most ``max_inflight`` unacknowledged at once; a row
  is deleted only when the broker acknowledged it (PUBACK; QoS 0 once written to the socket), and
  deletes are batched (every 50 ms or 500 acks);
* every connection is a NEW link with ``clean_session=True`` that keeps no queue of its own: after a
  reconnect the outbox is resent from its oldest row. Only rows that were in flight
  when the connection dropped can arrive twice; the central de-duplicates them by (session, seq);
* telemetry created before the current connection started is sent with ``"replayed":true`` added;
* each connection gets a new session (``outbox.next_session()``, taken before the first attempt and
  kept across failed attempts): ``will(session)`` is the last will, ``on_connect(session)`` returns
  birth/status messages published before anything from the outbox (queued status rows for the same
  topics are discarded: the birth is newer);
* reconnects use capped, jittered doubling in one named, cancellable task; :meth:`Uplink.stop`
  flushes, then sends DISCONNECT so the broker does not publish the will;
* a row the broker will not take would otherwise block everything behind it: MQTT 3.1.1 lets a
  broker close the connection on a publish it refuses (Mosquitto 2.0.11 does so after an ACL
  denial). A row that was the first one sent on ``STUCK_CONNECTIONS`` connections in a row, each
  ending without its PUBACK, or that the link refuses outright, is moved to the outbox's quarantine
  table (logged at ERROR, counted as ``quarantined``), never silently deleted. So is a row MQTT
  cannot carry at all (a topic longer than 65535 bytes, a wildcard in the topic).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog

from gateway.mqtt_link import (
    CONNACK_REASONS,
    SUBACK_FAILURE,
    InvalidPublishError,
    LinkCallbacks,
    MqttLink,
    MqttLinkError,
    Will,
    connect_packet,
)
from gateway.outbox import Outbox, OutMessage, StoredMessage, wall_ms

log = structlog.get_logger(__name__)

ACK_FLUSH_INTERVAL_S = 0.05
ACK_FLUSH_COUNT = 500
CONNECT_TIMEOUT_S = 10.0
MISC_INTERVAL_S = 1.0
DISCONNECT_TIMEOUT_S = 2.0
STUCK_CONNECTIONS = 10  # connections in a row that ended without acking the same first row
_REPLAYED = b'"replayed":true}'


class UplinkError(Exception):
    """The uplink cannot do what was asked."""


class ConnectFailedError(UplinkError):
    """A connection attempt failed (refused, timed out or rejected by CONNACK)."""


@dataclass(frozen=True)
class UplinkConfig:
    """Broker connection settings of one gateway."""

    host: str
    port: int
    client_id: str
    username: str | None = None
    password: str | None = None
    keepalive_s: int = 15
    max_inflight: int = 1000
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0
    tls: bool = False

    def __post_init__(self) -> None:
        problems = [
            text
            for bad, text in (
                (not self.host, "host is empty"),
                (not 0 < self.port < 65536, f"port {self.port} outside 1..65535"),
                (not self.client_id, "client_id is empty"),
                (not 5 <= self.keepalive_s <= 65535, "keepalive_s outside 5..65535"),
                (not 1 <= self.max_inflight <= 20_000, "max_inflight outside 1..20000"),
                (
                    not 0 < self.reconnect_min_s <= self.reconnect_max_s,
                    "need 0 < reconnect_min_s <= reconnect_max_s",
                ),
            )
            if bad
        ]
        if problems:
            raise ValueError("UplinkConfig: " + "; ".join(problems))


def with_replayed(payload: bytes) -> bytes:
    """A compact JSON object payload with ``"replayed":true`` added (unchanged if not an object)."""
    body = payload.rstrip()
    if not body.startswith(b"{") or not body.endswith(b"}"):
        return payload
    if body[1:-1].strip() == b"":
        return b"{" + _REPLAYED
    return body[:-1] + b"," + _REPLAYED


def backoff_s(failures: int, min_s: float, max_s: float, rand: Callable[[], float]) -> float:
    """Delay before attempt ``failures + 1``: doubling from min_s, capped at max_s, jittered -50%..0."""
    base = min(max_s, min_s * 2.0 ** min(failures - 1, 30))
    return base * (0.5 + rand() / 2)


class Uplink:
    """Publishes the outbox to one MQTT broker; see the module docstring for the contract."""

    def __init__(
        self,
        config: UplinkConfig,
        outbox: Outbox,
        *,
        will: Callable[[int], OutMessage],
        on_connect: Callable[[int], Sequence[OutMessage]],
        on_message: Callable[[str, bytes], None] | None = None,
        subscriptions: Sequence[tuple[str, int]] = (),
        wall_ms: Callable[[], int] = wall_ms,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.config = config
        self._outbox = outbox
        self._will, self._on_connect, self._on_message = will, on_connect, on_message
        self._subscriptions = list(subscriptions)
        self._wall_ms, self._rand = wall_ms, rand
        self._log = log.bind(client_id=config.client_id, broker=f"{config.host}:{config.port}")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._link: MqttLink | None = None
        self._connack: asyncio.Future[int] | None = None
        self._wake = asyncio.Event()
        self._stop_requested = asyncio.Event()
        self._progress = asyncio.Event()
        self._connected = False  # CONNACK seen and the connection not (yet) known to be gone
        self._live = False  # a connection was made and _after_connection has not run for it
        self._session = 0
        self._pending_session: int | None = None
        self._connect_ms = 0
        self._cursor = 0
        self._more = True
        self._inflight: dict[int, int] = {}  # packet id -> outbox row id (0: not an outbox row)
        self._acked_ids: list[int] = []
        self._ack_timer: asyncio.TimerHandle | None = None
        self._ack_due = False
        self._flush_eagerly = False
        self._counts = {"sent": 0, "acked": 0, "replayed": 0, "reconnects": 0, "quarantined": 0}
        self._connections = 0
        self._head: int | None = None  # first outbox row published on this connection
        self._head_acked = False
        self._stuck: tuple[int, int] = (0, 0)  # (row id, connections that ended without its ack)

    # -- public API --------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the connection task and return at once."""
        if self._task is not None:
            raise UplinkError("uplink already started")
        self._stop_requested.clear()
        self._flush_eagerly = False
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._run(), name=f"uplink:{self.config.client_id}")

    def notify(self) -> None:
        """New rows were appended to the outbox: send them."""
        self._more = True
        self._wake.set()

    def reserve_session(self) -> int:
        """The session the next connection will open, allocated now if need be.

        The gateway stamps what it reads before its first connection with this number, so those
        messages belong to the session that first connection opens.
        """
        if self._pending_session is None:
            self._pending_session = self._outbox.next_session()
        return self._pending_session

    @property
    def session(self) -> int:
        """The current (or last) connection's session; 0 before the first connection."""
        return self._session

    @property
    def connected(self) -> bool:
        return self._connected

    def stats(self) -> dict[str, object]:
        """connected, session, sent, acked, inflight, reconnects, replayed, quarantined."""
        return {
            "connected": self._connected,
            "session": self._session,
            "inflight": len(self._inflight),
            **self._counts,
        }

    async def stop(self, final: Sequence[OutMessage] = (), flush_timeout_s: float = 5.0) -> None:
        """Append ``final``, flush the outbox (while connected, up to the timeout), then DISCONNECT.

        A clean DISCONNECT means the broker does not publish the will. Whatever was not
        acknowledged stays in the outbox for the next start.
        """
        if final:
            self._outbox.append_many(final)
            self.notify()
        if self._task is None:
            return
        self._flush_eagerly = True
        self._wake.set()
        await self._wait_drained(flush_timeout_s)
        self._stop_requested.set()
        self._wake.set()
        await self._finish_task()
        self._flush_acks()

    async def _wait_drained(self, timeout_s: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self._connected and not self._drained() and loop.time() < deadline:
            self._progress.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(deadline - loop.time()):
                    await self._progress.wait()

    def _drained(self) -> bool:
        return not self._inflight and self._outbox.depth() == 0

    async def _finish_task(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        if not self._connected:  # connecting or backing off: nothing to say goodbye to
            task.cancel()
        done, _ = await asyncio.wait({task}, timeout=DISCONNECT_TIMEOUT_S + 1.0)
        if not done:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    # -- connection task ---------------------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        try:
            while not self._stop_requested.is_set():
                try:
                    await self._connect()
                except Exception as exc:  # refused, unreachable, bad TLS, a failing will()...
                    failures += 1
                    self._log_failure(failures, exc)
                    await self._pause(failures)
                    continue
                failures = 1  # a lost connection waits like a first failure before retrying
                try:
                    await self._serve()
                except Exception:
                    self._log.exception("uplink send loop failed; reconnecting")
                self._after_connection()
                if not self._stop_requested.is_set():
                    await self._pause(failures)
        finally:
            self._after_connection()

    def _log_failure(self, failures: int, exc: BaseException) -> None:
        level = self._log.warning if failures == 1 else self._log.debug
        level("broker connection failed", attempt=failures, error=str(exc) or type(exc).__name__)

    async def _pause(self, failures: int) -> None:
        """Back off before the next attempt, unless stop() is called meanwhile."""
        cfg = self.config
        delay_s = backoff_s(failures, cfg.reconnect_min_s, cfg.reconnect_max_s, self._rand)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay_s):
                await self._stop_requested.wait()

    async def _connect(self) -> None:
        if self._pending_session is None:
            self._pending_session = self._outbox.next_session()
        session = self._pending_session
        link = MqttLink(self._callbacks, self.config.keepalive_s)
        self._link = link
        self._connack = asyncio.get_running_loop().create_future()
        try:
            await self._open(link, session)
            code = await self._await_connack()
            if code != 0:
                reason = CONNACK_REASONS.get(code, f"return code {code}")
                raise ConnectFailedError(f"broker refused the connection: {reason}")
            self._on_connected(link, session)
        except BaseException:
            self._after_connection()  # closes the socket (no DISCONNECT) and resets the state
            raise

    async def _open(self, link: MqttLink, session: int) -> None:
        """TCP (and TLS) connect and send CONNECT, within CONNECT_TIMEOUT_S."""
        cfg = self.config
        will = self._will(session)
        packet = connect_packet(
            cfg.client_id,
            cfg.keepalive_s,
            Will(will.topic, will.payload, will.qos, will.retain),
            cfg.username,
            cfg.password,
        )
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                await link.open(cfg.host, cfg.port, tls=cfg.tls, connect=packet)
        except TimeoutError:
            raise ConnectFailedError(f"no TCP connection within {CONNECT_TIMEOUT_S:g} s") from None

    async def _await_connack(self) -> int:
        assert self._connack is not None
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                return await self._connack
        except TimeoutError:
            raise ConnectFailedError("no CONNACK from the broker") from None

    def _detach(self, link: MqttLink) -> None:
        """Close the connection of ``link`` without DISCONNECT (the will fires)."""
        link.abort()
        if self._link is link:
            self._link = None

    def _on_connected(self, link: MqttLink, session: int) -> None:
        self._session, self._pending_session = session, None
        self._connected = self._live = True
        self._connect_ms = self._wall_ms()
        self._cursor, self._more = 0, True
        self._inflight.clear()
        if self._connections:
            self._counts["reconnects"] += 1
        self._connections += 1
        self._log.info("broker connected", session=session)
        if self._subscriptions:
            link.subscribe(self._subscriptions)
        self._publish_birth(link, session)

    def _publish_birth(self, link: MqttLink, session: int) -> None:
        try:
            birth = list(self._on_connect(session))
        except Exception:
            self._log.exception("on_connect callback failed; no birth messages")
            birth = []
        self._outbox.discard_status(m.topic for m in birth if m.kind == "status")
        for message in birth:
            self._publish(link, message, message.payload, row_id=0)

    async def _serve(self) -> None:
        """Send, flush acks and keep alive until the connection ends (or stop() ends it)."""
        loop = asyncio.get_running_loop()
        next_misc = loop.time() + MISC_INTERVAL_S
        disconnect_deadline: float | None = None
        while self._connected:
            if self._stop_requested.is_set() and disconnect_deadline is None:
                disconnect_deadline = self._begin_disconnect(loop)
            wake_at = next_misc if disconnect_deadline is None else disconnect_deadline
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, wake_at - loop.time())):
                    await self._wake.wait()
            self._wake.clear()
            if disconnect_deadline is not None and loop.time() >= disconnect_deadline:
                self._log.warning("clean disconnect timed out")
                break
            if loop.time() >= next_misc:
                next_misc = loop.time() + MISC_INTERVAL_S
                self._keepalive()
            self._maybe_flush_acks()
            self._fill_window()

    def _begin_disconnect(self, loop: asyncio.AbstractEventLoop) -> float:
        if self._link is not None:
            self._link.disconnect()
        return loop.time() + DISCONNECT_TIMEOUT_S

    def _keepalive(self) -> None:
        if self._link is not None:
            self._link.keepalive()  # a late PINGRESP ends the connection through on_lost

    def _after_connection(self) -> None:
        """The connection ended (or never started): flush acks, forget in-flight rows, clean up."""
        was_connected, self._live = self._live, False
        self._connected = False
        self._flush_acks()
        if was_connected and not self._stop_requested.is_set():
            self._check_stuck_head()
        self._head, self._head_acked = None, False
        self._inflight.clear()
        self._cursor = 0
        if self._link is not None:
            self._detach(self._link)
        self._connack = None
        self._progress.set()
        if was_connected and not self._stop_requested.is_set():
            self._log.warning("broker connection lost", session=self._session)
        elif was_connected:
            self._log.info("broker disconnected", session=self._session)

    def _check_stuck_head(self) -> None:
        """Quarantine the first row of the connection if it blocked STUCK_CONNECTIONS in a row."""
        if self._head is None or self._head_acked:
            self._stuck = (0, 0)
            return
        row_id, count = self._stuck
        count = count + 1 if row_id == self._head else 1
        self._stuck = (self._head, count)
        if count >= STUCK_CONNECTIONS:
            self._quarantine(self._head, f"no PUBACK on {count} connections in a row")
            self._stuck = (0, 0)

    def _quarantine(self, row_id: int, reason: str) -> None:
        try:
            moved = self._outbox.quarantine(row_id, reason)
        except Exception:
            self._log.exception("quarantining a row failed", row=row_id)
            return
        if moved:
            self._counts["quarantined"] += 1
            self._log.error("message quarantined: the broker will not take it", row=row_id, reason=reason)

    # -- sending -----------------------------------------------------------------------------

    def _fill_window(self) -> None:
        link = self._link
        space = self.config.max_inflight - len(self._inflight)
        if link is None or not self._connected or not self._more or space <= 0:
            return
        if self._stop_requested.is_set():
            return
        if self._inflight and space < max(1, self.config.max_inflight // 8):
            return  # wait for a bigger gap: fewer, larger reads
        rows = self._outbox.peek(space, after_id=self._cursor)
        self._more = len(rows) == space
        if rows and self._head is None:
            self._head = rows[0].id
        for row in rows:
            self._cursor = row.id
            if not self._publish(link, row, self._wire_payload(row), row_id=row.id):
                break

    def _wire_payload(self, row: StoredMessage) -> bytes:
        if row.kind == "telemetry" and row.created_ms < self._connect_ms:
            self._counts["replayed"] += 1
            return with_replayed(row.payload)
        return row.payload

    def _publish(self, link: MqttLink, message: OutMessage, payload: bytes, row_id: int) -> bool:
        """Publish one message; False if the connection is gone."""
        try:
            mid = link.publish(message.topic, payload, message.qos, message.retain)
        except InvalidPublishError as exc:  # a row MQTT cannot carry must not wedge us
            self._log.error("MQTT cannot carry a message", topic=message.topic[:200], error=str(exc))
            if row_id:
                self._quarantine(row_id, f"MQTT cannot carry it: {exc}")
            return True
        except MqttLinkError as exc:
            self._mark_lost(f"publish: {exc}")
            return False
        self._counts["sent"] += 1
        if message.qos:
            self._inflight[mid] = row_id
        elif row_id:
            self._row_done(row_id)
        else:
            self._counts["acked"] += 1
        return True

    # -- acknowledgements --------------------------------------------------------------------

    def _maybe_flush_acks(self) -> None:
        if self._acked_ids and (
            self._ack_due or self._flush_eagerly or len(self._acked_ids) >= ACK_FLUSH_COUNT
        ):
            self._flush_acks()

    def _flush_acks(self) -> None:
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None
        self._ack_due = False
        if not self._acked_ids:
            return
        ids, self._acked_ids = self._acked_ids, []
        try:
            self._outbox.ack(ids)
        except Exception:
            self._log.exception("outbox ack failed; will retry", count=len(ids))
            self._acked_ids = ids + self._acked_ids
            return
        self._progress.set()

    def _ack_timer_fired(self) -> None:
        self._ack_timer = None
        self._ack_due = True
        self._wake.set()

    # -- link callbacks: run on the loop (from the link's protocol methods); never raise -----

    @property
    def _callbacks(self) -> LinkCallbacks:
        return LinkCallbacks(
            on_connack=self._on_connack,
            on_puback=self._on_puback,
            on_message=self._on_link_message,
            on_suback=self._on_suback,
            on_lost=self._on_lost,
        )

    def _on_connack(self, link: MqttLink, code: int) -> None:
        if link is self._link and self._connack is not None and not self._connack.done():
            self._connack.set_result(code)

    def _on_lost(self, link: MqttLink, why: str) -> None:
        if link is self._link:
            self._mark_lost(why)

    def _mark_lost(self, why: str) -> None:
        self._log.debug("connection ended", reason=why)
        self._connected = False
        if self._connack is not None and not self._connack.done():
            self._connack.set_exception(ConnectFailedError(f"connection closed: {why}"))
        self._wake.set()

    def _on_puback(self, link: MqttLink, mid: int) -> None:
        if link is not self._link:
            return
        row_id = self._inflight.pop(mid, None)
        if row_id is None:
            return
        if row_id:
            self._row_done(row_id)
        else:
            self._counts["acked"] += 1
        if self._flush_eagerly or not self._inflight or self._more:
            self._wake.set()

    def _row_done(self, row_id: int) -> None:
        """The broker has the row (PUBACK; QoS 0: handed to the connection): delete it soon."""
        self._counts["acked"] += 1
        self._head_acked = self._head_acked or row_id == self._head
        self._acked_ids.append(row_id)
        if len(self._acked_ids) >= ACK_FLUSH_COUNT:
            self._wake.set()
        elif self._ack_timer is None and self._loop is not None:
            self._ack_timer = self._loop.call_later(ACK_FLUSH_INTERVAL_S, self._ack_timer_fired)

    def _on_link_message(self, link: MqttLink, topic: str, payload: bytes) -> None:
        if link is self._link and self._on_message is not None and self._loop is not None:
            self._loop.call_soon(self._deliver, topic, payload)

    def _deliver(self, topic: str, payload: bytes) -> None:
        assert self._on_message is not None
        try:
            self._on_message(topic, payload)
        except Exception:
            self._log.exception("on_message callback failed", topic=topic)

    def _on_suback(self, link: MqttLink, mid: int, codes: list[int]) -> None:
        for (topic, _qos), code in zip(self._subscriptions, codes, strict=False):
            if code == SUBACK_FAILURE:
                self._log.error("subscription refused by the broker", topic=topic)
