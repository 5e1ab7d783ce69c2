"""The rows of operator orders (and paying any order), and notifications. Functions of a
database connection (``Db``) running inside one store job; :class:`OrderRows` and :class:`NoticeRows`
implement the application's ``OrderRepository`` and ``NoticeRepository``.

Every state change is guarded by its own condition (the order still charging, the port free, the
order unpaid, the balance sufficient, the transaction id unused), so concurrent requests cannot both
succeed; a refusal raises, which rolls the whole transaction back.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any

from central.adapters.database import Db, IntegrityError
from central.application.notices import order_paid
from central.application.orders import (
    AlreadyPaid,
    InsufficientBalance,
    OrderConflict,
    OrderNotFound,
    TransactionReused,
    cents,
    payable_problem,
)
from central.application.ports import DriverBudget, Notice, OrderEnding, OrderTarget
from central.application.sessions import OrderSession
from central.domain.metering import MeterSession
from central.domain.orders import OrderStatus, PaymentMethod, PaymentStatus
from central.domain.pricing import OrderFigures
from central.domain.units import round_display

FREE_PORT = (  # a port's pointer to an order no longer charging (status 1) is stale: the port is free
    "(current_order_id IS NULL OR current_order_id NOT IN (SELECT id FROM orders WHERE status = 1))"
)
_ORDER_ROW = "SELECT o.*, p.power_rate FROM orders o LEFT JOIN piles p ON p.id = o.pile_id WHERE o.id = ?"


def iso(at: datetime) -> str:
    """An instant as the schema stores it: ISO 8601 UTC."""
    return at.astimezone(UTC).isoformat()


def order_no(at: datetime, order_id: str) -> str:
    """The order number in the driver sessions' form: UTC timestamp + 6 id characters."""
    return at.astimezone(UTC).strftime("%Y%m%d%H%M%S") + order_id[:6].upper()


def figures_row(figures: OrderFigures) -> dict[str, Any]:
    """The orders-row columns of priced figures (exact strings + REAL copies)."""
    out: dict[str, Any] = {
        "start_time": iso(figures.start),
        "end_time": iso(figures.stop),
        "duration": figures.seconds,
    }
    for column, value in (
        ("electricity", figures.kwh),
        ("amount", figures.amount),
        ("service_fee", figures.service_fee),
        ("total_amount", figures.total),
    ):
        out[column], out[f"{column}_num"] = str(value), float(value)
    return out


def order_row(db: Db, order_id: str) -> dict[str, Any] | None:
    """An order with its pile's rated power (``power_rate``), or None."""
    rows = list(db.query(_ORDER_ROW, [order_id]))
    return rows[0] if rows else None


def restored_session(row: Mapping[str, Any]) -> OrderSession:
    """The session of an active order row (its ``detail`` holds the persisted meter state)."""
    state = (json.loads(row["detail"]) if row["detail"] else {}).get("live", {})
    meter = MeterSession(
        started_ms=state.get("started_ms"),
        base_wh=state.get("base_wh"),
        samples=[(int(t), int(e)) for t, e in state.get("samples", [])],
        last_raw_wh=state.get("last_raw_wh"),
        wraps=int(state.get("wraps", 0)),
    )
    return OrderSession(
        row["id"],
        int(row["user_id"]),
        row["pile_no"],
        int(row["port_no"]),
        datetime.fromisoformat(row["start_time"]),
        meter,
        stopping=bool(state.get("stopping")),
        port_stopped=bool(state.get("port_stopped")),
    )


def meter_state(session: OrderSession) -> dict[str, Any]:
    """The meter state an order keeps in ``orders.detail`` while it charges."""
    m = session.meter
    return {
        "base_wh": m.base_wh,
        "samples": m.samples,
        "started_ms": m.started_ms,
        "last_raw_wh": m.last_raw_wh,
        "wraps": m.wraps,
        "stopping": session.stopping,
        "port_stopped": session.port_stopped,
    }


