"""Operator endpoints in the user API's style (parameters, piles on/off/fault/recover, reports,
queues) and the OpenAPI document built from the route table.
"""

from __future__ import annotations

from typing import Any

import pytest

from central.web.errors import USER_STYLE
from central.web.openapi import SPECS_KEY, RouteSpec, build_document, documented_path, merge_paths
from central.web.permissions import Access
from tests.helpers import wait_for

pytest_plugins = ("tests.integration.central_fixtures",)

SPEC_PARAMETER_KEYS = {
    "FastChargingPileNum",
    "TrickleChargingPileNum",
    "WaitingAreaSize",
    "ChargingQueueLen",
    "pricing",
    "time_periods",
}


async def pile_status(central, account, pile_id):
    _status, body = await central.call("GET", "/api/charging/piles/status/", user=account)
    piles = body["data"]["fast_piles"] + body["data"]["slow_piles"]
    return next(p["status"] for p in piles if p["pile_id"] == pile_id)


# --- parameters ------------------------------------------------------------------------------------


async def test_any_user_reads_the_parameters_in_the_spec_shape(central, driver):
    status, body = await central.call("GET", "/api/charging/config/parameters/", user=driver)
    assert status == 200 and set(body["data"]) >= SPEC_PARAMETER_KEYS
    assert body["data"]["pricing"] == {
        "peak_rate": 1.2,
        "normal_rate": 0.8,
        "valley_rate": 0.4,
        "service_rate": 0.8,
    }
    assert body["data"]["time_periods"]["valley"] == ["23:00-07:00"]


async def test_staff_changes_prices_and_everyone_sees_them(central, staff, driver):
    changes = {"pricing": {"peak_rate": 1.5}, "fault_strategy": "time_order", "WaitingAreaSize": 4}
    status, body = await central.call("PUT", "/api/charging/config/parameters/", user=staff, json=changes)
    assert status == 200 and body["message"] == "系统参数已更新"
    assert body["data"]["pricing"]["peak_rate"] == 1.5 and body["data"]["pricing"]["valley_rate"] == 0.4
    _status, body = await central.call("GET", "/api/charging/config/parameters", user=driver)
    assert (body["data"]["pricing"]["peak_rate"], body["data"]["fault_strategy"]) == (1.5, "time_order")
    assert body["data"]["WaitingAreaSize"] == 4


@pytest.mark.parametrize(
    ("changes", "fields"),
    [
        ({}, {"body"}),
        ({"WaitingAreaSize": 0}, {"WaitingAreaSize"}),
        ({"ChargingQueueLen": "two"}, {"ChargingQueueLen"}),
        ({"pricing": {"peak_rate": -1, "cheap_rate": 1}}, {"pricing.peak_rate", "pricing.cheap_rate"}),
        ({"time_periods": {"peak": ["10:00-15:00"]}}, {"time_periods"}),
        ({"dispatch_policy": "random"}, {"dispatch_policy"}),
        ({"timezone": "UTC", "bogus": 1}, {"timezone", "bogus"}),
    ],
)
async def test_parameter_update_names_each_bad_key(central, staff, changes, fields):
    status, body = await central.call("PUT", "/api/charging/config/parameters/", user=staff, json=changes)
    assert (status, body["error"]["code"], set(body["error"]["details"])) == (400, "VALIDATION_ERROR", fields)
    _status, body = await central.call("GET", "/api/charging/config/parameters/", user=staff)
    assert body["data"]["WaitingAreaSize"] == 2 and body["data"]["pricing"]["peak_rate"] == 1.2


async def test_parameter_update_needs_a_json_object(central, staff):
    status, body = await central.call("PUT", "/api/charging/config/parameters/", user=staff, json=[1])
    assert status == 400 and set(body["error"]["details"]) == {"body"}


# --- piles -----------------------------------------------------------------------------------------


async def test_staff_takes_a_pile_out_of_service_and_back(central, staff):
    status, body = await central.call("POST", "/api/charging/admin/piles/T1/off/", user=staff)
    assert status == 200 and body["data"] == {"pile_id": "T1", "in_service": False}
    assert await pile_status(central, staff, "T1") == "offline"
    status, body = await central.call("POST", "/api/charging/admin/piles/T1/on", user=staff)
    assert status == 200 and body["data"] == {"pile_id": "T1", "in_service": True}
    assert await pile_status(central, staff, "T1") == "normal"


async def test_staff_declares_a_fault_and_the_recovery(central, staff):
    status, body = await central.call("POST", "/api/charging/admin/piles/F1/fault/", user=staff)
    assert status == 200 and body["data"] == {"pile_id": "F1", "faulted": True}
    assert await pile_status(central, staff, "F1") == "fault"
    status, body = await central.call("POST", "/api/charging/admin/piles/F1/recover/", user=staff)
    assert status == 200 and body["data"] == {"pile_id": "F1", "faulted": False}
    assert await pile_status(central, staff, "F1") == "normal"


@pytest.mark.parametrize("verb", ["on", "off", "fault", "recover"])
async def test_unknown_pile_is_not_found(central, staff, verb):
    status, body = await central.call("POST", f"/api/charging/admin/piles/X9/{verb}/", user=staff)
    assert (status, body["error"]["code"]) == (404, "RESOURCE_NOT_FOUND")


async def test_switching_a_pile_into_the_state_it_is_in_is_a_conflict(central, staff):
    status, body = await central.call("POST", "/api/charging/admin/piles/F1/on/", user=staff)
    assert (status, body["error"]["code"]) == (409, "VALIDATION_ERROR")
    assert body["error"]["details"]["reason"] == "PILE_STATE_CONFLICT"


