"""User API bills (detail records = orders rows of driver sessions) and notifications: paging, local
date filters, rounding, breakdowns, a fault-split bill, and that nobody sees another user's records.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from fractions import Fraction

import pytest

from tests.helpers import wait_for

pytest_plugins = ("tests.integration.central_fixtures",)

BILL_FIELDS = {
    "bill_id",
    "station",  # beyond the spec: the bill's station (several stations per central)
    "generated_time",
    "pile_id",
    "charging_amount",
    "charging_duration",
    "start_time",
    "end_time",
    "peak_cost",
    "normal_cost",
    "valley_cost",
    "service_cost",
    "total_cost",
}


async def insert_bill(central, user_id, stop, *, kwh="10", peak=("10", "1/3", "12"), service="8", minutes=20):
    """An orders row as the service writes it for a finished segment (detail = DetailRecord.to_dict())."""
    order_id, request_id = uuid.uuid4().hex, uuid.uuid4().hex
    start = stop - timedelta(minutes=minutes)
    fee = Fraction(peak[2])
    detail = {
        "id": order_id, "car": request_id, "queue_number": "F1", "point": "F1", "pile": "F1",
        "start": start.isoformat(), "stop": stop.isoformat(), "generated_at": stop.isoformat(),
        "periods": {"peak": list(peak)}, "service_fee": service, "reason": "completed",
    }  # fmt: skip

    def write(db):
        db["charging_requests"].insert({
            "id": request_id, "user_id": user_id, "queue_number": "F1", "charging_mode": "fast",
            "requested_amount": kwh, "current_status": "completed", "created_at": start.isoformat(),
        })  # fmt: skip
        db["orders"].insert({
            "id": order_id, "order_no": order_id[:12], "user_id": user_id, "request_id": request_id,
            "pile_no": "F1", "port_no": "1", "status": 2, "start_time": start.isoformat(),
            "end_time": stop.isoformat(), "duration": minutes * 60, "electricity": kwh,
            "amount": str(fee), "service_fee": service, "total_amount": str(fee + Fraction(service)),
            "detail": json.dumps(detail), "generated_time": stop.isoformat(),
            "create_time": start.isoformat(),
        })  # fmt: skip

    await central.store.write(write)
    return order_id


async def bills(central, account, query=""):
    status, body = await central.call("GET", f"/api/charging/bills/{query}", user=account)
    assert status == 200, body
    return body["data"]


# --- list ------------------------------------------------------------------------------------------


async def test_bill_list_is_newest_first_with_the_spec_fields(central, driver):
    t0 = datetime(2025, 6, 2, 3, 0, tzinfo=UTC)
    older = await insert_bill(central, driver.user_id, t0)
    newer = await insert_bill(central, driver.user_id, t0 + timedelta(hours=1))
    data = await bills(central, driver)
    assert [b["bill_id"] for b in data["bills"]] == [newer, older]
    assert set(data["bills"][0]) == BILL_FIELDS
    assert data["pagination"] == {"current_page": 1, "total_pages": 1, "total_count": 2}
    entry = data["bills"][1]
    assert (
        entry["generated_time"] == "2025-06-02T11:00:00+08:00"
        and entry["start_time"] == "2025-06-02T10:40:00+08:00"
    )
    assert (entry["charging_amount"], entry["charging_duration"], entry["pile_id"]) == (10.0, 20.0, "F1")
    assert (entry["peak_cost"], entry["normal_cost"], entry["service_cost"], entry["total_cost"]) == (
        12.0,
        0.0,
        8.0,
        20.0,
    )


async def test_bill_list_pages(central, driver):
    t0 = datetime(2025, 6, 2, 3, 0, tzinfo=UTC)
    ids = [await insert_bill(central, driver.user_id, t0 + timedelta(minutes=i)) for i in range(5)]
    first = await bills(central, driver, "?page=1&limit=2")
    last = await bills(central, driver, "?page=3&limit=2")
    beyond = await bills(central, driver, "?page=4&limit=2")
    assert [b["bill_id"] for b in first["bills"]] == ids[:-3:-1]
    assert [b["bill_id"] for b in last["bills"]] == [ids[0]]
    assert last["pagination"] == {"current_page": 3, "total_pages": 3, "total_count": 5}
    assert beyond["bills"] == []


async def test_bill_dates_are_station_local_and_inclusive(central, driver):
    late = await insert_bill(central, driver.user_id, datetime(2025, 6, 2, 15, 59, tzinfo=UTC))  # 23:59 local
    early = await insert_bill(
        central, driver.user_id, datetime(2025, 6, 2, 16, 0, tzinfo=UTC)
    )  # 00:00 next day
    june_2 = await bills(central, driver, "?start_date=2025-06-02&end_date=2025-06-02")
    june_3 = await bills(central, driver, "?start_date=2025-06-03")
    until_2 = await bills(central, driver, "?end_date=2025-06-02")
    assert [b["bill_id"] for b in june_2["bills"]] == [late]
    assert [b["bill_id"] for b in june_3["bills"]] == [early]
    assert [b["bill_id"] for b in until_2["bills"]] == [late]


async def test_amounts_round_half_up_only_for_display(central, driver):
    stop = datetime(2025, 6, 2, 3, 0, tzinfo=UTC)
    await insert_bill(central, driver.user_id, stop, kwh="1/8", peak=("1/8", "1/400", "5/8"), service="1/40")
    (entry,) = (await bills(central, driver))["bills"]
    assert entry["charging_amount"] == 0.13  # 0.125 -> 0.13 (round() would give 0.12)
    assert (entry["peak_cost"], entry["service_cost"], entry["total_cost"]) == (0.63, 0.03, 0.65)


@pytest.mark.parametrize(
    ("query", "fields"),
    [
        ("?page=0", {"page"}),
        ("?page=x", {"page"}),
        ("?limit=0", {"limit"}),
        ("?limit=101", {"limit"}),
        ("?limit=-5", {"limit"}),
        ("?start_date=2025-6-1", {"start_date"}),
        ("?end_date=yesterday", {"end_date"}),
        ("?start_date=2025-06-03&end_date=2025-06-02", {"end_date"}),
        ("?page=0&limit=1000&start_date=x", {"page", "limit", "start_date"}),
    ],
)
async def test_bill_query_names_each_bad_parameter(central, driver, query, fields):
    status, body = await central.call("GET", f"/api/charging/bills/{query}", user=driver)
    assert (status, body["error"]["code"], set(body["error"]["details"])) == (400, "VALIDATION_ERROR", fields)


async def test_nobody_sees_another_users_bills(central, driver, driver2):
    bill_id = await insert_bill(central, driver.user_id, datetime(2025, 6, 2, 3, 0, tzinfo=UTC))
    assert (await bills(central, driver2))["pagination"]["total_count"] == 0
    status, body = await central.call("GET", f"/api/charging/bills/{bill_id}/", user=driver2)
    assert (status, body["error"]["code"]) == (404, "RESOURCE_NOT_FOUND")
    status, body = await central.call("GET", "/api/charging/bills/no-such-bill/", user=driver)
    assert status == 404


# --- detail ----------------------------------------------------------------------------------------


async def test_bill_detail_has_cost_and_time_breakdowns(central, driver):
    stop = datetime(2025, 6, 2, 3, 0, tzinfo=UTC)
    bill_id = await insert_bill(central, driver.user_id, stop)
    status, body = await central.call("GET", f"/api/charging/bills/{bill_id}", user=driver)
    assert status == 200
    assert body["data"] == {
        "bill_id": bill_id,
        "generated_time": "2025-06-02T11:00:00+08:00",
        "pile_id": "F1",
        "charging_amount": 10.0,
        "charging_duration": 20.0,
        "start_time": "2025-06-02T10:40:00+08:00",
        "end_time": "2025-06-02T11:00:00+08:00",
        "cost_breakdown": {
            "peak_cost": 12.0,
            "normal_cost": 0.0,
            "valley_cost": 0.0,
            "service_cost": 8.0,
            "total_cost": 20.0,
        },
        "time_breakdown": {"peak_hours": 0.33, "normal_hours": 0.0, "valley_hours": 0.0},
        "station": "station1",  # a row written without a station: the default one's
    }


async def test_fault_split_session_is_two_records_and_one_request_bill(central, driver, staff):
    _status, body = await central.call(
        "POST", "/api/charging/request/", user=driver, json={"charging_mode": "fast", "requested_amount": 10}
    )
    request_id = body["data"]["request_id"]
    central.telemetry("F1", "charging", 0)
    central.wall.advance(600)
    central.telemetry("F1", "charging", 5_000)  # 5 kWh, then the pile faults
    status, _body = await central.call("POST", "/api/charging/admin/piles/F1/fault/", user=staff)
    assert status == 200
    central.wall.advance(60)
    status, _body = await central.call("POST", "/api/charging/admin/piles/F1/recover/", user=staff)
    assert status == 200
    central.telemetry("F1", "finished", 5_000)  # the port obeyed the fault's stop: the start goes
    central.wall.advance(1)
    central.telemetry("F1", "charging", 5_000)
    central.wall.advance(600)
    central.telemetry("F1", "charging", 10_000)
    central.wall.advance(1)
    central.telemetry("F1", "finished", 10_000)
    await wait_for(
        lambda: central.service.current_request(driver.user_id).current_status == "completed", timeout_s=5
    )
    listed = await bills(central, driver)
    assert listed["pagination"]["total_count"] == 2
    assert [b["charging_amount"] for b in listed["bills"]] == [5.0, 5.0]
    status, body = await central.call("GET", f"/api/charging/bills/{request_id}/", user=driver)
    assert status == 200 and body["data"]["bill_id"] == request_id
    assert body["data"]["charging_amount"] == 10.0 and body["data"]["cost_breakdown"]["total_cost"] == 20.0
    assert body["data"]["start_time"] == listed["bills"][1]["start_time"]
    assert body["data"]["end_time"] == listed["bills"][0]["end_time"]


# --- notifications ---------------------------------------------------------------------------------


async def notify(central, user_id, kind, text, at):
    row = {
        "user_id": user_id, "kind": kind, "type": 2, "title": kind, "content": text, "is_read": 0,
        "create_time": at.isoformat(),
    }  # fmt: skip
    return (await central.store.write(lambda db: db["notifications"].insert(row))).last_pk


async def test_notifications_are_the_users_own_newest_first(central, driver, driver2):
    t0 = datetime(2025, 6, 2, 3, 0, tzinfo=UTC)
    first = await notify(central, driver.user_id, "queue_update", "叫号", t0)
    second = await notify(central, driver.user_id, "charging_complete", "充电完成", t0 + timedelta(minutes=5))
    await notify(central, driver2.user_id, "pile_fault", "not yours", t0)
    status, body = await central.call("GET", "/api/charging/notifications/", user=driver)
    assert status == 200
    assert body["data"] == [
        {"id": second, "type": "charging_complete", "message": "充电完成",
         "timestamp": "2025-06-02T11:05:00+08:00", "read": False},
        {"id": first, "type": "queue_update", "message": "叫号",
         "timestamp": "2025-06-02T11:00:00+08:00", "read": False},
    ]  # fmt: skip


async def test_charging_produces_notifications(central, driver):
    await central.call(
        "POST", "/api/charging/request/", user=driver, json={"charging_mode": "slow", "requested_amount": 5}
    )
    _status, body = await central.call("GET", "/api/charging/notifications/", user=driver)
    assert [n["type"] for n in body["data"]] == ["queue_update"] and "T1" in body["data"][0]["message"]


async def test_marking_a_notification_read(central, driver):
    note = await notify(
        central, driver.user_id, "queue_update", "叫号", datetime(2025, 6, 2, 3, 0, tzinfo=UTC)
    )
    status, body = await central.call("PUT", f"/api/charging/notifications/{note}/read/", user=driver)
    assert status == 200 and body["data"] == {"id": note, "read": True}
    _status, body = await central.call("GET", "/api/charging/notifications", user=driver)
    assert body["data"][0]["read"] is True
    status, _body = await central.call("PUT", f"/api/charging/notifications/{note}/read", user=driver)
    assert status == 200  # marking twice is harmless


@pytest.mark.parametrize("which", ["other", "missing", "abc", "-1"])
async def test_marking_someone_elses_or_a_missing_notification_is_not_found(central, driver, driver2, which):
    theirs = await notify(central, driver2.user_id, "pile_fault", "x", datetime(2025, 6, 2, 3, 0, tzinfo=UTC))
    target = {"other": theirs, "missing": theirs + 100}.get(which, which)
    status, body = await central.call("PUT", f"/api/charging/notifications/{target}/read/", user=driver)
    assert (status, body["error"]["code"]) == (404, "RESOURCE_NOT_FOUND")
    rows = await central.store.read(lambda db: [r["is_read"] for r in db["notifications"].rows])
    assert rows == [0]


async def test_notification_limit_is_validated(central, driver):
    status, body = await central.call("GET", "/api/charging/notifications/?limit=0", user=driver)
    assert status == 400 and set(body["error"]["details"]) == {"limit"}
