"""Operator platform API, orders (spec section 4) against the real ChargingService: orders that start
real charges (commands recorded, meter readings fed as the ingest would), billing by mode and by the
time-of-use tariff, cancel, status changes, payment exactly once, listing, paging, statistics.

Station: fast pile F1 (30 kW) and trickle pile T1 (10 kW), both scheduler piles, recorded here via the
API; station time starts 2025-06-02 10:00 Asia/Shanghai (peak until 15:00) on a fake wall clock.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

pytest.register_assert_rewrite("tests.integration.platform_fixtures")
from central.adapters.schema import ORDER_MIGRATIONS, migrations  # noqa: E402
from central.adapters.storage import Store  # noqa: E402
from tests.helpers import wait_for  # noqa: E402
from tests.integration.platform_fixtures import (  # noqa: E402
    balance,
    invalid,
    order,
    problem,
    start_platform,
    stop_platform,
    top_up,
)
from tests.postgres_server import BOTH_ENGINES  # noqa: E402

pytest_plugins = ("tests.integration.platform_fixtures",)
pytestmark = BOTH_ENGINES


ORDER_FIELDS = {
    "id",
    "station",  # beyond the spec: the order's station (several stations per central)
    "orderNo",
    "userId",
    "userNickname",
    "pileId",
    "pileNo",
    "portId",
    "portNo",
    "status",
    "statusDescription",
    "billingMode",
    "billingModeDescription",
    "startTime",
    "endTime",
    "duration",
    "durationFormatted",
    "electricity",
    "amount",
    "serviceFee",
    "totalAmount",
    "paymentStatus",
    "paymentStatusDescription",
    "paymentTime",
    "paymentMethod",
    "paymentMethodDescription",
    "transactionId",
    "createTime",
    "updateTime",
}
HOUR = 3600


async def create(platform: Any, actor: Any, user: Any, pile: dict[str, str], mode: int = 1) -> str:
    body = {"userId": user.user_id, "pileId": pile["id"], "portId": pile["port"], "billingMode": mode}
    status, reply = await platform.call("POST", "/api/Orders", user=actor, json=body)
    assert status == 201, reply
    return str(reply["id"])


async def finish_live(platform: Any, path: str, actor: Any, pile_no: str, energy_Wh: int) -> tuple[int, Any]:
    """POST complete/cancel of a charging order; play the pile: after the stop, report it stopped."""
    sent = len(platform.commands.sent)
    task = asyncio.create_task(platform.call("POST", path, user=actor))
    await wait_for(lambda: any(c[2] == "stop" for c in platform.commands.sent[sent:]), what="stop command")
    platform.wall.advance(1)
    platform.telemetry(pile_no, "finished", energy_Wh)
    status, body = await task
    return int(status), body


async def notifications(platform: Any, user: Any) -> list[dict[str, Any]]:
    status, body = await platform.call("GET", f"/api/UserNotifications/byUser/{user.user_id}", user=user)
    assert status == 200, body
    return list(body)


async def completed_order(platform, admin, user, pile, *, kwh: float, seconds: int, mode: int = 1) -> str:
    """An order whose port never charged, completed with stated kWh and seconds."""
    order_id = await create(platform, admin, user, pile, mode)
    status, body = await platform.call(
        "POST", f"/api/Orders/{order_id}/complete?electricity={kwh}&duration={seconds}", user=admin
    )
    assert status == 204, body
    return order_id


# --- a real charge ---------------------------------------------------------------------------------


async def test_an_order_charges_for_real_and_bills_the_meter_by_tariff_period(
    platform, admin_user, normal_user, piles
):
    platform.wall.advance(4 * HOUR + 50 * 60)  # 14:50: ten minutes of peak left
    platform.telemetry("F1", "available", 100_000)  # the idle meter before the start
    order_id = await create(platform, admin_user, normal_user, piles["F1"], mode=1)
    assert platform.commands.sent[-1] == ("F1", 1, "start", {}, order_id)
    assert platform.service.scheduler.points["F1"].disabled  # out of the driver queue
    charging = await order(platform, admin_user, order_id)
    assert set(charging) == ORDER_FIELDS and (charging["status"], charging["statusDescription"]) == (
        1,
        "充电中",
    )
    assert charging["startTime"] == "2025-06-02T06:50:00Z" and charging["endTime"] is None
    platform.telemetry("F1", "charging", 100_000)
    for meter in (105_000, 110_000):  # 5 kWh per 10 minutes: 30 kW
        platform.wall.advance(600)
        platform.telemetry("F1", "charging", meter)
    live = await order(platform, admin_user, order_id)
    assert (live["electricity"], live["duration"]) == (10.0, 1200)
    status, _ = await finish_live(
        platform, f"/api/Orders/{order_id}/complete?electricity=99", admin_user, "F1", 110_000
    )
    assert status == 204
    done = await order(platform, admin_user, order_id)
    assert (done["status"], done["statusDescription"]) == (0, "待支付")
    assert done["electricity"] == 10.0  # the meter, not the ignored query value
    assert done["amount"] == 10.0  # 5 kWh peak x 1.2 + 5 kWh normal x 0.8
    assert (done["serviceFee"], done["totalAmount"]) == (8.0, 18.0)  # 10 kWh x 0.8
    assert (done["duration"], done["durationFormatted"]) == (1201, "0小时20分钟1秒")
    assert done["endTime"] == "2025-06-02T07:10:01Z"
    assert (done["paymentStatus"], done["paymentStatusDescription"]) == (0, "未支付")
    assert not platform.service.scheduler.points["F1"].disabled  # back in the queue
    _, port = await platform.call("GET", f"/api/ChargingPorts/{piles['F1']['port']}", user=admin_user)
    assert (port["currentOrderId"], port["lastOrderId"], port["totalChargingTimes"]) == (None, order_id, 1)
    assert port["totalPowerConsumption"] == 10.0
    notes = [n for n in await notifications(platform, normal_user) if n["type"] == 2]
    assert any("18.00" in n["content"] for n in notes)


async def test_a_driver_waits_while_an_order_holds_the_pile_and_is_served_after(
    platform, admin_user, normal_user, other_user, piles
):
    order_id = await create(platform, admin_user, normal_user, piles["F1"])
    status, request = await platform.call(
        "POST",
        "/api/charging/request/",
        user=other_user,
        json={"charging_mode": "fast", "requested_amount": 5},
    )
    assert status == 201 and request["data"]["current_status"] == "waiting"
    status, _ = await platform.call(
        "POST", f"/api/Orders/{order_id}/complete?electricity=1&duration=60", user=admin_user
    )
    assert status == 204
    car = request["data"]["request_id"]
    assert ("F1", 1, "start", {"energy_Wh": 5000}, car) not in platform.commands.sent  # stop first
    platform.telemetry("F1", "finished", 1_000)  # the port obeyed the order's stop
    await wait_for(
        lambda: ("F1", 1, "start", {"energy_Wh": 5000}, car) in platform.commands.sent,
        timeout_s=5,
        what="the driver's start once the port stopped",
    )


async def test_a_port_that_stops_by_itself_completes_the_order(platform, admin_user, normal_user, piles):
    platform.telemetry("T1", "available", 5_000)
    order_id = await create(platform, admin_user, normal_user, piles["T1"], mode=1)
    platform.telemetry("T1", "charging", 5_000)
    platform.wall.advance(360)
    platform.telemetry("T1", "finished", 6_000)  # the car is full
    done = await wait_for(lambda: _status(platform, admin_user, order_id, 0), what="auto-complete")
    assert (done["electricity"], done["amount"], done["serviceFee"]) == (1.0, 1.2, 0.8)


async def _status(platform: Any, actor: Any, order_id: str, status: int) -> dict[str, Any] | None:
    body = await order(platform, actor, order_id)
    return body if body["status"] == status else None


async def test_a_fault_during_the_charge_makes_the_order_abnormal_and_billed(
    platform, admin_user, normal_user, piles
):
    platform.telemetry("F1", "available", 0)
    order_id = await create(platform, admin_user, normal_user, piles["F1"])
    platform.telemetry("F1", "charging", 0)
    platform.wall.advance(120)
    platform.telemetry("F1", "faulted", 1_000)
    done = await wait_for(lambda: _status(platform, admin_user, order_id, 4), what="abnormal order")
    assert done["statusDescription"] == "异常" and done["electricity"] == 1.0 and done["totalAmount"] == 2.0


async def test_a_refused_start_makes_the_order_abnormal_and_frees_the_port(
    platform, admin_user, normal_user, piles
):
    order_id = await create(platform, admin_user, normal_user, piles["F1"])
    platform.service.live.on_command_outcome("F1", "start", order_id, "rejected", "REJECTED_STATE")
    done = await wait_for(lambda: _status(platform, admin_user, order_id, 4), what="abnormal order")
    assert done["electricity"] == 0.0 and done["totalAmount"] == 0.0
    # the port's release is its own change, committed (and visible) just after the order's end
    await wait_for(lambda: not platform.service.scheduler.points["F1"].disabled, what="port released")
    await create(platform, admin_user, normal_user, piles["F1"])  # the port is free again


# --- billing modes (ports that never charged: the stated kWh and seconds are used) -------------------


async def test_billing_mode_0_charges_time_at_the_normal_rate_and_pile_power(
    platform, admin_user, normal_user, piles
):
    order_id = await completed_order(
        platform, admin_user, normal_user, piles["F1"], kwh=3, seconds=1800, mode=0
    )
    done = await order(platform, admin_user, order_id)
    assert (done["billingMode"], done["billingModeDescription"]) == (0, "按时间")
    assert (done["electricity"], done["amount"], done["serviceFee"], done["totalAmount"]) == (
        3.0,
        12.0,
        0.0,
        12.0,
    )
    assert (done["duration"], done["durationFormatted"]) == (1800, "0小时30分钟0秒")


async def test_billing_mode_2_charges_energy_by_period_and_service_by_time(
    platform, admin_user, normal_user, piles
):
    order_id = await completed_order(
        platform, admin_user, normal_user, piles["T1"], kwh=10, seconds=HOUR, mode=2
    )
    done = await order(platform, admin_user, order_id)
    assert done["billingModeDescription"] == "电量+时间服务费"
    assert (done["amount"], done["serviceFee"], done["totalAmount"]) == (12.0, 8.0, 20.0)  # 1 h x 0.8 x 10 kW


async def test_billing_mode_1_splits_stated_energy_evenly_over_the_periods(
    platform, admin_user, normal_user, piles
):
    platform.wall.advance(4 * HOUR + 30 * 60)  # 14:30; the hour ends at 15:30 in the normal period
    order_id = await completed_order(platform, admin_user, normal_user, piles["F1"], kwh=20, seconds=HOUR)
    done = await order(platform, admin_user, order_id)
    assert (done["amount"], done["serviceFee"], done["totalAmount"]) == (20.0, 16.0, 36.0)  # 10x1.2 + 10x0.8


# --- cancel and status -----------------------------------------------------------------------------


async def test_cancel_before_anything_is_delivered_is_cancelled_and_free(
    platform, admin_user, normal_user, piles
):
    await top_up(platform, admin_user, normal_user, 10)  # a driver's own order needs a balance
    order_id = await create(platform, normal_user, normal_user, piles["F1"])
    platform.wall.advance(300)
    status, _ = await platform.call("POST", f"/api/Orders/{order_id}/cancel", user=normal_user)
    assert status == 204
    done = await order(platform, normal_user, order_id)
    assert (done["status"], done["statusDescription"], done["totalAmount"]) == (3, "已取消", 0.0)
    assert platform.commands.sent[-1][2] == "stop" and not platform.service.scheduler.points["F1"].disabled


async def test_cancel_after_delivery_bills_it_as_to_pay(platform, admin_user, normal_user, piles):
    platform.telemetry("F1", "available", 50)
    order_id = await create(platform, admin_user, normal_user, piles["F1"])
    platform.telemetry("F1", "charging", 50)
    platform.wall.advance(60)
    platform.telemetry("F1", "charging", 550)
    status, _ = await finish_live(platform, f"/api/Orders/{order_id}/cancel", normal_user, "F1", 550)
    assert status == 204
    done = await order(platform, admin_user, order_id)
    assert (done["status"], done["electricity"], done["totalAmount"]) == (0, 0.5, 1.0)  # 0.5 x (1.2 + 0.8)


async def test_complete_and_cancel_need_a_charging_order(platform, admin_user, normal_user, piles):
    order_id = await completed_order(platform, admin_user, normal_user, piles["F1"], kwh=1, seconds=60)
    for action in ("complete", "cancel"):
        status, body = await platform.call("POST", f"/api/Orders/{order_id}/{action}", user=admin_user)
        problem((status, body), 409)


async def test_status_changes_follow_the_legal_transitions(platform, admin_user, normal_user, piles):
    order_id = await completed_order(platform, admin_user, normal_user, piles["F1"], kwh=1, seconds=60)
    problem(
        await platform.call("PUT", f"/api/Orders/{order_id}/status", user=admin_user, json={"status": 1}),
        409,
    )
    status, _ = await platform.call(
        "PUT", f"/api/Orders/{order_id}/status", user=admin_user, json={"status": 3}
    )
    assert status == 204 and (await order(platform, admin_user, order_id))["status"] == 3
    status, body = await platform.call(
        "PUT", f"/api/Orders/{order_id}/status", user=admin_user, json={"status": 0}
    )
    assert "已取消" in problem((status, body), 409)["detail"]
    invalid(
        await platform.call("PUT", f"/api/Orders/{order_id}/status", user=admin_user, json={"status": 9}),
        "status",
    )
    problem(
        await platform.call("PUT", f"/api/Orders/{order_id}/status", user=normal_user, json={"status": 2}),
        403,
    )
    problem(await platform.call("PUT", "/api/Orders/nope/status", user=admin_user, json={"status": 2}), 404)


async def test_marking_a_charging_order_abnormal_stops_its_port(platform, admin_user, normal_user, piles):
    order_id = await create(platform, admin_user, normal_user, piles["F1"])
    status, _ = await platform.call(
        "PUT", f"/api/Orders/{order_id}/status", user=admin_user, json={"status": 4}
    )
    assert status == 204
    assert platform.commands.sent[-1] == ("F1", 1, "stop", {}, order_id)
    assert (await order(platform, admin_user, order_id))["status"] == 4


# --- payment ---------------------------------------------------------------------------------------


async def test_pay_by_balance_debits_once_and_completes_the_order(platform, admin_user, normal_user, piles):
    order_id = await completed_order(platform, admin_user, normal_user, piles["F1"], kwh=10, seconds=HOUR)
    await top_up(platform, admin_user, normal_user, 50)
    status, _ = await platform.call(
        "POST", f"/api/Orders/{order_id}/pay", user=normal_user, json={"paymentMethod": 3}
    )
    assert status == 204
    assert await balance(platform, admin_user, normal_user) == 30.0  # 50 - (12 + 8)
    paid = await order(platform, normal_user, order_id)
    assert (paid["status"], paid["statusDescription"]) == (2, "已完成")
    assert (paid["paymentStatus"], paid["paymentStatusDescription"]) == (1, "已支付")
    assert (paid["paymentMethod"], paid["paymentMethodDescription"]) == (3, "余额")
    assert paid["paymentTime"] == "2025-06-02T02:00:00Z"
    notes = [n for n in await notifications(platform, normal_user) if n["type"] == 2]
    assert any("余额" in n["content"] and "20.00" in n["content"] for n in notes)
    status, body = await platform.call(
        "POST", f"/api/Orders/{order_id}/pay", user=normal_user, json={"paymentMethod": 3}
    )
    assert "已支付" in problem((status, body), 409)["detail"]
    assert await balance(platform, admin_user, normal_user) == 30.0


async def test_ten_concurrent_balance_payments_debit_exactly_once(platform, admin_user, normal_user, piles):
    order_id = await completed_order(platform, admin_user, normal_user, piles["F1"], kwh=10, seconds=HOUR)
    await top_up(platform, admin_user, normal_user, 100)
    pay = {"paymentMethod": 3}
    replies = await asyncio.gather(
        *(platform.call("POST", f"/api/Orders/{order_id}/pay", user=normal_user, json=pay) for _ in range(10))
    )
    assert sorted(status for status, _ in replies) == [204] + [409] * 9
    assert await balance(platform, admin_user, normal_user) == 80.0


async def test_a_short_balance_is_refused_and_nothing_changes(platform, admin_user, normal_user, piles):
    order_id = await completed_order(platform, admin_user, normal_user, piles["F1"], kwh=10, seconds=HOUR)
    await top_up(platform, admin_user, normal_user, 19.99)
    status, body = await platform.call(
        "POST", f"/api/Orders/{order_id}/pay", user=normal_user, json={"paymentMethod": 3}
    )
    assert "余额不足" in problem((status, body), 409)["detail"]
    assert await balance(platform, admin_user, normal_user) == 19.99
    unpaid = await order(platform, normal_user, order_id)
    assert (unpaid["status"], unpaid["paymentStatus"], unpaid["paymentMethod"]) == (0, 0, None)


async def test_the_debit_is_the_total_rounded_half_up_to_the_cent(platform, admin_user, normal_user, piles):
    order_id = await completed_order(platform, admin_user, normal_user, piles["F1"], kwh=0.0625, seconds=60)
    assert (await order(platform, admin_user, order_id))["totalAmount"] == 0.13  # exactly 0.125
    await top_up(platform, admin_user, normal_user, 1)
    await platform.call("POST", f"/api/Orders/{order_id}/pay", user=normal_user, json={"paymentMethod": 3})
    assert await balance(platform, admin_user, normal_user) == 0.87


async def test_wechat_and_alipay_record_the_transaction_id(platform, admin_user, normal_user, piles):
    order_id = await completed_order(platform, admin_user, normal_user, piles["F1"], kwh=1, seconds=60)
    status, body = await platform.call(
        "POST", f"/api/Orders/{order_id}/pay", user=admin_user, json={"paymentMethod": 1}
    )
    invalid((status, body), "transactionId")
    status, body = await platform.call(
        "POST",
        f"/api/Orders/{order_id}/pay",
        user=admin_user,
        json={"paymentMethod": 2, "transactionId": "x" * 65},
    )
    invalid((status, body), "transactionId")
    status, _ = await platform.call(
        "POST",
        f"/api/Orders/{order_id}/pay",
        user=admin_user,
        json={"paymentMethod": 1, "transactionId": "wx-4200001"},
    )
    assert status == 204
    paid = await order(platform, admin_user, order_id)
    assert (paid["paymentMethodDescription"], paid["transactionId"], paid["status"]) == (
        "微信",
        "wx-4200001",
        2,
    )


async def test_pay_refuses_charging_and_cancelled_orders_and_bad_methods(
    platform, admin_user, normal_user, piles
):
    charging = await create(platform, admin_user, normal_user, piles["F1"])
    pay = {"paymentMethod": 1, "transactionId": "t1"}
    problem(await platform.call("POST", f"/api/Orders/{charging}/pay", user=admin_user, json=pay), 409)
    await platform.call("POST", f"/api/Orders/{charging}/cancel", user=admin_user)
    problem(await platform.call("POST", f"/api/Orders/{charging}/pay", user=admin_user, json=pay), 409)
    bad = {"paymentMethod": 4}
    invalid(
        await platform.call("POST", f"/api/Orders/{charging}/pay", user=admin_user, json=bad),
        "paymentMethod",
    )
    problem(await platform.call("POST", "/api/Orders/nope/pay", user=admin_user, json=pay), 404)


# --- access ----------------------------------------------------------------------------------------


async def test_users_act_on_their_own_orders_only(platform, admin_user, normal_user, other_user, piles):
    await top_up(platform, admin_user, normal_user, 10)  # a driver's own order needs a balance
    mine = await create(platform, normal_user, normal_user, piles["F1"])  # a user may order for themself
    body = {"userId": other_user.user_id, "pileId": piles["T1"]["id"], "portId": piles["T1"]["port"]}
    problem(await platform.call("POST", "/api/Orders", user=normal_user, json=body), 403)
    for method, path in (
        ("GET", f"/api/Orders/{mine}"),
        ("POST", f"/api/Orders/{mine}/complete"),
        ("POST", f"/api/Orders/{mine}/cancel"),
        ("GET", f"/api/Orders/byUser/{normal_user.user_id}"),
        ("GET", "/api/Orders/paged"),
    ):
        problem(await platform.call(method, path, user=other_user), 403)
    pay = {"paymentMethod": 1, "transactionId": "t"}
    problem(await platform.call("POST", f"/api/Orders/{mine}/pay", user=other_user, json=pay), 403)
    for path in ("/api/Orders", "/api/Orders/statistics", f"/api/Orders/byPile/{piles['F1']['id']}"):
        problem(await platform.call("GET", path, user=normal_user), 403)
    status, own = await platform.call("GET", f"/api/Orders/byUser/{normal_user.user_id}", user=normal_user)
    assert status == 200 and [o["id"] for o in own] == [mine]
    status, page = await platform.call(
        "GET", f"/api/Orders/paged?userId={normal_user.user_id}", user=normal_user
    )
    assert status == 200 and page["totalCount"] == 1
    status, _ = await platform.call("POST", f"/api/Orders/{mine}/complete", user=normal_user)
    assert status == 204


async def test_every_order_route_needs_a_token(platform):
    for method, path in (
        ("GET", "/api/Orders"),
        ("GET", "/api/Orders/paged"),
        ("GET", "/api/Orders/statistics"),
        ("GET", "/api/Orders/x"),
        ("GET", "/api/Orders/byUser/1"),
        ("GET", "/api/Orders/byPile/x"),
        ("POST", "/api/Orders"),
        ("PUT", "/api/Orders/x/status"),
        ("POST", "/api/Orders/x/pay"),
        ("POST", "/api/Orders/x/cancel"),
        ("POST", "/api/Orders/x/complete"),
    ):
        problem(await platform.call(method, path), 401)


# --- creation problems -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"userId": None}, "userId"),
        ({"userId": "1"}, "userId"),
        ({"pileId": None}, "pileId"),
        ({"portId": 7}, "portId"),
        ({"billingMode": 3}, "billingMode"),
    ],
)
async def test_create_names_each_bad_field(platform, admin_user, normal_user, piles, change, named):
    body = {
        "userId": normal_user.user_id,
        "pileId": piles["F1"]["id"],
        "portId": piles["F1"]["port"],
        **change,
    }
    body = {k: v for k, v in body.items() if v is not None}
    status, reply = await platform.call("POST", "/api/Orders", user=admin_user, json=body)
    assert set(invalid((status, reply), named)) == {named}


async def test_create_refuses_unknown_ids_foreign_ports_and_busy_or_offline_piles(
    platform, admin_user, normal_user, piles
):
    f1, t1 = piles["F1"], piles["T1"]

    async def post(**fields: Any) -> tuple[int, Any]:
        body = {"userId": normal_user.user_id, "pileId": f1["id"], "portId": f1["port"], **fields}
        status, reply = await platform.call("POST", "/api/Orders", user=admin_user, json=body)
        return int(status), reply

    assert "userId" in problem(await post(userId=999), 404)["detail"]
    assert "pileId" in problem(await post(pileId="ghost"), 404)["detail"]
    assert "portId" in problem(await post(portId="ghost"), 404)["detail"]
    invalid(await post(portId=t1["port"]), "portId")
    await create(platform, admin_user, normal_user, f1)
    assert "正在" in problem(await post(), 409)["detail"]
    platform.service.live.health["T1"] = "offline"
    problem(await post(pileId=t1["id"], portId=t1["port"]), 409)
    await platform.call("PUT", f"/api/ChargingPorts/{t1['port']}", user=admin_user, json={"isDisabled": True})
    platform.service.live.health["T1"] = "online"
    assert "停用" in problem(await post(pileId=t1["id"], portId=t1["port"]), 409)["detail"]


async def test_a_port_with_a_charging_driver_cannot_take_an_order(
    platform, admin_user, normal_user, other_user, piles
):
    status, _ = await platform.call(
        "POST",
        "/api/charging/request/",
        user=other_user,
        json={"charging_mode": "fast", "requested_amount": 5},
    )
    assert status == 201
    body = {"userId": normal_user.user_id, "pileId": piles["F1"]["id"], "portId": piles["F1"]["port"]}
    problem(await platform.call("POST", "/api/Orders", user=admin_user, json=body), 409)


async def test_complete_names_bad_query_values_and_unknown_orders(platform, admin_user, normal_user, piles):
    order_id = await create(platform, admin_user, normal_user, piles["F1"])
    for query, named in (
        ("electricity=-1", "electricity"),
        ("electricity=abc", "electricity"),
        ("duration=1e12", "duration"),
        ("duration=nan", "duration"),
    ):
        invalid(
            await platform.call("POST", f"/api/Orders/{order_id}/complete?{query}", user=admin_user), named
        )
    for action in ("complete", "cancel"):
        problem(await platform.call("POST", f"/api/Orders/nope/{action}", user=admin_user), 404)
    problem(await platform.call("GET", "/api/Orders/nope", user=admin_user), 404)
    problem(await platform.call("GET", "/api/Orders/byUser/999", user=admin_user), 404)
    problem(await platform.call("GET", "/api/Orders/byPile/nope", user=admin_user), 404)
    invalid(await platform.call("GET", "/api/Orders/byUser/abc", user=admin_user), "userId")


# --- driver sessions are orders too ----------------------------------------------------------------


async def test_driver_sessions_are_listed_and_can_be_completed_and_paid(
    platform, admin_user, normal_user, piles
):
    status, _ = await platform.call(
        "POST",
        "/api/charging/request/",
        user=normal_user,
        json={"charging_mode": "slow", "requested_amount": 5},
    )
    assert status == 201
    _, every = await platform.call("GET", "/api/Orders", user=admin_user)
    assert [(o["pileNo"], o["status"], o["userNickname"], o["pileId"]) for o in every] == [
        ("T1", 1, normal_user.username, piles["T1"]["id"])
    ]
    order_id = every[0]["id"]
    _, by_pile = await platform.call("GET", f"/api/Orders/byPile/{piles['T1']['id']}", user=admin_user)
    assert [o["id"] for o in by_pile] == [order_id]
    platform.wall.advance(60)  # a segment of zero length is never billed (the service's rule)
    status, _ = await platform.call("POST", f"/api/Orders/{order_id}/complete", user=admin_user)
    assert status == 204
    done = await order(platform, admin_user, order_id)
    assert done["status"] == 2 and done["paymentStatus"] == 0  # billed by the service (nothing delivered)
    status, _ = await platform.call(
        "POST", f"/api/Orders/{order_id}/pay", user=normal_user, json={"paymentMethod": 3}
    )
    assert status == 204 and (await order(platform, admin_user, order_id))["paymentStatus"] == 1


# --- paging, keyword, dates, statistics --------------------------------------------------------------


@pytest.fixture
async def history(platform, admin_user, normal_user, other_user, piles) -> dict[str, str]:
    """Five orders over two local days (figures in the statistics test)."""
    ids = {"A": await completed_order(platform, admin_user, normal_user, piles["F1"], kwh=10, seconds=HOUR)}
    ids["B"] = await create(platform, admin_user, other_user, piles["T1"])
    await platform.call("POST", f"/api/Orders/{ids['B']}/cancel", user=admin_user)
    platform.wall.advance(14 * HOUR + 30 * 60)  # 2025-06-03 00:30 local (still 06-02 in UTC)
    ids["C"] = await completed_order(
        platform, admin_user, other_user, piles["F1"], kwh=2, seconds=1800, mode=0
    )
    await platform.call(
        "POST",
        f"/api/Orders/{ids['C']}/pay",
        user=admin_user,
        json={"paymentMethod": 2, "transactionId": "ali-1"},
    )
    platform.wall.advance(60)
    ids["D"] = await create(platform, admin_user, normal_user, piles["T1"])  # still charging
    platform.wall.advance(60)
    ids["E"] = await create(platform, admin_user, other_user, piles["F1"])
    platform.service.live.on_command_outcome("F1", "start", ids["E"], "failed", "timeout")
    await wait_for(lambda: _status(platform, admin_user, ids["E"], 4), what="abnormal order")
    return ids


async def test_statistics_match_hand_computed_figures(platform, admin_user, history):
    status, every = await platform.call("GET", "/api/Orders/statistics", user=admin_user)
    assert status == 200
    assert every == {
        "totalOrders": 5,
        "totalElectricity": 12.0,
        "totalDuration": HOUR + 1800,
        "totalAmount": 32.0,
        "pendingPaymentOrders": 1,
        "chargingOrders": 1,
        "completedOrders": 1,
        "cancelledOrders": 1,
        "abnormalOrders": 1,
    }  # A: 10 kWh peak 20.00; B: nothing; C: 0.5 h x 0.8 x 30 kW = 12.00; D, E: nothing yet
    _, first_day = await platform.call(
        "GET", "/api/Orders/statistics?startDate=2025-06-02&endDate=2025-06-02", user=admin_user
    )
    assert (first_day["totalOrders"], first_day["totalAmount"], first_day["cancelledOrders"]) == (2, 20.0, 1)
    _, second_day = await platform.call("GET", "/api/Orders/statistics?startDate=2025-06-03", user=admin_user)
    assert (second_day["totalOrders"], second_day["totalAmount"], second_day["totalElectricity"]) == (
        3,
        12.0,
        2.0,
    )
    assert (second_day["completedOrders"], second_day["chargingOrders"], second_day["abnormalOrders"]) == (
        1,
        1,
        1,
    )
    _, none = await platform.call("GET", "/api/Orders/statistics?endDate=2025-06-01", user=admin_user)
    assert none["totalOrders"] == 0 and none["totalAmount"] == 0
    status, body = await platform.call(
        "GET", "/api/Orders/statistics?startDate=2025-06-03&endDate=2025-06-02", user=admin_user
    )
    invalid((status, body), "endDate")


async def test_paged_filters_dates_and_keyword(platform, admin_user, normal_user, piles, history):
    async def page(query: str) -> dict[str, Any]:
        status, body = await platform.call("GET", f"/api/Orders/paged?{query}", user=admin_user)
        assert status == 200, body
        return dict(body)

    newest_first = await page("pageSize=100")
    assert [o["id"] for o in newest_first["items"]] == [history[k] for k in "EDCBA"]
    assert [o["id"] for o in (await page(f"userId={normal_user.user_id}"))["items"]] == [
        history["D"],
        history["A"],
    ]
    assert [o["id"] for o in (await page(f"pileId={piles['T1']['id']}"))["items"]] == [
        history["D"],
        history["B"],
    ]
    assert [o["id"] for o in (await page("status=3"))["items"]] == [history["B"]]
    day = await page("startDate=2025-06-03&endDate=2025-06-03")
    assert [o["id"] for o in day["items"]] == [history[k] for k in "EDC"]
    by_number = await page(f"keyword={newest_first['items'][2]['orderNo'][:16].lower()}")
    assert history["C"] in [o["id"] for o in by_number["items"]]
    assert [o["id"] for o in (await page("keyword=T1"))["items"]] == [history["D"], history["B"]]
    assert {o["userId"] for o in (await page("keyword=bo"))["items"]} == {newest_first["items"][0]["userId"]}
    second = await page("pageNumber=2&pageSize=2")
    assert (second["totalCount"], second["totalPages"], second["hasPrevious"], second["hasNext"]) == (
        5,
        3,
        True,
        True,
    )
    past = await page("pageNumber=50&pageSize=2")
    assert past["items"] == [] and past["totalCount"] == 5
    assert (await page("pageSize=1000"))["pageSize"] == 100
    for query, named in (
        ("pageSize=0", "pageSize"),
        ("status=5", "status"),
        ("startDate=2025-6-1", "startDate"),
        ("userId=x", "userId"),
        ("pageNumber=-1", "pageNumber"),
    ):
        invalid(await platform.call("GET", f"/api/Orders/paged?{query}", user=admin_user), named)


async def test_a_charging_order_survives_a_restart_and_bills_from_its_first_base(
    tmp_path, platform, admin_user, normal_user, piles, platform_station_params, database
):
    platform.telemetry("F1", "available", 7_000)
    order_id = await create(platform, admin_user, normal_user, piles["F1"])
    platform.telemetry("F1", "charging", 7_000)
    platform.wall.advance(60)
    platform.telemetry("F1", "charging", 7_500)
    await wait_for(lambda: _persisted(platform, order_id), what="meter state persisted")
    await stop_platform(platform)
    restarted = await start_platform(
        tmp_path, platform_station_params, start=platform.wall.now(), database=database
    )
    try:
        assert (await order(restarted, admin_user, order_id))["status"] == 1  # restores the session
        assert restarted.service.scheduler.points["F1"].disabled  # still reserved
        restarted.wall.advance(60)
        restarted.telemetry("F1", "charging", 8_000)
        status, _ = await finish_live(restarted, f"/api/Orders/{order_id}/complete", admin_user, "F1", 8_000)
        assert status == 204
        done = await order(restarted, admin_user, order_id)
        assert (done["status"], done["electricity"], done["totalAmount"]) == (0, 1.0, 2.0)
        assert not restarted.service.scheduler.points["F1"].disabled
    finally:
        await stop_platform(restarted)


async def _persisted(platform: Any, order_id: str) -> bool:
    rows = await platform.store.read(
        lambda db: list(db.query("SELECT detail FROM orders WHERE id = ?", [order_id]))
    )
    return bool(rows and rows[0]["detail"] and "7500" in rows[0]["detail"])


async def test_trigger_kept_counts_give_the_same_totals_as_counting(platform, admin_user, normal_user, piles):
    first = await completed_order(platform, admin_user, normal_user, piles["F1"], kwh=1, seconds=60)
    again = Store(platform.store.url, [migrations, ORDER_MIGRATIONS])  # what central.app registers:
    await again.open()  # the order indexes and counts
    await again.close()
    await create(platform, admin_user, normal_user, piles["T1"])
    await platform.call("POST", f"/api/Orders/{first}/pay", user=admin_user,
                        json={"paymentMethod": 1, "transactionId": "t"})  # fmt: skip

    def counted(db: Any) -> dict[str, int]:
        rows = db.execute("SELECT status, COUNT(*) FROM orders GROUP BY status").fetchall()
        by_status = {f"status={s}": n for s, n in rows}
        return {"": sum(by_status.values()), **by_status}

    expected = await platform.store.read(counted)
    assert expected == {"": 2, "status=1": 1, "status=2": 1}
    for query, total in {**expected, "status=0": 0}.items():
        status, page = await platform.call("GET", f"/api/Orders/paged?{query}", user=admin_user)
        assert status == 200 and page["totalCount"] == total, query


async def test_a_port_a_driver_left_at_once_takes_an_order(
    platform, admin_user, normal_user, other_user, piles
):
    status, reply = await platform.call(
        "POST",
        "/api/charging/request/",
        user=other_user,
        json={"charging_mode": "slow", "requested_amount": 5},
    )
    assert status == 201 and reply["data"]["charging_pile_id"] == "T1"
    car = reply["data"]["request_id"]
    status, _ = await platform.call("DELETE", f"/api/charging/request/{car}/cancel/", user=other_user)
    assert status == 200  # in the instant it was dispatched: its order never charged
    order_id = await create(platform, admin_user, normal_user, piles["T1"])
    assert (await order(platform, admin_user, order_id))["status"] == 1
