"""Chaos run: drivers charge while the gateway, the central, the broker and the simulator are killed
with SIGKILL at seeded random moments; afterwards the books must balance.

Real processes on 127.0.0.1 (Mosquitto with persistence, ``pilegate sim``, ``pilegate gateway``,
``pilegate central``). Drivers keep fast and slow requests going through the driver API. Each round
kills one or two of the four processes at moments a seeded RNG chooses, leaves them down for a
while and starts them again; a restarted simulator's piles come back idle with their meters at 0
or at some other value (rebooted or replaced meters). Then everything recovers and the invariants
are checked:

* every request has ended (completed) and nothing charges: no live session in the central, no port
  charging on the piles;
* every request's bill is its segments' energy and equals what was requested (a segment cut short
  by a lost pile is re-queued, so the car still gets its amount). The report counts the requests
  billed differently from what they asked and gives each one's segments (pile, kWh, how each
  ended) and, if the central sent one, its "stopped short" notice: the simulated cars never refuse
  energy, so such a request is a failure here;
* per pile, the billed energy is never more than the meters rose (nothing counted twice) and never
  less by more than the piles could deliver while nobody could see them. Readings reach the
  central within ``OBSERVE_LATENCY_S`` while gateway, broker and central are all up. Nobody sees a
  pile while one of them is down (the central may close its segment as lost while it charges on),
  nor in the latency before a simulator kill (its last readings die with it). So the bound is
  rating x time scale x the measure of the union of those spans (each outage widened by the
  latency on both sides), plus the piles' rise between the bench's last look at their meters and
  a kill;
* no driver or operator read endpoint answers 5xx, during the run or after it;
* the central's log holds no traceback that repeats.

Bounded in time: ``--minutes`` of chaos, then at most ``RECOVERY_S`` to settle. Exit status 1 when
an invariant fails.

    .venv/bin/python bench/chaos.py --seed 1 --minutes 3
"""

from __future__ import annotations

import argparse
import json
import random
import re
import signal
import sqlite3
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pilegate.broker import MosquittoBroker, free_port
from tests.e2e.harness import (
    Api,
    CentralProcess,
    GatewayProcess,
    GatewaySettings,
    SimProcess,
    restart_sim,
    start_central,
    start_gateway,
    start_sim,
    wait_until,
)

COMPONENTS = ("gateway", "central", "broker", "sim")
CHAIN = ("gateway", "broker", "central")  # what a reading passes through on its way to the ledger
ADMIN_PASSWORD = "chaos-admin-pw-1"  # noqa: S105 - a throwaway account on loopback
POLL_PERIOD_S = 0.5
OBSERVE_LATENCY_S = POLL_PERIOD_S + 1.0
RECOVERY_S = 120.0
TOLERANCE_KWH = Fraction("0.011")  # amounts are kept to 0.01 kWh
DRIVERS = 6
DIGITS = re.compile(r"\d+")  # times and ids differ between repeats of one traceback
SHORT_NOTICE_TITLE = "充电提前结束"  # the central's notice of a request completed short of its amount


@dataclass
class Outage:
    """One process killed at ``down`` and started again at ``up`` (monotonic seconds)."""

    component: str
    down: float
    up: float | None = None


@dataclass
class SimLife:
    """One simulator process: its meters' start value and the last reading the bench saw."""

    initial_wh: int
    last_wh: dict[str, int] = field(default_factory=dict)
    looked_at: float = 0.0
    killed_at: float | None = None


@dataclass
class PileBooks:
    """One pile's energy: what its meters rose by, what the central billed, and the loss bound."""

    pile: str
    delivered_wh: int
    unseen_rise_wh: float  # the most the meters may have risen after the bench's last look
    billed_wh: int
    unbilled_bound_wh: float
    segments: int  # billed segments: each may be rounded by up to 10 Wh

    @property
    def counted_twice(self) -> bool:
        return self.billed_wh > self.delivered_wh + self.unseen_rise_wh + 10 * self.segments

    @property
    def lost_beyond_bound(self) -> bool:
        return self.delivered_wh - self.billed_wh > self.unbilled_bound_wh + 10 * self.segments


