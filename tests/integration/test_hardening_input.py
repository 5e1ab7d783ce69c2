"""Hostile and careless input on both REST APIs: pathological JSON, dates past the calendar, control
characters in text. Each answers 400 naming what is wrong, never 500."""

from __future__ import annotations

from typing import Any

import pytest

pytest.register_assert_rewrite("tests.integration.platform_fixtures")

from central.web.operator_api import OPERATOR_ROUTES  # noqa: E402
from central.web.platform import accounts, orders, stations  # noqa: E402
from central.web.user_api import USER_ROUTES  # noqa: E402
from tests.integration.platform_fixtures import Account, Central, invalid  # noqa: E402

pytest_plugins = ("tests.integration.platform_fixtures",)

NESTED = "[" * 100_000
BODY_ROUTES = [
    spec
    for spec in (*USER_ROUTES, *OPERATOR_ROUTES, *stations.ROUTES, *accounts.ROUTES, *orders.ROUTES)
    if spec.method in {"POST", "PUT", "PATCH"}
]


def concrete(path: str) -> str:
    return (
        path.replace("{", "")
        .replace("}", "")
        .replace("request_id", "1")
        .replace("Id", "1")
        .replace("id", "1")
    )


async def raw_call(
    platform: Central, method: str, path: str, data: str, user: Account | None
) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json", **(user.headers if user else {})}
    async with platform.client.request(method, path, data=data, headers=headers) as response:
        return response.status, await response.json(content_type=None)


@pytest.mark.parametrize("spec", BODY_ROUTES, ids=lambda s: f"{s.method} {s.path}")
async def test_deeply_nested_json_is_refused_as_a_bad_body(
    platform: Central, super_admin: Account, spec: Any
) -> None:
    status, body = await raw_call(platform, spec.method, concrete(spec.path), NESTED, super_admin)
    assert status < 500, (status, body)


@pytest.mark.parametrize("path", ["/api/auth/login/", "/api/auth/register/"])
async def test_nested_json_on_the_open_driver_routes_names_the_body(platform: Central, path: str) -> None:
    status, body = await raw_call(platform, "POST", path, NESTED, None)
    assert status == 400 and "body" in body["error"]["details"], body


async def test_nested_json_on_the_platform_login_names_the_body(platform: Central) -> None:
    invalid(await raw_call(platform, "POST", "/api/Users/login", NESTED, None), "body")


# --- dates -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ("startDate=0001-01-01&endDate=9999-12-31", "startDate"),
        ("endDate=9999-12-31", "endDate"),
        ("startDate=0001-01-01", "startDate"),
    ],
)
async def test_statistics_dates_out_of_range_name_the_parameter(
    platform: Central, admin_user: Account, query: str, name: str
) -> None:
    invalid(await platform.call("GET", f"/api/Orders/statistics?{query}", user=admin_user), name)


async def test_paged_orders_refuse_far_dates(platform: Central, admin_user: Account) -> None:
    invalid(await platform.call("GET", "/api/Orders/paged?endDate=9999-12-31", user=admin_user), "endDate")


@pytest.mark.parametrize("day", ["9999-12-31", "0001-01-01"])
@pytest.mark.parametrize("period", ["day", "week", "month"])
async def test_pile_report_far_dates_name_the_date(
    platform: Central, admin_user: Account, day: str, period: str
) -> None:
    status, body = await platform.call(
        "GET", f"/api/charging/admin/reports/?period={period}&date={day}", user=admin_user
    )
    assert status == 400 and "date" in body["error"]["details"], (status, body)


async def test_pile_report_of_an_ordinary_date_still_answers(platform: Central, admin_user: Account) -> None:
    status, body = await platform.call(
        "GET", "/api/charging/admin/reports/?period=month&date=2025-06-02", user=admin_user
    )
    assert status == 200, body


# --- control characters ------------------------------------------------------------------------------

CONTROLS = ["\x00", "\x01", "\x1b", "\x7f", "\r"]


@pytest.mark.parametrize("char", CONTROLS, ids=repr)
@pytest.mark.parametrize("field", ["username", "password", "email", "phone"])
async def test_driver_registration_refuses_control_characters(
    platform: Central, field: str, char: str
) -> None:
    fields = {
        "username": "newdriver",
        "password": "good-password-1",
        "email": "a@example.com",
        "phone": "123456",
    }
    fields[field] = fields[field][:3] + char + fields[field][3:]
    status, body = await platform.call("POST", "/api/auth/register/", json=fields)
    assert status == 400 and field in body["error"]["details"], (status, body)
    assert "control" in body["error"]["details"][field]


async def test_driver_login_refuses_a_nul_in_the_password(platform: Central, normal_user: Account) -> None:
    status, body = await platform.call(
        "POST", "/api/auth/login/", json={"username": normal_user.username, "password": "ab\x00cdef"}
    )
    assert status == 400 and "password" in body["error"]["details"], (status, body)


@pytest.mark.parametrize("field", ["recipientName", "province", "city", "district", "detailAddress", "tag"])
async def test_address_fields_refuse_nul(platform: Central, normal_user: Account, field: str) -> None:
    address = {
        "recipientName": "张三",
        "province": "北京",
        "city": "北京",
        "district": "海淀",
        "detailAddress": "中关村 1 号",
        "tag": "家",
        "recipientPhone": "13800000000",
    }
    address[field] = address[field] + "\x00"
    errors = invalid(
        await platform.call(
            "POST", f"/api/UserAddresses/{normal_user.user_id}", user=normal_user, json=address
        ),
        field,
    )
    assert "control" in errors[field][0]


@pytest.mark.parametrize("field", ["nickname", "email", "password"])
async def test_platform_user_fields_refuse_nul(platform: Central, admin_user: Account, field: str) -> None:
    user = {"openId": "carol", "password": "good-password-1", "nickname": "carol", "email": "c@example.com"}
    user[field] = user[field] + "\x00"
    invalid(await platform.call("POST", "/api/Users", user=admin_user, json=user), field)


async def test_platform_login_refuses_nul(platform: Central) -> None:
    invalid(
        await platform.call("POST", "/api/Users/login", json={"openId": "a\x00b", "password": "x"}), "openId"
    )


async def test_station_name_refuses_nul(platform: Central, admin_user: Account) -> None:
    invalid(
        await platform.call("POST", "/api/ChargingStations", user=admin_user, json={"name": "站\x00"}), "name"
    )


async def test_notification_content_keeps_newlines_and_tabs(
    platform: Central, admin_user: Account, normal_user: Account
) -> None:
    note = {"userId": normal_user.user_id, "title": "通知", "content": "第一行\n\t第二行", "type": 1}
    status, body = await platform.call("POST", "/api/UserNotifications", user=admin_user, json=note)
    assert status in (200, 201), body
    note["content"] = "第一行\x00"
    invalid(await platform.call("POST", "/api/UserNotifications", user=admin_user, json=note), "content")
    note["content"], note["title"] = "ok", "a\nb"
    invalid(await platform.call("POST", "/api/UserNotifications", user=admin_user, json=note), "title")
