"""Two central instances on one PostgreSQL, two stations, every part a real process; and the demo's
``--centrals 2``.

The fleet (``test_kill_9_of_a_station_owner_mid_charge_...``): a throwaway PostgreSQL
(``tests/postgres_server.py``), a real Mosquitto, per station (``north``, ``south``) a simulator with
a fast and a trickle pile and a gateway, and two ``pilegate central`` processes sharing the
database, each with its own instance name and client id. The stations spread one per instance
(pg_locks says who holds which lease). Drivers charge on both stations, their requests sent to
either instance. Then the owner of ``south`` is killed with -9 mid-charge: the survivor must hold
south's lease and run it within 10 s (both times are printed), the charges go on and end, and the
books must balance: the chaos suite's invariants (``bench/chaos.py: check``) per station, every
request completed and billed its segments and its amount, and per pile exactly what the meters rose
(no allowance for the time nobody owned south: the survivor bills from the stored readings); the
survivor's driver API answers for both stations, and no answer of the run is 5xx.

The demo (``test_the_demo_with_two_centrals_...``): ``pilegate demo --database ... --centrals 2
--stations 2`` lists both URLs, a login token from one works on the other, and after a kill -9 of
one central the other serves both stations and the demo starts the dead one again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from bench.chaos import (
    SHORT_NOTICE_TITLE,
    Calls,
    Driver,
    PileBooks,
    check,
    every_read_endpoint,
    tracebacks,
)
from pilegate.broker import MosquittoBroker
from pilegate.demo import port_in_use
from tests.e2e.harness import (
    Api,
    CentralProcess,
    GatewayProcess,
    GatewaySettings,
    SimProcess,
    create_admin,
    free_port,
    run_central,
    start_gateway,
    start_sim,
)
from tests.helpers import wait_for_sync
from tests.integration.fleet_helpers import lease_holders
from tests.postgres_server import PgServer, create_database, drop_database

pytestmark = pytest.mark.e2e
pytest_plugins = ("tests.integration.central_fixtures",)

STATIONS = ("north", "south")
SCALE = 120.0  # a 30 kW pile delivers 1 kWh a second
ADMIN_PASSWORD = "fleet-admin-pw-1"  # a throwaway account on loopback
TAKEOVER_BOUND_S = 10.0  # the bound
AMOUNTS = {"fast": 20, "slow": 5}  # kWh: about 20 s and 15 s of charging at this scale


def fleet_config(workdir: Path, instance: str, database: str, mqtt_port: int) -> Path:
    """A central's config: both stations (one fast and one trickle pile each), this instance's
    name, client id and data dir, the shared database."""
    station = (
        "FastChargingPileNum = 1\nTrickleChargingPileNum = 1\nWaitingAreaSize = 6\nChargingQueueLen = 2\n"
    )
    path = workdir / f"central-{instance}.toml"
    path.write_text(
        f"""[central]
station = "north"
database = {json.dumps(database)}
instance = "{instance}"
data_dir = "{workdir / f"central-{instance}-data"}"
time_scale = {SCALE}
log_format = "json"

[mqtt]
url = "mqtt://127.0.0.1:{mqtt_port}"
client_id = "central-{instance}"

[station]
{station}
[stations.south]
{station}"""
    )
    return path


def start_instance(workdir: Path, instance: str, config: Path) -> CentralProcess:
    return run_central(workdir, config, f"central-{instance}")


@dataclass
class Site:
    """One station's simulator and gateway."""

    sim: SimProcess
    gateway: GatewayProcess

    def meters_wh(self) -> dict[str, int]:
        """Each pile's energy so far (its ports' meters; the simulator starts them at 0)."""
        piles = self.sim.snapshot()["piles"]
        return {pile: sum(int(p["energy_Wh"]) for p in doc["ports"].values()) for pile, doc in piles.items()}

    def charging(self) -> bool:
        piles = self.sim.snapshot()["piles"].values()
        return any(port["state_name"] == "CHARGING" for pile in piles for port in pile["ports"].values())


@dataclass
class Fleet:
    url: str
    broker: MosquittoBroker
    sites: dict[str, Site]
    centrals: dict[str, CentralProcess]  # instance -> process