@dataclass
class ChaosReport:
    """What a run did and found; ``failures`` is empty when every invariant holds."""

    seed: int
    outages: list[Outage]
    requests: list[dict[str, Any]]
    piles: list[PileBooks]
    server_errors: list[str]
    tracebacks: Counter[str]
    failures: list[str]

    def render(self) -> str:
        lines = [f"seed {self.seed}: {len(self.outages)} kills"]
        for o in self.outages:
            span = f"{o.up - o.down:.1f} s" if o.up is not None else "not restarted"
            lines.append(f"  kill -9 {o.component:8} at {o.down:7.1f} s, down {span}")
        lines.append(f"requests: {len(self.requests)}")
        for r in self.requests:
            lines.append(
                f"  {r['id'][:8]} {r['mode']:4} {r['status']:9} requested {r['requested']:>6} kWh, "
                f"billed {r['billed']} kWh in {r['segments']} segment(s)"
            )
        lines.append("piles (Wh): delivered, billed, unbilled, bound on unbilled")
        for p in self.piles:
            lines.append(
                f"  {p.pile:3} {p.delivered_wh:8} {p.billed_wh:8} {p.delivered_wh - p.billed_wh:7} "
                f"{p.unbilled_bound_wh:9.0f}"
            )
        lines.append(f"billed != asked: {billed_vs_asked(self.requests)} of {len(self.requests)} requests")
        lines.append(f"5xx answers: {len(self.server_errors)}")
        lines += [f"  {e}" for e in self.server_errors[:20]]
        lines.append(f"tracebacks in the central's log: {sum(self.tracebacks.values())}")
        lines += [f"  {n} x {sig}" for sig, n in self.tracebacks.most_common(10)]
        lines.append("OK: every invariant holds" if not self.failures else "FAILED:")
        lines += [f"  {f}" for f in self.failures]
        return "\n".join(lines)


class Station:
    """The four processes, each of which can be killed and started again, with its outages."""

    def __init__(self, workdir: Path, *, fast: int, trickle: int, scale: float) -> None:
        self.workdir, self.scale = workdir, scale
        self.t0 = time.monotonic()
        self.outages: list[Outage] = []
        self.broker = MosquittoBroker(free_port(), workdir / "mosquitto", persistence=True)
        self.broker.start()
        self.sim: SimProcess = start_sim(workdir, fast=fast, trickle=trickle, time_scale=scale)
        self.lives = [SimLife(0)]
        self.gateway: GatewayProcess = start_gateway(
            workdir, self.sim.piles, self.broker.port, GatewaySettings(poll_period_s=POLL_PERIOD_S)
        )
        self.central: CentralProcess = start_central(
            workdir,
            self.broker.port,
            time_scale=scale,
            fast=fast,
            trickle=trickle,
            admin_password=ADMIN_PASSWORD,
        )
        self.down: set[str] = set()

    def now(self) -> float:
        return time.monotonic() - self.t0

    def look_at_meters(self) -> None:
        """Remember the simulator's meters (the ground truth of what the piles delivered)."""
        if "sim" in self.down:
            return
        snapshot = self.sim.snapshot()["piles"]
        life = self.lives[-1]
        life.last_wh = {
            pile: sum(int(p["energy_Wh"]) for p in doc["ports"].values()) for pile, doc in snapshot.items()
        }
        life.looked_at = self.now()

    def kill(self, component: str) -> None:
        if component == "sim":
            self.look_at_meters()
            self.sim.proc.stop(signal.SIGKILL)
            self.lives[-1].killed_at = self.now()
        elif component == "gateway":
            self.gateway.proc.stop(signal.SIGKILL)
        elif component == "central":
            self.central.proc.stop(signal.SIGKILL)
        else:
            self.broker.kill()
        self.down.add(component)
        self.outages.append(Outage(component, self.now()))

    def restart(self, component: str, rng: random.Random) -> None:
        if component == "sim":
            initial = rng.choice([0, 0, rng.randrange(1, 2_000_000)])
            self.sim = restart_sim(self.workdir, self.sim, self.scale, initial)
            self.lives.append(SimLife(initial, looked_at=self.now()))
        elif component == "gateway":
            self.gateway = self.gateway.restart(self.workdir)
        elif component == "central":
            self.central = self.central.restart(self.workdir)
        else:
            self.broker.start()
        self.down.discard(component)
        [outage] = [o for o in self.outages if o.component == component and o.up is None]
        outage.up = self.now()

    def unobserved_s(self) -> float:
        """Seconds during which a pile's energy could escape the ledger: every outage of gateway,
        broker or central (widened by the observation latency on both sides), and before each
        simulator kill the latency (its last readings may not have reached the central)."""
        spans = [(o.down - OBSERVE_LATENCY_S, (o.up or self.now()) + OBSERVE_LATENCY_S) for o in self.outages]
        spans = [s for s, o in zip(spans, self.outages, strict=True) if o.component in CHAIN]
        spans += [
            (life.killed_at - OBSERVE_LATENCY_S, life.killed_at) for life in self.lives if life.killed_at
        ]
        total, reach = 0.0, float("-inf")
        for start, end in sorted(spans):
            start = max(start, reach)
            if end > start:
                total += end - start
            reach = max(reach, end)
        return total

    def ratings_wh_per_s(self) -> dict[str, float]:
        """Each pile's most energy per real second (all its ports at full rating)."""
        return {
            pile: ep["rated_power_W"] * ep["ports"] * self.scale / 3600 for pile, ep in self.sim.piles.items()
        }

    def stop(self) -> None:
        self.central.proc.stop()
        self.gateway.proc.stop()
        self.sim.proc.stop()
        self.broker.stop()


