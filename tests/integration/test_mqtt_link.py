"""The gateway's MQTT link against Mosquitto, and against a peer that sends hand-made packets
(a broker that stops answering pings, one that sends garbage, an incoming QoS 1 command)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from gateway.mqtt_link import LinkCallbacks, MqttLink, Will, connect_packet
from pilegate.broker import MosquittoBroker
from tests.helpers import wait_for

pytest_plugins = ["tests.broker_fixtures"]


class Recorder:
    """Everything a link reports, and a clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.connack: list[int] = []
        self.acked: list[int] = []
        self.messages: list[tuple[str, bytes]] = []
        self.lost: list[str] = []

    def callbacks(self) -> LinkCallbacks:
        return LinkCallbacks(
            on_connack=lambda link, code: self.connack.append(code),
            on_puback=lambda link, mid: self.acked.append(mid),
            on_message=lambda link, topic, payload: self.messages.append((topic, payload)),
            on_suback=lambda link, mid, codes: None,
            on_lost=lambda link, why: self.lost.append(why),
        )


async def open_link(port: int, rec: Recorder, keepalive_s: int = 5) -> MqttLink:
    link = MqttLink(rec.callbacks(), keepalive_s, clock=lambda: rec.now)
    will = Will("t/will", b"lost", 1, False)
    packet = connect_packet("link-test", keepalive_s, will, None, None)
    await link.open("127.0.0.1", port, tls=False, connect=packet)
    await wait_for(lambda: rec.connack == [0], what="CONNACK")
    return link


class Peer:
    """A TCP server that answers CONNECT with CONNACK, records what it gets, sends what it is told."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.writer: asyncio.StreamWriter | None = None
        self.tasks: list[asyncio.Task[object]] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.append(task)
        self.writer = writer
        try:
            while data := await reader.read(4096):
                if not self.received:
                    writer.write(b"\x20\x02\x00\x00")
                self.received += data
        except ConnectionError:
            pass
        finally:
            writer.close()


@pytest.fixture
async def peer() -> AsyncIterator[tuple[Peer, int]]:
    p = Peer()
    server = await asyncio.start_server(p.handle, "127.0.0.1", 0)
    yield p, server.sockets[0].getsockname()[1]
    server.close()
    for task in p.tasks:
        task.cancel()
    await asyncio.gather(*p.tasks, return_exceptions=True)
    await server.wait_closed()


async def test_publishes_in_one_turn_are_acked_by_mosquitto(mosquitto: MosquittoBroker) -> None:
    rec = Recorder()
    link = await open_link(mosquitto.port, rec)
    try:
        mids = [link.publish(f"t/{n}", b"{}", 1, False) for n in range(500)]
        await wait_for(lambda: sorted(rec.acked) == sorted(mids), what="500 PUBACKs")
        assert len(set(mids)) == 500
        assert link.publish("t/x", b"{}", 0, False) == 0
    finally:
        link.disconnect()


async def test_an_idle_link_pings_and_mosquitto_answers(mosquitto: MosquittoBroker) -> None:
    rec = Recorder()
    link = await open_link(mosquitto.port, rec)
    try:
        link.keepalive()
        assert not link.awaiting_pingresp  # not idle yet
        rec.now += 5
        link.keepalive()
        assert link.awaiting_pingresp
        await wait_for(lambda: not link.awaiting_pingresp, what="PINGRESP")
        assert rec.lost == []
    finally:
        link.disconnect()


async def test_a_broker_that_stops_answering_pings_ends_the_link(peer: tuple[Peer, int]) -> None:
    p, port = peer
    rec = Recorder()
    link = await open_link(port, rec)
    rec.now += 5
    link.keepalive()
    await wait_for(lambda: p.received.endswith(b"\xc0\x00"), what="PINGREQ at the peer")
    rec.now += 5
    link.keepalive()
    assert rec.lost == ["no PINGRESP within keepalive"]
    assert not link.is_open


async def test_an_incoming_qos1_message_is_delivered_and_acknowledged(peer: tuple[Peer, int]) -> None:
    p, port = peer
    rec = Recorder()
    link = await open_link(port, rec)
    try:
        assert p.writer is not None
        p.writer.write(b"\x32\x0b\x00\x05a/cmd\x00\x07{}")  # PUBLISH QoS 1, packet id 7
        await wait_for(lambda: rec.messages == [("a/cmd", b"{}")], what="the message")
        await wait_for(lambda: p.received.endswith(b"\x40\x02\x00\x07"), what="PUBACK for packet 7")
    finally:
        link.disconnect()


@pytest.mark.parametrize(
    ("garbage", "problem"),
    [
        (b"\x34\x0b\x00\x05a/cmd\x00\x07{}", "QoS 2"),
        (b"\x40\x03\x00\x01\x00", "PUBACK/PUBCOMP of 3 bytes"),
        (b"\xa0\x02\x00\x01", "unexpected packet type 0xa0"),
    ],
)
async def test_a_packet_the_broker_must_not_send_ends_the_link_by_name(
    peer: tuple[Peer, int], garbage: bytes, problem: str
) -> None:
    p, port = peer
    rec = Recorder()
    link = await open_link(port, rec)
    assert p.writer is not None
    p.writer.write(garbage)
    await wait_for(lambda: rec.lost, what="the link to end")
    assert problem in rec.lost[0]
    assert not link.is_open
