"""GET /api/Orders/paged latency over a million orders, through the real aiohttp app.

Run: ``.venv/bin/python bench/orders_paged.py [--orders 1000000] [--requests 300] [--db FILE]
[--explain]``

Generates ``--orders`` orders in a fresh SQLite file (batched inserts; 5,000 users, 20 piles, start
times spread over the 365 days before 2025-06-01 with a daily rhythm; statuses and billing modes in
realistic shares), opens it with the central's migrations plus :data:`ORDER_MIGRATIONS`
(the order indexes), serves the user API and the operator platform API on 127.0.0.1 with the real
ChargingService, and times ``--requests`` requests from one client: first pages and deeper pages,
userId / pileId / status filters, one-day and one-month date ranges, keyword by orderNo prefix, pile
number and nickname, and combinations. Prints p50/p99 overall and per kind; ``--explain`` prints
SQLite's plan of each kind's COUNT and page query (for a keyword: of each match set's count, of one
batch of its index ranges and of the window of newest orders). An existing ``--db`` with enough
orders is reused.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import structlog
from aiohttp import ClientSession, web

from central.adapters import users
from central.adapters.order_queries import KeywordMatch, OrderQuery, count_statement, page_statement
from central.adapters.schema import ORDER_MIGRATIONS, migrations
from central.adapters.storage import Store, connect
from central.adapters.unit_of_work import SqliteUnitOfWork
from central.application import auth
from central.application.charging import ChargingService
from central.application.clock import StationClock
from central.application.orders import OperatorOrders
from central.domain.params import params_from_mapping
from central.web import add_user_api
from central.web.keys import AUTH, STATIONS, STORE
from central.web.platform import add_operator_platform_api
from central.web.station_runtime import StationRuntime, Stations

USERS, PILES, DAYS = 5_000, 20, 365
END = datetime(2025, 6, 1, tzinfo=UTC)
BATCH = 50_000
STATUS_SHARES = ((2, 70), (0, 12), (3, 10), (4, 8))  # completed, to pay, cancelled, abnormal


class NoCommands:
    """The piles' side of the command path (nothing is commanded in this bench)."""

    async def send(
        self, pile_no: str, port: int, op: str, params: Mapping[str, int], *, car: str | None = None,
        expires_in_s: float = 30.0,
    ) -> str:  # fmt: skip
        return "none"


# --- data ------------------------------------------------------------------------------------------


def seed_fixed(db: sqlite3.Connection, rng: random.Random) -> list[tuple[str, str]]:
    """Users, a station, piles with one port each; returns (pile_id, pile_no) pairs."""
    now = END.isoformat()
    db.executemany(
        "INSERT INTO users (id, username, password_hash, nickname, register_time) VALUES (?, ?, 'x', ?, ?)",
        [(i, f"user{i:05d}", rng.choice(["小王", "小李", "张三", "Lucy", "Ming"]) + str(i), now)
         for i in range(1, USERS + 1)],
    )  # fmt: skip
    db.execute("INSERT INTO stations (id, code, name, status) VALUES ('st1', 's1', '一号站', 1)")
    piles = [(uuid.uuid4().hex, f"{'F' if n <= 10 else 'T'}{(n - 1) % 10 + 1}") for n in range(1, PILES + 1)]
    for pile_id, pile_no in piles:
        db.execute(
            "INSERT INTO piles (id, station_id, pile_no, pile_type, power_rate, total_ports, status, "
            "online_status) VALUES (?, 'st1', ?, ?, ?, 1, 1, 1)",
            [pile_id, pile_no, 1 if pile_no[0] == "F" else 2, 30.0 if pile_no[0] == "F" else 10.0],
        )
        db.execute("INSERT INTO ports (id, pile_id, port_no) VALUES (?, ?, '1')", [uuid.uuid4().hex, pile_id])
    return piles


def order_rows(count: int, piles: list[tuple[str, str]], rng: random.Random) -> Iterator[tuple[Any, ...]]:
    statuses = [s for s, share in STATUS_SHARES for _ in range(share)]
    first = END - timedelta(days=DAYS)
    for _ in range(count):
        day = rng.randrange(DAYS)
        second = int(rng.triangular(6 * 3600, 24 * 3600 - 1, 18 * 3600))  # busier in the evening
        start = first + timedelta(days=day, seconds=second)
        seconds = rng.randrange(300, 4 * 3600)
        pile_id, pile_no = rng.choice(piles)
        kwh = round(rng.uniform(1, 60), 3)
        status = rng.choice(statuses)
        amount, service = round(kwh * 0.8, 2), round(kwh * 0.8, 2)
        total = amount + service if status != 3 else 0.0
        order_id = uuid.uuid4().hex
        stamp = start.isoformat()
        yield (
            order_id, start.strftime("%Y%m%d%H%M%S") + order_id[:6].upper(), rng.randrange(1, USERS + 1),
            pile_id, pile_no, "1", status, rng.choice((0, 1, 1, 1, 2)), stamp,
            (start + timedelta(seconds=seconds)).isoformat(), seconds, str(kwh), kwh, str(amount), amount,
            str(service), service, str(total), total, 1 if status == 2 else 0, stamp, stamp,
        )  # fmt: skip