@dataclass
class Driver:
    api: Api
    mode: str
    user_id: int


class Calls:
    """Every API call of the run goes through here: 5xx answers are collected, refused connections
    (the central is down) are ``None``."""

    def __init__(self) -> None:
        self.server_errors: list[str] = []

    def __call__(self, api: Api, method: str, path: str, body: Any = None) -> tuple[int, Any] | None:
        try:
            status, reply = api.call(method, path, body)
        except OSError:
            return None
        if status >= 500:
            self.server_errors.append(
                f"{method} {path} -> {status} {json.dumps(reply, ensure_ascii=False)[:300]}"
            )
        return status, reply


def register_drivers(central: CentralProcess, rng: random.Random) -> list[Driver]:
    drivers = []
    for n in range(DRIVERS):
        api = Api(central.url).register(f"chaos-driver-{n}")
        status, body = api.call("GET", "/api/auth/profile/")
        assert status == 200, body
        drivers.append(Driver(api, "fast" if n % 2 == 0 else "slow", int(body["data"]["id"])))
    rng.shuffle(drivers)
    return drivers


def keep_charging(drivers: list[Driver], calls: Calls, rng: random.Random) -> None:
    """A driver whose last request ended asks for a new charge."""
    for driver in drivers:
        answer = calls(driver.api, "GET", "/api/charging/request/status/")
        if answer is None:
            return
        status, body = answer
        current = body.get("data") if status == 200 and isinstance(body, dict) else None
        if current is not None and current.get("current_status") in ("waiting", "charging"):
            continue
        amount = rng.choice([3, 5, 8, 12]) if driver.mode == "fast" else rng.choice([1, 2, 3])
        calls(
            driver.api,
            "POST",
            "/api/charging/request/",
            {"charging_mode": driver.mode, "requested_amount": amount, "battery_capacity": 80},
        )


def every_read_endpoint(central: CentralProcess, admin: Api, driver: Driver, calls: Calls) -> int:
    """GET every documented path as a driver and as the operator; the number of calls made."""
    paths = read_paths(central)
    bills = calls(driver.api, "GET", "/api/charging/bills/")
    bill_ids = [b["bill_id"] for b in bills[1]["data"]["bills"]] if bills and bills[0] == 200 else []
    values = {
        "userId": str(driver.user_id),
        "pileId": "1",
        "stationId": "1",
        "id": "1",
        "roleId": "1",
        "permissionLevel": "1",
        "bill_id": bill_ids[0] if bill_ids else "none",
    }
    made = 0
    for path in paths:
        concrete = path
        for name, value in values.items():
            concrete = concrete.replace("{" + name + "}", urllib.parse.quote(value))
        for api in (driver.api, admin):
            calls(api, "GET", concrete)
            made += 1
    return made


def read_paths(central: CentralProcess) -> list[str]:
    """The documented paths that answer GET."""
    with urllib.request.urlopen(f"{central.url}/api/openapi.json", timeout=10) as response:
        document = json.loads(response.read())
    return [path for path, item in document["paths"].items() if "get" in item]


def tracebacks(log: str) -> Counter[str]:
    """Each distinct traceback in the central's JSON log (its exception's last line and event)."""
    found: Counter[str] = Counter()
    for line in log.splitlines():
        if "Traceback" not in line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            found[DIGITS.sub("N", line.strip()[-200:])] += 1
            continue
        text = str(record.get("exception", ""))
        last = text.strip().splitlines()[-1] if text.strip() else "?"
        found[DIGITS.sub("N", f"{record.get('event')}: {last}")] += 1
    return found


