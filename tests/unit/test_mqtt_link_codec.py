"""MQTT 3.1.1 packet encoding and stream splitting of the gateway's MQTT link (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.mqtt_link import (
    InvalidPublishError,
    PacketReader,
    ProtocolViolationError,
    Will,
    check_topic,
    connect_packet,
    publish_packet,
    remaining_length,
)


@pytest.mark.parametrize(
    ("n", "encoded"),
    [
        (0, b"\x00"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (16383, b"\xff\x7f"),
        (2_097_152, b"\x80\x80\x80\x01"),
    ],
)
def test_remaining_length_uses_the_spec_examples(n: int, encoded: bytes) -> None:
    assert remaining_length(n) == encoded


def test_connect_packet_layout() -> None:
    packet = connect_packet("gw1", 15, Will("a/b", b"x", 1, True), "user", "pw")
    assert packet[0] == 0x10
    body = packet[2:]
    assert body[:7] == b"\x00\x04MQTT\x04"
    assert body[7] == 0x80 | 0x40 | 0x20 | 0x08 | 0x04 | 0x02  # user, password, will retain/QoS 1/flag, clean
    assert body[8:10] == b"\x00\x0f"
    assert body[10:] == b"\x00\x03gw1" + b"\x00\x03a/b" + b"\x00\x01x" + b"\x00\x04user" + b"\x00\x02pw"


def test_publish_packet_has_the_packet_id_only_above_qos_0() -> None:
    assert publish_packet(b"t", b"{}", 1, True, 258) == b"\x33\x07\x00\x01t\x01\x02{}"
    assert publish_packet(b"t", b"{}", 0, False, 258) == b"\x30\x05\x00\x01t{}"


@pytest.mark.parametrize(
    ("topic", "problem"),
    [("", "empty"), ("a/+/b", "wildcard"), ("a/#", "wildcard"), ("x" * 70_000, "longer than 65535")],
)
def test_topics_mqtt_cannot_carry_are_refused_by_name(topic: str, problem: str) -> None:
    with pytest.raises(InvalidPublishError, match=problem):
        check_topic(topic)


@given(st.lists(st.binary(max_size=300), min_size=1, max_size=8), st.data())
def test_packets_come_out_whole_however_the_stream_is_cut(bodies: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(bytes((0x30,)) + remaining_length(len(b)) + b for b in bodies)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    reader, got = PacketReader(), []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        got += reader.feed(stream[start:end])
    assert got == [(0x30, b) for b in bodies]


def test_a_length_of_more_than_four_bytes_is_a_protocol_violation() -> None:
    with pytest.raises(ProtocolViolationError, match="longer than 4 bytes"):
        PacketReader().feed(b"\x30\xff\xff\xff\xff\x01")


def test_an_oversized_packet_from_the_broker_is_refused_before_it_is_buffered() -> None:
    with pytest.raises(ProtocolViolationError, match="at most"):
        PacketReader().feed(b"\x30" + remaining_length(50_000_000))
