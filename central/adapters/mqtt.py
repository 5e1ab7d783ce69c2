"""The central service's MQTT client: subscribes to the station's tree and publishes commands.

paho-mqtt runs on the asyncio loop without its network thread (paho's ``loop_asyncio`` pattern,
as the gateway's uplink does): the socket is registered with ``loop.add_reader``/``add_writer``
and ``loop_misc`` (keepalive) runs from the connection task. Only the blocking TCP/TLS connect
runs in a short-lived daemon thread, so neither :meth:`CentralMqtt.start` nor the loop ever waits
on an unreachable broker.

* One named, cancellable connection task reconnects with capped, jittered doubling.
* Every connection uses a new paho client (paho never resends a publish of a dead connection;
  the command layer decides what to retry) with ``clean_session=False`` by default, so the
  broker keeps queueing QoS 1 telemetry for the central while it is away. Subscriptions (QoS 1)
  are made again on every connect; :attr:`CentralMqtt.connected` turns true once they are
  acknowledged.
* :meth:`CentralMqtt.subscribe` and :meth:`CentralMqtt.unsubscribe` change the subscriptions while
  it runs (a station starting or stopping): at once on the live connection, and on every later
  connect (a filter dropped while disconnected is unsubscribed there too: the persistent session
  would keep it). :meth:`CentralMqtt.forget` names filters an earlier process with the same client
  id may have left in that session (killed before it unsubscribed); they are unsubscribed on connect
  unless subscribed by then.
* Incoming messages go to ``on_message(topic, payload)`` directly on the loop; it must not
  raise (an exception is logged and the message dropped). Reads are drained in bursts and
  PUBACKs written in batches, so a busy broker costs few loop iterations per message.
* With ``manual_ack`` (the ingest process) a QoS 1 message is acknowledged only when its
  consumer says so: :meth:`CentralMqtt.mark` notes what was received so far and
  :meth:`CentralMqtt.ack` sends those PUBACKs once it is stored, so a process killed before its
  batch committed leaves the messages with the broker, which sends them again to the same
  persistent session.
* :meth:`CentralMqtt.publish` raises :class:`NotConnectedError` while no connection is up and
  returns once the broker acknowledged a QoS 1 message (PUBACK).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from pilegate.mqtt_socket import (
    connect_in_thread,
    detach_socket,
    forget_socket,
    pending_tls_bytes,
)

log = structlog.get_logger(__name__)

CONNECT_TIMEOUT_S = 10.0
MISC_INTERVAL_S = 1.0
DISCONNECT_TIMEOUT_S = 2.0
READ_BURST = 32  # packets per readable event: ~3 ms of loop time, so REST p99 stays low


class MqttError(Exception):
    """The central's MQTT client cannot do what was asked."""


class NotConnectedError(MqttError):
    """No broker connection is up (or it dropped before the broker acknowledged the publish)."""


class PublishTimeoutError(MqttError, TimeoutError):
    """The broker did not acknowledge a QoS 1 publish in time."""


class ConnectTimeoutError(MqttError, TimeoutError):
    """No broker connection came up within the time asked for."""


class ConnectFailedError(MqttError):
    """A connection attempt failed (refused, unreachable, or rejected by CONNACK)."""