def read_ledger(db_path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    """(requests with their bill, session segments, live sessions) from the central's database."""
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as db:
        db.row_factory = sqlite3.Row
        requests = [
            dict(r)
            for r in db.execute(
                "SELECT r.id, r.charging_mode, r.requested_amount, r.current_status, "
                "b.electricity AS billed, (SELECT count(*) FROM notifications n "
                "WHERE n.related_id = r.id AND n.title = ?) AS short "
                "FROM charging_requests r LEFT JOIN bills b ON b.id = r.bill_id ORDER BY r.created_at",
                [SHORT_NOTICE_TITLE],
            )
        ]
        segments = [
            dict(r)
            for r in db.execute(
                "SELECT request_id, pile_no, electricity, status, json_extract(detail, '$.reason') AS reason "
                "FROM orders WHERE request_id IS NOT NULL ORDER BY create_time"
            )
        ]
        live = int(db.execute("SELECT count(*) FROM live_sessions").fetchone()[0])
    return requests, segments, live


def settle(station: Station, drivers: list[Driver], calls: Calls, deadline_s: float) -> list[str]:
    """Wait until every request has ended and no port charges; what did not settle, if anything."""

    def ended() -> bool:
        for driver in drivers:
            answer = calls(driver.api, "GET", "/api/charging/request/status/")
            if answer is None or answer[0] != 200:
                return False
            current = answer[1]["data"]
            if current is not None and current["current_status"] in ("waiting", "charging"):
                return False
        snapshot = station.sim.snapshot()["piles"]
        return not any(
            port["state_name"] == "CHARGING" for pile in snapshot.values() for port in pile["ports"].values()
        )

    try:
        wait_until(ended, deadline_s, "every request ended and every port idle")
    except (AssertionError, TimeoutError) as exc:
        return [f"not settled after {deadline_s:.0f} s: {exc}"]
    return []


def books(station: Station, segments: list[dict[str, Any]]) -> list[PileBooks]:
    """Each pile's delivered, billed and unbilled-bound energy over every simulator life."""
    rate = station.ratings_wh_per_s()
    result = []
    for pile in sorted(rate):
        delivered = sum(life.last_wh.get(pile, life.initial_wh) - life.initial_wh for life in station.lives)
        unseen = sum(
            rate[pile] * (life.killed_at - life.looked_at)
            for life in station.lives
            if life.killed_at is not None
        )
        bound = unseen + rate[pile] * station.unobserved_s()
        mine = [s for s in segments if s["pile_no"] == pile]
        billed = sum(Fraction(s["electricity"]) for s in mine)
        result.append(PileBooks(pile, delivered, unseen, int(billed * 1000), bound, len(mine)))
    return result


def check(
    requests: list[dict[str, Any]], segments: list[dict[str, Any]], live: int, piles: list[PileBooks]
) -> list[str]:
    failures = []
    if live:
        failures.append(f"{live} live session(s) left in the central after everything ended")
    for r in requests:
        mine = [Fraction(s["electricity"]) for s in segments if s["request_id"] == r["id"]]
        if r["current_status"] != "completed":
            failures.append(f"request {r['id']} ended {r['current_status']}")
            continue
        billed = Fraction(r["billed"] or "0")
        if abs(billed - sum(mine, Fraction(0))) > TOLERANCE_KWH:
            failures.append(f"request {r['id']}: bill {billed} kWh but its segments sum to {sum(mine)} kWh")
        if abs(billed - Fraction(r["requested_amount"])) > TOLERANCE_KWH:
            failures.append(
                f"request {r['id']}: billed {float(billed):.3f} kWh of {r['requested_amount']} requested; "
                + mismatch_reason(r, [s for s in segments if s["request_id"] == r["id"]])
            )
    for p in piles:
        if p.counted_twice:
            failures.append(f"{p.pile}: billed {p.billed_wh} Wh but its meters rose {p.delivered_wh} Wh")
        if p.lost_beyond_bound:
            failures.append(
                f"{p.pile}: {p.delivered_wh - p.billed_wh} Wh unbilled, more than the "
                f"{p.unbilled_bound_wh:.0f} Wh the piles did unobserved"
            )
    return failures


def mismatch_reason(request: dict[str, Any], segments: list[dict[str, Any]]) -> str:
    """How a request billed differently from its amount got there: its segments in order (pile,
    kWh, how each ended) and whether the central told the driver it stopped short."""
    parts = [
        f"{s['pile_no']} {float(Fraction(s['electricity'] or '0')):.3f} kWh {s['reason']}" for s in segments
    ]
    notice = "; 'stopped short' notice sent" if request.get("short") else ""
    return "segments: " + ", ".join(parts) + notice


def billed_vs_asked(requests: list[dict[str, Any]]) -> int:
    """Completed requests whose bill differs from their amount by more than the rounding."""
    return sum(
        1
        for r in requests
        if r["status"] == "completed"
        and abs(Fraction(r["billed"] or "0") - Fraction(r["requested"])) > TOLERANCE_KWH
    )


def run_chaos(
    workdir: Path,
    seed: int,
    *,
    chaos_s: float,
    round_every_s: float,
    scale: float = 120.0,
    recovery_s: float = RECOVERY_S,
    progress: Callable[[str], None] = lambda _: None,
) -> ChaosReport:
    """Charge under seeded kills for ``chaos_s`` seconds (a round every ``round_every_s`` on
    average), recover, and check the invariants."""
    rng = random.Random(seed)
    station = Station(workdir, fast=2, trickle=2, scale=scale)
    calls = Calls()
    try:
        admin_status, admin_body = Api(station.central.url).call(
            "POST", "/api/Users/login", {"openId": "admin", "password": ADMIN_PASSWORD}
        )
        assert admin_status == 200, admin_body
        admin = Api(station.central.url, str(admin_body["token"]))
        drivers = register_drivers(station.central, rng)
        plan = kill_plan(rng, chaos_s, round_every_s)
        start = station.now()
        while station.now() - start < chaos_s or plan:
            now = station.now() - start
            if plan and plan[0][0] <= now:
                _, action, component = plan.pop(0)
                progress(f"{station.now():6.1f} s: {action} {component}")
                if action == "kill":
                    station.kill(component)
                else:
                    station.restart(component, rng)
                continue
            if "central" not in station.down and now < chaos_s:
                keep_charging(drivers, calls, rng)
            station.look_at_meters()
            time.sleep(0.2)
        progress("recovering")
        failures = settle(station, drivers, calls, recovery_s)
        station.look_at_meters()
        requests, segments, live = read_ledger(
            station.central.config_path.parent / "central-data" / "central.db"
        )
        piles = books(station, segments)
        failures += check(requests, segments, live, piles)
        every_read_endpoint(station.central, admin, drivers[0], calls)
        if calls.server_errors:
            failures.append(f"{len(calls.server_errors)} answer(s) 5xx")
        found = tracebacks(station.central.proc.log())
        failures += [f"traceback repeats {n} times: {sig}" for sig, n in found.items() if n > 2]
        summary = [
            {
                "id": r["id"],
                "mode": r["charging_mode"],
                "status": r["current_status"],
                "requested": r["requested_amount"],
                "billed": r["billed"],
                "segments": sum(1 for s in segments if s["request_id"] == r["id"]),
            }
            for r in requests
        ]
        return ChaosReport(seed, station.outages, summary, piles, calls.server_errors, found, failures)
    finally:
        for component in sorted(station.down):
            station.restart(component, rng)
        station.stop()


def kill_plan(rng: random.Random, chaos_s: float, round_every_s: float) -> list[tuple[float, str, str]]:
    """(seconds from the start, "kill" | "start", component), in time order: each round kills one
    or two processes a moment apart and starts each again 0.5 to 3 s later, before the next round."""
    plan: list[tuple[float, str, str]] = []
    at = rng.uniform(1.0, round_every_s)
    while at < chaos_s:
        victims = rng.sample(COMPONENTS, rng.choice((1, 1, 2)))
        latest = at
        for n, component in enumerate(victims):
            down = at + n * rng.uniform(0.0, 1.0)
            up = down + rng.uniform(0.5, 3.0)
            plan += [(down, "kill", component), (up, "start", component)]
            latest = max(latest, up)
        at = latest + rng.uniform(0.5 * round_every_s, 1.5 * round_every_s)
    return sorted(plan)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--minutes", type=float, default=2.0, help="minutes of chaos (recovery comes after)")
    ap.add_argument("--round-every", type=float, default=8.0, help="mean seconds between kill rounds")
    ap.add_argument("--time-scale", type=float, default=120.0)
    ap.add_argument(
        "--workdir", type=Path, help="keep the processes' logs and data here (default: a temp dir)"
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="pilegate-chaos-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        report = run_chaos(
            workdir,
            args.seed,
            chaos_s=args.minutes * 60,
            round_every_s=args.round_every,
            scale=args.time_scale,
            progress=lambda line: print(line, flush=True),
        )
        print(report.render())
    sys.exit(1 if report.failures else 0)


if __name__ == "__main__":
    main()
