"""Operator platform API, section 5 (/api/UserRoles): roles, assignment and permission checks; role
management needs level 4 and the last super administrator keeps level 4."""

from __future__ import annotations

import pytest

pytest.register_assert_rewrite("tests.integration.platform_fixtures")
from tests.integration.platform_fixtures import invalid, problem  # noqa: E402

pytest_plugins = ("tests.integration.platform_fixtures",)

SYSTEM = [(1, "普通用户", 1), (2, "VIP用户", 2), (3, "管理员", 3), (4, "超级管理员", 4)]
VIP, ADMIN, SUPER = 2, 3, 4


async def new_role(platform, actor, name="运维", level=3, **extra):
    body = {"name": name, "description": f"{name}角色", "permissionLevel": level, **extra}
    return await platform.call("POST", "/api/UserRoles", user=actor, json=body)


async def assign(platform, actor, user_id, role_id):
    return await platform.call(
        "POST", "/api/UserRoles/assign", user=actor, json={"userId": user_id, "roleId": role_id}
    )


async def level_of(platform, actor, user_id):
    _status, body = await platform.call("GET", f"/api/Users/{user_id}", user=actor)
    return body["permissionLevel"]


# --- read --------------------------------------------------------------------------------------------


async def test_admin_lists_the_four_system_roles_with_descriptions(platform, admin_user):
    status, body = await platform.call("GET", "/api/UserRoles", user=admin_user)
    assert status == 200
    assert [(r["id"], r["name"], r["permissionLevel"]) for r in body] == SYSTEM
    assert body[1] == {
        "id": 2,
        "name": "VIP用户",
        "description": "VIP用户角色",
        "permissionLevel": 2,
        "permissionLevelDescription": "VIP用户",
        "isSystem": True,
    }


async def test_get_role_and_its_errors(platform, admin_user, normal_user):
    status, body = await platform.call("GET", "/api/UserRoles/4", user=admin_user)
    assert status == 200 and body["permissionLevelDescription"] == "超级管理员"
    problem(await platform.call("GET", "/api/UserRoles/99", user=admin_user), 404)
    invalid(await platform.call("GET", "/api/UserRoles/x", user=admin_user), "id")
    problem(await platform.call("GET", "/api/UserRoles/1", user=normal_user), 403)
    problem(await platform.call("GET", "/api/UserRoles", user=normal_user), 403)


# --- create / update / delete ------------------------------------------------------------------------


async def test_super_admin_creates_a_role(platform, super_admin):
    status, body = await new_role(platform, super_admin, "高级VIP", 2)
    assert status == 201
    status, role = await platform.call("GET", f"/api/UserRoles/{body['id']}", user=super_admin)
    assert (role["name"], role["description"], role["permissionLevel"], role["isSystem"]) == (
        "高级VIP",
        "高级VIP角色",
        2,
        False,
    )


async def test_create_role_names_bad_fields_and_refuses_a_taken_name(platform, super_admin):
    status, body = await platform.call("POST", "/api/UserRoles", user=super_admin, json={})
    invalid((status, body), "name", "permissionLevel")
    invalid(await new_role(platform, super_admin, level=5), "permissionLevel")
    invalid(await new_role(platform, super_admin, name=42), "name")
    status, body = await new_role(platform, super_admin, name="VIP用户", level=2)
    errors = invalid((status, body), "name")
    assert list(errors) == ["name"] and "VIP用户" in errors["name"][0]


async def test_role_management_needs_level_4(platform, admin_user):
    problem(await new_role(platform, admin_user), 403)
    status, body = await platform.call("PUT", "/api/UserRoles/2", user=admin_user, json={"name": "x"})
    problem((status, body), 403)
    problem(await platform.call("DELETE", "/api/UserRoles/2", user=admin_user), 403)
    problem(await assign(platform, admin_user, admin_user.user_id, SUPER), 403)
    problem(await platform.call("DELETE", "/api/UserRoles/remove/1/3", user=admin_user), 403)


