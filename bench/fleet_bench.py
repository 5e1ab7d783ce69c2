"""A fleet under load: 10 stations x 100 ports through two central instances on one PostgreSQL.

Real processes on 127.0.0.1: a throwaway PostgreSQL (``tests/postgres_server.py``,
``synchronous_commit=off``), Mosquitto on a free port (the production window of unacknowledged
messages), and two ``pilegate central`` instances sharing the database and the broker, each
running the ``--stations`` stations it holds the lease of (they spread by fair share:
docs/fleet.md). Each station has 50 piles of 2 ports, registered by their retained statuses as a
gateway's would be. A publisher process (raw MQTT, QoS 1, paced: as ``bench/ingest_bench.py``)
sends every port's telemetry at ``--rate`` messages a second in all, readings of idle ports,
for at most ``--seconds``; besides, one *canary* port per station reports ``charging`` ten times a
second. No order charges there, so the station's owner stops it (a ``cmd``) at its first reading
and again each time its grace of ``central/application/live.py: STOP_GRACE_S`` (10 s) runs out.

It measures, in this order:

* **stored msg/s**: ``telemetry`` rows the instances stored (each its own stations') while the REST
  calls below ran, against the rate offered;
* **REST p50/p99 under that load**: ``--requests`` driver and operator reads, round robin over both
  instances and the stations (``?station=``), one at a time;
* **takeover**: the instance owning more stations is killed with SIGKILL right after the bench
  saw it stop a canary (so it had no command due for that station for ~10 s: every later ``cmd``
  of that station is the new owner's), and for each of its stations the time from the kill to
  the first ``cmd`` the broker carries for that station: the survivor took the lease, restored the
  station from the database, subscribed, read the canary's next reading and reconciled it (the
  stations whose last canary stop was more than a grace ago are left out: their next stop could be
  the dead owner's late one).

Prints the command that reproduces the run and the figures; exit status 1 when a takeover took 10 s
or more (the issue's bound).

    .venv/bin/python bench/fleet_bench.py --stations 10 --rate 1000 --requests 400
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import random
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.ingest_bench import BenchBroker, _publish_packet, _remaining_length
from pilegate.broker import free_port
from protocols import topics
from protocols.payloads import CommandMessage, CommandResult, PayloadError, PileStatus, Telemetry
from tests.e2e.harness import Api, CentralProcess, create_admin, run_central
from tests.integration.fleet_helpers import lease_holders
from tests.postgres_server import create_database, start_server

PILES = 50  # per station, two ports each: 100 ports
CANARY = ("P0", 1)  # per station: the port that reports charging without an order
CANARY_HZ = 10.0
STOP_GRACE_S = 10.0  # central/application/live.py: a stopped port is not stopped again sooner
BOUND_S = 10.0
ADMIN_PASSWORD = "fleet-bench-admin-1"  # noqa: S105 - a throwaway account on loopback
PATHS = (
    "/api/charging/queue/status/?station={station}",
    "/api/charging/piles/status/?station={station}",
    "/api/charging/request/status/",
    "/api/charging/bills/",
    "/api/Orders/paged?pageSize=20&station={station}",
)


def station_codes(count: int) -> list[str]:
    return [f"station{n}" for n in range(1, count + 1)]


def central_config(workdir: Path, instance: str, database: str, mqtt_port: int, stations: list[str]) -> Path:
    """An instance's config: every station (its piles register themselves), this instance's name,
    client id and data dir."""
    params = "FastChargingPileNum = 1\nTrickleChargingPileNum = 1\n"
    lines = [
        "[central]",
        f'station = "{stations[0]}"',
        f"database = {json.dumps(database)}",
        f'instance = "{instance}"',
        f'data_dir = "{workdir / f"central-{instance}"}"',
        'log_format = "json"',
        "[mqtt]",
        f'url = "mqtt://127.0.0.1:{mqtt_port}"',
        f'client_id = "bench-central-{instance}"',
        "[station]",
        params,
    ]
    for code in stations[1:]:
        lines += [f"[stations.{code}]", params]
    path = workdir / f"central-{instance}.toml"
    path.write_text("\n".join(lines))
    return path


def publish_statuses(port: int, stations: list[str]) -> None:
    """Every pile's retained ``online`` status (kind, ports, rating): a gateway's first report."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-statuses")
    client.connect("127.0.0.1", port)
    client.loop_start()
    now = time.time_ns() // 1_000_000
    infos = []
    for code in stations:
        for n in range(PILES):
            status = PileStatus("online", now, kind="fast", ports=2, rated_power_W=30_000, vendor="bench")
            infos.append(
                client.publish(topics.pile_status(code, f"P{n}"), status.to_json(), qos=1, retain=True)
            )
    for info in infos:
        info.wait_for_publish(10)
    client.disconnect()
    client.loop_stop()


