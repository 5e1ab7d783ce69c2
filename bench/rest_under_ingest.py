"""REST latency of the central while it ingests telemetry: p50/p99 idle and under a paced load.

Real processes on 127.0.0.1: Mosquitto on a free port (with the shipped config's window of
unacknowledged messages per subscriber), the central service (``pilegate central``; with
``--ingest process``, the default, it runs ``pilegate ingest`` as its child, which stores the
telemetry; ``--ingest inline`` is the single process of before), on SQLite or, with ``--database
postgresql``, on a throwaway PostgreSQL server (as ``bench/ingest_bench.py`` starts it), and a
publisher process that sends QoS 1 telemetry for ``--streams`` streams at ``--rate`` messages
per second (raw MQTT packets, so the publisher is not the bottleneck). A client then times driver
and operator API calls, first with no telemetry, then while the load runs; the stored-telemetry
rate during the window is counted in the database (``telemetry`` rows). Bounded in requests and
seconds.

    .venv/bin/python bench/rest_under_ingest.py --rate 5000 --requests 400 [--database postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg

from bench.ingest_bench import (
    STATION,
    BenchBroker,
    _publish_packet,
    _remaining_length,
    messages,
)
from pilegate.broker import free_port
from tests.e2e.harness import Api, CentralProcess, central_config, spawn, wait_until
from tests.postgres_server import create_database, start_server

PATHS = [
    "/api/charging/queue/status/",
    "/api/charging/request/status/",
    "/api/charging/bills/",
    "/api/charging/piles/status/",
    "/api/Orders/paged?pageSize=20",
]


def paced_publisher(port: int, rate: int, seconds: float, streams: int, state: str) -> None:
    """Send QoS 1 telemetry at ``rate`` msg/s for ``seconds`` (raw MQTT 3.1.1 over a socket)."""
    count = int(rate * seconds)
    batch = messages(count, streams, time.time_ns() // 1_000_000, state)
    packets = [_publish_packet(t, p, n % 65535 + 1) for n, (t, p) in enumerate(batch)]
    client_id = b"bench-paced"
    variable = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(client_id).to_bytes(2, "big") + client_id
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"\x10" + _remaining_length(len(variable)) + variable)
    assert sock.recv(4)[:2] == b"\x20\x02", "no CONNACK"
    sock.setblocking(False)
    chunk, start = 50, time.perf_counter()
    for i in range(0, count, chunk):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)  # pacing the load generator, not waiting for a condition
        sock.setblocking(True)
        sock.sendall(b"".join(packets[i : i + chunk]))
        sock.setblocking(False)
        try:
            while sock.recv(65536):
                pass
        except BlockingIOError:
            pass
    sock.setblocking(True)
    sock.sendall(b"\xe0\x00")
    sock.close()


async def timed_calls(base: str, driver: str, admin: str, requests: int) -> list[float]:
    """Latencies (ms) of ``requests`` calls round robin over PATHS; per path in BY_PATH."""
    latencies = []
    BY_PATH.clear()
    async with aiohttp.ClientSession() as session:
        for n in range(requests):
            path = PATHS[n % len(PATHS)]
            token = admin if path.startswith("/api/Orders") else driver
            t0 = time.perf_counter()
            async with session.get(base + path, headers={"Authorization": f"Token {token}"}) as r:
                await r.read()
                assert r.status == 200, (path, r.status)
            latencies.append((time.perf_counter() - t0) * 1000)
            BY_PATH.setdefault(path.split("?")[0], []).append(latencies[-1])
    return latencies


BY_PATH: dict[str, list[float]] = {}


def stored(database: str) -> int:
    """Telemetry rows in the central's database (whichever process stored them)."""
    if database.startswith("postgresql://"):
        with psycopg.connect(database) as conn:
            row = conn.execute("SELECT count(*) FROM telemetry").fetchone()
    else:
        with contextlib.closing(sqlite3.connect(database.removeprefix("sqlite:///"), timeout=30)) as conn:
            row = conn.execute("SELECT count(*) FROM telemetry").fetchone()
    return int(row[0]) if row else 0


