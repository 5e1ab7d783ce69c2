"""What live dashboards cost the central: CPU and REST latency with and without 200 open streams.

Real processes on 127.0.0.1: Mosquitto on a free port, the central service (``pilegate central``)
with a 50-port station (25 fast and 25 slow single-port piles), and a publisher thread that sends
every port's telemetry once a second with a changing power, so every tick of the dashboard's hub
has every port to push. The central's CPU time is read from /proc over a window, first with no
stream open ("idle": telemetry only), then with ``--streams`` operator streams open (the heaviest
channel: every port, every queue, the chart), read by a separate client process that counts the
events. REST p99 is timed on the driver and operator endpoints in both phases. Bounded in streams,
requests and seconds; loopback only.

    .venv/bin/python bench/dashboard_sse.py --streams 200 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Literal

import aiohttp
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pilegate.broker import MosquittoBroker, free_port
from protocols import topics
from protocols.payloads import PileStatus, Telemetry
from tests.e2e.harness import Api, start_central

STATION = "dash"
PILES = [f"F{i}" for i in range(1, 26)] + [f"T{i}" for i in range(1, 26)]
PATHS = [
    "/api/charging/queue/status/",
    "/api/charging/request/status/",
    "/api/charging/piles/status/",
    "/api/charging/admin/queues/",
]
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


class Publisher:
    """Every port's telemetry once a second (power changing each time), piles reported online."""

    def __init__(self, port: int) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-dashboard")
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="publisher")

    def start(self) -> None:
        now = int(time.time() * 1000)
        for pile in PILES:
            kind: Literal["fast", "trickle"] = "fast" if pile.startswith("F") else "trickle"
            status = PileStatus(
                "online", now, kind=kind, ports=1, rated_power_W=30_000, vendor="bench", firmware="1.0"
            )
            self.client.publish(topics.pile_status(STATION, pile), status.to_json(), qos=1, retain=True)
        self._thread.start()

    def _run(self) -> None:
        seq = 0
        while not self._stop.is_set():
            seq += 1
            now = int(time.time() * 1000)
            for n, pile in enumerate(PILES):
                power = 1000.0 * ((seq + n) % 30)
                reading = Telemetry(
                    now,
                    1,
                    seq,
                    "charging",
                    400.0 + seq % 5,
                    power / 400,
                    power,
                    100_000 + seq * 8,
                    40.0 + seq % 3,
                    "none",
                )
                self.client.publish(topics.telemetry(STATION, pile, 1), reading.to_json())
            self._stop.wait(1.0)  # the station's 1 Hz

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.client.loop_stop()
        self.client.disconnect()


async def _read_streams(
    base: str, tickets: list[str], seconds: float, ready: Any, counts: Any, sizes: Any
) -> None:
    connector = aiohttp.TCPConnector(limit=0)  # every stream at once (the default pool is 100)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=None)
    ) as session:

        async def one(i: int, ticket: str) -> None:
            async with session.get(f"{base}/dashboard/stream?ticket={ticket}") as response:
                assert response.status == 200, response.status
                ready.release()
                async for line in response.content:
                    sizes[i] += len(line)
                    if line.startswith(b"event: "):
                        counts[i] += 1

        tasks = [asyncio.create_task(one(i, t)) for i, t in enumerate(tickets)]
        await asyncio.sleep(seconds)  # how long the pages stay open
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def stream_clients(
    base: str, tickets: list[str], seconds: float, ready: Any, counts: Any, sizes: Any
) -> None:
    """The pages: one process holding every stream open for ``seconds``, counting events and bytes."""
    asyncio.run(_read_streams(base, tickets, seconds, ready, counts, sizes))


async def timed_calls(base: str, driver: str, admin: str, requests: int) -> list[float]:
    latencies = []
    async with aiohttp.ClientSession() as session:
        for n in range(requests):
            path = PATHS[n % len(PATHS)]
            token = admin if "/admin/" in path else driver
            t0 = time.perf_counter()
            async with session.get(base + path, headers={"Authorization": f"Token {token}"}) as r:
                await r.read()
                assert r.status == 200, (path, r.status)
            latencies.append((time.perf_counter() - t0) * 1000)
    return latencies


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98]


