"""Operator platform API, section 3 (/api/Users): list, paging, CRUD, login, password, balance top-up,
against a real app serving both APIs over one store."""

from __future__ import annotations

import asyncio

import pytest

pytest.register_assert_rewrite("tests.integration.platform_fixtures")
from tests.integration.platform_fixtures import invalid, problem  # noqa: E402

pytest_plugins = ("tests.integration.platform_fixtures",)

USER_FIELDS = {
    "id",
    "openId",
    "nickname",
    "avatar",
    "phone",
    "email",
    "balance",
    "registerTime",
    "lastLoginTime",
    "status",
    "statusDescription",
}


async def get_user(platform, actor, user_id):
    return await platform.call("GET", f"/api/Users/{user_id}", user=actor)


async def create(platform, actor, **body):
    return await platform.call("POST", "/api/Users", user=actor, json={"password": "secret-pw-1", **body})


# --- reading -----------------------------------------------------------------------------------------


async def test_admin_lists_every_user_in_the_spec_shape(platform, normal_user, admin_user):
    status, body = await platform.call("GET", "/api/Users", user=admin_user)
    assert status == 200
    assert [u["openId"] for u in body] == ["alice", "admin3"]
    alice = body[0]
    assert set(alice) >= USER_FIELDS
    assert (alice["id"], alice["balance"], alice["status"], alice["statusDescription"]) == (
        normal_user.user_id,
        0.0,
        1,
        "正常",
    )
    assert alice["registerTime"] == "2025-06-02T02:00:00Z"
    assert (body[1]["permissionLevel"], body[1]["permissionLevelDescription"]) == (3, "管理员")


async def test_a_normal_user_may_not_list_users(platform, normal_user):
    status, body = await platform.call("GET", "/api/Users", user=normal_user)
    problem((status, body), 403)
    status, body = await platform.call("GET", "/api/Users/paged", user=normal_user)
    problem((status, body), 403)


async def test_a_user_reads_their_own_record_but_not_another(platform, normal_user, other_user):
    status, body = await get_user(platform, normal_user, normal_user.user_id)
    assert status == 200 and body["openId"] == "alice" and body["email"] == "alice@example.com"
    status, body = await get_user(platform, normal_user, other_user.user_id)
    assert "bob" not in str(problem((status, body), 403))


async def test_admin_reads_any_user_and_gets_404_for_an_unknown_id(platform, other_user, admin_user):
    status, body = await get_user(platform, admin_user, other_user.user_id)
    assert status == 200 and body["openId"] == "bob"
    for missing in (999, 2**63, 0):
        status, body = await get_user(platform, admin_user, missing)
        problem((status, body), 404)


async def test_a_non_integer_user_id_is_400_naming_id(platform, admin_user):
    status, body = await platform.call("GET", "/api/Users/abc", user=admin_user)
    invalid((status, body), "id")


# --- paging ------------------------------------------------------------------------------------------


@pytest.fixture
async def twelve_users(platform):
    for i in range(12):
        await platform.user(f"user{i:02d}")


async def paged(platform, actor, query):
    return await platform.call("GET", f"/api/Users/paged?{query}", user=actor)


async def test_paging_defaults_to_ten_per_page_with_totals(platform, admin_user, twelve_users):
    status, body = await paged(platform, admin_user, "")
    assert status == 200
    assert {k: body[k] for k in ("pageNumber", "pageSize", "totalCount", "totalPages")} == {
        "pageNumber": 1,
        "pageSize": 10,
        "totalCount": 13,
        "totalPages": 2,
    }
    assert (body["hasPrevious"], body["hasNext"], len(body["items"])) == (False, True, 10)
    status, body = await paged(platform, admin_user, "pageNumber=2")
    assert (body["hasPrevious"], body["hasNext"], len(body["items"])) == (True, False, 3)


async def test_a_page_past_the_end_is_empty_with_correct_totals(platform, admin_user, twelve_users):
    for page in (3, 10**15):
        status, body = await paged(platform, admin_user, f"pageNumber={page}")
        assert status == 200 and body["items"] == []
        assert (body["totalCount"], body["totalPages"], body["hasNext"]) == (13, 2, False)


