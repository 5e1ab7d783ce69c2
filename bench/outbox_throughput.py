"""Outbox throughput: append telemetry in batches, then peek and ack it the way the uplink does.

Run: ``.venv/bin/python bench/outbox_throughput.py [--messages 200000] [--batch 1000] [--uplink]``

Prints appended+acked messages per second for: append only (outage), drain only (peek 1000 + ack
in 500-id batches), steady state (append a batch, drain it) and appending at the bound (every
append drops as many old telemetry rows). Target: at least 10,000 appended+acked messages/s with
1000-message batches.

``--uplink`` also measures the MQTT uplink against a local mosquitto (started on a free port):
draining a backlog of QoS 1 messages (rate = PUBACKs/s), and the CPU share of this process while
offering 5,000 messages/s in 1000-message batches. Target: >= 5,000 QoS 1 messages/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.outbox import Outbox, OutboxLimits, OutMessage, wall_ms
from gateway.uplink import Uplink, UplinkConfig
from pilegate.broker import MosquittoBroker, free_port

TELEMETRY_TOPIC = "pilegate/v1/station1/pile/F{pile}/port/1/telemetry"
STATUS_TOPIC = "pilegate/v1/station1/gw/gw1/status"


def telemetry(seq: int) -> OutMessage:
    """A realistic ~200-byte telemetry message."""
    payload = {
        "ts": wall_ms(),
        "session": 1,
        "seq": seq,
        "state": "charging",
        "voltage_V": 400.1,
        "current_A": 75.2,
        "power_W": 30080.0,
        "energy_Wh": 123456 + seq,
        "temperature_C": 41.5,
        "fault": "none",
    }
    body = json.dumps(payload, separators=(",", ":")).encode()
    return OutMessage(TELEMETRY_TOPIC.format(pile=seq % 50), body, 1, False, "telemetry", wall_ms())


def make_batches(messages: int, batch: int) -> list[list[OutMessage]]:
    return [[telemetry(i + j) for j in range(batch)] for i in range(0, messages, batch)]


def drain(outbox: Outbox, peek_size: int = 1000, ack_batch: int = 500) -> int:
    """Peek and ack everything, like the uplink (cursor, acks flushed in batches)."""
    done, cursor, pending = 0, 0, []
    while rows := outbox.peek(peek_size, after_id=cursor):
        cursor = rows[-1].id
        for row in rows:
            pending.append(row.id)
            if len(pending) >= ack_batch:
                outbox.ack(pending)
                done, pending = done + len(pending), []
    outbox.ack(pending)
    return done + len(pending)


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:>10,.0f} msg/s ({count:,} in {seconds:.2f} s)"


def bench_outbox(messages: int, batch: int, directory: Path) -> None:
    batches = make_batches(messages, batch)
    total = len(batches) * batch
    outbox = Outbox(directory / "bench.db", OutboxLimits(max_messages=10 * messages))
    try:
        t0 = time.perf_counter()
        for b in batches:
            outbox.append_many(b)
        t1 = time.perf_counter()
        drained = drain(outbox)
        t2 = time.perf_counter()
        for b in batches:
            outbox.append_many(b)
            drain(outbox)
        t3 = time.perf_counter()
    finally:
        outbox.close()
    print(f"outbox append only (outage)       {rate(total, t1 - t0)}")
    print(f"outbox drain only (peek + ack)    {rate(drained, t2 - t1)}")
    print(f"outbox append+ack, {batch}-batches  {rate(total, t3 - t2)}")
    print(f"outbox outage then drain overall  {rate(total, t2 - t0)}")
    bench_at_bound(batches, directory)


def bench_at_bound(batches: list[list[OutMessage]], directory: Path) -> None:
    """Append twice the bound: the second half drops one old row per new one."""
    total = sum(len(b) for b in batches)
    outbox = Outbox(directory / "bound.db", OutboxLimits(max_messages=max(1, total // 2)))
    try:
        t0 = time.perf_counter()
        for b in batches:
            outbox.append_many(b)
        t1 = time.perf_counter()
        dropped = outbox.stats()["dropped_telemetry"]
    finally:
        outbox.close()
    print(f"outbox append at bound (dropping) {rate(total, t1 - t0)}, dropped {dropped:,}")


# -- uplink ------------------------------------------------------------------------------------


def _status(state: str, session: int) -> OutMessage:
    body = json.dumps({"state": state, "session": session}).encode()
    return OutMessage(STATUS_TOPIC, body, 1, True, "status", wall_ms())


def _uplink(port: int, outbox: Outbox) -> Uplink:
    config = UplinkConfig("127.0.0.1", port, "bench-gw1")
    return Uplink(
        config, outbox, will=lambda s: _status("lost", s), on_connect=lambda s: [_status("online", s)]
    )


async def _until_empty(outbox: Outbox, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while outbox.depth() and time.monotonic() < deadline:  # noqa: ASYNC110 - a bench polls a counter
        await asyncio.sleep(0.005)


async def bench_uplink_backlog(port: int, batches: list[list[OutMessage]], directory: Path) -> None:
    outbox = Outbox(directory / "uplink-backlog.db")
    for b in batches:
        outbox.append_many(b)
    total = outbox.depth()
    uplink = _uplink(port, outbox)
    t0, c0 = time.perf_counter(), time.process_time()
    await uplink.start()
    await _until_empty(outbox, timeout_s=120)
    t1, c1 = time.perf_counter(), time.process_time()
    await uplink.stop()
    outbox.close()
    print(
        f"uplink drain backlog (QoS 1)      {rate(total, t1 - t0)},"
        f" CPU {100 * (c1 - c0) / (t1 - t0):.0f}% of a core"
    )


async def bench_uplink_steady(
    port: int, batches: list[list[OutMessage]], directory: Path, offered_per_s: int = 5000
) -> None:
    outbox = Outbox(directory / "uplink-steady.db")
    uplink = _uplink(port, outbox)
    await uplink.start()
    while not uplink.connected:  # noqa: ASYNC110 - a bench polls a flag
        await asyncio.sleep(0.01)
    period_s = len(batches[0]) / offered_per_s
    t0, c0 = time.perf_counter(), time.process_time()
    for i, b in enumerate(batches):
        outbox.append_many(b)
        uplink.notify()
        await asyncio.sleep(max(0.0, t0 + (i + 1) * period_s - time.perf_counter()))
    await _until_empty(outbox, timeout_s=60)
    t1, c1 = time.perf_counter(), time.process_time()
    acked = uplink.stats()["acked"]
    assert isinstance(acked, int)
    total = acked - 1  # minus the birth message
    await uplink.stop()
    outbox.close()
    print(
        f"uplink steady {offered_per_s}/s offered      {rate(total, t1 - t0)},"
        f" CPU {100 * (c1 - c0) / (t1 - t0):.0f}% of a core (outbox writes included)"
    )


def bench_uplink(messages: int, batch: int, directory: Path) -> None:
    broker = MosquittoBroker(free_port(), directory / "mosquitto")
    with broker:
        asyncio.run(bench_uplink_backlog(broker.port, make_batches(messages, batch), directory))
        steady = make_batches(min(messages, 50_000), batch)
        asyncio.run(bench_uplink_steady(broker.port, steady, directory))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--uplink", action="store_true", help="also measure the MQTT uplink")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bench_outbox(args.messages, args.batch, Path(tmp))
        if args.uplink:
            bench_uplink(args.messages, args.batch, Path(tmp))


if __name__ == "__main__":
    main()