_INSERT = (
    "INSERT INTO orders (id, order_no, user_id, pile_id, pile_no, port_no, status, billing_mode, start_time, "
    "end_time, duration, electricity, electricity_num, amount, amount_num, service_fee, service_fee_num, "
    "total_amount, total_amount_num, payment_status, create_time, update_time) "
    "VALUES (" + ",".join("?" * 22) + ")"
)


def generate(path: Path, count: int, seed: int) -> None:
    """A fresh database with the schema, the fixed rows and ``count`` orders (then the indexes)."""
    db = connect(path)
    migrations.apply(db)
    conn, rng = db.conn, random.Random(seed)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("BEGIN")
    piles = seed_fixed(conn, rng)
    rows = order_rows(count, piles, rng)
    done = 0
    while done < count:
        batch = [row for _, row in zip(range(BATCH), rows, strict=False)]
        conn.executemany(_INSERT, batch)
        done += len(batch)
        print(f"\r  {done:,} orders", end="", flush=True)
    conn.execute("COMMIT")
    print()
    ORDER_MIGRATIONS.apply(db)
    conn.execute("ANALYZE")
    conn.close()


def existing_orders(path: Path) -> int:
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(path) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM orders").fetchone()[0])
    except sqlite3.Error:
        return 0


# --- requests --------------------------------------------------------------------------------------


def request_mix(n: int, rng: random.Random, piles: list[str], order_nos: list[str]) -> list[tuple[str, str]]:
    """(kind, query string) pairs; each kind in turn."""
    kinds = {
        "first pages": lambda: f"pageNumber={rng.randint(1, 5)}&pageSize={rng.choice((10, 20, 50))}",
        "deep page": lambda: f"pageNumber={rng.randint(100, 1000)}&pageSize=100",
        "userId": lambda: f"userId={rng.randint(1, USERS)}&pageSize=20",
        "pileId": lambda: f"pileId={rng.choice(piles)}&pageNumber={rng.randint(1, 20)}",
        "status": lambda: f"status={rng.choice((0, 3, 4))}&pageNumber={rng.randint(1, 10)}",
        "one day": lambda: f"startDate={_day(rng)}&endDate={_day(rng, same=True)}",
        "one month": lambda: _month(rng),
        "status+month": lambda: f"status=0&{_month(rng)}",
        "userId+month": lambda: f"userId={rng.randint(1, USERS)}&{_month(rng)}",
        "kw orderNo": lambda: f"keyword={rng.choice(order_nos)[:12]}",
        "kw pileNo": lambda: f"keyword={rng.choice(('F3', 'T7', 'F10'))}&pageNumber={rng.randint(1, 5)}",
        "kw nickname": lambda: f"keyword={rng.choice(('小王12', 'Lucy4', '张三99'))}",
    }
    names = list(kinds)
    return [(names[i % len(names)], kinds[names[i % len(names)]]()) for i in range(n)]


_last_day: list[date] = []


def _day(rng: random.Random, same: bool = False) -> str:
    if not same:
        _last_day[:] = [END.date() - timedelta(days=rng.randint(1, DAYS))]
    return _last_day[0].isoformat()


def _month(rng: random.Random) -> str:
    start = END.date() - timedelta(days=rng.randint(31, DAYS))
    return f"startDate={start.isoformat()}&endDate={(start + timedelta(days=30)).isoformat()}"


