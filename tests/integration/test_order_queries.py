"""The orders repository's paged list against a straightforward reference query.

The repository answers a keyword page by merging the newest entries of each index range and counts
by inclusion-exclusion; the reference is the plain WHERE of the keyword's meaning (order number
prefix, pile number on record or equal, user's nickname or username) sorted as a whole. On a seeded
database with overlapping sets, ties in start time, orders without a start, piles not on record and
LIKE metacharacters, both must give the same totals and the same rows for every keyword shape,
every filter and several pages; with and without the order indexes, with index ranges split over
several statements, and with the window of newest orders tried first.
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path
from typing import Any

import pytest

from central.adapters import order_queries
from central.adapters.database import Db
from central.adapters.order_queries import ORDER_SELECT, OrderQuery, order_page
from central.adapters.query import like_pattern
from central.adapters.schema import ORDER_MIGRATIONS, migrations
from central.adapters.stations import create_pile, station_id
from central.adapters.storage import connect

NOW = "2025-06-01T00:00:00+00:00"
NICKNAMES = ["Lucy4", "Lucy40", "小王12", "小王1", "", None, "F3fan", "100%", "a_b", "back\\slash", "lucy"]
PILE_NOS = ["F1", "F3", "F10", "T7", "A_1", "x%y", "b\\c"]
UNRECORDED_PILE_NOS = ["Z9", "f1", None]
STARTS = [None, *(f"2025-05-{day:02d}T{hour:02d}:00:00+00:00" for day in (1, 2, 3) for hour in (8, 20))]
KEYWORDS = [
    "F1", "f1", "F3", "F10", "1", "Lucy4", "lucy", "LUCY40", "小王", "小王12", "Z9", "Z", "T", "A_1",
    "_", "%", "x%y", "\\", "b\\c", "user", "zzz", "2025", "20250501", "F3F", "f3fa",
]  # fmt: skip


def seed(db: Db, rng: random.Random) -> dict[str, Any]:
    """Users, piles and 600 orders whose sets overlap; returns ids the filters use."""
    users = []
    for n, nickname in enumerate(NICKNAMES * 3):
        db.execute(
            "INSERT INTO users (username, password_hash, nickname, register_time) VALUES (?, 'x', ?, ?)",
            [f"user{n:03d}" if n % 4 else f"F3_{n}", nickname, NOW],
        )
        users.append(db.execute("SELECT last_insert_rowid()").fetchone()[0])
    station = station_id(db, "s1", now=NOW)
    piles: list[tuple[str | None, str | None]] = [
        (create_pile(db, station_id=station, station="s1", pile_no=no, pile_type=1, power_kw=30, now=NOW), no)
        for no in PILE_NOS
    ]
    piles += [(None, no) for no in UNRECORDED_PILE_NOS]
    for n in range(600):
        pile_id, pile_no = rng.choice(piles)
        order_no = (
            rng.choice(["20250501", "20250502", "F3", "F1", "LUCY", "2025"])
            + f"{n:05d}{rng.randrange(99):02d}"
        )
        db.execute(
            "INSERT INTO orders (id, order_no, user_id, pile_id, pile_no, status, billing_mode, start_time, "
            "create_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                f"o{n}",
                order_no,
                rng.choice(users),
                pile_id,
                pile_no,
                rng.randrange(5),
                1,
                rng.choice(STARTS),
                NOW,
            ],
        )
    return {"user": users[1], "pile": next(pid for pid, no in piles if no == "F3"), "users": users}


def reference(db: Db, query: OrderQuery, size: int, offset: int) -> tuple[int, list[Any]]:
    """The keyword's meaning as one plain WHERE, counted and sorted as a whole."""
    where, args = query.filters()
    if query.keyword is not None:
        prefix, pattern = query.keyword.upper(), like_pattern(query.keyword)
        where += (
            " AND (o.order_no >= ? AND o.order_no < ?"
            " OR o.pile_no IN (SELECT pile_no FROM piles WHERE pile_no LIKE ? ESCAPE '\\' UNION SELECT ?)"
            " OR o.user_id IN (SELECT id FROM users"
            " WHERE nickname LIKE ? ESCAPE '\\' OR username LIKE ? ESCAPE '\\'))"
        )
        args += [prefix, prefix + "\U0010ffff", pattern, query.keyword, pattern, pattern]
    total = db.execute(f"SELECT COUNT(*) FROM orders o WHERE {where}", args).fetchone()[0]  # noqa: S608
    sql = f"{ORDER_SELECT} WHERE {where} ORDER BY o.start_time DESC, o.rowid DESC LIMIT ? OFFSET ?"
    return total, list(db.query(sql, [*args, size, offset]))


