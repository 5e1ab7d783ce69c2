"""Central ingest throughput: telemetry messages per second STORED in SQLite or PostgreSQL.

Run: ``.venv/bin/python bench/ingest_bench.py [--database sqlite|postgresql] [--messages 200000]
[--streams 1000] [--e2e-messages 100000] [--no-e2e] [--ingest process|inline] [--broker-inflight N]
[--profile]``

``--database postgresql`` starts a throwaway PostgreSQL server (Debian's binaries, a temporary
directory, a free port: :mod:`tests.postgres_server`) with ``synchronous_commit=off``, the same
promise as SQLite's WAL with ``synchronous=NORMAL`` (a power cut may lose the last commits, never
corrupts); each phase gets a fresh database on it.

(a) pipeline: ``Ingest.handle(topic, payload)`` in a loop with realistic telemetry payloads for
``--streams`` streams (500 piles x 2 ports, registered so every reading also updates its port
row), batches flushed to a real database by the store's writer thread. Target >= 20,000 msg/s.

(b) end to end: a publisher PROCESS blasts QoS 1 telemetry at a local mosquitto (started on a free
port, unlimited queue); the ingest process's client (CentralMqtt with manual acks -> Ingest with
``store_status=False``, as ``pilegate ingest`` builds them) receives and stores it, the piles
registered beforehand as the central does. ``--ingest inline`` measures the single central
process of before (acks on receipt, flushes every 100 ms) instead.
Prints the publisher's rate, the stored rate, the central process's CPU share and where its time
goes (Ingest.handle vs the MQTT client, and the writer thread's busy time, with the wall time of
each part of its writes: readings, ports' and piles' live fields). ``--profile`` adds the
top functions of a cProfile of the central loop. Bounded: ``--e2e-timeout-s`` (default 120).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import logging
import pstats
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial
from pathlib import Path
from typing import TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import structlog

from central.adapters import telemetry
from central.adapters.database import Db
from central.adapters.ingest import Ingest
from central.adapters.mqtt import CentralMqtt, MqttSettings
from central.adapters.schema import migrations
from central.adapters.storage import Store
from central.ingest_main import FLUSH_ROWS, NoListener, ingest_subscriptions
from pilegate.broker import MosquittoBroker, free_port
from protocols import topics
from protocols.payloads import CommandResult, PileEvent, PileStatus, Telemetry
from tests.postgres_server import PgServer, create_database, start_server

STATION = "bench"
T = TypeVar("T")


class NullListener:
    """The service's listener reduced to a counter."""

    def __init__(self) -> None:
        self.readings = 0

    def on_telemetry(self, pile_no: str, port: int, reading: Telemetry) -> None:
        self.readings += 1

    def on_pile_state(self, pile_no: str, state: str) -> None:
        pass

    def on_command_result(self, pile_no: str, port: int, result: CommandResult) -> None:
        pass

    def on_pile_event(self, pile_no: str, event: PileEvent) -> None:
        pass


class TimedStore(Store):
    """A Store that adds up the wall and CPU time its writer thread spends in each job."""

    busy_s = 0.0
    cpu_s = 0.0

    def submit(self, fn: Callable[[Db], T]) -> Future[T]:
        def timed(db: Db) -> T:
            t0, c0 = time.perf_counter(), time.thread_time()
            try:
                return fn(db)
            finally:
                self.busy_s += time.perf_counter() - t0
                self.cpu_s += time.thread_time() - c0

        return super().submit(timed)


class WriterPhases:
    """Wall time the writer spends in each part of an ingest write (``central.adapters.telemetry``'s
    functions, wrapped while the bench runs): the readings' bulk load and the ports' and piles'
    live-field updates."""

    NAMES = ("insert_readings", "update_port_live", "update_pile_live")

    def __init__(self) -> None:
        self.wall_s = dict.fromkeys(self.NAMES, 0.0)
        self.calls = dict.fromkeys(self.NAMES, 0)
        for name in self.NAMES:
            setattr(telemetry, name, self._timed(name, getattr(telemetry, name)))

    def _timed(self, name: str, fn: Callable[..., None]) -> Callable[..., None]:
        def timed(*args: object) -> None:
            t0 = time.perf_counter()
            try:
                fn(*args)
            finally:
                self.wall_s[name] += time.perf_counter() - t0
                self.calls[name] += 1

        return timed

    def reset(self) -> None:
        self.wall_s = dict.fromkeys(self.NAMES, 0.0)
        self.calls = dict.fromkeys(self.NAMES, 0)

    def line(self, rows: int) -> str:
        readings, ports, piles = (self.wall_s[n] for n in self.NAMES)
        writes = max(self.calls["update_port_live"], 1)
        return (
            f"    writer wall per part: readings {1e6 * readings / max(rows, 1):.1f} us/row; live fields "
            f"per write: ports {1e3 * ports / writes:.1f} ms, piles {1e3 * piles / writes:.1f} ms"
        )


