"""Money paths of orders prove themselves: a wallet payment (微信 1, 支付宝 2) is confirmed only by an
operator or by a signed provider callback, never by a driver's word; transaction ids are used once;
a driver's own order takes only a port the queue leaves free, is capped by their balance, and is
billed by the station's mode 1. Every path bills exactly once.

Station: fast pile F1 (30 kW) and trickle pile T1 (10 kW); rates peak 1.2, normal 0.8, service 0.8,
so the dearest kWh costs 2.00; station time starts 2025-06-02 10:00 Asia/Shanghai (peak).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

pytest.register_assert_rewrite("tests.integration.central_fixtures", "tests.integration.platform_fixtures")
from central.application.payments import PaymentSettings  # noqa: E402
from central.domain.orders import PaymentMethod  # noqa: E402
from central.domain.params import StationParams  # noqa: E402
from central.web import add_user_api  # noqa: E402
from central.web.keys import PAYMENTS, STATIONS  # noqa: E402
from central.web.platform import add_operator_platform_api  # noqa: E402
from tests.helpers import wait_for  # noqa: E402
from tests.integration.central_fixtures import Central, start_central, stop_central  # noqa: E402
from tests.integration.platform_fixtures import balance, invalid, order, problem, top_up  # noqa: E402

pytest_plugins = ("tests.integration.platform_fixtures",)

SECRETS = {PaymentMethod.WECHAT: b"wechat-test-secret", PaymentMethod.ALIPAY: b"alipay-test-secret"}
CALLBACK = "/api/Orders/payments/callback"
HOUR = 3600


def with_payments(app: web.Application) -> None:
    app[PAYMENTS] = PaymentSettings(secrets=SECRETS, tolerance_s=300)


@pytest.fixture
async def platform(tmp_path: Path, platform_station_params: StationParams) -> AsyncIterator[Central]:
    """Both APIs, with provider secrets for WeChat and Alipay callbacks."""
    running = await start_central(
        tmp_path,
        platform_station_params,
        route_sets=(add_user_api, with_payments, add_operator_platform_api),
    )
    try:
        yield running
    finally:
        await stop_central(running)


async def to_pay(platform: Any, admin: Any, user: Any, pile: dict[str, str], kwh: float = 10) -> str:
    """An operator order whose port never charged, completed with kWh over an hour (mode 1)."""
    body = {"userId": user.user_id, "pileId": pile["id"], "portId": pile["port"], "billingMode": 1}
    status, reply = await platform.call("POST", "/api/Orders", user=admin, json=body)
    assert status == 201, reply
    order_id = str(reply["id"])
    path = f"/api/Orders/{order_id}/complete?electricity={kwh}&duration={HOUR}"
    status, reply = await platform.call("POST", path, user=admin)
    assert status == 204, reply
    return order_id


def signed(
    body: dict[str, Any], provider: str = "wechat", *, at: float | None = None, secret: bytes | None = None
) -> dict[str, Any]:
    """Request options of a provider callback signed as the provider would."""
    raw = json.dumps(body).encode()
    stamp = str(int(time.time() if at is None else at))
    key = secret if secret is not None else SECRETS[PaymentMethod[provider.upper()]]
    signature = hmac.new(key, stamp.encode() + b"." + raw, hashlib.sha256).hexdigest()
    headers = {
        "Content-Type": "application/json",
        "X-Payment-Provider": provider,
        "X-Payment-Timestamp": stamp,
        "X-Payment-Signature": signature,
    }
    return {"data": raw, "headers": headers}


def callback_body(order_id: str, transaction_id: str, cents: int = 2000) -> dict[str, Any]:
    return {"orderId": order_id, "transactionId": transaction_id, "amountCents": cents}


# --- finding 1: wallet payments need proof ---------------------------------------------------------


async def test_a_driver_cannot_mark_their_order_paid_by_wallet(platform, admin_user, normal_user, piles):
    order_id = await to_pay(platform, admin_user, normal_user, piles["F1"])
    for method in (1, 2):
        pay = {"paymentMethod": method, "transactionId": f"made-up-{method}"}
        status, body = await platform.call("POST", f"/api/Orders/{order_id}/pay", user=normal_user, json=pay)
        assert "回调" in problem((status, body), 403)["detail"]
    unpaid = await order(platform, admin_user, order_id)
    assert (unpaid["paymentStatus"], unpaid["transactionId"], unpaid["status"]) == (0, None, 0)


async def test_an_operator_confirms_a_wallet_payment_and_is_recorded(
    platform, admin_user, normal_user, piles
):
    order_id = await to_pay(platform, admin_user, normal_user, piles["F1"])
    pay = {"paymentMethod": 2, "transactionId": "ali-0001"}
    status, _ = await platform.call("POST", f"/api/Orders/{order_id}/pay", user=admin_user, json=pay)
    assert status == 204
    paid = await order(platform, admin_user, order_id)
    assert (paid["paymentStatus"], paid["paymentMethod"], paid["transactionId"]) == (1, 2, "ali-0001")
    rows = await platform.store.read(
        lambda db: list(db.query("SELECT payment_confirmed_by FROM orders WHERE id = ?", [order_id]))
    )
    assert rows == [{"payment_confirmed_by": admin_user.user_id}]


async def test_a_transaction_id_pays_one_order_only(platform, admin_user, normal_user, piles):
    first = await to_pay(platform, admin_user, normal_user, piles["F1"])
    second = await to_pay(platform, admin_user, normal_user, piles["T1"])
    pay = {"paymentMethod": 1, "transactionId": "wx-same"}
    status, _ = await platform.call("POST", f"/api/Orders/{first}/pay", user=admin_user, json=pay)
    assert status == 204
    status, body = await platform.call("POST", f"/api/Orders/{second}/pay", user=admin_user, json=pay)
    assert set(invalid((status, body), "transactionId")) == {"transactionId"}
    assert (await order(platform, admin_user, second))["paymentStatus"] == 0
    status, body = await platform.call("POST", CALLBACK, **signed(callback_body(second, "wx-same")))
    invalid((status, body), "transactionId")
    assert (await order(platform, admin_user, second))["paymentStatus"] == 0


async def test_a_signed_callback_pays_once_and_a_replay_changes_nothing(
    platform, admin_user, normal_user, piles
):
    order_id = await to_pay(platform, admin_user, normal_user, piles["F1"])  # 20.00
    request = signed(callback_body(order_id, "wx-4200001"))
    status, body = await platform.call("POST", CALLBACK, **request)
    assert status == 200 and body == {"orderId": order_id, "paid": True, "replayed": False}
    paid = await order(platform, admin_user, order_id)
    assert (paid["paymentStatus"], paid["paymentMethod"], paid["transactionId"], paid["status"]) == (
        1,
        1,
        "wx-4200001",
        2,
    )
    replies = await asyncio.gather(*(platform.call("POST", CALLBACK, **request) for _ in range(5)))
    assert [(s, b["replayed"]) for s, b in replies] == [(200, True)] * 5
    notes = await platform.store.read(
        lambda db: db.execute(
            "SELECT COUNT(*) FROM notifications WHERE related_id = ? AND content LIKE '%已通过%'", [order_id]
        ).fetchone()[0]
    )
    assert notes == 1
    other = signed(callback_body(order_id, "wx-4200002"))  # another payment for a paid order
    status, reply = await platform.call("POST", CALLBACK, **other)
    problem((status, reply), 409)
    assert (await order(platform, admin_user, order_id))["transactionId"] == "wx-4200001"


@pytest.mark.parametrize(
    "forgery",
    ["wrong secret", "other provider's secret", "tampered body", "stale", "future", "no signature"],
)
async def test_a_callback_that_does_not_prove_itself_is_refused(
    platform, admin_user, normal_user, piles, forgery
):
    order_id = await to_pay(platform, admin_user, normal_user, piles["F1"])
    body = callback_body(order_id, "wx-forged")
    request = {
        "wrong secret": lambda: signed(body, secret=b"guess"),
        "other provider's secret": lambda: signed(body, secret=SECRETS[PaymentMethod.ALIPAY]),
        "tampered body": lambda: {**signed(body), "data": json.dumps({**body, "amountCents": 1}).encode()},
        "stale": lambda: signed(body, at=time.time() - 301),
        "future": lambda: signed(body, at=time.time() + 301),
        "no signature": lambda: {
            "data": json.dumps(body).encode(),
            "headers": {"X-Payment-Provider": "wechat"},
        },
    }[forgery]()
    status, reply = await platform.call("POST", CALLBACK, **request)
    assert "支付回调未通过验证" in problem((status, reply), 401)["detail"]
    assert (await order(platform, admin_user, order_id))["paymentStatus"] == 0


async def test_a_callback_must_pay_the_whole_total(platform, admin_user, normal_user, piles):
    order_id = await to_pay(platform, admin_user, normal_user, piles["F1"])
    status, body = await platform.call("POST", CALLBACK, **signed(callback_body(order_id, "wx-1", 1999)))
    assert "amountCents" in problem((status, body), 409)["detail"]
    status, body = await platform.call("POST", CALLBACK, **signed(callback_body("nope", "wx-2")))
    problem((status, body), 404)
    assert (await order(platform, admin_user, order_id))["paymentStatus"] == 0


async def test_an_unconfigured_provider_cannot_call_back(tmp_path, platform_station_params, admin_user):
    # the default app (no [payments] secrets) refuses every callback
    running = await start_central(
        tmp_path / "bare", platform_station_params, route_sets=(add_user_api, add_operator_platform_api)
    )
    try:
        status, body = await running.call("POST", CALLBACK, **signed(callback_body("x", "wx-1")))
        problem((status, body), 401)
    finally:
        await stop_central(running)


# --- finding 2: a driver's own order -----------------------------------------------------------------


def own(user: Any, pile: dict[str, str], **extra: Any) -> dict[str, Any]:
    return {"userId": user.user_id, "pileId": pile["id"], "portId": pile["port"], **extra}


async def test_a_driver_without_balance_cannot_start_an_order(platform, admin_user, normal_user, piles):
    status, body = await platform.call(
        "POST", "/api/Orders", user=normal_user, json=own(normal_user, piles["F1"])
    )
    assert "余额" in problem((status, body), 409)["detail"]
    assert not [c for c in platform.commands.sent if c[2] == "start"]


async def test_a_drivers_unpaid_orders_count_against_the_balance(platform, admin_user, normal_user, piles):
    await to_pay(platform, admin_user, normal_user, piles["T1"])  # 20.00 unpaid
    await top_up(platform, admin_user, normal_user, 20)
    status, body = await platform.call(
        "POST", "/api/Orders", user=normal_user, json=own(normal_user, piles["F1"])
    )
    assert "余额" in problem((status, body), 409)["detail"]


async def test_a_drivers_order_is_capped_by_the_balance_and_sent_to_the_pile(
    platform, admin_user, normal_user, piles
):
    await top_up(platform, admin_user, normal_user, 10)  # 10.00 / 2.00 per kWh = 5 kWh
    status, reply = await platform.call(
        "POST", "/api/Orders", user=normal_user, json=own(normal_user, piles["F1"])
    )
    assert status == 201, reply
    assert platform.commands.sent[-1] == ("F1", 1, "start", {"energy_Wh": 5000}, reply["id"])
    status, body = await platform.call(
        "POST", "/api/Orders", user=normal_user, json=own(normal_user, piles["T1"], requestedAmount=1.5)
    )
    assert "充电中" in problem((status, body), 409)["detail"]  # one own order at a time


async def test_a_drivers_requested_amount_lowers_the_cap(platform, admin_user, normal_user, piles):
    await top_up(platform, admin_user, normal_user, 10)
    body = own(normal_user, piles["F1"], requestedAmount=1.5)
    status, reply = await platform.call("POST", "/api/Orders", user=normal_user, json=body)
    assert status == 201, reply
    assert platform.commands.sent[-1] == ("F1", 1, "start", {"energy_Wh": 1500}, reply["id"])
    status, body = await platform.call(
        "POST", "/api/Orders", user=normal_user, json=own(normal_user, piles["T1"], requestedAmount=0)
    )
    invalid((status, body), "requestedAmount")


async def test_a_driver_is_billed_by_the_stations_mode(platform, admin_user, normal_user, piles):
    await top_up(platform, admin_user, normal_user, 10)
    for mode in (0, 2):
        status, body = await platform.call(
            "POST", "/api/Orders", user=normal_user, json=own(normal_user, piles["F1"], billingMode=mode)
        )
        assert set(invalid((status, body), "billingMode")) == {"billingMode"}
    assert not [c for c in platform.commands.sent if c[2] == "start"]


async def test_a_drivers_order_bills_mode_1_with_service_and_debits_once(
    platform, admin_user, normal_user, piles
):
    await top_up(platform, admin_user, normal_user, 10)
    platform.telemetry("F1", "available", 100_000)
    status, reply = await platform.call(
        "POST", "/api/Orders", user=normal_user, json=own(normal_user, piles["F1"], billingMode=1)
    )
    assert status == 201, reply
    order_id = reply["id"]
    platform.telemetry("F1", "charging", 100_000)
    platform.wall.advance(600)
    platform.telemetry("F1", "charging", 104_000)
    platform.wall.advance(120)
    platform.telemetry("F1", "finished", 105_000)  # the pile stops at its 5 kWh target
    await wait_for(
        lambda: order_id not in platform.app[STATIONS].get("test").orders.sessions, what="order ended"
    )
    await platform.app[STATIONS].get("test").orders.close()
    done = await order(platform, normal_user, order_id)
    assert (done["status"], done["billingMode"], done["electricity"]) == (0, 1, 5.0)
    assert (done["amount"], done["serviceFee"], done["totalAmount"]) == (6.0, 4.0, 10.0)  # peak 1.2 + 0.8
    pay = {"paymentMethod": 3}
    replies = await asyncio.gather(
        *(platform.call("POST", f"/api/Orders/{order_id}/pay", user=normal_user, json=pay) for _ in range(6))
    )
    assert sorted(s for s, _ in replies) == [204] + [409] * 5
    assert await balance(platform, admin_user, normal_user) == 0.0


async def test_a_driver_cannot_take_a_port_a_queued_car_or_an_order_holds(
    platform, admin_user, normal_user, other_user, piles
):
    await top_up(platform, admin_user, normal_user, 10)
    status, _ = await platform.call(
        "POST",
        "/api/charging/request/",
        user=other_user,
        json={"charging_mode": "fast", "requested_amount": 5},
    )
    assert status == 201
    status, body = await platform.call(
        "POST", "/api/Orders", user=normal_user, json=own(normal_user, piles["F1"])
    )
    problem((status, body), 409)
    await to_pay(platform, admin_user, other_user, piles["T1"])  # T1 is free again
    body = {"userId": other_user.user_id, "pileId": piles["T1"]["id"], "portId": piles["T1"]["port"]}
    status, held = await platform.call("POST", "/api/Orders", user=admin_user, json=body)
    assert status == 201, held
    sent = len(platform.commands.sent)
    status, reply = await platform.call(
        "POST", "/api/Orders", user=normal_user, json=own(normal_user, piles["T1"])
    )
    problem((status, reply), 409)
    assert platform.commands.sent[sent:] == []


async def test_two_concurrent_own_orders_spend_the_balance_once(platform, admin_user, normal_user, piles):
    await top_up(platform, admin_user, normal_user, 10)
    replies = await asyncio.gather(
        platform.call("POST", "/api/Orders", user=normal_user, json=own(normal_user, piles["F1"])),
        platform.call("POST", "/api/Orders", user=normal_user, json=own(normal_user, piles["T1"])),
    )
    assert sorted(s for s, _ in replies) == [201, 409]


# --- finding 3: operator orders end and bill once ------------------------------------------------------


async def test_concurrent_completes_and_cancels_bill_an_operator_order_once(
    platform, admin_user, normal_user, piles
):
    body = {"userId": normal_user.user_id, "pileId": piles["F1"]["id"], "portId": piles["F1"]["port"]}
    status, reply = await platform.call("POST", "/api/Orders", user=admin_user, json=body)
    assert status == 201
    order_id = reply["id"]
    paths = [f"/api/Orders/{order_id}/complete?electricity=10&duration=3600"] * 3
    paths += [f"/api/Orders/{order_id}/cancel"] * 3
    replies = await asyncio.gather(*(platform.call("POST", p, user=admin_user) for p in paths))
    assert sorted(s for s, _ in replies) == [204] + [409] * 5
    rows = await platform.store.read(
        lambda db: list(
            db.query(
                "SELECT total_charging_times, total_power_consumption FROM ports WHERE id = ?",
                [piles["F1"]["port"]],
            )
        )
    )
    done = await order(platform, admin_user, order_id)
    assert done["status"] in (0, 3)
    assert rows[0]["total_charging_times"] == (1 if done["status"] == 0 else 0)
    ended = await platform.store.read(
        lambda db: db.execute(
            "SELECT COUNT(*) FROM notifications WHERE related_id = ? AND content NOT LIKE '%已通过%'",
            [order_id],
        ).fetchone()[0]
    )
    assert ended == 1


async def test_the_callback_is_documented_as_a_signed_route_without_a_token(platform):
    status, doc = await platform.call("GET", "/api/openapi.json")
    assert status == 200
    operation = doc["paths"]["/api/Orders/payments/callback"]["post"]
    assert operation["security"] == []
    headers = {p["name"] for p in operation["parameters"] if p["in"] == "header" and p["required"]}
    assert headers == {"X-Payment-Provider", "X-Payment-Timestamp", "X-Payment-Signature"}
    assert {"200", "400", "401", "404", "409"} <= set(operation["responses"])
    assert "HMAC-SHA256" in operation["description"]
    assert "403" in doc["paths"]["/api/Orders/{id}/pay"]["post"]["responses"]


async def test_a_queue_session_is_paid_once_by_proof_only(platform, admin_user, normal_user, piles):
    platform.telemetry("T1", "available", 50_000)
    status, _ = await platform.call(
        "POST",
        "/api/charging/request/",
        user=normal_user,
        json={"charging_mode": "slow", "requested_amount": 5},
    )
    assert status == 201
    _, every = await platform.call("GET", "/api/Orders", user=admin_user)
    order_id = every[0]["id"]
    platform.telemetry("T1", "charging", 50_000)
    platform.wall.advance(360)
    platform.telemetry("T1", "charging", 51_000)
    status, _ = await platform.call("POST", f"/api/Orders/{order_id}/complete", user=admin_user)
    assert status == 204
    billed = await order(platform, admin_user, order_id)
    assert billed["status"] == 2 and billed["totalAmount"] > 0
    due = round(billed["totalAmount"] * 100)
    pay = {"paymentMethod": 1, "transactionId": "wx-queue"}
    status, body = await platform.call("POST", f"/api/Orders/{order_id}/pay", user=normal_user, json=pay)
    problem((status, body), 403)
    request = signed(callback_body(order_id, "wx-queue", due))
    replies = await asyncio.gather(*(platform.call("POST", CALLBACK, **request) for _ in range(4)))
    assert sorted(b["replayed"] for _, b in replies) == [False, True, True, True]
    paid = await order(platform, admin_user, order_id)
    assert (paid["paymentStatus"], paid["paymentMethod"], paid["transactionId"]) == (1, 1, "wx-queue")
