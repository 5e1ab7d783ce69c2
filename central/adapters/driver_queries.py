"""The driver API's reads: bill pages and bills.

Plain functions taking a ``Db``; they run inside ``Store.read``.
Times are stored as UTC ISO text and compared through ``julianday`` so offsets do not matter.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from central.adapters.database import Db

BILL_COLUMNS = (
    "id, station, generated_time, pile_no, electricity, duration, start_time, end_time, "
    "service_fee, total_amount, detail"
)
_BILL_TIME = "julianday(generated_time)"
_IS_BILL = "request_id IS NOT NULL AND generated_time IS NOT NULL"  # a finished, priced segment


def bill_page(
    db: Db,
    user_id: int,
    *,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    offset: int,
    station: str | None = None,
) -> tuple[int, list[dict[str, Any]]]:
    """(total count, rows of the page) of the user's bills generated in [since, until) (at the
    station ``station``, when given), newest first."""
    where, args = f"user_id = ? AND {_IS_BILL}", list[Any]([user_id])
    if station is not None:
        where += " AND station = ?"
        args.append(station)
    for bound, op in ((since, ">="), (until, "<")):
        if bound is not None:
            where += f" AND {_BILL_TIME} {op} julianday(?)"
            args.append(bound.astimezone(UTC).isoformat())
    total = db.execute(f"SELECT COUNT(*) FROM orders WHERE {where}", args).fetchone()[0]  # noqa: S608
    rows = db.query(
        f"SELECT {BILL_COLUMNS} FROM orders WHERE {where} "  # noqa: S608 - columns and clauses are ours
        f"ORDER BY {_BILL_TIME} DESC, rowid DESC LIMIT ? OFFSET ?",
        [*args, limit, offset],
    )
    return int(total), list(rows)


def bill_rows(db: Db, user_id: int, bill_id: str) -> list[dict[str, Any]]:
    """The user's detail record ``bill_id``, or every record of the request bill ``bill_id``
    (what POST /complete/ returns); another user's bill is absent."""
    return list(
        db.query(
            f"SELECT {BILL_COLUMNS} FROM orders WHERE user_id = ? AND {_IS_BILL} "  # noqa: S608
            "AND (id = ? OR bill_id = ?) ORDER BY julianday(start_time), rowid",
            [user_id, bill_id, bill_id],
        )
    )


def active_request(db: Db, user_id: int) -> tuple[str, str] | None:
    """``(request id, station)`` of the user's request that is waiting or charging, if any."""
    row = db.execute(
        "SELECT id, station FROM charging_requests WHERE user_id = ? "
        "AND current_status IN ('waiting', 'charging') LIMIT 1",
        [user_id],
    ).fetchone()
    return None if row is None else (str(row[0]), str(row[1]))


def request_station(db: Db, user_id: int, request_id: str) -> str | None:
    """The station (code) of the user's request ``request_id``, or None."""
    row = db.execute(
        "SELECT station FROM charging_requests WHERE id = ? AND user_id = ?", [request_id, user_id]
    ).fetchone()
    return None if row is None else str(row[0])