def launch_central(workdir: Path, mqtt_port: int, database: str, ingest: str) -> CentralProcess:
    """``pilegate central`` on ``database`` with ``[ingest] mode = ingest`` and a bench admin."""
    config = central_config(STATION, mqtt_port, workdir / "central-data", 60, 1, 1)
    config = config.replace("[mqtt]", f'database = "{database}"\n[ingest]\nmode = "{ingest}"\n[mqtt]')
    config_path = workdir / "central.toml"
    config_path.write_text(config)
    subprocess.run(
        [sys.executable, "-m", "pilegate.cli", "create-user", "--config", str(config_path), "--admin"],
        env={**os.environ, "PILEGATE_PASSWORD": "bench-admin-pw"},
        check=True,
        capture_output=True,
        timeout=60,
    )
    port = free_port()
    proc = spawn("central", ["central", "--config", str(config_path), "--port", str(port)], workdir)
    central = CentralProcess(proc, config_path, f"http://127.0.0.1:{port}")
    wait_until(central.answering, 30, "central HTTP", proc)
    return central


def summary(name: str, latencies: list[float]) -> str:
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return (
        f"{name:<14} n={len(latencies)} p50={statistics.median(latencies):.1f} ms "
        f"p99={q[98]:.1f} ms max={max(latencies):.1f} ms"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rate", type=int, default=5000, help="telemetry messages per second")
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--seconds", type=float, default=30.0, help="length of the load")
    ap.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    ap.add_argument("--ingest", choices=("process", "inline"), default="process")
    ap.add_argument(
        "--state",
        choices=("charging", "available"),
        default="charging",
        help="the readings' port state: charging (the central stops each such port: it has no order "
        "there, a command per port and grace period) or available (only the live path's bookkeeping)",
    )
    args = ap.parse_args()
    print(f"command: .venv/bin/python bench/rest_under_ingest.py {' '.join(sys.argv[1:])}")
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        workdir = Path(tmp)
        database = f"sqlite:///{workdir / 'central.db'}"
        if args.database == "postgresql":
            server = start_server(settings=("synchronous_commit=off",))
            stack.callback(server.stop)
            database = create_database(server, "rest_bench")
        broker = BenchBroker(free_port(), workdir / "mosquitto")  # production's window
        broker.start()
        central = None
        try:
            central = launch_central(workdir, broker.port, database, args.ingest)
            api = Api(central.url)
            driver = api.register("bench-driver")
            _, body = api.call("POST", "/api/Users/login", {"openId": "admin", "password": "bench-admin-pw"})
            admin = body["token"]
            driver.call("POST", "/api/charging/request/", {"charging_mode": "fast", "requested_amount": 10})
            idle = asyncio.run(timed_calls(central.url, str(driver.token), admin, args.requests))
            publisher = multiprocessing.Process(
                target=paced_publisher, args=(broker.port, args.rate, args.seconds, args.streams, args.state)
            )
            publisher.start()
            deadline = time.monotonic() + 60
            while stored(database) < args.rate and time.monotonic() < deadline:
                time.sleep(0.1)  # until about a second of telemetry has been stored
            before, t0 = stored(database), time.perf_counter()
            loaded = asyncio.run(timed_calls(central.url, str(driver.token), admin, args.requests))
            window = time.perf_counter() - t0
            ingested = stored(database) - before
            publisher.join(args.seconds + 30)
            print(
                f"database {args.database}, ingest {args.ingest}, readings {args.state}, "
                f"mosquitto max_inflight_messages {broker.inflight}"
            )
            print(
                f"central REST latency, {len(PATHS)} endpoints round robin "
                f"({', '.join(p.split('?')[0] for p in PATHS)})"
            )
            print(summary("idle", idle))
            print(summary(f"ingest {args.rate}/s", loaded))
            for path, values in BY_PATH.items():
                print(summary(f"  {path.split('/')[-2] or path}", values))
            print(
                f"telemetry stored while timing: {ingested / window:.0f} msg/s "
                f"({ingested} in {window:.1f} s; offered {args.rate}/s)"
            )
            print(
                json.dumps(
                    {
                        "idle_p99_ms": statistics.quantiles(idle, n=100, method="inclusive")[98],
                        "loaded_p99_ms": statistics.quantiles(loaded, n=100, method="inclusive")[98],
                    }
                )
            )
        finally:
            if central:
                central.proc.stop()
            broker.stop()


if __name__ == "__main__":
    main()