async def test_page_size_zero_is_400_and_a_huge_one_is_clamped_to_100(platform, admin_user, twelve_users):
    status, body = await paged(platform, admin_user, "pageSize=0")
    invalid((status, body), "pageSize")
    status, body = await paged(platform, admin_user, "pageSize=-5")
    invalid((status, body), "pageSize")
    status, body = await paged(platform, admin_user, "pageNumber=0")
    invalid((status, body), "pageNumber")
    status, body = await paged(platform, admin_user, "pageSize=1000")
    assert status == 200 and body["pageSize"] == 100 and len(body["items"]) == 13


async def test_keyword_matches_open_id_nickname_phone_or_email(platform, admin_user, twelve_users):
    await create(platform, admin_user, openId="carol", nickname="小明", phone="13900001111")
    await create(platform, admin_user, openId="dave", email="dave@fleet.example.org")
    for keyword, expected in (("user0", 10), ("小明", 1), ("0000111", 1), ("FLEET", 1), ("nobody", 0)):
        status, body = await paged(platform, admin_user, f"keyword={keyword}&pageSize=100")
        assert status == 200 and body["totalCount"] == expected, (keyword, body)


async def test_keyword_wildcards_are_literal(platform, admin_user, twelve_users):
    status, body = await paged(platform, admin_user, "keyword=%25")
    assert status == 200 and body["totalCount"] == 0
    status, body = await paged(platform, admin_user, "keyword=_")
    assert status == 200 and body["totalCount"] == 0


async def test_status_filter_and_a_bad_status_names_status(platform, admin_user, other_user, twelve_users):
    await platform.call("PUT", f"/api/Users/{other_user.user_id}", user=admin_user, json={"status": 0})
    status, body = await paged(platform, admin_user, "status=0")
    assert status == 200 and [u["openId"] for u in body["items"]] == ["bob"]
    assert body["items"][0]["statusDescription"] == "禁用"
    status, body = await paged(platform, admin_user, "status=1")
    assert body["totalCount"] == 13
    status, body = await paged(platform, admin_user, "status=7")
    invalid((status, body), "status")


# --- create ------------------------------------------------------------------------------------------


async def test_admin_creates_a_user_who_appears_with_the_given_fields(platform, admin_user):
    status, body = await create(
        platform,
        admin_user,
        openId="wx_o1",
        nickname="张三",
        phone="13800138000",
        email="z@example.com",
        avatar="https://img.example.com/a.png",
        gender=1,
    )
    assert status == 201 and isinstance(body["id"], int)
    _status, user = await get_user(platform, admin_user, body["id"])
    assert (user["openId"], user["nickname"], user["phone"], user["email"]) == (
        "wx_o1",
        "张三",
        "13800138000",
        "z@example.com",
    )
    assert (user["avatar"], user["gender"], user["genderDescription"]) == (
        "https://img.example.com/a.png",
        1,
        "男",
    )
    assert (user["balance"], user["status"], user["permissionLevel"]) == (0.0, 1, 1)


async def test_create_names_every_bad_field(platform, admin_user):
    status, body = await platform.call("POST", "/api/Users", user=admin_user, json={})
    invalid((status, body), "openId", "password")
    status, body = await create(platform, admin_user, openId="ok_name", email="nope", gender=9, password="x")
    invalid((status, body), "email", "gender", "password")
    status, body = await create(platform, admin_user, openId="a b")
    invalid((status, body), "openId")
    status, body = await platform.call("POST", "/api/Users", user=admin_user, data=b"[1]")
    invalid((status, body), "body")


async def test_a_taken_open_id_is_a_400_naming_only_open_id(platform, admin_user, normal_user):
    status, body = await create(platform, admin_user, openId="ALICE")  # taken case-insensitively
    errors = invalid((status, body), "openId")
    assert list(errors) == ["openId"] and "taken" in errors["openId"][0]
    _status, everyone = await platform.call("GET", "/api/Users", user=admin_user)
    assert [user["openId"].lower() for user in everyone].count("alice") == 1


async def test_a_normal_user_may_not_create_users(platform, normal_user):
    status, body = await create(platform, normal_user, openId="sneaky")
    problem((status, body), 403)


