"""The per-pile report rows: the station-local day's sessions, driver segments and operator orders."""

from __future__ import annotations

from datetime import datetime, time
from fractions import Fraction
from pathlib import Path
from zoneinfo import ZoneInfo

import sqlite_utils

from central.adapters.reports import ReportRows
from central.adapters.schema import ORDER_MIGRATIONS, migrations
from central.adapters.storage import connect
from central.domain.orders import OrderStatus

SHANGHAI = ZoneInfo("Asia/Shanghai")
NOW = "2025-06-01T00:00:00+00:00"


def add_order(
    db: sqlite_utils.Database, n: int, start: str, status: OrderStatus, *, driver: bool, pile_no: str = "F1"
) -> None:
    """An order of 1 kWh starting at ``start`` (UTC text, as the schema stores it)."""
    if driver:
        db.execute(
            "INSERT INTO charging_requests (id, user_id, charging_mode, requested_amount, queue_number, "
            "current_status, created_at, updated_at) VALUES (?, 1, 'fast', '1', ?, 'completed', ?, ?)",
            [f"r{n}", f"F{n}", NOW, NOW],
        )
    db.table("orders").insert(
        {
            "id": f"o{n}",
            "order_no": f"N{n}",
            "user_id": 1,
            "request_id": f"r{n}" if driver else None,
            "pile_no": pile_no,
            "port_no": "1",
            "status": status,
            "start_time": start,
            "duration": 60,
            "electricity": "1",
            "amount": "2",
            "service_fee": "1/2",
            "create_time": start,
        }
    )


def test_a_station_local_day_counts_its_driver_segments_and_operator_orders(tmp_path: Path) -> None:
    db = connect(tmp_path / "report.db")
    migrations.apply(db)
    ORDER_MIGRATIONS.apply(db)
    db.execute("INSERT INTO users (username, password_hash, register_time) VALUES ('driver', 'x', ?)", [NOW])
    # 2025-06-02 in Shanghai is [2025-06-01T16:00Z, 2025-06-02T16:00Z)
    add_order(db, 1, "2025-06-01T17:30:00+00:00", OrderStatus.COMPLETED, driver=True)  # 01:30 local
    add_order(db, 2, "2025-06-02T15:59:00+00:00", OrderStatus.ABNORMAL, driver=True)  # 23:59 local
    add_order(db, 3, "2025-06-02T03:00:00+00:00", OrderStatus.TO_PAY, driver=False)  # operator, unpaid
    add_order(db, 4, "2025-06-02T04:00:00+00:00", OrderStatus.COMPLETED, driver=False, pile_no="T1")
    add_order(db, 5, "2025-06-02T05:00:00+00:00", OrderStatus.CHARGING, driver=False)  # not finished
    add_order(db, 6, "2025-06-02T06:00:00+00:00", OrderStatus.CANCELLED, driver=False)
    add_order(db, 7, "2025-06-01T15:59:00+00:00", OrderStatus.COMPLETED, driver=True)  # the day before
    add_order(db, 8, "2025-06-02T16:00:00+00:00", OrderStatus.COMPLETED, driver=False)  # the day after
    day = datetime(2025, 6, 2).date()
    start = datetime.combine(day, time.min, SHANGHAI)
    end = datetime.combine(day.replace(day=3), time.min, SHANGHAI)
    rows = ReportRows(db, "station1").pile_totals(start, end)  # rows without a station: the default one
    one = Fraction(1)
    assert sorted((r.pile_no, r.seconds, r.kwh) for r in rows) == [
        ("F1", 60, one),
        ("F1", 60, one),
        ("F1", 60, one),
        ("T1", 60, one),
    ]
