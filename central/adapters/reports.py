"""Report queries: what the billed driver segments of a period add up to, per pile."""

from __future__ import annotations

from datetime import datetime
from fractions import Fraction

import sqlite_utils

from central.adapters.charging import iso
from central.application.ports import PileTotals
from central.domain.orders import OrderStatus


class ReportRows:
    """The application's ``ReportRepository`` over one connection."""

    def __init__(self, db: sqlite_utils.Database) -> None:
        self.db = db

    def pile_totals(self, start: datetime, end: datetime) -> list[PileTotals]:
        """Billed driver segments (completed or ended by a fault) that started in ``[start, end)``."""
        rows = self.db.query(
            "SELECT pile_no, duration, electricity, amount, service_fee FROM orders "
            "WHERE request_id IS NOT NULL AND status IN (?, ?) AND start_time >= ? AND start_time < ?",
            [OrderStatus.COMPLETED, OrderStatus.ABNORMAL, iso(start), iso(end)],
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