class NoticeRows:
    """The application's ``NoticeRepository``."""

    def __init__(self, db: Db) -> None:
        self.db = db

    def add(self, notice: Notice) -> None:
        self.db.table("notifications").insert(
            {
                "user_id": notice.user_id,
                "kind": notice.kind,
                "type": notice.type,
                "title": notice.title,
                "content": notice.content,
                "related_id": notice.related_id,
                "is_read": 0,
                "create_time": iso(notice.at),
            }
        )


class OrderRows:
    """The application's ``OrderRepository`` over one connection (one transaction when writing), for
    one station (its code): the operator orders it restores and opens are that station's."""

    def __init__(self, db: Db, station: str) -> None:
        self.db, self.station = db, station

    def order(self, order_id: str) -> dict[str, Any] | None:
        return order_row(self.db, order_id)

    def active_orders(self) -> list[OrderSession]:
        """Operator orders still charging (driver segments are the charging service's)."""
        rows = self.db.query(
            "SELECT * FROM orders WHERE station = ? AND status = ? AND request_id IS NULL "
            "AND pile_no IS NOT NULL AND port_no IS NOT NULL",
            [self.station, OrderStatus.CHARGING],
        )
        return [restored_session(row) for row in rows]

    def open_order(self, target: OrderTarget, order_id: str, at: datetime) -> bool:
        """Take the port (if free and enabled) and write the charging order. False: port busy."""
        taken = self.db.execute(
            "UPDATE ports SET current_order_id = ?, update_time = ? "  # noqa: S608 - a constant clause
            f"WHERE id = ? AND is_disabled = 0 AND {FREE_PORT}",
            [order_id, iso(at), target.port_id],
        ).rowcount
        if taken != 1:
            return False
        self.db.table("orders").insert(
            {
                "id": order_id,
                "station": self.station,
                "order_no": order_no(at, order_id),
                "user_id": target.user_id,
                "pile_id": target.pile_id,
                "port_id": target.port_id,
                "pile_no": target.pile_no,
                "port_no": str(target.port),
                "status": OrderStatus.CHARGING,
                "billing_mode": target.billing_mode,
                "start_time": iso(at),
                "create_time": iso(at),
                "update_time": iso(at),
            }
        )
        return True

    def save_meter(self, session: OrderSession) -> None:
        self.db.execute(
            "UPDATE orders SET detail = ?, start_meter_wh = ? WHERE id = ? AND status = ?",
            [
                json.dumps({"live": meter_state(session)}),
                session.meter.base_wh,
                session.order_id,
                OrderStatus.CHARGING,
            ],
        )

    def end_order(self, ending: OrderEnding) -> bool:
        """The order row, its port and the notification. False: the order was no longer charging."""
        at = iso(ending.at)
        row = {
            **figures_row(ending.figures),
            "status": ending.status,
            "detail": json.dumps(ending.detail),
            "end_meter_wh": ending.end_wh,
            "generated_time": at,
            "update_time": at,
        }
        columns = ", ".join(f"{name} = :{name}" for name in row)
        changed = self.db.execute(
            f"UPDATE orders SET {columns} WHERE id = :id AND status = :charging",  # noqa: S608
            {**row, "id": ending.order_id, "charging": OrderStatus.CHARGING},
        ).rowcount
        if changed != 1:
            return False
        charged = 1 if ending.figures.kwh > 0 else 0
        self.db.execute(
            "UPDATE ports SET current_order_id = NULL, last_order_id = ?, update_time = ?, "
            "total_charging_times = total_charging_times + ?, "
            "total_charging_duration = total_charging_duration + ?, "
            "total_power_consumption = total_power_consumption + ? "
            "WHERE current_order_id = ?",
            [
                ending.order_id,
                at,
                charged,
                ending.figures.seconds * charged,
                float(ending.figures.kwh),
                ending.order_id,
            ],
        )
        NoticeRows(self.db).add(ending.notice)
        return True

    def driver_budget(self, user_id: int) -> DriverBudget:
        """The user's balance, what they owe (every unpaid order that is payable or still charging
        with a bill), and whether an own (non-queue) order of theirs is charging."""
        balance = self.db.execute("SELECT balance_cents FROM users WHERE id = ?", [user_id]).fetchone()
        owed = self.db.execute(
            "SELECT total_amount FROM orders "
            "WHERE user_id = ? AND payment_status = ? AND status IN (?, ?, ?)",
            [user_id, PaymentStatus.UNPAID, OrderStatus.TO_PAY, OrderStatus.COMPLETED, OrderStatus.ABNORMAL],
        ).fetchall()
        charging = self.db.execute(
            "SELECT 1 FROM orders WHERE user_id = ? AND status = ? AND request_id IS NULL LIMIT 1",
            [user_id, OrderStatus.CHARGING],
        ).fetchone()
        return DriverBudget(
            balance_cents=int(balance[0]) if balance else 0,
            unpaid_cents=sum(cents(Fraction(total or "0")) for (total,) in owed),
            charging_own_order=charging is not None,
        )

    def set_status(self, order_id: str, current: int, status: int, at: datetime) -> bool:
        return (
            self.db.execute(
                "UPDATE orders SET status = ?, update_time = ? WHERE id = ? AND status = ?",
                [status, iso(at), order_id, current],
            ).rowcount
            == 1
        )