async def serve(path: Path) -> tuple[web.AppRunner, Store, str, str]:
    """The real app over the database; returns (runner, store, base URL, admin token)."""
    store = Store(path, [migrations, ORDER_MIGRATIONS])
    await store.open()
    params = params_from_mapping({"FastChargingPileNum": 10, "TrickleChargingPileNum": 10})
    uow, clock = SqliteUnitOfWork(store, "station1"), StationClock()
    service = ChargingService(uow, params, clock, NoCommands(), station="s1")
    app = web.Application()
    stations = Stations("station1")
    stations.add(StationRuntime("station1", service, OperatorOrders(service, uow, clock)))
    app[STORE], app[STATIONS] = store, stations
    app[AUTH] = auth.AuthSettings()
    add_user_api(app)
    add_operator_platform_api(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    now = datetime.now(UTC)

    def admin(db: Any) -> str:
        user_id = users.insert_user(db, f"bench{uuid.uuid4().hex[:6]}", "x", level=3, now=now)
        return users.issue_token(db, user_id, now=now)

    return runner, store, f"http://127.0.0.1:{port}", await store.write(admin)


async def measure(base: str, token: str, mix: list[tuple[str, str]]) -> dict[str, list[float]]:
    timings: dict[str, list[float]] = {}
    async with ClientSession(headers={"Authorization": f"Bearer {token}"}) as client:
        for kind, query in mix:
            started = time.perf_counter()
            async with client.get(f"{base}/api/Orders/paged?{query}") as response:
                body = await response.json()
                assert response.status == 200, (query, body)
            timings.setdefault(kind, []).append((time.perf_counter() - started) * 1000)
    return timings


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def explain(path: Path, piles: list[str], order_no: str) -> None:
    """SQLite's plan of the count and the page statements of typical filters (as the API runs them)."""
    since, until = "2025-01-01T00:00:00+00:00", "2025-02-01T00:00:00+00:00"
    cases = {
        "no filter": OrderQuery(),
        "status": OrderQuery(status=0),
        "userId": OrderQuery(user_id=42),
        "pileId": OrderQuery(pile_id=piles[0]),
        "month": OrderQuery(since=since, until=until),
        "status+month": OrderQuery(status=0, since=since, until=until),
        "userId+month": OrderQuery(user_id=42, since=since, until=until),
    }
    keywords = {"kw pileNo": "F3", "kw nickname": "Lucy4", "kw orderNo": order_no[:12]}
    db = connect(path)
    for name, query in cases.items():
        for label, (sql, args) in (
            ("count", count_statement(query, counts=True)),
            ("page", page_statement(query, 10, 100_000)),
        ):
            print(f"  {name:13} {label:5} {plan(db, sql, args)}")
    for name, keyword in keywords.items():
        match = KeywordMatch.resolve(db, keyword, OrderQuery())
        for _, matched in match.sets:
            print(f"  {name:13} count {plan(db, *match.count_statement([matched.condition], matched.args))}")
        ranges = [r for _, s in match.sets for r in s.ranges]
        print(f"  {name:13} page  ({len(ranges)} ranges) {plan(db, *match.newest_statement(ranges[:2], 50))}")
        print(f"  {name:13} window {plan(db, *match.probe_statement(2000, 50))}")
    db.conn.close()


def plan(db: Any, sql: str, args: list[Any]) -> str:
    return " | ".join(row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {sql}", args))


async def run(args: argparse.Namespace) -> None:
    path = Path(args.db) if args.db else Path(tempfile.mkdtemp(prefix="orders-bench-")) / "orders.db"
    if existing_orders(path) < args.orders:
        if path.exists():
            path.unlink()
        print(f"generating {args.orders:,} orders in {path}")
        started = time.perf_counter()
        generate(path, args.orders, args.seed)
        print(f"  generated in {time.perf_counter() - started:.1f} s")
    with sqlite3.connect(path) as conn:
        piles = [r[0] for r in conn.execute("SELECT id FROM piles ORDER BY pile_no")]
        order_nos = [r[0] for r in conn.execute("SELECT order_no FROM orders ORDER BY random() LIMIT 50")]
    if args.explain:
        explain(path, piles, order_nos[0])
    runner, store, base, token = await serve(path)
    try:
        mix = request_mix(args.requests, random.Random(args.seed), piles, order_nos)
        await measure(base, token, mix[: min(24, len(mix))])  # warm the page cache
        timings = await measure(base, token, mix)
    finally:
        await runner.cleanup()
        await store.close()
    every = [t for values in timings.values() for t in values]
    print(f"{len(every)} requests, one client on 127.0.0.1, {args.orders:,} orders")
    print(f"  {'all':14} p50 {percentile(every, 50):7.1f} ms   p99 {percentile(every, 99):7.1f} ms")
    for kind, values in timings.items():
        p50, p99 = percentile(values, 50), percentile(values, 99)
        print(f"  {kind:14} p50 {p50:7.1f} ms   p99 {p99:7.1f} ms   (n={len(values)})")
    print(f"  mean {statistics.mean(every):.1f} ms")
    print("command: .venv/bin/python bench/orders_paged.py " + " ".join(sys.argv[1:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--db", help="database file (reused if it already holds enough orders)")
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--explain", action="store_true", help="print the query plans")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