@pytest.fixture
def fleet(tmp_path: Path, postgres_server: PgServer) -> Iterator[Fleet]:
    name = f"pilegate_fleet_e2e_{os.getpid()}"
    url = create_database(postgres_server, name)
    broker = MosquittoBroker(free_port(), tmp_path / "mosquitto")
    broker.start()
    sites: dict[str, Site] = {}
    centrals: dict[str, CentralProcess] = {}
    try:
        for code in STATIONS:
            workdir = tmp_path / code
            workdir.mkdir()
            sim = start_sim(workdir, fast=1, trickle=1, time_scale=SCALE)
            gateway = start_gateway(workdir, sim.piles, broker.port, GatewaySettings(station=code))
            sites[code] = Site(sim, gateway)
        configs = {i: fleet_config(tmp_path, i, url, broker.port) for i in ("a", "b")}
        create_admin(configs["a"], ADMIN_PASSWORD)
        for instance, config in configs.items():
            centrals[instance] = start_instance(tmp_path, instance, config)
        yield Fleet(url, broker, sites, centrals)
    finally:
        for central in centrals.values():
            central.proc.stop()
        for site in sites.values():
            site.gateway.proc.stop()
            site.sim.proc.stop()
        broker.stop()
        drop_database(postgres_server, name)


def owners(url: str) -> dict[str, str] | None:
    """station -> the instance holding its lease, once each station has exactly one holder."""
    holders = lease_holders(url, STATIONS)
    return {code: h[0] for code, h in holders.items()} if all(len(h) == 1 for h in holders.values()) else None


def spread_over_both(url: str) -> dict[str, str]:
    """station -> owner once each instance owns one station (else empty)."""
    found = owners(url)
    return found if found is not None and set(found.values()) == {"a", "b"} else {}


def station_started_at(central: CentralProcess, code: str) -> list[float]:
    """Wall times (s) of the central's ``station started`` log lines for ``code``."""
    found = []
    for line in central.proc.log().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("event") == "station started" and record.get("station") == code:
            found.append(datetime.fromisoformat(record["timestamp"]).timestamp())
    return found