# --- reports and queues ----------------------------------------------------------------------------


async def test_daily_report_counts_a_finished_session(central, driver, staff):
    await central.call(
        "POST", "/api/charging/request/", user=driver, json={"charging_mode": "fast", "requested_amount": 10}
    )
    central.telemetry("F1", "charging", 0)
    central.wall.advance(1200)
    central.telemetry("F1", "charging", 10_000)
    central.wall.advance(1)
    central.telemetry("F1", "finished", 10_000)
    await wait_for(lambda: central.service.current_request(driver.user_id).current_status == "completed")

    async def f1_of_the_day() -> dict[str, Any] | None:
        """F1's row of the day's report once it counts the session (its bill is committed by then)."""
        status, body = await central.call(
            "GET", "/api/charging/admin/reports/?period=day&date=2025-06-02", user=staff
        )
        assert status == 200 and (body["data"]["period"], body["data"]["date"]) == ("day", "2025-06-02")
        row: dict[str, Any] = next(row for row in body["data"]["piles"] if row["pile_id"] == "F1")
        return row if row["sessions"] else None

    # "completed" shows in memory before the request's bill is committed: wait for what is read.
    f1 = await wait_for(f1_of_the_day, what="the finished session in the day's report")
    assert (f1["sessions"], f1["kwh"], f1["charging_fee"], f1["service_fee"], f1["total"]) == (
        1,
        10.0,
        12.0,
        8.0,
        20.0,
    )
    _status, body = await central.call(
        "GET", "/api/charging/admin/reports/?period=month&date=2025-07-01", user=staff
    )
    assert all(row["sessions"] == 0 for row in body["data"]["piles"])


async def test_report_defaults_to_today_on_the_station_clock(central, staff):
    status, body = await central.call("GET", "/api/charging/admin/reports/", user=staff)
    assert status == 200 and (body["data"]["period"], body["data"]["date"]) == ("day", "2025-06-02")


@pytest.mark.parametrize(
    ("query", "fields"),
    [("?period=year", {"period"}), ("?date=06/02/2025", {"date"}), ("?period=x&date=y", {"period", "date"})],
)
async def test_report_query_names_each_bad_parameter(central, staff, query, fields):
    status, body = await central.call("GET", f"/api/charging/admin/reports/{query}", user=staff)
    assert (status, set(body["error"]["details"])) == (400, fields)


async def test_queues_show_the_cars_at_each_pile(central, driver, staff):
    await central.call(
        "POST", "/api/charging/request/", user=driver, json={"charging_mode": "fast", "requested_amount": 10}
    )
    central.wall.advance(90)
    status, body = await central.call("GET", "/api/charging/admin/queues/", user=staff)
    assert status == 200
    queues = {entry["pile_id"]: entry["cars"] for entry in body["data"]}
    assert set(queues) == {"F1", "T1"} and queues["T1"] == []
    (car,) = queues["F1"]
    assert (car["user_id"], car["username"], car["queue_number"]) == (driver.user_id, "driver1", "F1")
    assert car["queued_at"] == "2025-06-02T10:00:00+08:00" and car["waited_minutes"] == 1.5


# --- the OpenAPI document --------------------------------------------------------------------------


async def test_openapi_document_is_public_and_covers_every_registered_route(central):
    status, doc = await central.call("GET", "/api/openapi.json")
    assert status == 200 and doc["openapi"] == "3.1.0"
    for route in central.app.router.routes():
        path = documented_path(route.resource.canonical)
        assert route.method.lower() in doc["paths"].get(path, {}), f"{route.method} {path} undocumented"
    documented = {(m.upper(), p) for p, item in doc["paths"].items() for m in item}
    registered = {(s.method, s.path) for s in central.app[SPECS_KEY]}
    assert documented == registered


async def test_openapi_document_describes_auth_bodies_and_errors(central):
    _status, doc = await central.call("GET", "/api/openapi.json")
    assert set(doc["components"]["securitySchemes"]) == {"TokenAuth", "BearerAuth"}
    assert "requires" in doc["info"]["description"]  # says that queue/piles/parameters need a token
    register = doc["paths"]["/api/auth/register/"]["post"]
    assert register["security"] == [] and "requestBody" in register and "201" in register["responses"]
    submit = doc["paths"]["/api/charging/request/"]["post"]
    assert {"400", "401", "409", "500"} <= set(submit["responses"])
    assert "QUEUE_FULL" in submit["responses"]["409"]["description"]
    operator = doc["paths"]["/api/charging/admin/reports/"]["get"]
    assert "403" in operator["responses"] and [p["name"] for p in operator["parameters"]] == [
        "period",
        "date",
        "station",
    ]
    read = doc["paths"]["/api/charging/notifications/{notification_id}/read/"]["put"]
    assert [p["name"] for p in read["parameters"]] == ["notification_id"]


async def dummy(request):
    raise NotImplementedError


def test_another_api_merges_its_paths_into_the_same_document():
    spec = RouteSpec("GET", "/api/ChargingStations", dummy, "stations", Access.STAFF, "stations", USER_STYLE)
    doc = build_document([spec], {"/api/Extra": {"get": {"summary": "hand-written"}}})
    assert set(doc["paths"]) == {"/api/ChargingStations", "/api/Extra"}
    with pytest.raises(ValueError, match="defined twice"):
        merge_paths(doc, {"/api/Extra": {"get": {}}})
    merge_paths(doc, {"/api/Extra": {"post": {"summary": "another method"}}})
    assert set(doc["paths"]["/api/Extra"]) == {"get", "post"}