def load_packets(stations: list[str], rate: int, seconds: float) -> list[tuple[float, bytes]]:
    """(due second, PUBLISH packet) of the whole run: idle readings of every port round robin at
    ``rate`` a second, and each canary's charging readings at ``CANARY_HZ``."""
    start_ms = time.time_ns() // 1_000_000
    ports = [(code, f"P{n}", port) for n in range(PILES) for port in (1, 2) for code in stations]
    ports = [p for p in ports if (p[1], p[2]) != CANARY]
    out: list[tuple[float, bytes]] = []
    for i in range(int(rate * seconds)):
        code, pile, port = ports[i % len(ports)]
        seq = i // len(ports) + 1
        reading = Telemetry(
            start_ms + seq * 1000, 1, seq, "available", 400.0, 0.0, 0.0, 100_000, 25.0, "none"
        )
        out.append(
            (i / rate, _publish_packet(topics.telemetry(code, pile, port), reading.to_json(), i % 65535 + 1))
        )
    for seq in range(1, int(CANARY_HZ * seconds) + 1):
        for code in stations:
            at_ms = start_ms + int(seq * 1000 / CANARY_HZ)
            energy = 100_000 + seq * 8
            reading = Telemetry(at_ms, 1, seq, "charging", 400.0, 75.0, 30_000.0, energy, 40.0, "none")
            topic = topics.telemetry(code, CANARY[0], CANARY[1])
            out.append((seq / CANARY_HZ, _publish_packet(topic, reading.to_json(), (seq * 7) % 65535 + 1)))
    out.sort(key=lambda item: item[0])
    return out


def paced_publisher(port: int, stations: list[str], rate: int, seconds: float) -> None:
    """Publisher process: send the run's packets at their due times (QoS 1; acknowledgements read
    and dropped), for at most ``seconds``."""
    packets = load_packets(stations, rate, seconds)
    client_id = b"bench-fleet-publisher"
    variable = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(client_id).to_bytes(2, "big") + client_id
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"\x10" + _remaining_length(len(variable)) + variable)
    assert sock.recv(4)[:2] == b"\x20\x02", "no CONNACK"
    start, i, chunk = time.perf_counter(), 0, 50
    while i < len(packets):
        delay = start + packets[i][0] - time.perf_counter()
        if delay > 0:
            time.sleep(delay)  # pacing the load generator, not waiting for a condition
        sock.sendall(b"".join(p for _, p in packets[i : i + chunk]))
        i += chunk
        sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while sock.recv(65536):
                pass
        sock.setblocking(True)
    sock.sendall(b"\xe0\x00")
    sock.close()


