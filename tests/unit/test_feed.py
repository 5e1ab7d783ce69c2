"""The live feed behind ``pilectl tail``: filters, the bounded per-reader queue and its drop report."""

from __future__ import annotations

from gateway.feed import Feed, event_item, telemetry_item
from gateway.tracker import PortEvent


def reading(pile: str, port: int, n: int) -> dict[str, object]:
    return {"kind": "telemetry", "pile": pile, "port": port, "n": n}


async def drain(sub) -> list[dict[str, object]]:
    items = []
    while (item := await sub.next(timeout_s=0.001)) is not None:
        items.append(item)
    return items


async def test_readers_get_only_their_pile_and_port_and_pile_statuses():
    feed = Feed()
    everything, t1_port2 = feed.subscribe(), feed.subscribe("T1", 2)
    for item in (
        reading("T1", 1, 1),
        reading("T1", 2, 2),
        reading("F1", 2, 3),
        {"kind": "status", "pile": "T1", "state": "comm_fault"},
    ):
        feed.publish(item)
    assert [i.get("n", i.get("state")) for i in await drain(t1_port2)] == [2, "comm_fault"]
    assert len(await drain(everything)) == 4


async def test_a_slow_reader_loses_new_items_and_is_told_how_many_where_the_gap_is():
    feed = Feed()
    sub = feed.subscribe(max_items=3)
    for n in range(1, 6):  # 4 and 5 find the queue full
        feed.publish(reading("T1", 1, n))
    assert (await sub.next(timeout_s=0.001) or {})["n"] == 1
    feed.publish(reading("T1", 1, 6))
    rest = await drain(sub)
    assert [i.get("n", i.get("kind")) for i in rest] == [2, 3, "dropped", 6]
    assert rest[2] == {"kind": "dropped", "count": 2}
    assert sub.dropped_total == 2


async def test_closing_ends_the_reader_after_reporting_a_pending_gap():
    feed = Feed()
    sub = feed.subscribe(max_items=1)
    feed.publish(reading("T1", 1, 1))
    feed.publish(reading("T1", 1, 2))
    feed.close()
    assert [i.get("n", i.get("kind")) for i in await drain(sub)] == [1, "dropped"]
    assert sub.closed and not feed.active


async def test_a_reader_that_caught_up_hears_of_the_gap_without_waiting_for_more():
    feed = Feed()
    sub = feed.subscribe(max_items=2)
    for n in range(1, 6):
        feed.publish(reading("T1", 1, n))
    assert [i.get("n", i.get("kind")) for i in await drain(sub)] == [1, 2, "dropped"]
    feed.publish(reading("T1", 1, 6))
    assert [i.get("n") for i in await drain(sub)] == [6]  # the gap was reported once


async def test_a_quiet_feed_times_out_with_none():
    sub = Feed().subscribe()
    assert await sub.next(timeout_s=0.01) is None and not sub.closed


def test_items_name_states_faults_and_events():
    item = telemetry_item("T1", 1, 1_700_000_000_000, {"state": 2, "fault": 1, "power_W": 7000})
    assert (item["state"], item["fault"], item["power_W"], item["port"]) == (
        "charging",
        "over_temperature",
        7000,
        1,
    )
    event = event_item("T1", 1_700_000_000_000, PortEvent("session_stopped", 1, energy_Wh=1234))
    assert (event["type"], event["port"], event["energy_Wh"]) == ("session_stopped", 1, 1234)
