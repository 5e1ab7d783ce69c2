"""The station dashboard's reads: one station-local day's takings, and the newest notifications.

Plain functions taking a ``Db``; they run inside ``Store.read``. Times are stored
as UTC ISO text and compared through ``julianday`` so offsets do not matter.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any

from central.adapters.database import Db
from central.domain.orders import OrderStatus

PERIODS = ("peak", "normal", "valley")


def day_totals(db: Db, start: datetime, end: datetime, *, station: str) -> dict[str, Any]:
    """Finished, priced segments (driver requests and operator orders) of the station (its code)
    billed in ``[start, end)``: how many, kWh, and the fees of each tariff period plus the service
    fee (exact fractions)."""
    rows = db.query(
        "SELECT electricity, service_fee, total_amount, detail FROM orders "
        "WHERE station = ? AND generated_time IS NOT NULL AND status IN (?, ?) "
        "AND julianday(generated_time) >= julianday(?) AND julianday(generated_time) < julianday(?)",
        [station, OrderStatus.COMPLETED, OrderStatus.ABNORMAL, _utc(start), _utc(end)],
    )
    totals: dict[str, Any] = {"sessions": 0, "kwh": Fraction(0), "service": Fraction(0), "total": Fraction(0)}
    totals |= {name: Fraction(0) for name in PERIODS}
    for row in rows:
        totals["sessions"] += 1
        totals["kwh"] += Fraction(row["electricity"])
        totals["service"] += Fraction(row["service_fee"])
        totals["total"] += Fraction(row["total_amount"])
        periods = (json.loads(row["detail"]) if row["detail"] else {}).get("periods", {})
        for name in PERIODS:
            if name in periods:
                totals[name] += Fraction(periods[name][2])
    return totals


def recent_notifications(db: Db, limit: int) -> list[dict[str, Any]]:
    """The newest notifications of every user, with the username they went to."""
    return list(
        db.query(
            "SELECT n.id, n.kind, n.title, n.content, n.create_time, u.username FROM notifications n "
            "LEFT JOIN users u ON u.id = n.user_id ORDER BY n.id DESC LIMIT ?",
            [limit],
        )
    )


def _utc(at: datetime) -> str:
    return at.astimezone(UTC).isoformat()
