"""Operator platform API, section 7 (/api/UserNotifications): the same rows the driver API lists under
/api/charging/notifications/, read and written from either side."""

from __future__ import annotations

import pytest

pytest.register_assert_rewrite("tests.integration.platform_fixtures")
from tests.integration.platform_fixtures import invalid, problem  # noqa: E402

pytest_plugins = ("tests.integration.platform_fixtures",)

BASE = "/api/UserNotifications"
NOTE_FIELDS = {
    "id",
    "userId",
    "title",
    "content",
    "type",
    "typeDescription",
    "relatedId",
    "isRead",
    "readTime",
    "createTime",
}


async def notify(platform, actor, user_id, kind=1, title="系统维护通知", **extra):
    body = {"userId": user_id, "title": title, "content": f"{title}: 今晚22:00维护", "type": kind, **extra}
    status, reply = await platform.call("POST", BASE, user=actor, json=body)
    assert status == 201, reply
    return reply["id"]


async def listed(platform, actor, what, user_id):
    status, body = await platform.call("GET", f"{BASE}/{what}/{user_id}", user=actor)
    assert status == 200, body
    return body


async def driver_view(platform, account):
    status, body = await platform.call("GET", "/api/charging/notifications/", user=account)
    assert status == 200
    return {n["id"]: n for n in body["data"]}


# --- create ------------------------------------------------------------------------------------------


async def test_admin_notifies_a_user_who_sees_it_in_both_apis(platform, admin_user, normal_user):
    note_id = await notify(platform, admin_user, normal_user.user_id, kind=3, title="活动", relatedId="A-1")
    [note] = await listed(platform, normal_user, "byUser", normal_user.user_id)
    assert set(note) == NOTE_FIELDS
    assert (note["id"], note["userId"], note["type"], note["typeDescription"]) == (
        note_id,
        normal_user.user_id,
        3,
        "活动通知",
    )
    assert (note["relatedId"], note["isRead"], note["readTime"]) == ("A-1", False, None)
    assert note["createTime"] == "2025-06-02T02:00:00Z"
    driver = await driver_view(platform, normal_user)
    assert driver[note_id]["type"] == "activity" and driver[note_id]["message"] == note["content"]


@pytest.mark.parametrize(("kind", "driver_type"), [(1, "system"), (2, "order"), (4, "recharge")])
async def test_each_type_shows_as_a_driver_api_kind(platform, admin_user, normal_user, kind, driver_type):
    note_id = await notify(platform, admin_user, normal_user.user_id, kind=kind)
    assert (await driver_view(platform, normal_user))[note_id]["type"] == driver_type


async def test_create_names_every_bad_field(platform, admin_user, normal_user):
    status, body = await platform.call("POST", BASE, user=admin_user, json={})
    invalid((status, body), "userId", "title", "content", "type")
    bad = {"userId": normal_user.user_id, "title": "t", "content": "c", "type": 5, "relatedId": 7}
    invalid(await platform.call("POST", BASE, user=admin_user, json=bad), "type", "relatedId")
    blank = {"userId": normal_user.user_id, "title": " ", "content": "c" * 2001, "type": 1}
    invalid(await platform.call("POST", BASE, user=admin_user, json=blank), "title", "content")


async def test_create_needs_an_admin_and_an_existing_user(platform, admin_user, normal_user):
    body = {"userId": normal_user.user_id, "title": "t", "content": "c", "type": 1}
    problem(await platform.call("POST", BASE, user=normal_user, json=body), 403)
    problem(await platform.call("POST", BASE, user=admin_user, json={**body, "userId": 404}), 404)


async def test_batch_notifies_each_distinct_user_once(platform, admin_user, normal_user, other_user):
    ids = [normal_user.user_id, other_user.user_id, normal_user.user_id]
    body = {"userIds": ids, "title": "系统维护通知", "content": "今晚维护", "type": 1, "relatedId": None}
    status, reply = await platform.call("POST", f"{BASE}/batch", user=admin_user, json=body)
    assert status == 201 and reply == {"count": 2}
    for account in (normal_user, other_user):
        notes = await listed(platform, account, "byUser", account.user_id)
        assert [(n["title"], n["typeDescription"]) for n in notes] == [("系统维护通知", "系统通知")]


async def test_batch_with_an_unknown_user_creates_nothing(platform, admin_user, normal_user):
    body = {"userIds": [normal_user.user_id, 999], "title": "t", "content": "c", "type": 1}
    status, reply = await platform.call("POST", f"{BASE}/batch", user=admin_user, json=body)
    assert "999" in problem((status, reply), 404)["detail"]
    assert await listed(platform, normal_user, "byUser", normal_user.user_id) == []


async def test_batch_errors(platform, admin_user, normal_user):
    body = {"userIds": [], "title": "t", "content": "c", "type": 1}
    invalid(await platform.call("POST", f"{BASE}/batch", user=admin_user, json=body), "userIds")
    body["userIds"] = [1, "2"]
    invalid(await platform.call("POST", f"{BASE}/batch", user=admin_user, json=body), "userIds")
    body["userIds"] = [normal_user.user_id]
    problem(await platform.call("POST", f"{BASE}/batch", user=normal_user, json=body), 403)


# --- read --------------------------------------------------------------------------------------------


async def test_lists_are_newest_first_and_unread_filters(platform, admin_user, normal_user):
    first = await notify(platform, admin_user, normal_user.user_id, title="一")
    platform.wall.advance(60)
    second = await notify(platform, admin_user, normal_user.user_id, title="二")
    assert [n["id"] for n in await listed(platform, normal_user, "byUser", normal_user.user_id)] == [
        second,
        first,
    ]
    await platform.call("PUT", f"{BASE}/read/{second}", user=normal_user)
    assert [n["id"] for n in await listed(platform, normal_user, "unread", normal_user.user_id)] == [first]