async def test_update_changes_a_custom_role_and_keeps_omitted_fields(platform, super_admin):
    _status, body = await new_role(platform, super_admin)
    path = f"/api/UserRoles/{body['id']}"
    status, reply = await platform.call("PUT", path, user=super_admin, json={"permissionLevel": 2})
    assert status == 204 and reply is None
    _status, role = await platform.call("GET", path, user=super_admin)
    assert (role["name"], role["description"], role["permissionLevel"]) == ("运维", "运维角色", 2)


async def test_a_system_role_keeps_its_level_and_cannot_be_deleted(platform, super_admin):
    status, body = await platform.call(
        "PUT", "/api/UserRoles/2", user=super_admin, json={"permissionLevel": 3}
    )
    problem((status, body), 409)
    status, _body = await platform.call(
        "PUT", "/api/UserRoles/2", user=super_admin, json={"description": "付费会员", "permissionLevel": 2}
    )
    assert status == 204
    problem(await platform.call("DELETE", "/api/UserRoles/2", user=super_admin), 409)
    _status, role = await platform.call("GET", "/api/UserRoles/2", user=super_admin)
    assert (role["description"], role["permissionLevel"]) == ("付费会员", 2)


async def test_update_errors(platform, super_admin):
    status, body = await platform.call("PUT", "/api/UserRoles/77", user=super_admin, json={"name": "x"})
    problem((status, body), 404)
    status, body = await platform.call(
        "PUT", "/api/UserRoles/2", user=super_admin, json={"permissionLevel": 0}
    )
    invalid((status, body), "permissionLevel")
    status, body = await platform.call("PUT", "/api/UserRoles/2", user=super_admin, json={"name": "管理员"})
    assert list(invalid((status, body), "name")) == ["name"]
    _status, role = await platform.call("GET", "/api/UserRoles/2", user=super_admin)
    assert role["name"] == "VIP用户"


async def test_deleting_a_custom_role_takes_it_from_its_holders(platform, super_admin, normal_user):
    _status, body = await new_role(platform, super_admin, level=3)
    await assign(platform, super_admin, normal_user.user_id, body["id"])
    assert await level_of(platform, super_admin, normal_user.user_id) == 3
    status, _body = await platform.call("DELETE", f"/api/UserRoles/{body['id']}", user=super_admin)
    assert status == 204
    assert await level_of(platform, super_admin, normal_user.user_id) == 1
    status, reply = await platform.call("DELETE", f"/api/UserRoles/{body['id']}", user=super_admin)
    problem((status, reply), 404)


# --- user roles --------------------------------------------------------------------------------------


async def test_by_user_lists_own_roles_and_refuses_another_users(
    platform, normal_user, other_user, admin_user
):
    status, body = await platform.call(
        "GET", f"/api/UserRoles/byUser/{normal_user.user_id}", user=normal_user
    )
    assert status == 200 and [r["name"] for r in body] == ["普通用户"]
    status, body = await platform.call("GET", f"/api/UserRoles/byUser/{other_user.user_id}", user=normal_user)
    problem((status, body), 403)
    status, body = await platform.call("GET", f"/api/UserRoles/byUser/{other_user.user_id}", user=admin_user)
    assert status == 200 and [r["id"] for r in body] == [1]
    problem(await platform.call("GET", "/api/UserRoles/byUser/999", user=admin_user), 404)


async def test_assigning_the_admin_role_grants_admin_access_at_once(platform, super_admin, normal_user):
    problem(await platform.call("GET", "/api/Users", user=normal_user), 403)
    status, body = await assign(platform, super_admin, normal_user.user_id, ADMIN)
    assert status == 200 and body == {"userId": normal_user.user_id, "roleId": ADMIN, "permissionLevel": 3}
    assert (await platform.call("GET", "/api/Users", user=normal_user))[0] == 200
    _status, profile = await platform.call("GET", "/api/auth/profile/", user=normal_user)
    assert profile["data"]["is_staff"] is True
    status, body = await assign(platform, super_admin, normal_user.user_id, ADMIN)
    assert status == 200 and body["permissionLevel"] == 3  # assigning twice changes nothing


async def test_assign_names_bad_fields_and_404s_unknown_ids(platform, super_admin, normal_user):
    status, body = await platform.call("POST", "/api/UserRoles/assign", user=super_admin, json={})
    invalid((status, body), "userId", "roleId")
    invalid(await assign(platform, super_admin, "1", VIP), "userId")
    problem(await assign(platform, super_admin, 999, VIP), 404)
    problem(await assign(platform, super_admin, normal_user.user_id, 99), 404)


