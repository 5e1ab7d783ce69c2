"""Every notification text the central sends a user, in one place (driver queue and orders)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from fractions import Fraction
from typing import Any

from central.application.ports import Notice
from central.domain.billing import Bill
from central.domain.orders import OrderStatus, PaymentMethod
from central.domain.pricing import OrderFigures
from central.domain.units import round_display

ORDER_NOTICE_TYPE = 2  # 订单通知 (operator API); the user API sees ``kind``
ORDER_NOTICE_KIND = "order"  # notifications.kind of type 2, as the accounts API writes it
PAYMENT_METHOD_TEXT = {
    PaymentMethod.WECHAT: "微信",
    PaymentMethod.ALIPAY: "支付宝",
    PaymentMethod.BALANCE: "余额",
}


def _amount(value: Fraction) -> float:
    return float(round(value, 2))


def car_called(user: int, car: str, point_id: str, position: int, at: datetime) -> Notice:
    place = "开始充电" if position == 0 else f"在充电区排第 {position} 位"
    return Notice(user, "queue_update", "叫号", f"请前往充电桩 {point_id}，{place}", car, at)


def car_returned(user: int, car: str, point_id: str, at: datetime) -> Notice:
    return Notice(user, "queue_update", "重新排队", f"充电桩 {point_id} 不可用，您的车辆将重新调度", car, at)


def car_requeued(user: int, car: str, point_id: str, reason: str, at: datetime) -> Notice:
    """A segment that ended with no fault (the port stopped short, or never started): the rest of
    the request waits at the head of the queue."""
    what = "未能开始充电" if reason == "not_started" else "提前停止充电"
    return Notice(
        user, "queue_update", "重新排队", f"充电桩 {point_id} {what}，剩余电量将优先重新调度", car, at
    )


def charging_started(user: int, car: str, point_id: str, at: datetime) -> Notice:
    return Notice(user, "charging_start", "开始充电", f"您的车辆已在充电桩 {point_id} 开始充电", car, at)


def pile_fault(user: int, car: str, point_id: str, kwh: Fraction, at: datetime) -> Notice:
    return Notice(
        user,
        "pile_fault",
        "充电桩故障",
        f"充电桩 {point_id} 故障，已为您结算 {_amount(kwh)} kWh，剩余电量将优先重新调度",
        car,
        at,
    )


def stopped_short(user: int, car: str, point_id: str, delivered_wh: int, at: datetime) -> Notice:
    """The port stopped on its own well short of the amount a second time (the car takes no more):
    the request completes with what was delivered."""
    kwh = _amount(Fraction(delivered_wh, 1000))
    text = f"充电桩 {point_id} 再次提前停止（车辆不再接受充电），本次充入 {kwh} kWh，充电请求按实际电量结算"
    return Notice(user, "charging_complete", "充电提前结束", text, car, at)


def request_finished(user: int, car: str, bill: Bill, status: str, at: datetime) -> Notice:
    """A request completed or cancelled, with its bill in brief."""
    kwh, total = _amount(bill.kwh), _amount(bill.total)
    if status == "completed":
        return Notice(
            user, "charging_complete", "充电完成", f"充电完成，共 {kwh} kWh，费用 {total} 元", car, at
        )
    text = f"充电请求已取消，已充 {kwh} kWh，费用 {total} 元"
    return Notice(user, "charging_complete", "已取消", text, car, at)


def order_ended(row: Mapping[str, Any], status: OrderStatus, figures: OrderFigures, at: datetime) -> Notice:
    """An operator order ended: to pay, cancelled or abnormal."""
    total = round_display(figures.total, 2)
    kwh = round_display(figures.kwh, 3)
    text = {
        OrderStatus.TO_PAY: f"订单 {row['order_no']} 充电已结束：{kwh} kWh，应付 {total} 元",
        OrderStatus.CANCELLED: f"订单 {row['order_no']} 已取消，未产生费用",
        OrderStatus.ABNORMAL: f"订单 {row['order_no']} 异常结束：{kwh} kWh，费用 {total} 元",
    }[status]
    return Notice(row["user_id"], ORDER_NOTICE_KIND, "订单通知", text, row["id"], at, ORDER_NOTICE_TYPE)


def order_paid(row: Mapping[str, Any], method: PaymentMethod, cents: int, at: datetime) -> Notice:
    paid = round_display(Fraction(cents, 100))
    text = f"订单 {row['order_no']} 已通过{PAYMENT_METHOD_TEXT[method]}支付 {paid} 元"
    return Notice(row["user_id"], ORDER_NOTICE_KIND, "订单通知", text, row["id"], at, ORDER_NOTICE_TYPE)