def filter_shapes(ids: dict[str, Any]) -> list[dict[str, Any]]:
    may_2, may_3 = "2025-05-02T00:00:00+00:00", "2025-05-03T00:00:00+00:00"
    return [
        {},
        {"user_id": ids["user"]},
        {"pile_id": ids["pile"]},
        {"status": 2},
        {"since": may_2},
        {"until": may_3},
        {"since": may_2, "until": may_3},
        {"status": 0, "since": may_2},
        {"user_id": ids["user"], "status": 1},
        {"pile_id": ids["pile"], "until": may_3},
        {"user_id": 999_999},
    ]


PAGES = [(10, 0), (1, 0), (3, 3), (7, 14), (100, 0), (10, 40), (10, 590), (5, 10_000)]


@pytest.fixture(params=[True, False], ids=["order-indexes", "base-schema"])
def seeded(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    db = connect(tmp_path / "orders.db")
    migrations.apply(db)
    if request.param:
        ORDER_MIGRATIONS.apply(db)
    ids = seed(db, random.Random(7))
    db.execute("ANALYZE")
    yield db, ids
    db.conn.close()


@pytest.mark.parametrize(
    ("ranges_per_statement", "probe_worth"),
    [(200, 500), (2, 10**9), (200, 0)],
    ids=["as-configured", "ranges-over-statements", "window-first"],
)
def test_keyword_pages_and_totals_equal_the_reference(
    seeded: Any, monkeypatch: pytest.MonkeyPatch, ranges_per_statement: int, probe_worth: int
):
    db, ids = seeded
    monkeypatch.setattr(order_queries, "_RANGES_PER_STATEMENT", ranges_per_statement)
    monkeypatch.setattr(order_queries, "_PROBE_WORTH", probe_worth)
    order_nos = [row[0] for row in db.execute("SELECT order_no FROM orders ORDER BY rowid LIMIT 5")]
    keywords = [*KEYWORDS, *order_nos, *(no[:9] for no in order_nos), *(no[:10].lower() for no in order_nos)]
    matched = 0
    for keyword, filters in itertools.product(keywords, filter_shapes(ids)):
        query = OrderQuery(keyword=keyword, **filters)
        for size, offset in PAGES:
            expected = reference(db, query, size, offset)
            assert order_page(db, query, size, offset) == expected, (query, size, offset)
            matched += bool(expected[1])
    assert matched > 500  # the shapes find orders, not only empty pages


def test_filter_pages_and_totals_equal_the_reference(seeded: Any):
    db, ids = seeded
    for filters in filter_shapes(ids):
        query = OrderQuery(**filters)
        for size, offset in PAGES:
            assert order_page(db, query, size, offset) == reference(db, query, size, offset), (
                query,
                size,
                offset,
            )


def test_a_keyword_in_all_three_sets_counts_each_order_once(seeded: Any):
    db, _ = seeded
    in_sets = (
        "(substr(order_no, 1, 2) = 'F3') + (pile_no IS 'F3') "
        "+ (user_id IN (SELECT id FROM users WHERE nickname LIKE '%F3%' OR username LIKE '%F3%'))"
    )
    sizes = [row[0] for row in db.execute(f"SELECT {in_sets} FROM orders")]  # noqa: S608
    assert sizes.count(2) and sizes.count(3)  # orders in two and in all three sets
    total, _ = order_page(db, OrderQuery(keyword="F3"), 10, 0)
    assert total == sum(1 for n in sizes if n) == reference(db, OrderQuery(keyword="F3"), 10, 0)[0]
