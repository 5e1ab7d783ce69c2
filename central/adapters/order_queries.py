"""Reads of the operator platform's orders: the lists, the paged and filtered list with its keyword
search, one order, the statistics, and the pile and port a new order would charge on.

Every order is listed newest start first (``start_time DESC, rowid DESC``; orders without a start
last). The paged list's keyword matches an order whose order number starts with it (upper-cased),
whose pile number is a pile on record containing it or is the keyword itself, or whose user's
nickname or username contains it. Each of those three sets is an index range or a few of them, and
each range of ``orders_pile_no_start`` / ``orders_user_start`` is already in the list's order, so a
page takes the newest ``offset + size`` entries of every range, merges them and drops repeats
(an order in two sets) instead of sorting every match. When that means hundreds of ranges (a
keyword many users share) or sorting a large order-number range, the newest orders under the other
filters are tested one by one instead, if the matches are dense enough for a short window of them
to hold the page. The total counts each set from its index and corrects for overlaps by
inclusion-exclusion, again without sorting.
"""

from __future__ import annotations

import heapq
import itertools
import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from central.adapters.database import Db
from central.adapters.query import like_pattern
from central.domain.orders import OrderStatus

ORDER_SELECT = (
    "SELECT o.id, o.station, o.order_no, o.user_id, "
    "COALESCE(NULLIF(u.nickname, ''), u.username) AS user_nickname, "
    "o.pile_id, o.pile_no, o.port_id, o.port_no, o.request_id, o.status, o.billing_mode, o.start_time, "
    "o.end_time, o.duration, o.electricity, o.amount, o.service_fee, o.total_amount, o.payment_status, "
    "o.payment_time, o.payment_method, o.transaction_id, o.create_time, o.update_time "
    "FROM orders o LEFT JOIN users u ON u.id = o.user_id"
)
NEWEST_FIRST = "o.start_time DESC, o.rowid DESC"
_TEXT_MAX = "\U0010ffff"  # above every character: ``prefix + _TEXT_MAX`` bounds a prefix range
_RANGES_PER_STATEMENT = 200  # SQLite allows at most 500 terms in one compound SELECT
_RANGE_READS = 6  # what starting an index range costs, in row reads (about 30 us against 5 us)
_PROBE_WORTH = 500  # row reads of the index ranges above which a window of the newest orders may pay

Row = dict[str, Any]


@dataclass(frozen=True)
class OrderQuery:
    """The paged list's filters; dates already as a UTC ``[since, until)`` range on start_time."""

    user_id: int | None = None
    pile_id: str | None = None
    status: int | None = None
    since: str | None = None
    until: str | None = None
    keyword: str | None = None
    station: str | None = None  # a station's code

    def filters(self) -> tuple[str, list[Any]]:
        """Every filter but the keyword, as one condition on ``orders o``."""
        conditions, args = ["1 = 1"], list[Any]()
        for condition, value in (
            ("o.user_id = ?", self.user_id),
            ("o.pile_id = ?", self.pile_id),
            ("o.status = ?", self.status),
            ("o.start_time >= ?", self.since),
            ("o.start_time < ?", self.until),
            ("o.station = ?", self.station),
        ):
            if value is not None:
                conditions.append(condition)
                args.append(value)
        return " AND ".join(conditions), args

    def without_keyword(self) -> OrderQuery:
        return OrderQuery(
            self.user_id, self.pile_id, self.status, self.since, self.until, station=self.station
        )


# --- lists and single orders ----------------------------------------------------------------------


def all_orders(db: Db, station: str | None = None) -> list[Row]:
    """Every order (of the station ``station``, when given), newest first."""
    if station is not None:
        return list(db.query(f"{ORDER_SELECT} WHERE o.station = ? ORDER BY {NEWEST_FIRST}", [station]))
    return list(db.query(f"{ORDER_SELECT} ORDER BY {NEWEST_FIRST}"))


def orders_of_user(db: Db, user_id: int) -> list[Row]:
    return list(db.query(f"{ORDER_SELECT} WHERE o.user_id = ? ORDER BY {NEWEST_FIRST}", [user_id]))


def orders_of_pile(db: Db, pile_id: str) -> list[Row]:
    return list(db.query(f"{ORDER_SELECT} WHERE o.pile_id = ? ORDER BY {NEWEST_FIRST}", [pile_id]))