# --- update ------------------------------------------------------------------------------------------


async def test_a_user_changes_their_own_profile(platform, normal_user):
    changes = {"nickname": "阿丽", "avatar": "a.png", "phone": "+86 139-0000", "email": None, "gender": 2}
    status, body = await platform.call(
        "PUT", f"/api/Users/{normal_user.user_id}", user=normal_user, json=changes
    )
    assert status == 204 and body is None
    _status, user = await get_user(platform, normal_user, normal_user.user_id)
    assert (user["nickname"], user["avatar"], user["phone"], user["email"]) == (
        "阿丽",
        "a.png",
        "+86 139-0000",
        None,
    )
    assert user["genderDescription"] == "女"


async def test_a_user_may_not_change_their_own_status_or_another_user(platform, normal_user, other_user):
    own = f"/api/Users/{normal_user.user_id}"
    status, body = await platform.call("PUT", own, user=normal_user, json={"status": 0})
    problem((status, body), 403)
    status, _body = await platform.call("PUT", own, user=normal_user, json={"status": 1, "nickname": "x"})
    assert status == 204  # sending the unchanged status back is fine
    status, body = await platform.call(
        "PUT", f"/api/Users/{other_user.user_id}", user=normal_user, json={"nickname": "pwned"}
    )
    problem((status, body), 403)


async def test_a_disabled_user_loses_both_apis(platform, admin_user, other_user):
    status, _body = await platform.call(
        "PUT", f"/api/Users/{other_user.user_id}", user=admin_user, json={"status": 0}
    )
    assert status == 204
    status, body = await platform.call("GET", "/api/auth/profile/", user=other_user)
    assert status == 401 and body["success"] is False
    status, body = await get_user(platform, other_user, other_user.user_id)
    problem((status, body), 401)
    status, body = await platform.call(
        "POST", "/api/Users/login", json={"openId": "bob", "password": other_user.password}
    )
    problem((status, body), 401)


async def test_update_names_bad_fields_and_404s_unknown_users(platform, admin_user, normal_user):
    own = f"/api/Users/{normal_user.user_id}"
    status, body = await platform.call("PUT", own, user=normal_user, json={"gender": "x", "phone": "call me"})
    invalid((status, body), "gender", "phone")
    status, body = await platform.call("PUT", own, user=admin_user, json={"status": 3})
    invalid((status, body), "status")
    status, body = await platform.call("PUT", "/api/Users/4242", user=admin_user, json={"nickname": "x"})
    problem((status, body), 404)


async def test_an_admin_may_not_manage_a_super_admin_nor_disable_themselves(
    platform, admin_user, super_admin
):
    path = f"/api/Users/{super_admin.user_id}"
    status, body = await platform.call("PUT", path, user=admin_user, json={"status": 0})
    problem((status, body), 403)
    status, body = await platform.call("DELETE", path, user=admin_user)
    problem((status, body), 403)
    status, body = await platform.call(
        "PUT", f"{path}/password", user=admin_user, json={"newPassword": "taken-over-1"}
    )
    problem((status, body), 403)
    status, body = await platform.call(
        "PUT", f"/api/Users/{admin_user.user_id}", user=admin_user, json={"status": 0}
    )
    problem((status, body), 409)


# --- delete ------------------------------------------------------------------------------------------


async def test_admin_deletes_a_user_with_no_history(platform, admin_user, other_user):
    path = f"/api/Users/{other_user.user_id}"
    status, body = await platform.call("DELETE", path, user=admin_user)
    assert status == 204 and body is None
    status, body = await platform.call("GET", path, user=admin_user)
    problem((status, body), 404)
    status, body = await platform.call("DELETE", path, user=admin_user)
    problem((status, body), 404)


async def test_delete_is_refused_while_the_user_has_an_active_charging_request(
    platform, admin_user, normal_user
):
    status, _body = await platform.call(
        "POST",
        "/api/charging/request/",
        user=normal_user,
        json={"charging_mode": "fast", "requested_amount": 10},
    )
    assert status == 201
    status, body = await platform.call("DELETE", f"/api/Users/{normal_user.user_id}", user=admin_user)
    assert "充电请求" in problem((status, body), 409)["detail"]
    status, _body = await get_user(platform, admin_user, normal_user.user_id)
    assert status == 200