PHASES: list[WriterPhases] = []  # the run's (set in main)


def piles(streams: int) -> list[str]:
    return [f"P{i}" for i in range(max(1, streams // 2))]


def messages(count: int, streams: int, start_ms: int, state: str = "charging") -> list[tuple[str, bytes]]:
    """``count`` realistic telemetry messages round-robin over ``streams`` (pile, port) streams."""
    names = piles(streams)
    keys = [(names[i // 2], i % 2 + 1) for i in range(len(names) * 2)]
    out = []
    for n in range(count):
        pile, port = keys[n % len(keys)]
        seq = n // len(keys) + 1
        reading = Telemetry(
            start_ms + seq * 1000,
            1,
            seq,
            state,
            401.3,
            74.9,
            30_050.0,
            100_000 + seq * 8,
            41.5,
            "none",
            heartbeat=seq % 65536,
            active_limit_W=30_000,
            active_target_Wh=50_000,
        )
        out.append((topics.telemetry(STATION, pile, port), reading.to_json()))
    return out


def status_messages(streams: int) -> list[tuple[str, bytes]]:
    now = time.time_ns() // 1_000_000
    return [
        (
            topics.pile_status(STATION, p),
            PileStatus(
                "online", now, kind="fast", ports=2, rated_power_W=30_000, vendor="bench", firmware="1.0"
            ).to_json(),
        )
        for p in piles(streams)
    ]


class Databases:
    """Where each phase stores: a SQLite file in the temporary directory, or a fresh database on a
    throwaway PostgreSQL server."""

    def __init__(self, engine: str, directory: Path) -> None:
        self.engine, self.directory = engine, directory
        self.server: PgServer | None = None

    def __enter__(self) -> Databases:
        if self.engine == "postgresql":
            self.server = start_server(settings=("synchronous_commit=off",))
        return self

    def __exit__(self, *exc: object) -> None:
        if self.server is not None:
            self.server.stop()

    def new(self, name: str) -> Path | str:
        if self.server is None:
            return self.directory / f"{name}.db"
        return create_database(self.server, name)


DATABASES: list[Databases] = []  # the run's (set in main)


async def open_store(name: str) -> TimedStore:
    store = TimedStore(DATABASES[0].new(name), [migrations])
    await store.open()
    return store


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:>10,.0f} msg/s ({count:,} in {seconds:.2f} s)"


# -- (a) the pipeline fed directly -------------------------------------------------------------


async def bench_pipeline(count: int, streams: int, directory: Path) -> None:
    store = await open_store("pipeline")
    ingest = Ingest(store, STATION, NullListener())
    await ingest.start()
    for topic, payload in status_messages(streams):
        ingest.handle(topic, payload)
    await ingest.flush()
    batch = messages(count, streams, time.time_ns() // 1_000_000)
    store.busy_s = store.cpu_s = 0.0
    PHASES[0].reset()
    t0 = time.perf_counter()
    handle_s = 0.0
    for i in range(0, len(batch), 1000):
        h0 = time.perf_counter()
        for topic, payload in batch[i : i + 1000]:
            ingest.handle(topic, payload)
        handle_s += time.perf_counter() - h0
        await asyncio.sleep(0)  # let the flush task run, as the socket reader would
    await ingest.stop()
    elapsed = time.perf_counter() - t0
    stats = ingest.stats()
    rows = await store.read(lambda db: db.execute("SELECT count(*) FROM telemetry").fetchone()[0])
    await store.close()
    assert stats["stored"] == count == rows, (stats, rows)
    print(f"(a) pipeline stored              {rate(count, elapsed)}  target >= 20,000")
    print(
        f"    Ingest.handle (parse, de-dup, buffer) {1e6 * handle_s / count:.1f} us/msg; writer "
        f"thread {1e6 * store.cpu_s / count:.1f} us/row CPU ({store.busy_s:.2f} s wall) in "
        f"{stats['flushes']} transactions, port and pile rows included"
    )
    print(PHASES[0].line(count))


# -- (b) end to end through mosquitto ----------------------------------------------------------


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = n >> 7, n & 0x7F
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _publish_packet(topic: str, payload: bytes, packet_id: int) -> bytes:
    name = topic.encode()
    body = len(name).to_bytes(2, "big") + name + packet_id.to_bytes(2, "big") + payload
    return b"\x32" + _remaining_length(len(body)) + body


def run_publisher(port: int, count: int, streams: int) -> None:
    """Publisher process: blast ``count`` QoS 1 messages, print a JSON summary once all are acked.

    A minimal MQTT 3.1.1 client over a raw socket (pre-built PUBLISH packets written in chunks,
    at most ``window`` unacknowledged), so the figure measures the central, not a Python client:
    paho's threaded publisher tops out near 4,500 msg/s here.
    """
    import socket

    batch = messages(count, streams, time.time_ns() // 1_000_000)
    packets = [_publish_packet(t, p, n % 65535 + 1) for n, (t, p) in enumerate(batch)]
    window, chunk = 1000, 100
    client_id = b"bench-publisher"
    variable = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(client_id).to_bytes(2, "big") + client_id
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"\x10" + _remaining_length(len(variable)) + variable)
    assert sock.recv(4)[:2] == b"\x20\x02", "no CONNACK"
    acked, sent, pending = 0, 0, b""
    t0 = time.perf_counter()
    while acked < count:
        if sent < count and sent - acked <= window - chunk:
            sock.sendall(b"".join(packets[sent : sent + chunk]))
            sent = min(count, sent + chunk)
            sock.setblocking(False)
        else:
            sock.setblocking(True)
        try:
            pending += sock.recv(65536)
        except BlockingIOError:
            continue
        acked += len(pending) // 4  # PUBACKs only: 0x40 0x02 id id
        pending = pending[len(pending) - len(pending) % 4 :]
    elapsed = time.perf_counter() - t0
    sock.setblocking(True)
    sock.sendall(b"\xe0\x00")  # DISCONNECT
    sock.close()
    print(json.dumps({"published": acked, "seconds": elapsed}), flush=True)


class BenchBroker(MosquittoBroker):
    """Mosquitto with the production config's window towards each subscriber."""

    inflight = 2000

    def render_conf(self) -> str:
        return super().render_conf() + f"max_inflight_messages {self.inflight}\n"


async def wait_stored(ingest: Ingest, count: int, timeout_s: float) -> float:
    t0 = time.perf_counter()
    while ingest.stats()["stored"] != count and time.perf_counter() - t0 < timeout_s:  # noqa: ASYNC110
        await asyncio.sleep(0.02)
    return time.perf_counter()


async def _register_piles(store: TimedStore, streams: int) -> None:
    """The piles' statuses stored as the central stores them (so every reading updates a port row)."""
    central = Ingest(store, STATION, NullListener(), store_telemetry=False)
    for topic, payload in status_messages(streams):
        central.handle(topic, payload)
    await central.flush()


def _e2e_parts(
    store: TimedStore, port: int, process: bool, handle: Callable[[str, bytes], None]
) -> tuple[CentralMqtt, Ingest]:
    """The client and the ingest of (b): the ingest process's (manual acks, telemetry and statuses
    only, group commit) or the single central process's of before (inline)."""
    if process:
        settings = MqttSettings("127.0.0.1", port, client_id="bench-ingest", manual_ack=True)
        mqtt = CentralMqtt(settings, ingest_subscriptions(STATION), handle)
        ingest = Ingest(store, STATION, NoListener(), store_status=False, acks=mqtt, flush_rows=FLUSH_ROWS)
        return mqtt, ingest
    mqtt = CentralMqtt(
        MqttSettings("127.0.0.1", port, client_id="bench-central"), [topics.station_filter(STATION)], handle
    )
    return mqtt, Ingest(store, STATION, NullListener())


async def bench_e2e(
    count: int, streams: int, directory: Path, timeout_s: float, profile: bool, inflight: int, process: bool
) -> None:
    BenchBroker.inflight = inflight
    broker = BenchBroker(free_port(), directory / "mosquitto")
    with broker:
        store = await open_store("e2e")
        await _register_piles(store, streams)
        handle_s = [0.0]
        first: list[float] = []
        holder: list[Ingest] = []

        def timed_handle(topic: str, payload: bytes) -> None:
            h0 = time.perf_counter()
            if not first:
                first.append(h0)
            holder[0].handle(topic, payload)
            handle_s[0] += time.perf_counter() - h0

        mqtt, ingest = _e2e_parts(store, broker.port, process, timed_handle)
        holder.append(ingest)
        await ingest.start()
        await mqtt.start()
        await mqtt.wait_connected(10)
        for topic, payload in status_messages(streams):
            ingest.handle(topic, payload)  # what it follows in memory: the piles are online
        await ingest.flush()
        store.busy_s = store.cpu_s = 0.0
        PHASES[0].reset()
        profiler = cProfile.Profile() if profile else None
        publisher = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--publisher",
            str(broker.port),
            str(count),
            str(streams),
            stdout=asyncio.subprocess.PIPE,
        )
        c0, m0 = time.process_time(), time.thread_time()
        if profiler:
            profiler.enable()
        t_end = await wait_stored(ingest, count, timeout_s)
        if profiler:
            profiler.disable()
        cpu_s, main_s = time.process_time() - c0, time.thread_time() - m0
        try:
            async with asyncio.timeout(timeout_s):
                raw, _ = await publisher.communicate()
        except TimeoutError:
            publisher.kill()
            raw, _ = await publisher.communicate()
        out = raw.decode()
        await mqtt.stop()
        await ingest.stop()
        await store.close()
    pub = json.loads(out.strip().splitlines()[-1]) if out.strip() else {"published": 0, "seconds": 0}
    stats = ingest.stats()
    wall_s = t_end - (first[0] if first else t_end)
    stored = int(str(stats["stored"]))
    print(
        f"(b) {'ingest process (manual acks, group commit)' if process else 'one central process (inline)'}; "
        f"mosquitto max_inflight_messages {inflight}; publisher process (raw MQTT, QoS 1, "
        f"1000 in flight) "
        f"{rate(pub['published'], pub['seconds'] or 1)}"
    )
    print(
        f"    central stored end to end    {rate(stored, wall_s or 1)}; "
        f"received {mqtt.counts['received']:,}, duplicates {stats['duplicates']}, "
        f"gaps {stats['gaps']}"
    )
    print(
        f"    central process CPU {cpu_s:.2f} s ({100 * cpu_s / (wall_s or 1):.0f}% of a core) over "
        f"{wall_s:.2f} s: loop thread {main_s:.2f} s = Ingest.handle {handle_s[0]:.2f} s "
        f"({1e6 * handle_s[0] / max(stored, 1):.1f} us/msg) + MQTT client (paho read, PUBACK, "
        f"asyncio) {max(main_s - handle_s[0], 0):.2f} s "
        f"({1e6 * max(main_s - handle_s[0], 0) / max(stored, 1):.1f} us/msg); writer "
        f"thread {store.cpu_s:.2f} s CPU ({store.busy_s:.2f} s wall) in {stats['flushes']} "
        f"transactions"
    )
    print(PHASES[0].line(stored))
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--e2e-messages", type=int, default=100_000)
    parser.add_argument("--e2e-timeout-s", type=float, default=120.0)
    parser.add_argument("--no-e2e", action="store_true")
    parser.add_argument(
        "--broker-inflight",
        type=int,
        default=2000,
        help="mosquitto max_inflight_messages (production config: 2000)",
    )
    parser.add_argument(
        "--ingest",
        choices=("process", "inline"),
        default="process",
        help="(b) as the ingest process stores (default) or as the single central process did",
    )
    parser.add_argument("--profile", action="store_true", help="cProfile the central in (b)")
    parser.add_argument("--publisher", nargs=3, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.publisher:
        run_publisher(*args.publisher)
        return
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    print("command: .venv/bin/python bench/ingest_bench.py " + " ".join(sys.argv[1:]))
    with tempfile.TemporaryDirectory() as tmp, Databases(args.database, Path(tmp)) as databases:
        DATABASES[:] = [databases]
        PHASES[:] = [WriterPhases()]
        asyncio.run(bench_pipeline(args.messages, args.streams, Path(tmp)))
        if not args.no_e2e:
            asyncio.run(
                partial(
                    bench_e2e,
                    args.e2e_messages,
                    args.streams,
                    Path(tmp),
                    args.e2e_timeout_s,
                    args.profile,
                    args.broker_inflight,
                    args.ingest == "process",
                )()
            )


if __name__ == "__main__":
    main()