async def test_lists_of_another_user_need_an_admin(platform, admin_user, normal_user, other_user):
    await notify(platform, admin_user, other_user.user_id)
    for what in ("byUser", "unread", "unreadCount"):
        status, body = await platform.call("GET", f"{BASE}/{what}/{other_user.user_id}", user=normal_user)
        problem((status, body), 403)
        status, body = await platform.call("GET", f"{BASE}/{what}/{other_user.user_id}", user=admin_user)
        assert status == 200 and body
        problem(await platform.call("GET", f"{BASE}/{what}/999", user=admin_user), 404)
        invalid(await platform.call("GET", f"{BASE}/{what}/me", user=admin_user), "userId")


async def test_get_one_notification(platform, admin_user, normal_user, other_user):
    note_id = await notify(platform, admin_user, normal_user.user_id)
    status, body = await platform.call("GET", f"{BASE}/{note_id}", user=normal_user)
    assert status == 200 and body["id"] == note_id
    problem(await platform.call("GET", f"{BASE}/{note_id}", user=other_user), 403)
    problem(await platform.call("GET", f"{BASE}/{note_id + 100}", user=admin_user), 404)


async def test_a_charging_request_notification_shows_as_an_order_notification(platform, normal_user):
    status, _body = await platform.call(
        "POST",
        "/api/charging/request/",
        user=normal_user,
        json={"charging_mode": "fast", "requested_amount": 10},
    )
    assert status == 201
    driver = await driver_view(platform, normal_user)
    notes = await listed(platform, normal_user, "byUser", normal_user.user_id)
    assert {n["id"] for n in notes} == set(driver) and notes
    assert {(n["type"], n["typeDescription"]) for n in notes} == {(2, "订单通知")}


# --- marking read ------------------------------------------------------------------------------------


async def test_read_marks_one_and_the_driver_api_agrees(platform, admin_user, normal_user, other_user):
    note_id = await notify(platform, admin_user, normal_user.user_id)
    platform.wall.advance(30)
    status, body = await platform.call("PUT", f"{BASE}/read/{note_id}", user=normal_user)
    assert status == 204 and body is None
    _status, note = await platform.call("GET", f"{BASE}/{note_id}", user=normal_user)
    assert note["isRead"] is True and note["readTime"] == "2025-06-02T02:00:30Z"
    assert (await driver_view(platform, normal_user))[note_id]["read"] is True
    problem(await platform.call("PUT", f"{BASE}/read/{note_id}", user=other_user), 403)
    problem(await platform.call("PUT", f"{BASE}/read/{note_id + 9}", user=normal_user), 404)


async def test_read_through_the_driver_api_shows_here(platform, admin_user, normal_user):
    note_id = await notify(platform, admin_user, normal_user.user_id)
    status, _body = await platform.call(
        "PUT", f"/api/charging/notifications/{note_id}/read/", user=normal_user
    )
    assert status == 200
    _status, note = await platform.call("GET", f"{BASE}/{note_id}", user=normal_user)
    assert note["isRead"] is True and note["readTime"] is not None


async def test_batch_read_counts_newly_read_and_refuses_others(platform, admin_user, normal_user, other_user):
    mine = [await notify(platform, admin_user, normal_user.user_id) for _ in range(3)]
    theirs = await notify(platform, admin_user, other_user.user_id)
    await platform.call("PUT", f"{BASE}/read/{mine[0]}", user=normal_user)
    body = {"notificationIds": [*mine, 12345]}
    status, reply = await platform.call("PUT", f"{BASE}/batchRead", user=normal_user, json=body)
    assert status == 200 and reply == {"count": 2}
    body = {"notificationIds": [theirs]}
    problem(await platform.call("PUT", f"{BASE}/batchRead", user=normal_user, json=body), 403)
    assert (await platform.call("PUT", f"{BASE}/batchRead", user=admin_user, json=body))[1] == {"count": 1}
    invalid(await platform.call("PUT", f"{BASE}/batchRead", user=normal_user, json={}), "notificationIds")


async def test_read_all_and_unread_count(platform, admin_user, normal_user, other_user):
    for _ in range(3):
        await notify(platform, admin_user, normal_user.user_id)
    count = f"{BASE}/unreadCount/{normal_user.user_id}"
    assert await platform.call("GET", count, user=normal_user) == (200, {"count": 3})
    path = f"{BASE}/readAll/{normal_user.user_id}"
    assert await platform.call("PUT", path, user=normal_user) == (200, {"count": 3})
    assert await platform.call("PUT", path, user=normal_user) == (200, {"count": 0})
    assert await platform.call("GET", count, user=normal_user) == (200, {"count": 0})
    problem(await platform.call("PUT", path, user=other_user), 403)
    problem(await platform.call("PUT", f"{BASE}/readAll/999", user=admin_user), 404)


async def test_delete_a_notification(platform, admin_user, normal_user, other_user):
    note_id = await notify(platform, admin_user, normal_user.user_id)
    problem(await platform.call("DELETE", f"{BASE}/{note_id}", user=other_user), 403)
    status, body = await platform.call("DELETE", f"{BASE}/{note_id}", user=normal_user)
    assert status == 204 and body is None
    assert note_id not in await driver_view(platform, normal_user)
    problem(await platform.call("DELETE", f"{BASE}/{note_id}", user=normal_user), 404)
