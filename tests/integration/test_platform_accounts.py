"""Operator platform API accounts: tokens on every route, one account across both APIs, the OpenAPI
document, and section 6 (/api/UserAddresses)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from central.web.permissions import Access
from central.web.platform import accounts

pytest.register_assert_rewrite("tests.integration.platform_fixtures")
from tests.integration.platform_fixtures import invalid, problem  # noqa: E402

pytest_plugins = ("tests.integration.platform_fixtures",)

GUARDED = [spec for spec in accounts.ROUTES if spec.access is not Access.PUBLIC]


def concrete(path: str, value: str = "1") -> str:
    return re.sub(r"\{\w+\}", value, path)


# --- tokens ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", GUARDED, ids=lambda s: f"{s.method} {s.path}")
async def test_every_guarded_route_is_401_without_a_token(platform, spec):
    status, body = await platform.call(spec.method, concrete(spec.path), json={})
    assert problem((status, body), 401)["title"] == "Unauthorized"
    status, body = await platform.call(
        spec.method, concrete(spec.path), headers={"Authorization": "Token nope"}
    )
    problem((status, body), 401)


@pytest.mark.parametrize(
    "spec", [s for s in GUARDED if s.access is Access.STAFF], ids=lambda s: f"{s.method} {s.path}"
)
async def test_every_admin_route_is_403_for_a_normal_user(platform, normal_user, spec):
    status, body = await platform.call(spec.method, concrete(spec.path), user=normal_user, json={})
    problem((status, body), 403)


PATH_PARAMETERS = [(spec, name) for spec in accounts.ROUTES for name in re.findall(r"\{(\w+)\}", spec.path)]


@pytest.mark.parametrize(
    ("spec", "name"), PATH_PARAMETERS, ids=lambda v: v if isinstance(v, str) else f"{v.method} {v.path}"
)
async def test_a_non_integer_path_parameter_is_400_naming_it(platform, super_admin, spec, name):
    path = re.sub(r"\{(\w+)\}", lambda m: "x1" if m[1] == name else "1", spec.path)
    errors = invalid(await platform.call(spec.method, path, user=super_admin, json={}), name)
    assert list(errors) == [name]


def test_the_route_table_holds_sections_3_5_6_7():
    routes = {(s.method, s.path) for s in accounts.ROUTES}
    assert len(routes) == len(accounts.ROUTES) == 36
    assert {s.tag for s in accounts.ROUTES} == {"Users", "UserRoles", "UserAddresses", "UserNotifications"}
    assert ("PUT", "/api/UserAddresses/{userId}/default/{addressId}") in routes
    assert ("GET", "/api/UserRoles/checkPermission/{userId}/{permissionLevel}") in routes


def resolved(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """``schema``, or the component its ``$ref`` names."""
    ref = schema.get("$ref")
    return doc["components"]["schemas"][ref.removeprefix("#/components/schemas/")] if ref else schema


async def test_openapi_documents_every_accounts_route_in_problem_style(platform):
    status, doc = await platform.call("GET", "/api/openapi.json")
    assert status == 200
    for spec in accounts.ROUTES:
        op = doc["paths"][spec.path][spec.method.lower()]
        assert op["tags"] == [spec.tag] and str(spec.status) in op["responses"]
        if spec.method in ("POST", "PUT") and spec.request_body is not None:
            body = op["requestBody"]["content"]["application/json"]["schema"]
            assert resolved(doc, body)["type"] == "object"
        if spec.access is not Access.PUBLIC:
            assert op["responses"]["401"]["content"]["application/json"]["schema"]["$ref"].endswith(
                "platform_error"
            )
    assert doc["paths"]["/api/Users/login"]["post"]["security"] == []


# --- one account, two APIs ---------------------------------------------------------------------------


async def test_a_driver_registered_on_the_user_api_logs_in_here(platform, admin_user):
    register = {"username": "driver9", "password": "drive-pw-9", "email": "d9@example.com"}
    status, body = await platform.call("POST", "/api/auth/register/", json=register)
    assert status == 201
    user_id = body["data"]["user_id"]
    status, login = await platform.call(
        "POST", "/api/Users/login", json={"openId": "driver9", "password": "drive-pw-9"}
    )
    assert status == 200 and login["id"] == user_id
    status, user = await platform.call(
        "GET", f"/api/Users/{user_id}", headers={"Authorization": f"Bearer {login['token']}"}
    )
    assert status == 200 and (user["openId"], user["email"]) == ("driver9", "d9@example.com")
    _status, users = await platform.call("GET", "/api/Users", user=admin_user)
    assert "driver9" in {u["openId"] for u in users}


async def test_a_user_created_here_logs_in_on_the_user_api(platform, admin_user):
    status, body = await platform.call(
        "POST", "/api/Users", user=admin_user, json={"openId": "ops_made", "password": "made-pw-1"}
    )
    assert status == 201
    status, login = await platform.call(
        "POST", "/api/auth/login/", json={"username": "ops_made", "password": "made-pw-1"}
    )
    assert status == 200 and login["data"]["user_id"] == body["id"]
    status, profile = await platform.call(
        "GET", "/api/auth/profile/", headers={"Authorization": f"Token {login['data']['token']}"}
    )
    assert status == 200 and profile["data"]["username"] == "ops_made"
    status, own = await platform.call(
        "GET", f"/api/Users/{body['id']}", headers={"Authorization": f"Token {login['data']['token']}"}
    )
    assert status == 200 and own["lastLoginTime"] is not None


# --- addresses ---------------------------------------------------------------------------------------

ADDR = "/api/UserAddresses"
HOME = {
    "recipientName": "张三",
    "recipientPhone": "13800138000",
    "province": "广东省",
    "city": "深圳市",
    "district": "南山区",
    "detailAddress": "科技园路1号",
    "postalCode": "518000",
    "isDefault": True,
    "tag": "公司",
}
OFFICE = {
    **HOME,
    "recipientName": "李四",
    "district": "福田区",
    "detailAddress": "福中路1号",
    "isDefault": False,
    "tag": "家",
}


async def add_address(platform, actor, user_id, body):
    status, reply = await platform.call("POST", f"{ADDR}/{user_id}", user=actor, json=body)
    assert status == 201, reply
    return reply["id"]


async def addresses(platform, actor, user_id):
    status, body = await platform.call("GET", f"{ADDR}/byUser/{user_id}", user=actor)
    assert status == 200, body
    return body


async def test_create_and_read_an_address_in_the_spec_shape(platform, normal_user):
    address_id = await add_address(platform, normal_user, normal_user.user_id, HOME)
    status, body = await platform.call("GET", f"{ADDR}/{address_id}", user=normal_user)
    assert status == 200
    assert body["fullAddress"] == "广东省深圳市南山区科技园路1号"
    assert {k: body[k] for k in HOME} == HOME
    assert (body["userId"], body["createTime"], body["updateTime"]) == (
        normal_user.user_id,
        "2025-06-02T02:00:00Z",
        "2025-06-02T02:00:00Z",
    )
    assert await platform.call("GET", f"{ADDR}/default/{normal_user.user_id}", user=normal_user) == (
        200,
        body,
    )


async def test_the_first_address_is_the_default_and_one_default_remains(platform, normal_user):
    first = await add_address(platform, normal_user, normal_user.user_id, {**OFFICE, "isDefault": False})
    second = await add_address(platform, normal_user, normal_user.user_id, OFFICE)
    third = await add_address(platform, normal_user, normal_user.user_id, HOME)  # isDefault true
    listed = await addresses(platform, normal_user, normal_user.user_id)
    assert [(a["id"], a["isDefault"]) for a in listed] == [(third, True), (first, False), (second, False)]
    path = f"{ADDR}/{normal_user.user_id}/default/{second}"
    assert await platform.call("PUT", path, user=normal_user) == (204, None)
    defaults = [
        a["id"] for a in await addresses(platform, normal_user, normal_user.user_id) if a["isDefault"]
    ]
    assert defaults == [second]


async def test_update_replaces_fields_and_can_take_the_default(platform, normal_user):
    home = await add_address(platform, normal_user, normal_user.user_id, HOME)
    office = await add_address(platform, normal_user, normal_user.user_id, OFFICE)
    changed = {**OFFICE, "detailAddress": "深南大道2号", "district": None, "isDefault": True}
    assert await platform.call("PUT", f"{ADDR}/{office}", user=normal_user, json=changed) == (204, None)
    _status, body = await platform.call("GET", f"{ADDR}/{office}", user=normal_user)
    assert (body["fullAddress"], body["isDefault"]) == ("广东省深圳市深南大道2号", True)
    _status, old = await platform.call("GET", f"{ADDR}/{home}", user=normal_user)
    assert old["isDefault"] is False
    keep = {**HOME, "isDefault": False}  # un-defaulting the default keeps it: set another instead
    assert (await platform.call("PUT", f"{ADDR}/{office}", user=normal_user, json=keep))[0] == 204
    _status, body = await platform.call("GET", f"{ADDR}/{office}", user=normal_user)
    assert body["isDefault"] is True and body["tag"] == "公司"


async def test_deleting_the_default_promotes_the_newest_remaining(platform, normal_user):
    home = await add_address(platform, normal_user, normal_user.user_id, HOME)
    first = await add_address(platform, normal_user, normal_user.user_id, OFFICE)
    newest = await add_address(platform, normal_user, normal_user.user_id, OFFICE)
    assert await platform.call("DELETE", f"{ADDR}/{home}", user=normal_user) == (204, None)
    listed = await addresses(platform, normal_user, normal_user.user_id)
    assert [(a["id"], a["isDefault"]) for a in listed] == [(newest, True), (first, False)]
    problem(await platform.call("GET", f"{ADDR}/{home}", user=normal_user), 404)


async def test_address_validation_names_each_field(platform, normal_user):
    status, body = await platform.call("POST", f"{ADDR}/{normal_user.user_id}", user=normal_user, json={})
    invalid((status, body), "recipientName", "recipientPhone", "province", "city", "detailAddress")
    bad = {**HOME, "recipientPhone": "phone", "postalCode": "#", "isDefault": "yes", "tag": "x" * 21}
    status, body = await platform.call("POST", f"{ADDR}/{normal_user.user_id}", user=normal_user, json=bad)
    invalid((status, body), "recipientPhone", "postalCode", "isDefault", "tag")
    address_id = await add_address(platform, normal_user, normal_user.user_id, HOME)
    status, body = await platform.call(
        "PUT", f"{ADDR}/{address_id}", user=normal_user, json={**HOME, "city": 5}
    )
    invalid((status, body), "city")


async def test_another_users_addresses_need_an_admin(platform, normal_user, other_user, admin_user):
    theirs = await add_address(platform, other_user, other_user.user_id, HOME)
    attempts = [
        ("GET", f"{ADDR}/byUser/{other_user.user_id}", None),
        ("GET", f"{ADDR}/{theirs}", None),
        ("GET", f"{ADDR}/default/{other_user.user_id}", None),
        ("POST", f"{ADDR}/{other_user.user_id}", HOME),
        ("PUT", f"{ADDR}/{theirs}", HOME),
        ("PUT", f"{ADDR}/{other_user.user_id}/default/{theirs}", None),
        ("DELETE", f"{ADDR}/{theirs}", None),
    ]
    for method, path, body in attempts:
        problem(await platform.call(method, path, user=normal_user, json=body), 403)
    for method, path, body in attempts:
        status, _reply = await platform.call(method, path, user=admin_user, json=body)
        assert status in (200, 201, 204), (method, path, status)


async def test_unknown_users_and_addresses_are_404(platform, normal_user, other_user, admin_user):
    mine = await add_address(platform, normal_user, normal_user.user_id, HOME)
    for method, path, body in [
        ("GET", f"{ADDR}/byUser/999", None),
        ("GET", f"{ADDR}/{mine + 50}", None),
        ("GET", f"{ADDR}/default/{other_user.user_id}", None),  # no address yet
        ("POST", f"{ADDR}/999", HOME),
        ("PUT", f"{ADDR}/{mine + 50}", HOME),
        ("DELETE", f"{ADDR}/{mine + 50}", None),
        ("PUT", f"{ADDR}/{other_user.user_id}/default/{mine}", None),  # not bob's address
    ]:
        problem(await platform.call(method, path, user=admin_user, json=body), 404)
    invalid(await platform.call("GET", f"{ADDR}/abc", user=admin_user), "id")