async def test_delete_is_refused_for_a_user_with_charging_records(
    platform, admin_user, normal_user, other_user
):
    body = {"charging_mode": "fast", "requested_amount": 10}
    await platform.call("POST", "/api/charging/request/", user=other_user, json=body)  # takes the pile
    _status, reply = await platform.call("POST", "/api/charging/request/", user=normal_user, json=body)
    assert reply["data"]["current_status"] == "waiting"
    cancel = f"/api/charging/request/{reply['data']['request_id']}/cancel/"
    assert (await platform.call("DELETE", cancel, user=normal_user))[0] == 200
    status, body = await platform.call("DELETE", f"/api/Users/{normal_user.user_id}", user=admin_user)
    assert "status 0" in problem((status, body), 409)["detail"]


async def test_delete_refuses_normal_users_and_self(platform, admin_user, normal_user, other_user):
    status, body = await platform.call("DELETE", f"/api/Users/{other_user.user_id}", user=normal_user)
    problem((status, body), 403)
    status, body = await platform.call("DELETE", f"/api/Users/{admin_user.user_id}", user=admin_user)
    problem((status, body), 409)


# --- login -------------------------------------------------------------------------------------------


async def test_login_returns_a_token_for_both_apis_and_stamps_the_login_time(platform, normal_user):
    platform.wall.advance(3600)
    status, body = await platform.call(
        "POST", "/api/Users/login", json={"openId": "alice", "password": normal_user.password}
    )
    assert status == 200
    assert (body["id"], body["openId"], body["nickname"]) == (normal_user.user_id, "alice", "alice")
    bearer = {"Authorization": f"Bearer {body['token']}"}
    status, user = await platform.call("GET", f"/api/Users/{normal_user.user_id}", headers=bearer)
    assert status == 200 and user["lastLoginTime"] == "2025-06-02T03:00:00Z"
    status, profile = await platform.call("GET", "/api/auth/profile/", headers=bearer)
    assert status == 200 and profile["data"]["username"] == "alice"


async def test_login_names_missing_fields_and_rejects_a_wrong_password(platform, normal_user):
    status, body = await platform.call("POST", "/api/Users/login", json={})
    invalid((status, body), "openId", "password")
    status, body = await platform.call(
        "POST", "/api/Users/login", json={"openId": "alice", "password": "nope!!"}
    )
    problem((status, body), 401)
    status, body = await platform.call(
        "POST", "/api/Users/login", json={"openId": "ghost", "password": "nope!!"}
    )
    problem((status, body), 401)


async def test_login_failures_are_throttled_across_both_apis(platform, normal_user):
    for _ in range(3):
        await platform.call("POST", "/api/auth/login/", json={"username": "alice", "password": "wrong-1"})
    for _ in range(2):
        await platform.call("POST", "/api/Users/login", json={"openId": "alice", "password": "wrong-1"})
    status, body = await platform.call(
        "POST", "/api/Users/login", json={"openId": "alice", "password": normal_user.password}
    )
    problem((status, body), 429)


# --- password ----------------------------------------------------------------------------------------


async def login(platform, open_id, password):
    return await platform.call("POST", "/api/Users/login", json={"openId": open_id, "password": password})


async def test_a_user_changes_their_password_with_the_old_one(platform, normal_user):
    _status, other_session = await login(platform, "alice", normal_user.password)
    path = f"/api/Users/{normal_user.user_id}/password"
    body = {"oldPassword": normal_user.password, "newPassword": "brand-new-pw"}
    status, reply = await platform.call("PUT", path, user=normal_user, json=body)
    assert status == 204 and reply is None
    assert (await login(platform, "alice", "brand-new-pw"))[0] == 200
    problem(await login(platform, "alice", normal_user.password), 401)
    assert (await get_user(platform, normal_user, normal_user.user_id))[0] == 200  # this session stays
    stale = {"Authorization": f"Bearer {other_session['token']}"}
    status, reply = await platform.call("GET", f"/api/Users/{normal_user.user_id}", headers=stale)
    problem((status, reply), 401)  # other sessions end


