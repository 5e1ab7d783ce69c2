"""The gateway's MQTT 3.1.1 client connection: an asyncio protocol built for a high publish rate.

The uplink sends a thousand QoS 1 messages a second and takes a thousand PUBACKs. paho spends
most of its time per message on things the gateway does not need (a lock, a condition and
message objects per publish, three ``recv`` calls and reason/property objects per PUBACK, one
``send`` per message). Here a publish is one packed ``bytes`` appended to a write buffer that is
sent once per loop iteration, and every PUBACK in a received chunk is parsed in one loop.

It speaks what the uplink uses: CONNECT (clean session, keepalive, username/password, a will),
CONNACK, outgoing PUBLISH at QoS 0, 1 and 2 (PUBACK; PUBREC, PUBREL, PUBCOMP), incoming PUBLISH
at QoS 0 and 1 (acknowledged at once; subscriptions are QoS 1, so the broker never sends QoS 2),
SUBSCRIBE/SUBACK, PINGREQ/PINGRESP and DISCONNECT. TCP and TLS come from the loop
(``loop.create_connection``). A packet the broker should never send (QoS 2, an unknown type, a
malformed length) closes the connection with :class:`ProtocolViolationError` naming the problem.
Everything runs on the event loop; no callback may raise into the protocol.
"""

from __future__ import annotations

import asyncio
import ssl
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 0x10, 0x20, 0x30, 0x40, 0x50, 0x62, 0x70
SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT = 0x82, 0x90, 0xC0, 0xD0, 0xE0
MAX_TOPIC_BYTES = 65535
MAX_PACKET_BYTES = 268_435_455  # the largest remaining length MQTT can encode (4 bytes)
MAX_INCOMING_BYTES = 2**20  # commands are small: a larger packet from the broker is refused
SUBACK_FAILURE = 0x80
CONNACK_REASONS = {
    0: "Connection Accepted",
    1: "Unacceptable protocol version",
    2: "Identifier rejected",
    3: "Server unavailable",
    4: "Bad user name or password",
    5: "Not authorized",
}
_PINGREQ_BYTES = bytes((PINGREQ, 0))
_DISCONNECT_BYTES = bytes((DISCONNECT, 0))
_U16 = struct.Struct("!H")


class MqttLinkError(Exception):
    """The MQTT connection cannot do what was asked."""


class ProtocolViolationError(MqttLinkError):
    """The broker sent something MQTT 3.1.1 does not allow here."""


class NotConnectedError(MqttLinkError):
    """A packet was to be sent on a connection that is closed."""


class InvalidPublishError(MqttLinkError, ValueError):
    """A message MQTT cannot carry (empty or over-long topic, wildcard, bad QoS)."""


@dataclass(frozen=True)
class Will:
    """The last will the broker publishes when the connection ends without DISCONNECT."""

    topic: str
    payload: bytes
    qos: int
    retain: bool


@dataclass
class LinkCallbacks:
    """What a link reports (each call names the link), always on the loop; none may raise."""

    on_connack: Callable[[MqttLink, int], None]  # CONNACK return code (0: accepted)
    on_puback: Callable[[MqttLink, int], None]  # packet id of a completed QoS 1 or 2 publish
    on_message: Callable[[MqttLink, str, bytes], None]  # incoming PUBLISH (topic, payload)
    on_suback: Callable[[MqttLink, int, list[int]], None]  # packet id, granted QoS or 0x80 each
    on_lost: Callable[[MqttLink, str], None]  # the connection ended (why)