def read_ledger(url: str, station: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    """``bench/chaos.py: read_ledger``'s rows from PostgreSQL, for one station: requests with their
    bill and "stopped short" notices, their segments, the live sessions left."""
    with psycopg.connect(url, row_factory=dict_row) as db:
        requests = db.execute(
            "SELECT r.id, r.charging_mode, r.requested_amount, r.current_status, "
            "b.electricity AS billed, (SELECT count(*) FROM notifications n "
            "WHERE n.related_id = r.id AND n.title = %s) AS short "
            "FROM charging_requests r LEFT JOIN bills b ON b.id = r.bill_id "
            "WHERE r.station = %s ORDER BY r.created_at",
            [SHORT_NOTICE_TITLE, station],
        ).fetchall()
        segments = db.execute(
            "SELECT request_id, pile_no, electricity, status, detail::json->>'reason' AS reason "
            "FROM orders WHERE request_id IS NOT NULL AND station = %s ORDER BY create_time",
            [station],
        ).fetchall()
        [live] = db.execute(
            "SELECT count(*) AS n FROM live_sessions WHERE station = %s", [station]
        ).fetchall()
    return [dict(r) for r in requests], [dict(s) for s in segments], int(live["n"])


def pile_books(site: Site, segments: list[dict[str, Any]], delivered: dict[str, int]) -> list[PileBooks]:
    """Each pile's books: the meters' rise and the billed segments, with no energy allowed to go
    unbilled beyond the segments' rounding (the simulators ran throughout and were looked at last
    after every charge ended, so nothing rose unseen)."""
    books = []
    for pile in sorted(site.sim.piles):
        mine = [s for s in segments if s["pile_no"] == pile]
        billed = sum((Fraction(s["electricity"]) for s in mine), Fraction(0))
        books.append(PileBooks(pile, delivered[pile], 0, int(billed * 1000), 0, len(mine)))
    return books


@pytest.mark.timeout(240)
def test_kill_9_of_a_station_owner_mid_charge_the_other_takes_over_and_the_books_balance(
    fleet: Fleet,
) -> None:
    a, b = fleet.centrals["a"], fleet.centrals["b"]
    spread: dict[str, str] = wait_for_sync(
        lambda: spread_over_both(fleet.url),
        60,
        0.1,
        "the two stations spread one per instance",
        context=lambda: f"lease holders: {lease_holders(fleet.url, STATIONS)}",
    )
    calls = Calls()
    drivers: list[tuple[str, Driver]] = []
    for n, (code, mode) in enumerate((c, m) for c in STATIONS for m in ("fast", "slow")):
        via = (a, b)[n % 2]  # half the requests reach the station's owner, half the other instance
        api = Api(via.url).register(f"fleet-{code}-{mode}")
        status, profile = api.call("GET", "/api/auth/profile/")
        assert status == 200, profile
        drivers.append((code, Driver(api, mode, int(profile["data"]["id"]))))
        body = {
            "charging_mode": mode,
            "requested_amount": AMOUNTS[mode],
            "battery_capacity": 80,
            "station": code,
        }
        answer = calls(api, "POST", "/api/charging/request/", body)
        assert answer is not None and answer[0] in (200, 201), answer

    def all_charging() -> bool:
        states = [calls(d.api, "GET", "/api/charging/request/status/") for _, d in drivers]
        return all(
            s is not None and s[0] == 200 and s[1]["data"]["current_status"] == "charging" for s in states
        )

    wait_for_sync(all_charging, 30, 0.2, "every driver charging on both stations")
    wait_for_sync(
        lambda: all(sum(site.meters_wh().values()) > 2000 for site in fleet.sites.values()),
        30,
        0.1,
        "energy flowing at both stations",
    )
    victim = fleet.centrals[spread["south"]]
    survivor_name = "a" if spread["south"] == "b" else "b"
    survivor = fleet.centrals[survivor_name]
    for _code, driver in drivers:  # a token works on either instance
        driver.api = Api(survivor.url, driver.api.token)
    assert fleet.sites["south"].charging(), "south's charges ended before the kill"
    killed_wall, killed_at = time.time(), time.monotonic()
    victim.proc.stop(signal.SIGKILL)
    wait_for_sync(
        lambda: owners(fleet.url) == dict.fromkeys(STATIONS, survivor_name),
        TAKEOVER_BOUND_S,
        0.02,
        f"{survivor_name} holding south's lease",
        context=lambda: f"lease holders: {lease_holders(fleet.url, STATIONS)}",
    )
    lease_s = time.monotonic() - killed_at
    started = wait_for_sync(
        lambda: [t for t in station_started_at(survivor, "south") if t > killed_wall],
        TAKEOVER_BOUND_S,
        0.05,
        f"south's runtime started on {survivor_name}",
        context=survivor.proc.log_tail,
    )
    runtime_s = started[0] - killed_wall
    print(f"\ntakeover after kill -9: lease held {lease_s:.2f} s, south's runtime started {runtime_s:.2f} s")
    assert runtime_s < TAKEOVER_BOUND_S
    south = [calls(d.api, "GET", "/api/charging/request/status/") for code, d in drivers if code == "south"]
    assert any(s is not None and s[1]["data"]["current_status"] == "charging" for s in south), south

    def ended() -> bool:
        states = [calls(d.api, "GET", "/api/charging/request/status/") for _, d in drivers]
        if not all(s is not None and s[0] == 200 for s in states):
            return False
        if any(s[1]["data"]["current_status"] in ("waiting", "charging") for s in states if s is not None):
            return False
        return not any(site.charging() for site in fleet.sites.values())

    wait_for_sync(ended, 90, 0.2, "every charge ended", context=survivor.proc.log_tail)
    failures = []
    for code, site in fleet.sites.items():
        requests, segments, live = read_ledger(fleet.url, code)
        assert len(requests) == 2, requests
        # no energy may go unbilled, not even at south while nobody owned it: the survivor continues
        # each segment from its last stored meter reading (chaos allows rating x the unseen time)
        books = pile_books(site, segments, site.meters_wh())
        print(code, [(p.pile, p.delivered_wh, p.billed_wh, round(p.unbilled_bound_wh)) for p in books])
        failures += [f"{code}: {f}" for f in check(requests, segments, live, books)]
    assert not failures, failures

    token = Api(survivor.url)
    status, admin = token.call("POST", "/api/Users/login", {"openId": "admin", "password": ADMIN_PASSWORD})
    assert status == 200, admin
    for code in STATIONS:  # the survivor answers for both stations
        for path in ("/api/charging/piles/status/", "/api/charging/queue/status/"):
            answer = calls(drivers[0][1].api, "GET", f"{path}?station={code}")
            assert answer is not None and answer[0] == 200, (code, path, answer)
    every_read_endpoint(survivor, Api(survivor.url, str(admin["token"])), drivers[0][1], calls)
    assert calls.server_errors == [], calls.server_errors
    repeated = {sig: n for sig, n in tracebacks(survivor.proc.log()).items() if n > 2}
    assert not repeated, repeated


# -- the demo ------------------------------------------------------------------------------------


def demo_lines(proc: subprocess.Popen[str]) -> list[str]:
    lines: list[str] = []
    assert proc.stdout is not None
    stdout = proc.stdout
    threading.Thread(target=lambda: lines.extend(iter(stdout.readline, "")), daemon=True).start()
    return lines


def central_pid(data_dir: Path, name: str) -> int | None:
    """The pid of the demo's central ``name`` (``central``, ``central-2``) running on ``data_dir``."""
    needle = f"{data_dir / name}.toml".encode()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if needle in argv and b"central" in argv:
            return int(pid)
    return None


def login(url: str, username: str, password: str) -> str:
    status, body = Api(url).call("POST", "/api/auth/login/", {"username": username, "password": password})
    assert status == 200, body
    return str(body["data"]["token"])


@pytest.mark.timeout(180)
def test_the_demo_with_two_centrals_survives_a_kill_9_and_restarts_it(
    tmp_path: Path, postgres_server: PgServer
) -> None:
    name = f"pilegate_fleet_demo_{os.getpid()}"
    database = create_database(postgres_server, name)
    data_dir = tmp_path / "demo"
    http_port = free_port()
    while port_in_use(http_port + 1):
        http_port = free_port()
    argv = [sys.executable, "-m", "pilegate.cli", "demo", "--data-dir", str(data_dir), "--database", database]
    argv += [
        "--centrals",
        "2",
        "--stations",
        "2",
        "--http-port",
        str(http_port),
        "--mqtt-port",
        str(free_port()),
    ]
    argv += ["--time-scale", "120", "--view-interval", "0", "--poll-period", "0.5"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines = demo_lines(proc)
    output = lambda: "".join(lines)[-3000:]  # noqa: E731
    try:
        wait_for_sync(lambda: any(ln.startswith("READY") for ln in lines), 90, 0.1, "READY", context=output)
        [centrals] = [ln for ln in lines if ln.split()[:1] == ["centrals"]]
        urls = [f"http://127.0.0.1:{http_port}", f"http://127.0.0.1:{http_port + 1}"]
        assert all(f"{u}/" in centrals for u in urls), centrals
        [driver] = [
            ln.split()[1:4] for ln in lines if ln.split()[:1] == ["driver"] and "/" in ln.split()[2:3]
        ]
        token = login(urls[0], driver[0], driver[2])
        for url in reversed(urls):  # a token from the first works on the second
            status, body = Api(url, token).call("GET", "/api/auth/profile/")
            assert status == 200 and body["data"]["username"] == driver[0], body
        stations = ("station1", "station2")
        wait_for_sync(
            lambda: (o := lease_holders(database, stations)) and all(len(h) == 1 for h in o.values()) and o,
            30,
            0.1,
            "both stations owned",
        )
        pid = central_pid(data_dir, "central-2")
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        wait_for_sync(
            lambda: all(h == ["demo-central-1"] for h in lease_holders(database, stations).values()),
            TAKEOVER_BOUND_S,
            0.05,
            "central 1 owning both stations",
        )
        for code in stations:  # the survivor serves both stations
            status, body = Api(urls[0], token).call("GET", f"/api/charging/piles/status/?station={code}")
            assert status == 200, body
        wait_for_sync(
            lambda: any(ln.startswith("central-2 is back") for ln in lines),
            60,
            0.1,
            "central-2 back",
            context=output,
        )
        assert any(
            ln.startswith(f"central-2 (pid {pid}) was killed by SIGKILL; restarting it") for ln in lines
        )
        status, body = Api(urls[1], token).call("GET", "/api/charging/piles/status/?station=station2")
        assert status == 200, body
        assert proc.poll() is None, output()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, output()
        drop_database(postgres_server, name)