@dataclass(frozen=True)
class MqttSettings:
    """Broker connection settings of the central service."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    client_id: str = "pilegate-central"
    tls: bool = False
    keepalive_s: int = 15
    ca_file: str | None = None  # TLS trust anchors; None = the system's
    clean_session: bool = False  # False: the broker queues QoS 1 messages while we are away
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0
    publish_timeout_s: float = 10.0
    manual_ack: bool = False  # True: PUBACK only through ack(), after the consumer stored the message

    def __post_init__(self) -> None:
        problems = [
            text
            for bad, text in (
                (not self.host, "host is empty"),
                (not 0 < self.port < 65536, f"port {self.port} outside 1..65535"),
                (not self.client_id, "client_id is empty"),
                (not 5 <= self.keepalive_s <= 65535, "keepalive_s outside 5..65535"),
                (
                    not 0 < self.reconnect_min_s <= self.reconnect_max_s,
                    "need 0 < reconnect_min_s <= reconnect_max_s",
                ),
                (not self.publish_timeout_s > 0, "publish_timeout_s must be positive"),
            )
            if bad
        ]
        if problems:
            raise ValueError("MqttSettings: " + "; ".join(problems))


def backoff_s(failures: int, min_s: float, max_s: float, rand: Callable[[], float]) -> float:
    """Delay before attempt ``failures + 1``: doubling from min_s, capped at max_s, jittered -50%..0."""
    base = min(max_s, min_s * 2.0 ** min(max(failures - 1, 0), 30))
    return base * (0.5 + rand() / 2)


class CentralMqtt:
    """One broker connection for the central service; see the module docstring."""

    def __init__(
        self,
        settings: MqttSettings,
        subscriptions: Sequence[str],
        on_message: Callable[[str, bytes], None],
        *,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.settings = settings
        self._subscriptions = list(subscriptions)
        self._dropped: set[str] = set()  # filters to unsubscribe on the next connect
        self._pending_subs: dict[int, list[str]] = {}  # SUBSCRIBE mid -> its filters (for the SUBACK)
        self._on_message = on_message
        self._rand = rand
        self._log = log.bind(client_id=settings.client_id, broker=f"{settings.host}:{settings.port}")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._client: mqtt.Client | None = None
        self._connack: asyncio.Future[ReasonCode] | None = None
        self._suback: asyncio.Future[None] | None = None
        self._suback_mid: int | None = None
        self._up = asyncio.Event()  # connected and subscribed
        self._down_since: float | None = time.monotonic()  # not connected since (monotonic); None: up
        self._lost = asyncio.Event()  # the current connection ended
        self._stopping = False
        self._acks: dict[int, asyncio.Future[None]] = {}
        self._write_scheduled = False
        self._writer_added = False
        self._packets_in = 0
        self._unacked: list[int] = []  # manual_ack: mids of QoS 1 messages received, not yet acknowledged
        self._acked = 0  # how many of the current connection's received messages are acknowledged
        self._generation = 0  # counts connections: a mark of an earlier one acknowledges nothing
        self.counts = {"connects": 0, "received": 0, "published": 0, "callback_errors": 0}

    # -- public API --------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while a connection is up and the subscriptions are acknowledged."""
        return self._up.is_set()

    @property
    def down_for_s(self) -> float:
        """How long the broker connection has been down (0 while it is up)."""
        return 0.0 if self._down_since is None else time.monotonic() - self._down_since

    async def start(self) -> None:
        """Start the connection task and return at once."""
        if self._task is not None:
            raise MqttError("already started")
        self._stopping = False
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._run(), name=f"mqtt:{self.settings.client_id}")

    async def stop(self) -> None:
        """Clean DISCONNECT (if connected), then end the connection task."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        if self._client is not None and self.connected:
            self._client.disconnect()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(DISCONNECT_TIMEOUT_S):
                    await self._lost.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    def subscribe(self, topic_filter: str) -> None:
        """Add a subscription (QoS 1): now if connected, and on every connect from now on."""
        self._dropped.discard(topic_filter)
        if topic_filter in self._subscriptions:
            return
        self._subscriptions.append(topic_filter)
        client = self._client
        if client is not None and self.connected:
            rc, mid = client.subscribe(topic_filter, 1)
            if rc == MQTTErrorCode.MQTT_ERR_SUCCESS and mid is not None:
                self._pending_subs[mid] = [topic_filter]
            else:
                self._log.warning("subscribe failed; made again on the next connect", topic=topic_filter)
        self._log.info("subscribed", topic=topic_filter)

    def unsubscribe(self, topic_filter: str) -> None:
        """Drop a subscription: now if connected, else on the next connect."""
        if topic_filter in self._subscriptions:
            self._subscriptions.remove(topic_filter)
        client = self._client
        if client is not None and self.connected:
            rc, _ = client.unsubscribe(topic_filter)
            if rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._log.info("unsubscribed", topic=topic_filter)
                return
        self._dropped.add(topic_filter)

    def forget(self, filters: Iterable[str]) -> None:
        """Unsubscribe ``filters`` on the next connect unless subscribed by then: what an earlier
        process with this client id may have left in the persistent session, so the broker stops
        sending it here (a central instance killed while it ran stations another now runs)."""
        self._dropped.update(f for f in filters if f not in self._subscriptions)

    @property
    def subscriptions(self) -> list[str]:
        return list(self._subscriptions)

    async def wait_connected(self, timeout_s: float) -> None:
        """Return once connected and subscribed; :class:`ConnectTimeoutError` after ``timeout_s``."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._up.wait()
        except TimeoutError:
            raise ConnectTimeoutError(
                f"no broker connection to {self.settings.host}:{self.settings.port} within {timeout_s} s"
            ) from None

    async def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        """Publish; for QoS 1 return once the broker acknowledged it.

        Raises :class:`NotConnectedError` when no connection is up or it drops before the
        PUBACK, :class:`PublishTimeoutError` when the PUBACK does not come in time.
        """
        client = self._client
        if client is None or not self.connected:
            raise NotConnectedError(f"not connected to {self.settings.host}:{self.settings.port}")
        info = client.publish(topic, payload, qos, retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise NotConnectedError(f"publish to {topic}: {mqtt.error_string(info.rc)}")
        self.counts["published"] += 1
        if qos == 0:
            return
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._acks[info.mid] = ack
        try:
            async with asyncio.timeout(self.settings.publish_timeout_s):
                await ack
        except TimeoutError:
            raise PublishTimeoutError(
                f"no PUBACK for {topic} within {self.settings.publish_timeout_s} s"
            ) from None
        finally:
            self._acks.pop(info.mid, None)

    def mark(self) -> tuple[int, int]:
        """Manual acks: a token for every message received so far on this connection."""
        return (self._generation, self._acked + len(self._unacked))

    def ack(self, mark: tuple[int, int]) -> None:
        """Manual acks: send the PUBACKs of the messages received up to ``mark``. A mark of a
        connection that ended acknowledges nothing: the broker sends those messages again."""
        generation, received = mark
        client = self._client
        if generation != self._generation or client is None:
            return
        count = received - self._acked
        if count <= 0:
            return
        mids, self._unacked = self._unacked[:count], self._unacked[count:]
        self._acked = received
        for mid in mids:
            client.ack(mid, 1)

    @property
    def unacked(self) -> int:
        """Manual acks: messages received on this connection and not yet acknowledged."""
        return len(self._unacked)

    # -- connection task ---------------------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        try:
            while not self._stopping:
                try:
                    await self._connect()
                except Exception as exc:
                    failures += 1
                    level = self._log.warning if failures == 1 else self._log.debug
                    level("broker connection failed", attempt=failures, error=str(exc) or type(exc).__name__)
                    await self._pause(failures)
                    continue
                failures = 1  # a lost connection waits like a first failure before retrying
                await self._serve()
                self._teardown()
                if not self._stopping:
                    self._log.warning("broker connection lost; reconnecting")
                    await self._pause(failures)
        finally:
            self._teardown()

    async def _pause(self, failures: int) -> None:
        s = self.settings
        await asyncio.sleep(backoff_s(failures, s.reconnect_min_s, s.reconnect_max_s, self._rand))

    async def _connect(self) -> None:
        client = self._new_client()
        self._client = client
        self._lost.clear()
        try:
            await self._open_socket(client)
            self._attach(client)
            reason = await self._wait_future(self._connack, "CONNACK")
            if reason.is_failure:
                raise ConnectFailedError(f"broker refused the connection: {reason}")
            self._subscribe(client)
            await self._wait_future(self._suback, "SUBACK")
        except BaseException:
            self._teardown()
            raise
        self.counts["connects"] += 1
        self._up.set()
        self._down_since = None
        self._log.info("broker connected", subscriptions=self._subscriptions)

    def _new_client(self) -> mqtt.Client:
        s = self.settings
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=s.client_id,
            clean_session=s.clean_session,
            protocol=mqtt.MQTTv311,
            manual_ack=s.manual_ack,
        )
        client.suppress_exceptions = True
        client.connect_timeout = CONNECT_TIMEOUT_S
        if s.username is not None:
            client.username_pw_set(s.username, s.password)
        if s.tls:
            client.tls_set(ca_certs=s.ca_file)
        client.on_connect = self._on_mqtt_connect
        client.on_disconnect = self._on_mqtt_disconnect
        client.on_message = self._on_mqtt_message
        client.on_subscribe = self._on_mqtt_subscribe
        client.on_publish = self._on_mqtt_publish
        return client

    async def _open_socket(self, client: mqtt.Client) -> None:
        """TCP (and TLS) connect and send CONNECT in a daemon thread: it may block for seconds."""
        c = self.settings
        await connect_in_thread(client, c.host, c.port, c.keepalive_s, f"mqtt-connect:{c.client_id}")

    def _attach(self, client: mqtt.Client) -> None:
        sock = client.socket()
        if sock is None:
            raise ConnectFailedError("paho returned no socket")
        loop = asyncio.get_running_loop()
        self._connack = loop.create_future()
        loop.add_reader(sock, self._on_readable, client)
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_socket_register_write
        client.on_socket_unregister_write = self._on_socket_unregister_write
        if client.want_write():
            self._on_socket_register_write(client, None, sock)

    def _subscribe(self, client: mqtt.Client) -> None:
        self._suback = asyncio.get_running_loop().create_future()
        if self._dropped:
            client.unsubscribe(sorted(self._dropped))
            self._dropped.clear()
        if not self._subscriptions:
            self._suback.set_result(None)
            return
        rc, mid = client.subscribe([(t, 1) for t in self._subscriptions])
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise ConnectFailedError(f"subscribe failed: {mqtt.error_string(rc)}")
        self._suback_mid = mid
        if mid is not None:
            self._pending_subs[mid] = list(self._subscriptions)

    async def _wait_future(self, future: asyncio.Future[Any] | None, what: str) -> Any:
        assert future is not None
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                return await future
        except TimeoutError:
            raise ConnectFailedError(f"no {what} from the broker") from None

    async def _serve(self) -> None:
        """Keep the connection alive until it ends."""
        while not self._lost.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(MISC_INTERVAL_S):
                    await self._lost.wait()
            client = self._client
            if (
                client is not None
                and not self._lost.is_set()
                and (client.loop_misc() != MQTTErrorCode.MQTT_ERR_SUCCESS)
            ):
                self._mark_lost("keepalive")

    def _teardown(self) -> None:
        """Forget the current connection: close its socket, fail pending publishes."""
        self._up.clear()
        if self._down_since is None:
            self._down_since = time.monotonic()
        client, self._client = self._client, None
        if client is not None:
            self._detach(client)
        for ack in self._acks.values():
            if not ack.done():
                ack.set_exception(NotConnectedError("connection lost before the broker's PUBACK"))
        self._acks.clear()
        self._connack = self._suback = None
        self._suback_mid = None
        self._generation += 1
        self._unacked, self._acked = [], 0
        self._write_scheduled = self._writer_added = False

    def _detach(self, client: mqtt.Client) -> None:
        detach_socket(client, self._loop)

    def _mark_lost(self, why: str) -> None:
        self._log.debug("connection ended", reason=why)
        self._up.clear()
        if self._down_since is None:
            self._down_since = time.monotonic()
        self._lost.set()
        for future, what in ((self._connack, "CONNACK"), (self._suback, "SUBACK")):
            if future is not None and not future.done():
                future.set_exception(ConnectFailedError(f"connection closed before {what}: {why}"))

    # -- paho callbacks: they run on the loop (inside loop_read / loop_write); never raise ---

    def _on_mqtt_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, properties: Any
    ) -> None:
        if client is self._client and self._connack is not None and not self._connack.done():
            self._connack.set_result(reason)

    def _on_mqtt_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, properties: Any
    ) -> None:
        if client is self._client:
            self._mark_lost(str(reason))

    def _on_mqtt_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reasons: list[ReasonCode], properties: Any
    ) -> None:
        for topic, reason in zip(self._pending_subs.pop(mid, []), reasons, strict=False):
            if reason.is_failure:
                self._log.error("subscription refused by the broker", topic=topic)
        if mid == self._suback_mid and self._suback is not None and not self._suback.done():
            self._suback.set_result(None)

    def _on_mqtt_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode, properties: Any
    ) -> None:
        ack = self._acks.get(mid)
        if client is self._client and ack is not None and not ack.done():
            ack.set_result(None)

    def _on_mqtt_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self._packets_in += 1
        self.counts["received"] += 1
        payload = message.payload
        if self.settings.manual_ack and message.qos == 1:
            self._unacked.append(message.mid)
        try:
            self._on_message(message.topic, payload if isinstance(payload, bytes) else bytes(payload))
        except Exception:
            self.counts["callback_errors"] += 1
            self._log.exception("on_message callback failed", topic=message.topic)

    # -- socket plumbing ---------------------------------------------------------------------

    def _on_readable(self, client: mqtt.Client) -> None:
        """Read packets while they keep coming (bounded), then write the PUBACKs in one go."""
        try:
            for _ in range(READ_BURST):
                before = self._packets_in
                if client.loop_read() != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    self._mark_lost("read")
                    return
                if self._packets_in == before:
                    break
            sock = client.socket()
            while sock is not None and pending_tls_bytes(sock) > 0:
                client.loop_read()
                sock = client.socket()
        except Exception as exc:
            self._log.exception("reading from the broker failed")
            self._mark_lost(f"read: {exc}")

    def _on_writable(self, client: mqtt.Client) -> None:
        try:
            client.loop_write()
        except Exception as exc:
            self._log.exception("writing to the broker failed")
            self._mark_lost(f"write: {exc}")

    def _flush_writes(self, client: mqtt.Client) -> None:
        """Write what paho queued during this loop iteration; wait for writability if blocked."""
        self._write_scheduled = False
        if client is not self._client:
            return
        self._on_writable(client)
        sock = client.socket()
        loop = self._loop
        if sock is not None and loop is not None and client.want_write() and not self._writer_added:
            loop.add_writer(sock, self._on_writable, client)
            self._writer_added = True

    def _on_socket_close(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        forget_socket(self._loop, sock)
        if client is self._client:
            self._mark_lost("socket closed")

    def _on_socket_register_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        if not self._write_scheduled and self._loop is not None:
            self._write_scheduled = True
            self._loop.call_soon(self._flush_writes, client)

    def _on_socket_unregister_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        if self._writer_added and self._loop is not None:
            self._loop.remove_writer(sock)
            self._writer_added = False
