"""The web APIs' access rules, each on its own (no HTTP): who may act on whose data, role
management, rank, self-protection and the last super administrator."""

from __future__ import annotations

import pytest

from central.application.auth import AuthUser
from central.domain.levels import PERMISSION_LEVEL_NAMES, STAFF_LEVEL, SYSTEM_LEVELS, PermissionLevel
from central.web.errors import ApiError
from central.web.permissions import (
    Access,
    check_access,
    check_deletion,
    check_role_grant,
    check_status_change,
    keep_a_super_admin,
    may_act_for,
    require_not_outranked,
    require_role_manager,
    require_self_or_staff,
)

DRIVER = AuthUser.of(1, "driver", PermissionLevel.USER)
VIP = AuthUser.of(2, "vip", PermissionLevel.VIP)
ADMIN = AuthUser.of(3, "admin", PermissionLevel.ADMIN)
SUPER = AuthUser.of(4, "root", PermissionLevel.SUPER_ADMIN)


def status_of(rule: object, *args: object) -> int | None:
    """The HTTP status a rule refuses with, or None when it allows."""
    assert callable(rule)
    try:
        rule(*args)
    except ApiError as exc:
        return exc.status
    return None


def test_the_levels_are_the_data_dictionary():
    assert SYSTEM_LEVELS == (1, 2, 3, 4)
    assert PERMISSION_LEVEL_NAMES == {1: "普通用户", 2: "VIP用户", 3: "管理员", 4: "超级管理员"}
    assert STAFF_LEVEL == 3
    assert [user.is_staff for user in (DRIVER, VIP, ADMIN, SUPER)] == [False, False, True, True]


@pytest.mark.parametrize(
    ("access", "user", "status"),
    [
        (Access.USER, DRIVER, None),
        (Access.STAFF, VIP, 403),
        (Access.STAFF, ADMIN, None),
        (Access.STAFF, SUPER, None),
    ],
)
def test_route_access(access, user, status):
    assert status_of(check_access, access, user) == status


def test_own_data_or_staff():
    assert may_act_for(DRIVER, DRIVER.id) and not may_act_for(DRIVER, VIP.id)
    assert not may_act_for(DRIVER, None)
    assert may_act_for(ADMIN, DRIVER.id) and may_act_for(ADMIN, None)
    assert status_of(require_self_or_staff, VIP, DRIVER.id) == 403
    assert status_of(require_self_or_staff, ADMIN, DRIVER.id) is None


def test_role_management_needs_level_4():
    assert status_of(require_role_manager, ADMIN) == 403
    assert status_of(require_role_manager, SUPER) is None


def test_nobody_manages_a_higher_level_or_raises_their_own():
    assert status_of(require_not_outranked, ADMIN, SUPER.id, PermissionLevel.SUPER_ADMIN) == 403
    assert status_of(require_not_outranked, ADMIN, VIP.id, PermissionLevel.VIP) is None
    assert status_of(require_not_outranked, ADMIN, ADMIN.id, PermissionLevel.SUPER_ADMIN) is None
    assert status_of(check_role_grant, ADMIN, ADMIN.id, PermissionLevel.SUPER_ADMIN) == 403
    assert status_of(check_role_grant, SUPER, ADMIN.id, PermissionLevel.SUPER_ADMIN) is None


def test_status_changes_and_self_protection():
    assert status_of(check_status_change, DRIVER, DRIVER.id, 1) == 403
    assert status_of(check_status_change, ADMIN, ADMIN.id, 0) == 409
    assert status_of(check_status_change, ADMIN, DRIVER.id, 0) is None
    assert status_of(check_deletion, ADMIN, ADMIN.id) == 409
    assert status_of(check_deletion, ADMIN, DRIVER.id) is None


@pytest.mark.parametrize(
    ("before", "after", "status"), [(1, 0, 409), (1, 1, None), (2, 1, None), (0, 0, None)]
)
def test_the_last_super_admin_stays(before, after, status):
    assert status_of(keep_a_super_admin, before, after) == status
