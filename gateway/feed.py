"""The live feed behind ``pilectl tail``: telemetry, events and pile statuses as they are published.

:class:`FeedPublisher` is the gateway's :class:`~gateway.publisher.Publisher` that also offers each
reading, event and status to a :class:`Feed`; with nobody tailing, that costs one attribute test.
Each subscriber has a bounded queue: when a slow reader lets it fill, new items are dropped and
counted, and the reader gets one ``{"kind": "dropped", "count": N}`` item where the gap is, so a
slow ``pilectl`` can never grow the gateway's memory.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Mapping
from typing import Any

from gateway.publisher import Publisher
from gateway.tracker import PortEvent, fault_name, state_name
from protocols.payloads import PileStatus

Item = dict[str, Any]
DEFAULT_QUEUE_ITEMS = 1000


class Subscription:
    """One reader's bounded queue of feed items, filtered by pile and port."""

    def __init__(self, pile: str | None, port: int | None, max_items: int) -> None:
        self.pile, self.port, self.max_items = pile, port, max_items
        self._items: deque[Item] = deque()
        self._ready = asyncio.Event()
        self.dropped = 0  # not yet reported to the reader
        self.dropped_total = 0
        self.closed = False

    def wants(self, item: Item) -> bool:
        if self.pile is not None and item.get("pile") != self.pile:
            return False
        return self.port is None or item.get("port") in (None, self.port)

    def offer(self, item: Item) -> None:
        if len(self._items) >= self.max_items:
            self.dropped += 1
            self.dropped_total += 1
            return
        if self.dropped:
            self._items.append({"kind": "dropped", "count": self.dropped})
            self.dropped = 0
        self._items.append(item)
        self._ready.set()

    def close(self) -> None:
        self.closed = True
        self._ready.set()

    async def next(self, timeout_s: float) -> Item | None:
        """The next item (a ``dropped`` report once the queue before a gap is drained); ``None``
        after ``timeout_s`` without one, or once closed and drained."""
        if not self._items and not self.dropped and not self.closed:
            self._ready.clear()
            try:
                await asyncio.wait_for(self._ready.wait(), timeout_s)
            except TimeoutError:
                return None
        if self._items:
            return self._items.popleft()
        if self.dropped:  # the reader caught up with a gap: say so now, not with the next item
            item, self.dropped = {"kind": "dropped", "count": self.dropped}, 0
            return item
        return None


class Feed:
    """Fans published items out to the current subscribers."""

    def __init__(self) -> None:
        self._subscribers: set[Subscription] = set()

    @property
    def active(self) -> bool:
        return bool(self._subscribers)

    def subscribe(
        self, pile: str | None = None, port: int | None = None, max_items: int = DEFAULT_QUEUE_ITEMS
    ) -> Subscription:
        sub = Subscription(pile, port, max_items)
        self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subscribers.discard(sub)

    def publish(self, item: Item) -> None:
        for sub in self._subscribers:
            if sub.wants(item):
                sub.offer(item)

    def close(self) -> None:
        """End every subscription (the gateway is stopping)."""
        for sub in self._subscribers:
            sub.close()
        self._subscribers.clear()


def telemetry_item(pile: str, port: int, ts_ms: int, values: Mapping[str, object]) -> Item:
    """A port's reading with its state and fault by name."""
    named = {"state": state_name(values.get("state")), "fault": fault_name(values.get("fault"))}
    return {"kind": "telemetry", "ts": ts_ms, "pile": pile, "port": port, **values, **named}


def event_item(pile: str, ts_ms: int, event: PortEvent) -> Item:
    return {
        "kind": "event",
        "ts": ts_ms,
        "pile": pile,
        "port": event.port,
        "type": event.type,
        "fault": event.fault,
        "energy_Wh": event.energy_Wh,
    }


def status_item(pile: str, status: PileStatus) -> Item:
    return {"kind": "status", "ts": status.ts, "pile": pile, "state": status.state, "error": status.error}


class FeedPublisher(Publisher):
    """A :class:`Publisher` that also offers what it publishes to ``feed``."""

    def __init__(self, *args: Any, feed: Feed, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.feed = feed

    def telemetry(self, pile: str, port: int, ts_ms: int, values: Mapping[str, object]) -> None:
        super().telemetry(pile, port, ts_ms, values)
        if self.feed.active:
            self.feed.publish(telemetry_item(pile, port, ts_ms, values))

    def event(self, pile: str, ts_ms: int, event: PortEvent) -> None:
        super().event(pile, ts_ms, event)
        if self.feed.active:
            self.feed.publish(event_item(pile, ts_ms, event))

    def pile_status(self, pile: str, status: PileStatus) -> None:
        super().pile_status(pile, status)
        if self.feed.active:
            self.feed.publish(status_item(pile, status))
