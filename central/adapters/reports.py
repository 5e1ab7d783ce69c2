"""Report queries: what the finished orders of a period add up to, per pile."""

from __future__ import annotations

from datetime import UTC, datetime
from fractions import Fraction

from central.adapters.database import Db
from central.application.ports import PileTotals
from central.domain.orders import OrderStatus

# a finished order: a billed driver segment (completed or ended by a fault), or an operator order
# awaiting payment, paid, or ended abnormally
REPORTED = (OrderStatus.TO_PAY, OrderStatus.COMPLETED, OrderStatus.ABNORMAL)


class ReportRows:
    """The application's ``ReportRepository`` over one connection, for one station (its code)."""

    def __init__(self, db: Db, station: str) -> None:
        self.db, self.station = db, station

    def pile_totals(self, start: datetime, end: datetime) -> list[PileTotals]:
        """Finished orders of driver segments and operator orders that started in ``[start, end)``.

        Start times are stored as UTC ISO 8601 text, so the bounds are compared in UTC too: text of
        another offset (the station's local day) would not sort with them.
        """
        rows = self.db.query(
            "SELECT pile_no, duration, electricity, amount, service_fee FROM orders "
            "WHERE station = ? AND pile_no IS NOT NULL AND status IN (?, ?, ?) "
            "AND start_time >= ? AND start_time < ?",
            [self.station, *REPORTED, _utc(start), _utc(end)],
        )
        return [
            PileTotals(
                r["pile_no"],
                r["duration"],
                Fraction(r["electricity"]),
                Fraction(r["amount"]),
                Fraction(r["service_fee"]),
            )
            for r in rows
        ]


def _utc(at: datetime) -> str:
    return at.astimezone(UTC).isoformat()