def remaining_length(n: int) -> bytes:
    """MQTT's variable-length encoding of a packet's remaining length."""
    if not 0 <= n <= MAX_PACKET_BYTES:
        raise InvalidPublishError(f"packet of {n} bytes is larger than MQTT allows")
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def _string(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    if len(raw) > MAX_TOPIC_BYTES:
        raise InvalidPublishError(f"string of {len(raw)} bytes is longer than 65535")
    return _U16.pack(len(raw)) + raw


def _packet(first_byte: int, body: bytes) -> bytes:
    return bytes((first_byte,)) + remaining_length(len(body)) + body


def connect_packet(
    client_id: str, keepalive_s: int, will: Will | None, username: str | None, password: str | None
) -> bytes:
    """CONNECT with clean session."""
    flags = 0x02
    payload = _string(client_id)
    if will is not None:
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
        payload += _string(will.topic) + _string(will.payload)
    if username is not None:
        flags |= 0x80
        payload += _string(username)
        if password is not None:
            flags |= 0x40
            payload += _string(password)
    header = _string("MQTT") + bytes((4, flags)) + _U16.pack(keepalive_s)
    return _packet(CONNECT, header + payload)


def check_topic(topic: str) -> bytes:
    """The UTF-8 topic of a PUBLISH, or :class:`InvalidPublishError` naming what is wrong."""
    raw = topic.encode()
    if not raw:
        raise InvalidPublishError("empty topic")
    if len(raw) > MAX_TOPIC_BYTES:
        raise InvalidPublishError(f"topic of {len(raw)} bytes is longer than 65535")
    if b"+" in raw or b"#" in raw or b"\0" in raw:
        raise InvalidPublishError(f"topic {topic[:80]!r} has a wildcard or NUL")
    return raw


def publish_packet(topic: bytes, payload: bytes, qos: int, retain: bool, mid: int) -> bytes:
    """PUBLISH of an already checked topic; ``mid`` is ignored at QoS 0."""
    first = PUBLISH | (qos << 1) | (1 if retain else 0)
    head = _U16.pack(len(topic)) + topic
    if qos:
        head += _U16.pack(mid)
    return bytes((first,)) + remaining_length(len(head) + len(payload)) + head + payload


def subscribe_packet(mid: int, filters: list[tuple[str, int]]) -> bytes:
    body = _U16.pack(mid) + b"".join(_string(topic) + bytes((qos,)) for topic, qos in filters)
    return _packet(SUBSCRIBE, body)


class PacketReader:
    """Splits a byte stream into (first byte, body) packets; keeps a partial packet for later."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buf = self._buffer
        buf += data
        packets: list[tuple[int, bytes]] = []
        pos, end = 0, len(buf)
        while end - pos >= 2:
            length, header_bytes = self._length(buf, pos + 1, end)
            if length < 0 or end - pos - header_bytes < length:
                break
            start = pos + header_bytes
            packets.append((buf[pos], bytes(buf[start : start + length])))
            pos = start + length
        del buf[:pos]
        return packets

    @staticmethod
    def _length(buf: bytearray, at: int, end: int) -> tuple[int, int]:
        """(remaining length, bytes of fixed header) or (-1, 0) while incomplete."""
        value, shift = 0, 0
        for i in range(at, min(at + 4, end)):
            byte = buf[i]
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                if value > MAX_INCOMING_BYTES:
                    raise ProtocolViolationError(f"packet of {value} bytes (at most {MAX_INCOMING_BYTES})")
                return value, i - at + 2
            shift += 7
        if end - at >= 4:
            raise ProtocolViolationError("remaining length longer than 4 bytes")
        return -1, 0


class MqttLink(asyncio.Protocol):
    """One MQTT connection. ``open()`` it, then ``publish``; writes go out once per loop turn."""

    def __init__(
        self, callbacks: LinkCallbacks, keepalive_s: int, clock: Callable[[], float] = time.monotonic
    ):
        self._cb = callbacks
        self._keepalive_s = keepalive_s
        self._clock = clock
        self._transport: asyncio.Transport | None = None
        self._reader = PacketReader()
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._mid = 0
        self._awaiting: set[int] = set()  # QoS 1 and 2 packet ids sent and not yet completed
        self._last_in = self._last_out = 0.0
        self._ping_outstanding = False
        self._lost = False

    # -- opening and closing -----------------------------------------------------------------

    async def open(
        self,
        host: str,
        port: int,
        *,
        tls: bool,
        connect: bytes,
    ) -> None:
        """TCP (and TLS) connect, then send CONNECT; the CONNACK arrives through ``on_connack``."""
        loop = asyncio.get_running_loop()
        context = ssl.create_default_context() if tls else None
        await loop.create_connection(lambda: self, host, port, ssl=context)
        self._send(connect)

    def disconnect(self) -> None:
        """Send DISCONNECT (the broker drops the will) and close once it is written."""
        if self._transport is None or self._lost:
            return
        self._send(_DISCONNECT_BYTES)
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        """Close at once without DISCONNECT (the broker publishes the will)."""
        if self._transport is not None:
            self._transport.abort()

    @property
    def awaiting_pingresp(self) -> bool:
        return self._ping_outstanding

    @property
    def is_open(self) -> bool:
        return self._transport is not None and not self._lost

    # -- sending -----------------------------------------------------------------------------

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> int:
        """Queue a PUBLISH; its packet id (0 at QoS 0). Raises InvalidPublishError, NotConnectedError."""
        if qos not in (0, 1, 2):
            raise InvalidPublishError(f"qos {qos} is not 0, 1 or 2")
        raw = check_topic(topic)
        mid = self._next_mid() if qos else 0
        self._send(publish_packet(raw, payload, qos, retain, mid))
        if qos:
            self._awaiting.add(mid)
        return mid

    def subscribe(self, filters: list[tuple[str, int]]) -> int:
        mid = self._next_mid()
        self._send(subscribe_packet(mid, filters))
        return mid

    def keepalive(self) -> None:
        """Call about once a second: PINGREQ when idle for keepalive_s, lost if PINGRESP is late."""
        if not self.is_open:
            return
        now = self._clock()
        if now - self._last_out < self._keepalive_s and now - self._last_in < self._keepalive_s:
            return
        if self._ping_outstanding:
            self._close_lost("no PINGRESP within keepalive")
            return
        self._send(_PINGREQ_BYTES)
        self._ping_outstanding = True
        self._last_in = now  # the PINGRESP is due within one more keepalive period

    def _next_mid(self) -> int:
        for _ in range(65535):
            self._mid = self._mid % 65535 + 1
            if self._mid not in self._awaiting:
                return self._mid
        raise MqttLinkError("all 65535 packet ids are awaiting acknowledgement")

    def _send(self, packet: bytes) -> None:
        if self._transport is None or self._lost:
            raise NotConnectedError("the MQTT connection is closed")
        self._out.append(packet)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._out or self._transport is None or self._lost:
            self._out.clear()
            return
        data = b"".join(self._out)
        self._out.clear()
        self._transport.write(data)
        self._last_out = self._clock()

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # a stream transport (uvloop's is not a subclass)
        self._transport = transport
        self._last_in = self._last_out = self._clock()

    def data_received(self, data: bytes) -> None:
        self._last_in = self._clock()
        try:
            for first, body in self._reader.feed(data):
                self._handle(first, body)
        except ProtocolViolationError as exc:
            self._close_lost(f"protocol violation: {exc}")

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._lost:
            self._lost = True
            self._cb.on_lost(self, str(exc) if exc else "connection closed")

    def _close_lost(self, why: str) -> None:
        if self._lost:
            return
        self._lost = True
        if self._transport is not None:
            self._transport.abort()
        self._cb.on_lost(self, why)

    # -- incoming packets --------------------------------------------------------------------

    def _handle(self, first: int, body: bytes) -> None:
        kind = first & 0xF0
        if kind in (PUBACK, PUBCOMP):
            self._on_puback(body)
        elif kind == PUBREC:
            self._on_pubrec(body)
        elif kind == PUBLISH:
            self._on_publish(first, body)
        elif kind == PINGRESP:
            self._ping_outstanding = False
        elif kind == CONNACK:
            if len(body) != 2:
                raise ProtocolViolationError(f"CONNACK of {len(body)} bytes, expected 2")
            self._cb.on_connack(self, body[1])
        elif kind == SUBACK:
            if len(body) < 3:
                raise ProtocolViolationError(f"SUBACK of {len(body)} bytes, expected at least 3")
            self._cb.on_suback(self, _U16.unpack_from(body)[0], list(body[2:]))
        else:
            raise ProtocolViolationError(f"unexpected packet type 0x{first:02x} from the broker")

    def _on_pubrec(self, body: bytes) -> None:
        if len(body) != 2:
            raise ProtocolViolationError(f"PUBREC of {len(body)} bytes, expected 2")
        if _U16.unpack_from(body)[0] in self._awaiting:
            self._send(bytes((PUBREL, 2)) + body)

    def _on_puback(self, body: bytes) -> None:
        if len(body) != 2:
            raise ProtocolViolationError(f"PUBACK/PUBCOMP of {len(body)} bytes, expected 2")
        mid = _U16.unpack_from(body)[0]
        if mid in self._awaiting:
            self._awaiting.discard(mid)
            self._cb.on_puback(self, mid)

    def _on_publish(self, first: int, body: bytes) -> None:
        qos = (first >> 1) & 0x03
        if qos > 1:
            raise ProtocolViolationError(f"incoming PUBLISH at QoS {qos}; subscriptions are QoS 1")
        if len(body) < 2:
            raise ProtocolViolationError("PUBLISH without a topic")
        topic_len = _U16.unpack_from(body)[0]
        at = 2 + topic_len + (2 if qos else 0)
        if len(body) < at:
            raise ProtocolViolationError("PUBLISH shorter than its topic and packet id")
        try:
            topic = body[2 : 2 + topic_len].decode()
        except UnicodeDecodeError:
            raise ProtocolViolationError("PUBLISH topic is not UTF-8") from None
        if qos:
            self._send(bytes((PUBACK, 2)) + body[at - 2 : at])
        self._cb.on_message(self, topic, body[at:])
