"""Order states and payment codes as the orders table and the operator API number them (pure)."""

from __future__ import annotations

import enum
from collections.abc import Mapping


class OrderStatus(enum.IntEnum):
    """An order's status: 0 待支付, 1 充电中, 2 已完成, 3 已取消, 4 异常."""

    TO_PAY = 0
    CHARGING = 1
    COMPLETED = 2
    CANCELLED = 3
    ABNORMAL = 4


class PaymentStatus(enum.IntEnum):
    UNPAID = 0
    PAID = 1


class PaymentMethod(enum.IntEnum):
    """How an order is paid: 1 微信 and 2 支付宝 by a provider (proof: a signed callback or an
    operator's confirmation), 3 余额 from the user's balance."""

    WECHAT = 1
    ALIPAY = 2
    BALANCE = 3


PROVIDERS: Mapping[str, PaymentMethod] = {"wechat": PaymentMethod.WECHAT, "alipay": PaymentMethod.ALIPAY}
"""The payment providers that call back, by the name they give, and the method they pay by."""


STATUS_TEXT: Mapping[int, str] = {
    OrderStatus.TO_PAY: "待支付",
    OrderStatus.CHARGING: "充电中",
    OrderStatus.COMPLETED: "已完成",
    OrderStatus.CANCELLED: "已取消",
    OrderStatus.ABNORMAL: "异常",
}
TRANSITIONS: Mapping[int, frozenset[int]] = {
    OrderStatus.CHARGING: frozenset({OrderStatus.ABNORMAL}),  # complete / cancel have their own routes
    OrderStatus.TO_PAY: frozenset({OrderStatus.COMPLETED, OrderStatus.CANCELLED, OrderStatus.ABNORMAL}),
    OrderStatus.ABNORMAL: frozenset({OrderStatus.TO_PAY, OrderStatus.COMPLETED, OrderStatus.CANCELLED}),
    OrderStatus.COMPLETED: frozenset(),
    OrderStatus.CANCELLED: frozenset(),
}
"""The status changes an operator may make directly."""
