"""The ingest process's ingests of several stations share one client's acknowledgements: a message
is acknowledged only once every station's ingest stored what it received before it."""

from __future__ import annotations

from typing import Any, cast

from central.ingest_main import SharedAcks


class FakeClient:
    """A client's manual acks: a mark is (connection, messages received so far)."""

    def __init__(self) -> None:
        self.received, self.acked = 0, (0, 0)
        self.unacked = 0

    def mark(self) -> tuple[int, int]:
        return (1, self.received)

    def ack(self, mark: tuple[int, int]) -> None:
        self.acked = max(self.acked, mark)


def test_the_client_acknowledges_up_to_the_lowest_mark_every_station_reached() -> None:
    client = FakeClient()
    shared = SharedAcks(cast(Any, client))
    north = shared.member("north", (1, 0))
    client.received = 3  # messages 1-3: north's
    south = shared.member("south", (1, 2))  # south's first message is the third
    client.received = 5
    north_mark = north.mark()
    north.ack(north_mark)  # north stored its own up to message 5; south has stored nothing
    assert client.acked == (1, 2)
    south.ack(south.mark())
    assert client.acked == (1, 5)