async def test_own_password_change_needs_the_right_old_password(platform, normal_user):
    path = f"/api/Users/{normal_user.user_id}/password"
    status, body = await platform.call("PUT", path, user=normal_user, json={"newPassword": "brand-new-pw"})
    invalid((status, body), "oldPassword")
    status, body = await platform.call(
        "PUT", path, user=normal_user, json={"oldPassword": "wrong-pw", "newPassword": "brand-new-pw"}
    )
    invalid((status, body), "oldPassword")
    status, body = await platform.call(
        "PUT", path, user=normal_user, json={"oldPassword": normal_user.password, "newPassword": "123"}
    )
    invalid((status, body), "newPassword")


async def test_an_admin_resets_another_password_without_the_old_one(platform, admin_user, other_user):
    status, _body = await platform.call(
        "PUT",
        f"/api/Users/{other_user.user_id}/password",
        user=admin_user,
        json={"newPassword": "reset-by-admin"},
    )
    assert status == 204
    assert (await login(platform, "bob", "reset-by-admin"))[0] == 200
    status, body = await get_user(platform, other_user, other_user.user_id)
    problem((status, body), 401)  # the old token was revoked


async def test_password_change_of_another_user_is_403_or_404(platform, admin_user, normal_user, other_user):
    status, body = await platform.call(
        "PUT",
        f"/api/Users/{other_user.user_id}/password",
        user=normal_user,
        json={"oldPassword": other_user.password, "newPassword": "x" * 8},
    )
    problem((status, body), 403)
    status, body = await platform.call(
        "PUT", "/api/Users/777/password", user=admin_user, json={"newPassword": "x" * 8}
    )
    problem((status, body), 404)


# --- balance -----------------------------------------------------------------------------------------


async def top_up(platform, actor, user_id, amount):
    return await platform.call("PUT", f"/api/Users/{user_id}/balance", user=actor, json={"amount": amount})


async def test_top_up_adds_to_the_balance_and_notifies_in_both_apis(platform, admin_user, normal_user):
    assert (await top_up(platform, admin_user, normal_user.user_id, 100.5))[0] == 204
    assert (await top_up(platform, admin_user, normal_user.user_id, 0.25))[0] == 204
    _status, user = await get_user(platform, normal_user, normal_user.user_id)
    assert user["balance"] == 100.75
    status, notes = await platform.call(
        "GET", f"/api/UserNotifications/byUser/{normal_user.user_id}", user=normal_user
    )
    assert status == 200 and [(n["type"], n["typeDescription"]) for n in notes] == [(4, "充值通知")] * 2
    assert "100.75" in notes[0]["content"]
    _status, driver = await platform.call("GET", "/api/charging/notifications/", user=normal_user)
    assert [n["type"] for n in driver["data"]] == ["recharge", "recharge"]
    assert {n["id"] for n in driver["data"]} == {n["id"] for n in notes}


async def test_concurrent_top_ups_all_count(platform, admin_user, normal_user):
    results = await asyncio.gather(
        *(top_up(platform, admin_user, normal_user.user_id, 0.01) for _ in range(25))
    )
    assert {status for status, _body in results} == {204}
    _status, user = await get_user(platform, admin_user, normal_user.user_id)
    assert user["balance"] == 0.25


@pytest.mark.parametrize("amount", [0, -1, 1.001, 100000.01, "10", None, True, 1e309])
async def test_a_bad_amount_is_400_naming_amount(platform, admin_user, normal_user, amount):
    status, body = await top_up(platform, admin_user, normal_user.user_id, amount)
    invalid((status, body), "amount")


async def test_the_largest_top_up_is_100000(platform, admin_user, normal_user):
    assert (await top_up(platform, admin_user, normal_user.user_id, 100000))[0] == 204
    _status, user = await get_user(platform, admin_user, normal_user.user_id)
    assert user["balance"] == 100000.0


async def test_top_up_needs_an_admin_and_an_existing_user(platform, normal_user, admin_user):
    status, body = await top_up(platform, normal_user, normal_user.user_id, 10)
    problem((status, body), 403)
    status, body = await top_up(platform, admin_user, 9999, 10)
    problem((status, body), 404)