@dataclass(frozen=True)
class Payment:
    """A proven payment: method 1 微信 or 2 支付宝 with the provider's transaction id (confirmed by
    the operator ``confirmed_by``, or by a signed provider callback when None), or 3 余额."""

    order_id: str
    method: int
    transaction_id: str | None
    at: datetime
    confirmed_by: int | None = None


def pay_order(db: Db, payment: Payment) -> int:
    """Mark the order paid (and debit the balance for method 3) in this one transaction.

    Returns the cents paid. Raises OrderNotFound, AlreadyPaid, OrderConflict, InsufficientBalance;
    any raise rolls the whole transaction back (the store's rule).
    """
    row = order_row(db, payment.order_id)
    if row is None:
        raise OrderNotFound(f"订单 {payment.order_id} 不存在")
    problem = payable_problem(row)
    if problem is not None:
        raise (AlreadyPaid if row["payment_status"] != PaymentStatus.UNPAID else OrderConflict)(problem)
    amount, at = cents(Fraction(row["total_amount"])), iso(payment.at)
    try:
        changed = db.execute(
            "UPDATE orders SET payment_status = ?, payment_time = ?, payment_method = ?, transaction_id = ?, "
            "payment_confirmed_by = ?, status = CASE WHEN status = ? THEN ? ELSE status END, update_time = ? "
            "WHERE id = ? AND payment_status = ?",
            [
                PaymentStatus.PAID,
                at,
                payment.method,
                payment.transaction_id,
                payment.confirmed_by,
                OrderStatus.TO_PAY,
                OrderStatus.COMPLETED,
                at,
                payment.order_id,
                PaymentStatus.UNPAID,
            ],
        ).rowcount
    except IntegrityError:  # the unique index on transaction_id
        raise TransactionReused(f"交易号 {payment.transaction_id} 已用于其他订单") from None
    if changed != 1:
        raise AlreadyPaid("订单已支付")
    if payment.method == PaymentMethod.BALANCE:
        debited = db.execute(
            "UPDATE users SET balance_cents = balance_cents - ?, update_time = ? "
            "WHERE id = ? AND balance_cents >= ?",
            [amount, at, row["user_id"], amount],
        ).rowcount
        if debited != 1:
            raise InsufficientBalance(f"余额不足：需要 {round_display(Fraction(amount, 100))} 元")
    NoticeRows(db).add(order_paid(row, PaymentMethod(payment.method), amount, payment.at))
    return amount


def pay_by_callback(db: Db, payment: Payment, amount_cents: int) -> bool:
    """A provider's verified callback: pay the order if it asks for exactly its total. True when
    paid now; False for a replay (the order is already paid by this very transaction)."""
    row = order_row(db, payment.order_id)
    if row is None:
        raise OrderNotFound(f"订单 {payment.order_id} 不存在")
    if (
        row["payment_status"] == PaymentStatus.PAID
        and row["transaction_id"] == payment.transaction_id
        and row["payment_method"] == payment.method
    ):
        return False
    due = cents(Fraction(row["total_amount"] or "0"))
    if payable_problem(row) is None and amount_cents != due:
        raise OrderConflict(f"amountCents {amount_cents} 与订单应付 {due} 分不符")
    pay_order(db, payment)
    return True
