"""Outbox drop policy, counters and sessions, on an in-memory SQLite database with a fake clock."""

from __future__ import annotations

import pytest

from gateway.outbox import (
    InvalidMessageError,
    Kind,
    Outbox,
    OutboxClosedError,
    OutboxLimits,
    OutMessage,
)

NOW_MS = 1_800_000_000_000


class FakeClock:
    def __init__(self, now_ms: int = NOW_MS) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


def msg(
    kind: Kind, n: int, *, topic: str | None = None, created_ms: int = NOW_MS, payload: bytes | None = None
) -> OutMessage:
    return OutMessage(
        topic or f"t/{kind}/{n}", payload or b'{"n":%d}' % n, 1, kind == "status", kind, created_ms
    )


def open_outbox(limits: OutboxLimits | None = None, clock: FakeClock | None = None) -> Outbox:
    return Outbox(":memory:", limits or OutboxLimits(), wall_ms=clock or FakeClock())


def payloads(outbox: Outbox) -> list[bytes]:
    return [m.payload for m in outbox.peek(10_000)]


def test_peek_returns_oldest_first_and_pages_after_id():
    outbox = open_outbox()
    outbox.append_many([msg("telemetry", i) for i in range(5)])
    first = outbox.peek(2)
    rest = outbox.peek(10, after_id=first[-1].id)
    assert [m.payload for m in first + rest] == [b'{"n":%d}' % i for i in range(5)]
    assert first[0].id < first[1].id < rest[0].id


def test_ack_deletes_only_the_given_rows_and_updates_depth_and_bytes():
    outbox = open_outbox()
    outbox.append_many([msg("telemetry", i, topic="t") for i in range(4)])
    ids = [m.id for m in outbox.peek(10)]
    outbox.ack([ids[0], ids[2], 999_999])
    assert payloads(outbox) == [b'{"n":1}', b'{"n":3}']
    assert outbox.depth() == 2
    assert outbox.size_bytes() == 2 * (len(b'{"n":1}') + len("t"))


def test_oldest_telemetry_is_dropped_first_when_over_max_messages():
    outbox = open_outbox(OutboxLimits(max_messages=3))
    outbox.append_many([msg("telemetry", 0), msg("event", 1), msg("telemetry", 2)])
    outbox.append_many([msg("telemetry", 3), msg("telemetry", 4)])
    assert payloads(outbox) == [b'{"n":1}', b'{"n":3}', b'{"n":4}']
    assert outbox.stats()["dropped_telemetry"] == 2
    assert outbox.depth() == 3


def test_events_and_command_results_are_never_dropped_even_over_the_bound():
    outbox = open_outbox(OutboxLimits(max_messages=2, max_bytes=10))
    batch = [msg("event", 0), msg("cmd_result", 1), msg("telemetry", 2), msg("event", 3)]
    outbox.append_many(batch)
    assert payloads(outbox) == [b'{"n":0}', b'{"n":1}', b'{"n":3}']
    stats = outbox.stats()
    assert (stats["dropped_event"], stats["dropped_cmd_result"]) == (0, 0)
    assert stats["dropped_telemetry"] == 1


def test_over_max_bytes_drops_oldest_telemetry_until_under():
    big = b"x" * 100
    outbox = open_outbox(OutboxLimits(max_bytes=350))
    outbox.append_many([msg("telemetry", i, topic="t", payload=big + bytes([48 + i])) for i in range(3)])
    outbox.append_many([msg("telemetry", 3, topic="t", payload=big + b"3")])
    assert [m.payload[-1:] for m in outbox.peek(10)] == [b"1", b"2", b"3"]
    assert outbox.size_bytes() == 3 * 102 <= 350
    assert outbox.stats()["dropped_telemetry"] == 1


def test_telemetry_older_than_max_age_is_dropped_but_old_events_are_kept():
    clock = FakeClock()
    outbox = open_outbox(OutboxLimits(max_age_s=60), clock)
    outbox.append_many([msg("telemetry", 0), msg("event", 1)])
    clock.now_ms += 61_000
    outbox.append_many([msg("telemetry", 2, created_ms=clock.now_ms)])
    assert payloads(outbox) == [b'{"n":1}', b'{"n":2}']
    assert outbox.stats()["dropped_telemetry"] == 1


def test_status_rows_coalesce_to_the_newest_per_topic():
    outbox = open_outbox()
    outbox.append_many(
        [msg("status", 0, topic="s/a"), msg("status", 1, topic="s/b"), msg("status", 2, topic="s/a")]
    )
    outbox.append_many([msg("telemetry", 3), msg("status", 4, topic="s/b")])
    assert payloads(outbox) == [b'{"n":2}', b'{"n":3}', b'{"n":4}']
    assert outbox.stats()["dropped_status"] == 2
    assert outbox.depth() == 3


def test_discard_status_removes_queued_status_of_those_topics_only():
    outbox = open_outbox()
    outbox.append_many(
        [msg("status", 0, topic="s/a"), msg("status", 1, topic="s/b"), msg("event", 2, topic="s/a")]
    )
    outbox.discard_status(["s/a"])
    assert payloads(outbox) == [b'{"n":1}', b'{"n":2}']
    assert outbox.stats()["dropped_status"] == 1


def test_session_numbers_strictly_increase_and_never_fall_below_the_clock_in_seconds():
    clock = FakeClock()
    outbox = open_outbox(clock=clock)
    first = outbox.next_session()
    second = outbox.next_session()
    assert first == NOW_MS // 1000
    assert second == first + 1
    clock.now_ms -= 3_600_000  # the clock stepping back must not reuse a session
    assert outbox.next_session() == second + 1
    assert outbox.stats()["session"] == second + 1


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"topic": "a/+/b"}, "wildcards"),
        ({"topic": ""}, "topic"),
        ({"payload": "text"}, "payload must be bytes"),
        ({"qos": 3}, "qos"),
        ({"kind": "gossip"}, "kind"),
        ({"created_ms": -1}, "created_ms"),
    ],
)
def test_invalid_message_is_rejected_naming_the_field(fields, problem):
    good = {"topic": "t", "payload": b"{}", "qos": 1, "retain": False, "kind": "event", "created_ms": NOW_MS}
    with pytest.raises(InvalidMessageError, match=problem):
        OutMessage(**(good | fields))


def test_append_many_rejects_something_that_is_not_an_out_message():
    outbox = open_outbox()
    with pytest.raises(InvalidMessageError, match="expected OutMessage"):
        outbox.append_many([("t", b"{}")])  # type: ignore[list-item]
    assert outbox.depth() == 0


def test_limits_must_be_positive():
    with pytest.raises(ValueError, match="max_messages"):
        OutboxLimits(max_messages=0)


def test_using_a_closed_outbox_raises_a_named_error():
    outbox = open_outbox()
    outbox.close()
    outbox.close()
    with pytest.raises(OutboxClosedError):
        outbox.peek(1)
