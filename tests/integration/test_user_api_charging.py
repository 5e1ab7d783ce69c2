"""User API charging endpoints against the real ChargingService: submit, change, cancel, status,
complete, queue and pile status. Station: one fast pile F1, one trickle pile T1, two waiting places,
one car per pile; station time 10:00 (peak) on a fake wall clock.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.helpers import wait_for

pytest_plugins = ("tests.integration.central_fixtures",)

REQUEST_FIELDS = {
    "request_id",
    "station",  # beyond the spec: the request's station (several stations per central)
    "queue_number",
    "charging_mode",
    "requested_amount",
    "battery_capacity",
    "current_status",
    "queue_position",
    "ahead_count",
    "estimated_wait_time",
    "charging_pile_id",
    "start_time",
    "current_amount",
    "created_at",
}


async def submit(central, account, mode="fast", kwh=10, **extra):
    body = {"charging_mode": mode, "requested_amount": kwh, **extra}
    return await central.call("POST", "/api/charging/request/", user=account, json=body)


def error(body):
    return body["error"]["code"], body["error"]["details"]


# --- submit ----------------------------------------------------------------------------------------


async def test_first_car_is_sent_to_the_free_pile(central, driver):
    status, body = await submit(central, driver, kwh=10, battery_capacity=60)
    assert status == 201 and body["message"] == "充电请求提交成功"
    data = body["data"]
    assert set(data) == REQUEST_FIELDS
    assert (data["queue_number"], data["charging_mode"], data["requested_amount"]) == ("F1", "fast", 10.0)
    assert (data["current_status"], data["charging_pile_id"], data["queue_position"]) == ("charging", "F1", 0)
    assert data["start_time"] == "2025-06-02T10:00:00+08:00"  # station offset, not UTC
    assert central.commands.sent == [("F1", 1, "start", {"energy_Wh": 10000}, data["request_id"])]


async def test_second_car_waits_with_the_next_number_and_a_wait_estimate(central, driver, driver2):
    await submit(central, driver, kwh=10)
    status, body = await submit(central, driver2, kwh=5)
    data = body["data"]
    assert status == 201 and data["queue_number"] == "F2" and data["current_status"] == "waiting"
    assert data["charging_pile_id"] is None and data["ahead_count"] >= 0
    assert data["estimated_wait_time"] == pytest.approx(20.0)  # F1 needs 20 min for 10 kWh at 30 kW


async def test_slow_mode_gets_a_trickle_number(central, driver):
    status, body = await submit(central, driver, mode="slow", kwh=5)
    assert status == 201 and body["data"]["queue_number"] == "T1" and body["data"]["charging_pile_id"] == "T1"


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({}, {"charging_mode", "requested_amount"}),
        ({"charging_mode": "turbo", "requested_amount": 10}, {"charging_mode"}),
        ({"charging_mode": "FAST", "requested_amount": 10}, {"charging_mode"}),
        ({"charging_mode": 1, "requested_amount": 10}, {"charging_mode"}),
        ({"charging_mode": "fast", "requested_amount": -1}, {"requested_amount"}),
        ({"charging_mode": "fast", "requested_amount": 0}, {"requested_amount"}),
        ({"charging_mode": "fast", "requested_amount": "10"}, {"requested_amount"}),
        ({"charging_mode": "fast", "requested_amount": True}, {"requested_amount"}),
        ({"charging_mode": "fast", "requested_amount": 1e9}, {"requested_amount"}),
        ({"charging_mode": "fast", "requested_amount": 10, "battery_capacity": 0}, {"battery_capacity"}),
        ({"charging_mode": "fast", "requested_amount": 10, "battery_capacity": "big"}, {"battery_capacity"}),
        ({"charging_mode": "fast", "requested_amount": 70, "battery_capacity": 60}, {"requested_amount"}),
    ],
)
async def test_submit_names_each_bad_field(central, driver, body, fields):
    status, reply = await central.call("POST", "/api/charging/request/", user=driver, json=body)
    code, details = error(reply)
    assert (status, code, set(details)) == (400, "VALIDATION_ERROR", fields)
    assert central.service.current_request(driver.user_id) is None


@pytest.mark.parametrize("amount", [b"NaN", b"Infinity", b"-Infinity"])
async def test_submit_refuses_non_finite_amounts(central, driver, amount):
    raw = b'{"charging_mode": "fast", "requested_amount": ' + amount + b"}"
    headers = {"Content-Type": "application/json"}
    status, reply = await central.call(
        "POST", "/api/charging/request/", user=driver, data=raw, headers=headers
    )
    assert status == 400 and set(error(reply)[1]) == {"requested_amount"}


async def test_a_second_active_request_is_a_duplicate(central, driver):
    await submit(central, driver)
    status, body = await submit(central, driver, mode="slow")
    assert (status, error(body)[0]) == (409, "DUPLICATE_REQUEST")


async def test_full_waiting_area_refuses_with_queue_full(central):
    accounts = [await central.user(f"car{i}") for i in range(4)]
    for account in accounts[:3]:  # one charges at F1, two wait
        status, _body = await submit(central, account)
        assert status == 201
    status, body = await submit(central, accounts[3], mode="slow")
    assert (status, error(body)[0]) == (409, "QUEUE_FULL")
    assert body["error"]["message"].startswith("等候区已满")


# --- change / cancel -------------------------------------------------------------------------------


async def test_changing_the_amount_keeps_the_queue_number(central, driver, driver2):
    await submit(central, driver)
    _status, body = await submit(central, driver2, kwh=5)
    request_id = body["data"]["request_id"]
    status, body = await central.call(
        "PUT", f"/api/charging/request/{request_id}/", user=driver2, json={"requested_amount": 8}
    )
    assert status == 200 and body["message"] == "充电请求修改成功"
    assert (body["data"]["queue_number"], body["data"]["requested_amount"]) == ("F2", 8.0)


async def test_changing_the_mode_takes_a_number_in_the_other_queue(central, driver, driver2):
    await submit(central, driver, mode="slow")
    await submit(central, driver2, mode="slow")
    request_id = central.service.current_request(driver2.user_id).request_id
    status, body = await central.call(
        "PUT", f"/api/charging/request/{request_id}", user=driver2, json={"charging_mode": "fast"}
    )
    assert status == 200 and body["data"]["queue_number"] == "F1" and body["data"]["charging_mode"] == "fast"


async def test_a_charging_request_cannot_change(central, driver):
    _status, body = await submit(central, driver)
    request_id = body["data"]["request_id"]
    status, body = await central.call(
        "PUT", f"/api/charging/request/{request_id}/", user=driver, json={"requested_amount": 20}
    )
    assert (status, *error(body)) == (409, "VALIDATION_ERROR", {"reason": "CHANGE_NOT_ALLOWED"})


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({}, {"body"}),
        ({"charging_mode": "warp"}, {"charging_mode"}),
        ({"requested_amount": -3}, {"requested_amount"}),
        ({"charging_mode": None, "requested_amount": None}, {"body"}),
    ],
)
async def test_change_names_each_bad_field(central, driver, body, fields):
    _status, reply = await submit(central, driver)
    path = f"/api/charging/request/{reply['data']['request_id']}/"
    status, reply = await central.call("PUT", path, user=driver, json=body)
    assert (status, error(reply)[0], set(error(reply)[1])) == (400, "VALIDATION_ERROR", fields)


async def test_another_users_request_looks_absent(central, driver, driver2):
    _status, body = await submit(central, driver)
    request_id = body["data"]["request_id"]
    for method, path, payload in (
        ("PUT", f"/api/charging/request/{request_id}/", {"requested_amount": 5}),
        ("DELETE", f"/api/charging/request/{request_id}/cancel/", None),
        ("DELETE", "/api/charging/request/no-such-request/cancel/", None),
    ):
        status, reply = await central.call(method, path, user=driver2, json=payload)
        assert (status, error(reply)[0]) == (404, "RESOURCE_NOT_FOUND")
    assert central.service.current_request(driver.user_id).current_status == "charging"


async def test_cancelling_a_waiting_request(central, driver, driver2):
    await submit(central, driver)
    _status, body = await submit(central, driver2)
    request_id = body["data"]["request_id"]
    status, body = await central.call("DELETE", f"/api/charging/request/{request_id}/cancel/", user=driver2)
    assert status == 200 and body["message"] == "充电请求已取消"
    assert body["data"]["current_status"] == "cancelled" and body["data"]["request_id"] == request_id
    _status, body = await central.call("GET", "/api/charging/request/status/", user=driver2)
    assert body["data"]["current_status"] == "cancelled"


# --- status / complete -----------------------------------------------------------------------------


async def test_status_without_any_request_is_null(central, driver):
    status, body = await central.call("GET", "/api/charging/request/status/", user=driver)
    assert status == 200 and body["success"] is True and body["data"] is None


async def test_status_shows_progress_from_the_meter(central, driver):
    await submit(central, driver, kwh=10)
    central.telemetry("F1", "charging", 5_000)
    central.wall.advance(300)
    central.telemetry("F1", "charging", 7_500)
    status, body = await central.call("GET", "/api/charging/request/status/", user=driver)
    assert status == 200 and set(body["data"]) == REQUEST_FIELDS
    assert body["data"]["current_status"] == "charging" and body["data"]["current_amount"] == 2.5


async def test_complete_without_charging_is_refused(central, driver, driver2):
    status, body = await central.call("POST", "/api/charging/complete/", user=driver)
    assert (status, *error(body)) == (409, "VALIDATION_ERROR", {"reason": "NOT_CHARGING"})
    await submit(central, driver)
    await submit(central, driver2)  # waiting, not charging
    status, body = await central.call("POST", "/api/charging/complete/", user=driver2)
    assert (status, error(body)[1]) == (409, {"reason": "NOT_CHARGING"})


async def test_complete_stops_the_port_and_bills_the_meter(central, driver):
    _status, body = await submit(central, driver, kwh=20)
    request_id = body["data"]["request_id"]
    central.telemetry("F1", "charging", 1_000)
    central.wall.advance(600)
    central.telemetry("F1", "charging", 6_000)  # 5 kWh in 10 minutes
    done = asyncio.ensure_future(central.call("POST", "/api/charging/complete/", user=driver))
    await wait_for(
        lambda: any(c[2] == "stop" for c in central.commands.sent), timeout_s=5, what="stop command"
    )
    central.wall.advance(1)
    central.telemetry("F1", "finished", 6_000)
    status, body = await done
    assert status == 200 and body["message"] == "充电已结束"
    assert body["data"] == {
        "bill_id": request_id,
        "total_amount": 5.0,
        "total_cost": 10.0,
        "charging_duration": 10.02,
    }
    status, bill = await central.call("GET", f"/api/charging/bills/{request_id}/", user=driver)
    assert status == 200 and bill["data"]["charging_amount"] == 5.0
    assert bill["data"]["cost_breakdown"] == {
        "peak_cost": 6.0,
        "normal_cost": 0.0,
        "valley_cost": 0.0,
        "service_cost": 4.0,
        "total_cost": 10.0,
    }
    _status, body = await central.call("GET", "/api/charging/request/status/", user=driver)
    assert body["data"]["current_status"] == "completed"


# --- queue and piles -------------------------------------------------------------------------------


async def test_queue_status_lists_waiting_cars_per_mode(central, driver, driver2):
    await submit(central, driver)
    await submit(central, driver2)
    status, body = await central.call("GET", "/api/charging/queue/status", user=driver)
    assert status == 200
    data = body["data"]
    assert set(data) == {"fast_charging", "slow_charging", "waiting_area_capacity"}
    assert data["fast_charging"]["waiting_count"] == 1
    assert [q["queue_number"] for q in data["fast_charging"]["queue_list"]] == ["F2"]
    assert data["slow_charging"] == {"waiting_count": 0, "queue_list": []}
    assert data["waiting_area_capacity"] == {"current": 1, "max": 2}


async def test_piles_status_shows_who_charges_where(central, driver):
    await submit(central, driver)
    status, body = await central.call("GET", "/api/charging/piles/status/", user=driver)
    assert status == 200
    (fast,), (slow,) = body["data"]["fast_piles"], body["data"]["slow_piles"]
    assert fast == {
        "pile_id": "F1",
        "pile_type": "fast",
        "status": "normal",
        "is_working": True,
        "current_user": "driver1",
        "queue": ["F1"],
    }
    assert (slow["pile_id"], slow["pile_type"], slow["is_working"], slow["current_user"]) == (
        "T1",
        "slow",
        False,
        None,
    )


async def test_cancel_in_the_instant_of_dispatch_cancels_its_order_and_stops_the_port(central, driver):
    _status, body = await submit(central, driver)  # dispatched at once: F1 is free
    request_id = body["data"]["request_id"]
    assert central.commands.sent[-1][2] == "start"
    status, body = await central.call("DELETE", f"/api/charging/request/{request_id}/cancel/", user=driver)
    assert status == 200 and body["data"]["current_status"] == "cancelled"
    orders = await central.store.read(
        lambda db: list(db.query("SELECT status, end_time FROM orders WHERE request_id = ?", [request_id]))
    )
    assert [o["status"] for o in orders] == [3] and orders[0]["end_time"] is not None
    assert central.commands.sent[-1][:3] == ("F1", 1, "stop")
    assert request_id not in central.service.sessions