async def test_removing_the_last_role_falls_back_to_level_1(platform, super_admin, normal_user):
    await assign(platform, super_admin, normal_user.user_id, VIP)
    assert await level_of(platform, super_admin, normal_user.user_id) == 2
    for role_id in (VIP, 1):
        path = f"/api/UserRoles/remove/{normal_user.user_id}/{role_id}"
        status, body = await platform.call("DELETE", path, user=super_admin)
        assert status == 204 and body is None
    assert await level_of(platform, super_admin, normal_user.user_id) == 1
    _status, roles = await platform.call(
        "GET", f"/api/UserRoles/byUser/{normal_user.user_id}", user=normal_user
    )
    assert roles == []


async def test_remove_errors(platform, super_admin, normal_user):
    path = f"/api/UserRoles/remove/{normal_user.user_id}"
    problem(await platform.call("DELETE", f"{path}/{VIP}", user=super_admin), 404)  # not held
    problem(await platform.call("DELETE", f"{path}/99", user=super_admin), 404)
    problem(await platform.call("DELETE", "/api/UserRoles/remove/999/1", user=super_admin), 404)
    invalid(await platform.call("DELETE", f"{path}/x", user=super_admin), "roleId")


async def test_the_last_super_admin_cannot_drop_level_4(platform, super_admin):
    own = f"/api/UserRoles/remove/{super_admin.user_id}/{SUPER}"
    status, body = await platform.call("DELETE", own, user=super_admin)
    assert "超级管理员" in problem((status, body), 409)["detail"]
    assert await level_of(platform, super_admin, super_admin.user_id) == 4
    second = await platform.user("root5", level=4)
    status, _body = await platform.call("DELETE", own, user=super_admin)
    assert status == 204
    assert await level_of(platform, second, super_admin.user_id) == 1


async def test_the_last_super_admin_role_cannot_be_demoted_through_a_custom_role(platform, super_admin):
    _status, body = await new_role(platform, super_admin, "总管", 4)
    await assign(platform, super_admin, super_admin.user_id, body["id"])
    status, _reply = await platform.call(
        "DELETE", f"/api/UserRoles/remove/{super_admin.user_id}/{SUPER}", user=super_admin
    )
    assert status == 204  # still level 4 through 总管
    status, reply = await platform.call(
        "PUT", f"/api/UserRoles/{body['id']}", user=super_admin, json={"permissionLevel": 3}
    )
    problem((status, reply), 409)
    problem(await platform.call("DELETE", f"/api/UserRoles/{body['id']}", user=super_admin), 409)


# --- checks ------------------------------------------------------------------------------------------


async def test_check_answers_true_or_false(platform, normal_user, admin_user):
    base = f"/api/UserRoles/check/{normal_user.user_id}"
    assert await platform.call("GET", f"{base}/1", user=normal_user) == (200, True)
    assert await platform.call("GET", f"{base}/3", user=admin_user) == (200, False)
    other = f"/api/UserRoles/check/{admin_user.user_id}/3"
    problem(await platform.call("GET", other, user=normal_user), 403)
    problem(await platform.call("GET", f"{base}/99", user=normal_user), 404)
    problem(await platform.call("GET", "/api/UserRoles/check/999/1", user=admin_user), 404)


async def test_check_permission_compares_levels(platform, normal_user, admin_user):
    base = f"/api/UserRoles/checkPermission/{admin_user.user_id}"
    assert await platform.call("GET", f"{base}/3", user=admin_user) == (200, True)
    assert await platform.call("GET", f"{base}/4", user=admin_user) == (200, False)
    own = f"/api/UserRoles/checkPermission/{normal_user.user_id}"
    assert await platform.call("GET", f"{own}/1", user=normal_user) == (200, True)
    problem(await platform.call("GET", f"{base}/1", user=normal_user), 403)
    invalid(await platform.call("GET", f"{own}/5", user=normal_user), "permissionLevel")
    problem(await platform.call("GET", "/api/UserRoles/checkPermission/999/1", user=admin_user), 404)