def order_by_id(db: Db, order_id: str) -> Row | None:
    rows = list(db.query(f"{ORDER_SELECT} WHERE o.id = ?", [order_id]))
    return rows[0] if rows else None


# --- the paged list --------------------------------------------------------------------------------


def order_page(db: Db, query: OrderQuery, size: int, offset: int) -> tuple[int, list[Row]]:
    """(total count, rows of the page), newest start first; both read from one snapshot."""
    with _snapshot(db):
        if query.keyword is None:
            total = _filtered_count(db, query)
            rowids = _filtered_page(db, query, size, offset) if offset < total else []
        else:
            match = KeywordMatch.resolve(db, query.keyword, query)
            total = match.count(db)
            rowids = match.page(db, size, offset, total) if offset < total else []
        return total, _rows_of(db, rowids)


@contextmanager
def _snapshot(db: Db) -> Iterator[None]:
    """One read transaction, so a count and its page see the same orders."""
    db.execute("BEGIN")
    try:
        yield
    finally:
        db.execute("COMMIT")


def _rows_of(db: Db, rowids: Sequence[int]) -> list[Row]:
    if not rowids:
        return []
    marks = ", ".join("?" * len(rowids))
    return list(db.query(f"{ORDER_SELECT} WHERE o.rowid IN ({marks}) ORDER BY {NEWEST_FIRST}", list(rowids)))


def _has_counts(db: Db) -> bool:
    """Whether the trigger-kept per-status counts (the operator-orders migrations) exist."""
    return "order_counts" in db.table_names()


def count_statement(query: OrderQuery, *, counts: bool) -> tuple[str, list[Any]]:
    """The statement counting the orders of a query without keyword: the trigger-kept per-status
    counts when only a status (or nothing) filters and ``counts`` exist, else COUNT(*) (a covering
    index range for every other filter)."""
    if counts and OrderQuery(status=query.status) == query:
        if query.status is None:
            return "SELECT COALESCE(SUM(n), 0) FROM order_counts", []
        return "SELECT COALESCE(SUM(n), 0) FROM order_counts WHERE status = ?", [query.status]
    where, args = query.filters()
    return f"SELECT COUNT(*) FROM orders o WHERE {where}", args  # noqa: S608


def page_statement(query: OrderQuery, size: int, offset: int) -> tuple[str, list[Any]]:
    """The rowids of a page of a query without keyword, from an index alone (a deep offset skips
    index entries, not rows)."""
    where, args = query.filters()
    sql = f"SELECT o.rowid FROM orders o WHERE {where} ORDER BY {NEWEST_FIRST} LIMIT ? OFFSET ?"  # noqa: S608
    return sql, [*args, size, offset]


def _filtered_count(db: Db, query: OrderQuery) -> int:
    sql, args = count_statement(query, counts=_has_counts(db))
    return int(db.execute(sql, args).fetchone()[0])


def _filtered_page(db: Db, query: OrderQuery, size: int, offset: int) -> list[int]:
    sql, args = page_statement(query, size, offset)
    return [row[0] for row in db.execute(sql, args)]


@dataclass(frozen=True)
class MatchSet:
    """One way an order matches the keyword. ``condition`` selects the set through an index;
    ``off_index`` is the same test kept off that index (unary ``+``), for testing rows found through
    another index; ``ranges`` split the set into index ranges, and ``ordered`` says whether each
    range's index already lists its orders newest first (an order-number range does not)."""

    condition: str
    args: tuple[Any, ...]
    off_index: str
    ranges: tuple[tuple[str, tuple[Any, ...]], ...]
    ordered: bool