@dataclass
class CommandWatch:
    """Every ``cmd`` the broker carries, per station, with its arrival (monotonic seconds); each is
    answered ``done`` at once, as a gateway whose pile obeyed would (the canary charges on)."""

    port: int
    seen: dict[str, list[float]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> object:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-cmd-watch")
        client.on_connect = lambda c, *_: c.subscribe(
            f"{topics.ROOT}/{topics.VERSION}/+/pile/+/port/+/cmd", qos=0
        )
        client.on_message = lambda c, _u, msg: self._record(c, msg.topic, bytes(msg.payload))
        client.connect("127.0.0.1", self.port)
        client.loop_start()
        return client

    def _record(self, client: Any, topic: str, payload: bytes) -> None:
        at = time.monotonic()
        with self.lock:
            self.seen.setdefault(topic.split("/")[2], []).append(at)
        with contextlib.suppress(PayloadError):
            command = CommandMessage.from_json(payload)
            result = CommandResult(command.id, "done", time.time_ns() // 1_000_000)
            client.publish(f"{topic}/result", result.to_json(), qos=1)

    def times(self, station: str) -> list[float]:
        with self.lock:
            return list(self.seen.get(station, []))


def stored(database: str) -> int:
    with psycopg.connect(database) as conn:
        row = conn.execute("SELECT count(*) FROM telemetry").fetchone()
    return int(row[0]) if row else 0


@dataclass(frozen=True)
class Timed:
    """One timed read: its latency, its path's template, the instance that answered and whether
    that instance owns the station the read names (None: the read names no station)."""

    ms: float
    path: str
    instance: str
    owner: bool | None


async def timed_reads(
    urls: dict[str, str],
    stations: list[str],
    spread: dict[str, str],
    driver: str,
    admin: str,
    requests: int,
) -> list[Timed]:
    """``requests`` reads, round robin over the instances, paths and stations, timed."""
    timed = []
    names = list(urls)
    async with aiohttp.ClientSession() as session:
        for n in range(requests):
            template = PATHS[n % len(PATHS)]
            station = stations[(n // len(PATHS)) % len(stations)]
            path, instance = template.format(station=station), names[n % len(names)]
            token = admin if path.startswith("/api/Orders") else driver
            t0 = time.perf_counter()
            async with session.get(urls[instance] + path, headers={"Authorization": f"Token {token}"}) as r:
                await r.read()
                if r.status != 200:
                    raise SystemExit(f"GET {path} on {urls[instance]} answered {r.status}")
            ms = (time.perf_counter() - t0) * 1000
            owner = spread.get(station) == instance if "{station}" in template else None
            timed.append(Timed(ms, template.split("?")[0], instance, owner))
    return timed


def breakdown(timed: list[Timed]) -> list[str]:
    """Per path, per instance, and owner against non-owner: the lines of the bench's breakdown."""
    groups: dict[tuple[int, str], list[float]] = {}
    for t in timed:
        role = {True: "owner", False: "non-owner", None: "no station"}[t.owner]
        for key in ((0, t.path), (1, f"instance {t.instance}"), (2, role), (3, f"{t.path} {role}")):
            groups.setdefault(key, []).append(t.ms)
    return [summary(key[1], values) for key, values in sorted(groups.items()) if len(values) >= 2]


async def metric(url: str, token: str, name: str) -> float:
    """One unlabelled sample of ``url``'s ``/metrics`` (staff token)."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(url + "/metrics", headers={"Authorization": f"Token {token}"}) as r,
    ):
        for line in (await r.text()).splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return float("nan")


def owners(database: str, stations: list[str]) -> dict[str, str]:
    """station -> the instance holding its lease (stations held by none or by two left out)."""
    return {code: h[0] for code, h in lease_holders(database, stations).items() if len(h) == 1}


def spread_evenly(database: str, stations: list[str]) -> bool:
    """Every station owned, the two instances' counts at most one apart (fair share: a station
    moves every few seconds until then)."""
    found = owners(database, stations)
    counts = [sum(1 for o in found.values() if o == i) for i in ("a", "b")]
    return len(found) == len(stations) and max(counts) - min(counts) <= 1


def wait(predicate: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)


def summary(name: str, latencies: list[float]) -> str:
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return (
        f"{name:<40} n={len(latencies):<4} p50={statistics.median(latencies):.1f} ms "
        f"p99={q[98]:.1f} ms max={max(latencies):.1f} ms"
    )


def takeover(
    watch: CommandWatch, victim: CentralProcess, moved: list[str], rng: random.Random
) -> tuple[dict[str, float], list[str]]:
    """Kill ``victim`` right after it stopped a canary of one of ``moved``; per station, seconds from
    the kill to the station's first ``cmd`` after it; the stations left out (see the docstring)."""
    before = {code: len(watch.times(code)) for code in moved}
    wait(
        lambda: any(len(watch.times(code)) > before[code] for code in moved),
        STOP_GRACE_S + 5,
        "the owner stopping a canary",
    )
    time.sleep(rng.uniform(0.0, 1.0))  # any moment of the survivor's 1 s try cycle
    killed_at = time.monotonic()
    victim.proc.stop(signal.SIGKILL)
    last = {code: max(watch.times(code), default=float("-inf")) for code in moved}
    measured = [code for code in moved if killed_at - last[code] < STOP_GRACE_S - 1.0]
    wait(
        lambda: all(any(t > killed_at for t in watch.times(code)) for code in measured),
        30,
        "a command from the new owner at every station it took",
    )
    times = {code: min(t for t in watch.times(code) if t > killed_at) - killed_at for code in measured}
    return times, sorted(set(moved) - set(measured))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--stations", type=int, default=10)
    ap.add_argument(
        "--rate", type=int, default=1000, help="idle readings a second in all (100 ports a station)"
    )
    ap.add_argument("--requests", type=int, default=400, help="REST reads timed under load")
    ap.add_argument("--seconds", type=float, default=90.0, help="the load's length at most")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--workdir", type=Path, help="keep the centrals' logs and configs here (default: a temp dir)"
    )
    args = ap.parse_args()
    command = f".venv/bin/python bench/fleet_bench.py {' '.join(sys.argv[1:])}".rstrip()
    stations = station_codes(args.stations)
    rng = random.Random(args.seed)
    server = start_server(settings=("synchronous_commit=off",))
    with tempfile.TemporaryDirectory(prefix="pilegate-fleet-bench-") as tmp, contextlib.ExitStack() as stack:
        stack.callback(server.stop)
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        database = create_database(server, "fleet_bench")
        broker = BenchBroker(free_port(), workdir / "mosquitto")
        broker.start()
        stack.callback(broker.stop)
        publish_statuses(broker.port, stations)
        configs = {i: central_config(workdir, i, database, broker.port, stations) for i in ("a", "b")}
        create_admin(configs["a"], ADMIN_PASSWORD)
        centrals = {}
        for instance, config in configs.items():
            centrals[instance] = run_central(workdir, config, f"central-{instance}")
            stack.callback(centrals[instance].proc.stop)
        wait(lambda: spread_evenly(database, stations), 90, "the stations spread evenly over both instances")
        api = Api(centrals["a"].url)
        driver = api.register("bench-driver")
        _, body = api.call("POST", "/api/Users/login", {"openId": "admin", "password": ADMIN_PASSWORD})
        admin = str(body["token"])
        watch = CommandWatch(broker.port)
        client = watch.start()
        stack.callback(client.loop_stop)  # type: ignore[attr-defined]
        publisher = multiprocessing.Process(
            target=paced_publisher, args=(broker.port, stations, args.rate, args.seconds)
        )
        publisher.start()
        stack.callback(publisher.join, 10)
        stack.callback(publisher.terminate)
        wait(lambda: stored(database) >= args.rate, 60, "a second of telemetry stored")
        urls = {name: c.url for name, c in centrals.items()}
        spread = owners(database, stations)
        view_loads = "pilegate_central_read_view_loads_total"
        loads_before = {i: asyncio.run(metric(url, admin, view_loads)) for i, url in urls.items()}
        before, t0 = stored(database), time.perf_counter()
        timed = asyncio.run(timed_reads(urls, stations, spread, str(driver.token), admin, args.requests))
        window = time.perf_counter() - t0
        rate_stored = (stored(database) - before) / window
        loads = {i: asyncio.run(metric(url, admin, view_loads)) - loads_before[i] for i, url in urls.items()}
        loaded = [t.ms for t in timed]
        if owners(database, stations) != spread:
            print("note: a station changed owner while the reads were timed")
        counts = {i: sum(1 for o in spread.values() if o == i) for i in centrals}
        victim_name = max(counts, key=lambda i: counts[i])
        moved = sorted(code for code, o in spread.items() if o == victim_name)
        times, left_out = takeover(watch, centrals[victim_name], moved, rng)
        offered = args.rate + CANARY_HZ * len(stations)
        print(f"command: {command}")
        print(
            f"{len(stations)} stations x {PILES * 2} ports, 2 central instances on PostgreSQL "
            f"(synchronous_commit=off), Mosquitto max_inflight_messages {broker.inflight}; load average "
            f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
        )
        print(f"spread: {counts}")
        print(f"stored while timing: {rate_stored:.0f} msg/s (offered {offered:.0f}/s)")
        print(
            summary("REST under load", loaded) + f" ({len(urls)} instances, {len(PATHS)} reads round robin)"
        )
        for line in breakdown(timed):
            print(f"  {line}")
        print(
            f"  read views loaded while timing: {', '.join(f'{i} {n:.0f}' for i, n in loads.items())} "
            f"({window:.1f} s)"
        )
        worst = max(times.values())
        print(
            f"takeover after kill -9 of {victim_name} ({len(moved)} stations): first command of the new "
            f"owner after {min(times.values()):.2f} s (first station) to {worst:.2f} s (last); median "
            f"{statistics.median(times.values()):.2f} s"
            + (f"; left out (canary stop due): {', '.join(left_out)}" if left_out else "")
        )
        for code, took in sorted(times.items(), key=lambda kv: kv[1]):
            print(f"  {code:<10} {took:.2f} s")
        print(
            json.dumps(
                {
                    "stored_msg_s": round(rate_stored),
                    "rest_p99_ms": round(statistics.quantiles(loaded, n=100, method="inclusive")[98], 1),
                    "takeover_worst_s": round(worst, 2),
                }
            )
        )
    return 1 if worst >= BOUND_S else 0


if __name__ == "__main__":
    sys.exit(main())
