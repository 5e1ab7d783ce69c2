"""User API accounts and the request boundary: register, login (throttled), logout, profile; tokens on
every route; the one envelope (pinned here) for success and every error.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from central.web.errors import ApiError
from central.web.openapi import RouteSpec, register_routes
from central.web.operator_api import OPERATOR_ROUTES
from central.web.permissions import Access
from central.web.user_api import USER_ROUTES

pytest_plugins = ("tests.integration.central_fixtures",)

PROTECTED = [s for s in (*USER_ROUTES, *OPERATOR_ROUTES) if s.access is not Access.PUBLIC]


def concrete(path: str) -> str:
    return re.sub(r"\{\w+\}", "1", path)


def route_id(spec: RouteSpec) -> str:
    return f"{spec.method} {spec.path}"


# --- the envelope ----------------------------------------------------------------------------------


async def test_envelope_shape_is_pinned(central, driver):
    status, body = await central.call("GET", "/api/auth/profile/", user=driver)
    assert status == 200 and set(body) == {"success", "data"} and body["success"] is True
    status, body = await central.call("POST", "/api/auth/logout/", user=driver)
    assert status == 200 and body == {"success": True, "message": "登出成功"}
    status, body = await central.call("GET", "/api/auth/profile/")
    assert status == 401
    assert body == {
        "success": False,
        "error": {"code": "AUTH_REQUIRED", "message": body["error"]["message"], "details": None},
    }
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    status, body = await central.call("POST", "/api/auth/register/", json={})
    assert (
        status == 400
        and set(body) == {"success", "error"}
        and set(body["error"]) == {"code", "message", "details"}
    )
    assert body["error"]["code"] == "VALIDATION_ERROR" and body["error"]["details"] == {
        "username": "required",
        "password": "required",
    }


async def test_unexpected_exception_is_system_error_without_a_trace():
    async def boom(request: web.Request) -> web.StreamResponse:
        raise ZeroDivisionError("secret internals")

    async def refuse(request: web.Request) -> web.StreamResponse:
        raise ApiError(409, "QUEUE_FULL")

    app = web.Application()
    register_routes(
        app,
        [
            RouteSpec("GET", "/api/boom/", boom, "x", Access.PUBLIC),
            RouteSpec("GET", "/api/full/", refuse, "x", Access.PUBLIC),
        ],
    )
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
        response = await client.get("/api/boom/")
        text = await response.text()
        full = await (await client.get("/api/full")).json()
    assert response.status == 500
    assert '"SYSTEM_ERROR"' in text and "secret internals" not in text and "Traceback" not in text
    assert full == {
        "success": False,
        "error": {"code": "QUEUE_FULL", "message": "等候区已满", "details": None},
    }


async def test_unknown_api_path_is_resource_not_found_in_the_envelope(central):
    status, body = await central.call("GET", "/api/charging/nothing-here/")
    assert status == 404 and body["error"]["code"] == "RESOURCE_NOT_FOUND"


async def test_wrong_method_is_405_naming_the_allowed_ones(central, driver):
    status, body = await central.call("PATCH", "/api/auth/profile/", user=driver)
    assert status == 405 and body["error"]["code"] == "VALIDATION_ERROR"
    assert "GET" in body["error"]["details"]["method"]


async def test_path_without_trailing_slash_is_the_same_route(central, driver):
    slashed = await central.call("GET", "/api/auth/profile/", user=driver)
    bare = await central.call("GET", "/api/auth/profile", user=driver)
    assert slashed == bare and slashed[0] == 200


# --- tokens on every route -------------------------------------------------------------------------


@pytest.mark.parametrize("spec", PROTECTED, ids=route_id)
async def test_every_protected_route_needs_a_token(central, spec):
    status, body = await central.call(spec.method, concrete(spec.path))
    assert (status, body["error"]["code"]) == (401, "AUTH_REQUIRED")


@pytest.mark.parametrize("spec", PROTECTED, ids=route_id)
async def test_every_protected_route_refuses_a_bad_token(central, spec):
    headers = {"Authorization": "Token not-a-real-token"}
    status, body = await central.call(spec.method, concrete(spec.path), headers=headers)
    assert (status, body["error"]["code"]) == (401, "AUTH_INVALID")


@pytest.mark.parametrize("header", ["Basic dXNlcjpwdw==", "Token", "Token    ", "tokenabc"])
async def test_malformed_authorization_header_is_auth_invalid(central, header):
    status, body = await central.call("GET", "/api/auth/profile/", headers={"Authorization": header})
    assert (status, body["error"]["code"]) == (401, "AUTH_INVALID")


async def test_bearer_and_token_schemes_both_work(central, driver):
    for scheme in ("Bearer", "Token", "bearer"):
        headers = {"Authorization": f"{scheme} {driver.token}"}
        status, body = await central.call("GET", "/api/auth/profile/", headers=headers)
        assert status == 200 and body["data"]["username"] == "driver1"


async def test_expired_token_is_refused(central, driver):
    central.wall.advance(timedelta(days=7).total_seconds())
    status, body = await central.call("GET", "/api/auth/profile/", user=driver)
    assert (status, body["error"]["code"]) == (401, "AUTH_INVALID")
    assert "expired" in body["error"]["message"]


async def test_disabled_account_token_is_refused(central, driver):
    await central.store.write(
        lambda db: db.execute("UPDATE users SET status = 0 WHERE id = ?", [driver.user_id])
    )
    status, body = await central.call("GET", "/api/auth/profile/", user=driver)
    assert (status, body["error"]["code"]) == (401, "AUTH_INVALID")


@pytest.mark.parametrize("spec", [s for s in OPERATOR_ROUTES], ids=route_id)
async def test_operator_routes_refuse_drivers(central, driver, spec):
    status, body = await central.call(spec.method, concrete(spec.path), user=driver, json={})
    assert (status, body["error"]["code"]) == (403, "PERMISSION_DENIED")


# --- register --------------------------------------------------------------------------------------


async def test_register_returns_a_token_that_works(central):
    body = {
        "username": "newbie",
        "password": "pw-123456",
        "email": "n@example.com",
        "phone": "+86 138-0000-0000",
    }
    status, reply = await central.call("POST", "/api/auth/register/", json=body)
    assert status == 201 and reply["message"] == "注册成功"
    assert set(reply["data"]) == {"user_id", "username", "token"} and reply["data"]["username"] == "newbie"
    headers = {"Authorization": f"Token {reply['data']['token']}"}
    status, profile = await central.call("GET", "/api/auth/profile/", headers=headers)
    assert profile["data"] == {
        "id": reply["data"]["user_id"],
        "username": "newbie",
        "email": "n@example.com",
        "phone": "+86 138-0000-0000",
        "is_staff": False,
    }


async def test_register_taken_username_is_a_validation_error(central, driver):
    status, body = await central.call(
        "POST", "/api/auth/register/", json={"username": "DRIVER1", "password": "pw-123456"}
    )
    assert status == 400 and body["error"]["details"] == {"username": "already taken"}


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"username": 5, "password": ["x"]}, {"username", "password"}),
        ({"username": "ab", "password": "pw-123456"}, {"username"}),
        ({"username": "good_name", "password": "short"}, {"password"}),
        ({"username": "good_name", "password": "pw-123456", "email": "nope"}, {"email"}),
        ({"username": "good_name", "password": "pw-123456", "phone": 13800000000}, {"phone"}),
    ],
)
async def test_register_names_each_bad_field(central, body, fields):
    status, reply = await central.call("POST", "/api/auth/register/", json=body)
    assert status == 400 and reply["error"]["code"] == "VALIDATION_ERROR"
    assert set(reply["error"]["details"]) == fields


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"", b"\xff\xfe", b'"text"'])
async def test_register_with_a_body_that_is_not_a_json_object_is_refused(central, raw):
    status, reply = await central.call(
        "POST", "/api/auth/register/", data=raw, headers={"Content-Type": "application/json"}
    )
    assert status == 400 and set(reply["error"]["details"]) == {"body"}


# --- login / logout / profile ----------------------------------------------------------------------


async def test_login_returns_token_and_staff_flag(central, driver, staff):
    for account, is_staff in ((driver, False), (staff, True)):
        status, body = await central.call(
            "POST", "/api/auth/login/", json={"username": account.username, "password": account.password}
        )
        assert status == 200 and body["message"] == "登录成功"
        assert body["data"]["is_staff"] is is_staff and body["data"]["user_id"] == account.user_id
        assert body["data"]["token"] != account.token


async def test_login_with_a_wrong_password_is_auth_invalid(central, driver):
    status, body = await central.call(
        "POST", "/api/auth/login/", json={"username": "driver1", "password": "wrong-pw"}
    )
    assert (status, body["error"]["code"]) == (401, "AUTH_INVALID")
    status, body = await central.call(
        "POST", "/api/auth/login/", json={"username": "ghost", "password": "wrong-pw"}
    )
    assert (status, body["error"]["code"]) == (401, "AUTH_INVALID")


async def test_login_names_missing_fields(central):
    status, body = await central.call("POST", "/api/auth/login/", json={"password": 1})
    assert status == 400 and set(body["error"]["details"]) == {"username", "password"}


async def test_sixth_failed_login_is_throttled_even_with_the_right_password(central, driver):
    for _ in range(5):
        status, _body = await central.call(
            "POST", "/api/auth/login/", json={"username": "driver1", "password": "bad-pw-1"}
        )
        assert status == 401
    async with central.client.post(
        "/api/auth/login/", json={"username": "driver1", "password": driver.password}
    ) as response:
        body = await response.json()
        assert response.status == 429 and int(response.headers["Retry-After"]) > 0
    assert body["error"]["code"] == "AUTH_INVALID" and body["error"]["details"]["retry_after_s"] > 0
    assert "秒后重试" in body["error"]["message"]


async def test_logout_revokes_only_that_token(central, driver):
    status, body = await central.call(
        "POST", "/api/auth/login/", json={"username": "driver1", "password": driver.password}
    )
    second = {"Authorization": f"Bearer {body['data']['token']}"}
    status, body = await central.call("POST", "/api/auth/logout/", user=driver)
    assert status == 200 and body["message"] == "登出成功"
    status, body = await central.call("GET", "/api/auth/profile/", user=driver)
    assert (status, body["error"]["code"]) == (401, "AUTH_INVALID")
    status, _body = await central.call("GET", "/api/auth/profile/", headers=second)
    assert status == 200


async def test_profile_of_staff_says_is_staff(central, staff):
    status, body = await central.call("GET", "/api/auth/profile/", user=staff)
    assert status == 200
    assert body["data"]["is_staff"] is True and body["data"]["email"] == "operator@example.com"