def cpu_percent(pid: int, seconds: float) -> float:
    """The process's CPU over a window, in % of one core."""
    c0, t0 = cpu_s(pid), time.perf_counter()
    time.sleep(seconds)  # the measuring window
    return 100 * (cpu_s(pid) - c0) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--streams", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=20.0, help="each CPU window")
    ap.add_argument("--requests", type=int, default=400)
    args = ap.parse_args()
    station = "\n".join(["fast_power_kw = 30", "slow_power_kw = 30"])
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        broker = MosquittoBroker(free_port(), workdir / "mosquitto")
        broker.start()
        central = publisher = clients = None
        try:
            central = start_central(
                workdir,
                broker.port,
                station=STATION,
                fast=25,
                trickle=25,
                admin_password="bench-admin-pw",
                extra_station=station,
            )
            pid = central.proc.popen.pid
            api = Api(central.url)
            driver = api.register("bench-driver")
            _, body = api.call(
                "POST", "/api/auth/login/", {"username": "admin", "password": "bench-admin-pw"}
            )
            admin = body["data"]["token"]
            driver.call("POST", "/api/charging/request/", {"charging_mode": "fast", "requested_amount": 10})
            publisher = Publisher(broker.port)
            publisher.start()
            time.sleep(3)  # let the telemetry settle into its 1 Hz rhythm before measuring
            idle_cpu = cpu_percent(pid, args.seconds)
            idle = asyncio.run(timed_calls(central.url, str(driver.token), admin, args.requests))
            admin_api = Api(central.url, admin)
            tickets = [
                admin_api.call("POST", "/dashboard/ticket", {"view": "operator"})[1]["data"]["ticket"]
                for _ in range(args.streams)
            ]
            ready = multiprocessing.Semaphore(0)
            counts = multiprocessing.Array("i", args.streams)
            sizes = multiprocessing.Array("q", args.streams)
            hold_s = args.seconds + 60
            clients = multiprocessing.Process(
                target=stream_clients, args=(central.url, tickets, hold_s, ready, counts, sizes)
            )
            clients.start()
            for _ in range(args.streams):
                assert ready.acquire(timeout=60), "streams did not open"
            time.sleep(3)  # the snapshots go out; then the steady state is measured
            events_before, bytes_before = sum(counts[:]), sum(sizes[:])
            t0 = time.perf_counter()
            streams_cpu = cpu_percent(pid, args.seconds)
            per_stream_s = (time.perf_counter() - t0) * args.streams
            events = (sum(counts[:]) - events_before) / per_stream_s
            kib = (sum(sizes[:]) - bytes_before) / per_stream_s / 1024
            loaded = asyncio.run(timed_calls(central.url, str(driver.token), admin, args.requests))
            print(f"50-port station, telemetry at 1 Hz per port; {args.streams} operator streams")
            print(f"central CPU without streams: {idle_cpu:5.1f} % of one core")
            print(
                f"central CPU with streams:    {streams_cpu:5.1f} % of one core "
                f"(+{streams_cpu - idle_cpu:.1f} %; per stream {events:.2f} events/s, {kib:.1f} KiB/s)"
            )
            print(f"REST p99 without streams: {p99(idle):.1f} ms (p50 {statistics.median(idle):.1f} ms)")
            print(f"REST p99 with streams:    {p99(loaded):.1f} ms (p50 {statistics.median(loaded):.1f} ms)")
            print(
                json.dumps(
                    {
                        "idle_cpu_pct": round(idle_cpu, 1),
                        "streams_cpu_pct": round(streams_cpu, 1),
                        "idle_p99_ms": round(p99(idle), 1),
                        "streams_p99_ms": round(p99(loaded), 1),
                        "events_per_stream_s": round(events, 2),
                        "kib_per_stream_s": round(kib, 1),
                    }
                )
            )
        finally:
            if clients is not None:
                clients.terminate()
                clients.join(10)
            if publisher is not None:
                publisher.stop()
            if central is not None:
                central.proc.stop()
            broker.stop()


if __name__ == "__main__":
    main()