@dataclass(frozen=True)
class KeywordMatch:
    """The keyword's non-empty match sets under the query's other filters, each with its size."""

    sets: tuple[tuple[int, MatchSet], ...]
    plain: OrderQuery  # the query without its keyword

    @classmethod
    def resolve(cls, db: Db, keyword: str, query: OrderQuery) -> KeywordMatch:
        """The sets of ``keyword`` (its piles and users looked up once), counted."""
        prefix, pattern = keyword.upper(), like_pattern(keyword)
        piles = "SELECT pile_no FROM piles WHERE pile_no LIKE ? ESCAPE '\\' UNION SELECT ?"
        users = "SELECT id FROM users WHERE nickname LIKE ? ESCAPE '\\' OR username LIKE ? ESCAPE '\\'"
        by_number = "o.order_no >= ? AND o.order_no < ?"
        bounds = (prefix, prefix + _TEXT_MAX)
        candidates = (
            MatchSet(
                by_number, bounds, "+o.order_no >= ? AND +o.order_no < ?", ((by_number, bounds),), False
            ),
            _value_set("o.pile_no", [row[0] for row in db.execute(piles, [pattern, keyword])], "TEXT"),
            _value_set("o.user_id", [row[0] for row in db.execute(users, [pattern, pattern])], "BIGINT"),
        )
        unsized = cls((), query.without_keyword())
        sized = ((unsized.count_of(db, [s.condition], s.args), s) for s in candidates if s.ranges)
        return replace(unsized, sets=tuple((n, s) for n, s in sized if n))

    def count_statement(self, conditions: Sequence[str], args: Iterable[Any]) -> tuple[str, list[Any]]:
        """COUNT(*) of the orders meeting the filters and every one of ``conditions``."""
        filters, filter_args = self.plain.filters()
        where = " AND ".join([filters, *conditions])
        return f"SELECT COUNT(*) FROM orders o WHERE {where}", [*filter_args, *args]  # noqa: S608

    def count_of(self, db: Db, conditions: Sequence[str], args: Iterable[Any]) -> int:
        return int(db.execute(*self.count_statement(conditions, args)).fetchone()[0])

    def count(self, db: Db) -> int:
        """Orders in any set: inclusion-exclusion over the sets; an overlap is counted through the
        index of its smallest set, the others tested on the rows it finds."""
        total = sum(n for n, _ in self.sets)
        for width in range(2, len(self.sets) + 1):
            for group in itertools.combinations(self.sets, width):
                smallest = min(group, key=lambda sized: sized[0])[1]
                conditions = [s.condition if s is smallest else s.off_index for _, s in group]
                overlap = self.count_of(db, conditions, [a for _, s in group for a in s.args])
                total += overlap if width % 2 else -overlap
        return total

    def page(self, db: Db, size: int, offset: int, total: int) -> list[int]:
        """The rowids of the page of ``total`` matches: the newest ``offset + size`` of each index
        range, merged newest first without repeats, then sliced; or, when that means many ranges or
        sorting a large order-number range, the newest orders under the filters alone tested one by
        one, if the matches are dense enough among them."""
        newest = offset + size
        ranges = [r for _, s in self.sets for r in s.ranges]
        work = sum(_RANGE_READS * len(s.ranges) if s.ordered else n for n, s in self.sets)
        if work > _PROBE_WORTH:
            found = self._newest_by_probe(db, newest, total, work)
            if found is not None:
                return found[offset:]
        batches = [
            db.execute(*self.newest_statement(ranges[i : i + _RANGES_PER_STATEMENT], newest)).fetchall()
            for i in range(0, len(ranges), _RANGES_PER_STATEMENT)
        ]
        merged = heapq.merge(*batches, key=_newest_first_key, reverse=True)
        distinct = (rowid for rowid, _ in itertools.groupby(rowid for _, rowid in merged))
        return list(itertools.islice(distinct, offset, newest))

    def _newest_by_probe(self, db: Db, newest: int, total: int, work: int) -> list[int] | None:
        """The rowids of the newest ``newest`` matches, found in a window of the newest orders under
        the filters twice as long as the share of matches suggests; None if that window would read
        more rows than the index ranges' ``work``, or held fewer (matches not evenly spread)."""
        everything = _filtered_count(db, self.plain)
        window = -(-2 * newest * everything // total)
        if window >= work:
            return None
        rowids = [row[0] for row in db.execute(*self.probe_statement(window, newest))]
        return rowids if len(rowids) == newest or window >= everything else None

    def probe_statement(self, window: int, newest: int) -> tuple[str, list[Any]]:
        """Rowids of the newest ``newest`` matches among the newest ``window`` orders under the
        filters, each tested against every set off its index."""
        filters, filter_args = self.plain.filters()
        newest_orders = f"WHERE {filters} ORDER BY {NEWEST_FIRST} LIMIT ?"
        rows = f"SELECT o.rowid AS id, o.start_time FROM orders o {newest_orders}"  # noqa: S608
        matches = " OR ".join(f"({s.off_index})" for _, s in self.sets)
        sql = (
            f"SELECT w.id FROM ({rows}) w JOIN orders o ON o.rowid = w.id WHERE {matches} "  # noqa: S608
            "ORDER BY w.start_time DESC, w.id DESC LIMIT ?"
        )
        return sql, [*filter_args, window, *(a for _, s in self.sets for a in s.args), newest]

    def newest_statement(
        self, ranges: Sequence[tuple[str, tuple[Any, ...]]], limit: int
    ) -> tuple[str, list[Any]]:
        """(start_time, rowid) of the newest ``limit`` orders of the ranges together, newest first,
        without repeats; each range reads at most ``limit`` entries of its (covering) index."""
        filters, filter_args = self.plain.filters()
        newest = f"AND {filters} ORDER BY {NEWEST_FIRST} LIMIT ?"
        sql = " UNION ".join(
            f"SELECT * FROM (SELECT o.start_time, o.rowid FROM orders o WHERE {where} {newest}) AS r"  # noqa: S608
            for where, _ in ranges
        )
        args = [a for _, range_args in ranges for a in (*range_args, *filter_args, limit)]
        return f"{sql} ORDER BY 1 DESC, 2 DESC LIMIT ?", [*args, limit]


def _value_set(column: str, values: Sequence[Any], sql_type: str) -> MatchSet:
    """The orders whose ``column`` (of ``sql_type``) is one of ``values``: one index range per value."""
    listed = f"{column} IN (SELECT CAST(value AS {sql_type}) FROM json_each(?))"  # noqa: S608
    ranges = tuple((f"{column} = ?", (value,)) for value in values)
    return MatchSet(listed, (json.dumps(list(values)),), f"+{listed}", ranges, True)


def _newest_first_key(entry: tuple[Any, int]) -> tuple[bool, Any, int]:
    """SQLite's ``start_time, rowid`` order, a missing start lowest."""
    start, rowid = entry
    return (start is not None, start if start is not None else "", rowid)


# --- statistics ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OrderStatistics:
    """Totals over a set of orders: count, kWh, seconds, total amount (every status), and the
    orders per status."""

    total: int
    kwh: float
    seconds: float
    amount: float
    pending: int
    charging: int
    completed: int
    cancelled: int
    abnormal: int


_STATUS_COLUMNS = {
    OrderStatus.TO_PAY: "pending",
    OrderStatus.CHARGING: "charging",
    OrderStatus.COMPLETED: "completed",
    OrderStatus.CANCELLED: "cancelled",
    OrderStatus.ABNORMAL: "abnormal",
}
_STATISTICS = (
    "SELECT COUNT(*) AS total, COALESCE(SUM(electricity_num), 0) AS kwh, "  # noqa: S608 (built from OrderStatus at import, no input)
    "COALESCE(SUM(duration), 0) AS seconds, "
    "COALESCE(SUM(total_amount_num), 0) AS amount, "
    + ", ".join(
        f"COALESCE(SUM(CASE WHEN status = {int(code)} THEN 1 ELSE 0 END), 0) AS {name}"
        for code, name in _STATUS_COLUMNS.items()
    )
    + " FROM orders o WHERE "
)


def order_statistics(
    db: Db, since: str | None, until: str | None, station: str | None = None
) -> OrderStatistics:
    """One aggregate over the orders (of ``station``, when given) whose start time is in
    ``[since, until)``."""
    where, args = OrderQuery(since=since, until=until, station=station).filters()
    return OrderStatistics(**next(iter(db.query(_STATISTICS + where, args))))


# --- a new order's target --------------------------------------------------------------------------


@dataclass(frozen=True)
class PileRecord:
    pile_no: str
    power_rate: float
    station: str  # the code of the station that runs it


@dataclass(frozen=True)
class PortRecord:
    """A port as a new order sees it; ``charging_order`` is its current order if that is charging."""

    pile_id: str
    port_no: Any
    disabled: bool
    status: int
    charging_order: str | None


def pile_record(db: Db, pile_id: str) -> PileRecord | None:
    row = db.execute("SELECT pile_no, power_rate, station FROM piles WHERE id = ?", [pile_id]).fetchone()
    return None if row is None else PileRecord(row[0], row[1], row[2])


def port_record(db: Db, port_id: str) -> PortRecord | None:
    row = db.execute(
        "SELECT pile_id, port_no, is_disabled, status, "
        "(SELECT id FROM orders WHERE id = ports.current_order_id AND status = ?) AS charging "
        "FROM ports WHERE id = ?",
        [OrderStatus.CHARGING, port_id],
    ).fetchone()
    return None if row is None else PortRecord(row[0], row[1], bool(row[2]), row[3], row[4])
