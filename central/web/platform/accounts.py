"""The operator platform API's accounts part (spec/admin-api.md sections 3, 5, 6, 7): users, roles,
addresses and notifications, over the same tables as the driver API.

One users table: ``openId`` is the driver API's ``username``; a token from ``POST /api/Users/login``
works on both APIs (the same rate-limited login). Who may do what:

- a user reads and changes their own record, addresses and notifications; reading or changing
  another user's data needs permission level >= 3 (管理员); role management needs level 4;
- an administrator may not change, reset the password of, or delete a user of a HIGHER level;
- nobody raises their own level, deletes or disables their own account, and the last active super
  administrator cannot lose level 4 (409).

Notifications written here are the rows the driver API lists under /api/charging/notifications/:
``type`` is the operator API's 1..4 and ``kind`` (the driver API's ``type``) is
:data:`KIND_OF_TYPE`. Money is integer cents in the database and yuan (2 decimals) here; datetimes
are ISO 8601 UTC with ``Z``. :data:`ROUTES` is the route table (see :mod:`central.web.openapi`).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlite_utils
import structlog
from aiohttp import web

from central import auth
from central.web.errors import ApiError, json_response
from central.web.middleware import TOKEN_KEY, Access, auth_settings, current_user, off_loop
from central.web.openapi import RouteSpec
from central.web.platform.common import (
    BOOL,
    CONFLICT_409,
    DATETIME,
    DENIED_403,
    GENDER,
    ID_RESULT,
    ID_SCHEMA,
    INT,
    INT_TEXT,
    MAX_BATCH,
    MISSING_404,
    NOTIFICATION_TYPE,
    NSTR,
    NUM,
    PAGE_PARAMETERS,
    PERMISSION_LEVEL,
    PLATFORM_STYLE,
    STR,
    USER_STATUS,
    Body,
    Resource,
    codes_schema,
    conflict,
    created,
    described,
    forbidden,
    id_path,
    invalid,
    item_response,
    list_response,
    no_content,
    not_found,
    now_iso,
    obj_schema,
    page_response,
    page_schema,
    paging,
    path_id,
    path_parameter,
    query_code,
    query_keyword,
    read,
    read_body,
    require_self_or_staff,
    require_user,
    row_exists,
    text_schema,
    utc_z,
    where_clause,
    write,
)
from central.web.user_api import login_with_password

log = structlog.get_logger(__name__)

SUPER_LEVEL = 4
KIND_OF_TYPE = {1: "system", 2: "order", 3: "activity", 4: "recharge"}  # notifications.kind
TOP_UP_MAX_CENTS = 100_000_00
MAX_ADDRESSES = 50
ACTIVE_REQUEST_STATES = ("waiting", "charging")
ORDER_CHARGING = 1
_POSTAL = re.compile(r"[A-Za-z0-9 \-]{3,16}")

# --- access and small helpers ----------------------------------------------------------------------


def yuan(cents: int) -> float:
    """Integer cents as a yuan number with 2 decimals."""
    return round(cents / 100, 2)


def require_super(actor: auth.AuthUser) -> None:
    """Role management needs level 4."""
    if actor.level < SUPER_LEVEL:
        raise forbidden("权限不足: 角色管理需要超级管理员 (permission level 4)")


def require_not_outranked(actor: auth.AuthUser, user_id: int, target_level: int) -> None:
    """An administrator may not manage a user of a higher level than their own."""
    if actor.id != user_id and target_level > actor.level:
        raise forbidden(f"权限不足: 用户 {user_id} 的权限级别 ({target_level}) 高于你的 ({actor.level})")


def active_super_admins(db: sqlite_utils.Database) -> int:
    """How many enabled accounts hold a level-4 role."""
    row = db.execute(
        "SELECT COUNT(DISTINCT ur.user_id) FROM user_roles ur JOIN roles r ON r.id = ur.role_id"
        " JOIN users u ON u.id = ur.user_id WHERE r.permission_level = ? AND u.status = 1",
        [SUPER_LEVEL],
    ).fetchone()
    return int(row[0])


def keep_a_super_admin(db: sqlite_utils.Database, before: int) -> None:
    """Inside a write: refuse (409, rolled back) a change that leaves no active super admin."""
    if before > 0 and active_super_admins(db) == 0:
        raise conflict("不能移除最后一个超级管理员: 至少需要一个启用的 permission level 4 账户")


# --- users -----------------------------------------------------------------------------------------

_LEVEL_OF_U = (
    "COALESCE((SELECT MAX(r.permission_level) FROM user_roles ur JOIN roles r ON r.id = ur.role_id"
    " WHERE ur.user_id = u.id), 1)"
)
_USER_SELECT = (
    "SELECT u.id, u.username, u.nickname, u.avatar, u.phone, u.email, u.gender, u.balance_cents,"  # noqa: S608
    f" u.status, u.register_time, u.last_login_time, {_LEVEL_OF_U} AS level FROM users u"
)


def user_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """The spec's user shape (plus gender and permission level)."""
    return {
        "id": row["id"],
        "openId": row["username"],
        "nickname": row["nickname"],
        "avatar": row["avatar"],
        "phone": row["phone"],
        "email": row["email"],
        "balance": yuan(row["balance_cents"]),
        "registerTime": utc_z(row["register_time"]),
        "lastLoginTime": utc_z(row["last_login_time"]),
        "status": row["status"],
        "statusDescription": described(row["status"], USER_STATUS),
        "gender": row["gender"],
        "genderDescription": described(row["gender"], GENDER),
        "permissionLevel": row["level"],
        "permissionLevelDescription": described(row["level"], PERMISSION_LEVEL),
    }


USERS = Resource("用户", _USER_SELECT, "u.id", "u.id", user_json, count_from="users u")
_USER_SEARCH = ("u.username", "u.nickname", "u.phone", "u.email")


async def list_users(request: web.Request) -> web.StreamResponse:
    """GET /api/Users: every user (level >= 3)."""
    return await list_response(request, USERS)


async def paged_users(request: web.Request) -> web.StreamResponse:
    """GET /api/Users/paged: status filter, keyword over openId / nickname / phone / email."""
    page_size = paging(request)  # read before the filters: a bad page is the error reported first
    status = query_code(request, "status", USER_STATUS)
    where = where_clause([("u.status = ?", status)], query_keyword(request), _USER_SEARCH)
    return await page_response(request, USERS, where, page_size)


async def get_user(request: web.Request) -> web.StreamResponse:
    """GET /api/Users/{id}: yourself, or anyone with level >= 3."""
    user_id = path_id(request, "id", "用户")
    require_self_or_staff(current_user(request), user_id)
    return await item_response(request, USERS, user_id)


_PHONE_HINT = "must be a phone number: digits, optionally + at the start, spaces or -"
_EMAIL_HINT = "must be an e-mail address like name@example.com"


@dataclass(frozen=True)
class Profile:
    """The optional profile fields of a create or update body (None: not given)."""

    nickname: str | None
    avatar: str | None
    phone: str | None
    email: str | None
    gender: int | None

    @classmethod
    def read(cls, body: Body) -> Profile:
        return cls(
            body.text("nickname", max_len=64),
            body.text("avatar", max_len=1024),
            body.text("phone", max_len=32, pattern=auth.PHONE_RE, hint=_PHONE_HINT),
            body.text("email", max_len=254, pattern=auth.EMAIL_RE, hint=_EMAIL_HINT),
            body.integer("gender", choices=GENDER),
        )


_OPEN_ID_HINT = "must be 3 to 64 characters: letters, digits, _ . - @"


async def create_user(request: web.Request) -> web.StreamResponse:
    """POST /api/Users: a new account (openId + password required), level 1."""
    body = await read_body(request)
    open_id = body.text("openId", required=True, max_len=64, pattern=auth.USERNAME_RE, hint=_OPEN_ID_HINT)
    password = body.text("password", required=True, max_len=auth.PASSWORD_LENGTH[1])
    if password is not None and (why := auth.password_problem(password)) is not None:
        body.bad("password", why)
    profile = Profile.read(body)
    body.check()
    assert open_id is not None and password is not None
    password_hash = await off_loop(request, auth.hash_password, password)
    now = auth_settings(request.app).clock()

    def insert(db: sqlite_utils.Database) -> int:
        if auth.username_taken(db, open_id):
            raise conflict(f"openId {open_id!r} 已存在")
        try:
            user_id = auth.insert_user(
                db,
                open_id,
                password_hash,
                email=profile.email,
                phone=profile.phone,
                nickname=profile.nickname,
                now=now,
            )
        except auth.AccountValidationError:
            raise conflict(f"openId {open_id!r} 已存在") from None
        db.execute(
            "UPDATE users SET avatar = ?, gender = ? WHERE id = ?",
            [profile.avatar, profile.gender or 0, user_id],
        )
        return user_id

    user_id = await write(request, insert)
    log.info("user created", user=user_id, by=current_user(request).id)
    return created(user_id)


_PROFILE_COLUMNS = {"nickname": "nickname", "avatar": "avatar", "phone": "phone", "email": "email"}


def profile_changes(body: Body, profile: Profile) -> dict[str, Any]:
    """Columns to set: a text field given (even as null or "") is set; gender only when not null."""
    changes = {
        column: getattr(profile, name) for name, column in _PROFILE_COLUMNS.items() if body.present(name)
    }
    if profile.gender is not None:
        changes["gender"] = profile.gender
    return changes


async def update_user(request: web.Request) -> web.StreamResponse:
    """PUT /api/Users/{id}: profile fields (yourself or level >= 3); status only level >= 3."""
    user_id, actor = path_id(request, "id", "用户"), current_user(request)
    require_self_or_staff(actor, user_id)
    body = await read_body(request)
    changes = profile_changes(body, Profile.read(body))
    status = body.integer("status", choices=USER_STATUS)
    body.check()
    stamp = now_iso(request)

    def update(db: sqlite_utils.Database) -> None:
        row = USERS.row(db, user_id)
        require_not_outranked(actor, user_id, row["level"])
        if status is not None and status != row["status"]:
            check_status_change(actor, user_id, status)
            changes["status"] = status
        before = active_super_admins(db)
        sets = ", ".join(f"{column} = ?" for column in changes)
        db.execute(
            f"UPDATE users SET {sets}{', ' if sets else ''}update_time = ? WHERE id = ?",  # noqa: S608
            [*changes.values(), stamp, user_id],
        )
        keep_a_super_admin(db, before)

    await write(request, update)
    return no_content()


def check_status_change(actor: auth.AuthUser, user_id: int, status: int) -> None:
    """Only level >= 3 changes a status, and nobody disables their own account."""
    if not actor.is_staff:
        raise forbidden("权限不足: 只有管理员 (permission level >= 3) 可以修改用户状态")
    if actor.id == user_id and status == 0:
        raise conflict("不能禁用自己的账户")


def deletion_blockers(db: sqlite_utils.Database, user_id: int) -> str | None:
    """Why the user cannot be deleted (active charging, or billing history to keep), or None."""
    marks = ", ".join("?" for _ in ACTIVE_REQUEST_STATES)
    active = db.execute(
        f"SELECT COUNT(*) FROM charging_requests WHERE user_id = ? AND current_status IN ({marks})",  # noqa: S608
        [user_id, *ACTIVE_REQUEST_STATES],
    ).fetchone()[0]
    if active:
        return f"用户 {user_id} 有进行中的充电请求"
    charging = db.execute(
        "SELECT COUNT(*) FROM orders WHERE user_id = ? AND status = ?", [user_id, ORDER_CHARGING]
    ).fetchone()[0]
    if charging:
        return f"用户 {user_id} 有充电中的订单"
    history = db.execute(
        "SELECT (SELECT COUNT(*) FROM orders WHERE user_id = ?)"
        " + (SELECT COUNT(*) FROM charging_requests WHERE user_id = ?)",
        [user_id, user_id],
    ).fetchone()[0]
    if history:
        return f"用户 {user_id} 有 {history} 条订单/充电记录需要保留; 请改为禁用账户 (status 0)"
    return None


async def delete_user(request: web.Request) -> web.StreamResponse:
    """DELETE /api/Users/{id}: level >= 3; refused (409) while charging or with billing history."""
    user_id, actor = path_id(request, "id", "用户"), current_user(request)

    def delete(db: sqlite_utils.Database) -> None:
        row = USERS.row(db, user_id)
        require_not_outranked(actor, user_id, row["level"])
        if actor.id == user_id:
            raise conflict("不能删除自己的账户")
        if (why := deletion_blockers(db, user_id)) is not None:
            raise conflict(why)
        before = active_super_admins(db)
        try:
            db.execute("DELETE FROM users WHERE id = ?", [user_id])
        except sqlite3.IntegrityError as exc:
            raise conflict(f"用户 {user_id} 仍被其他记录引用: {exc}") from None
        keep_a_super_admin(db, before)

    await write(request, delete)
    log.info("user deleted", user=user_id, by=actor.id)
    return no_content()


async def platform_login(request: web.Request) -> web.StreamResponse:
    """POST /api/Users/login: openId + password → a token for both APIs (rate-limited)."""
    body = await read_body(request)
    open_id = body.text("openId", required=True, max_len=256)
    password = body.text("password", required=True, max_len=1024)
    body.check()
    assert open_id is not None and password is not None
    user, token = await login_with_password(request, open_id, password)
    row = await read(request, lambda db: USERS.row(db, user.id))
    return json_response(
        {
            "id": user.id,
            "openId": user.username,
            "nickname": row["nickname"],
            "avatar": row["avatar"],
            "token": token,
            "permissionLevel": user.level,
            "permissionLevelDescription": described(user.level, PERMISSION_LEVEL),
        }
    )


async def change_password(request: web.Request) -> web.StreamResponse:
    """PUT /api/Users/{id}/password: your own (oldPassword required), or an administrator resetting
    another user's (oldPassword optional; checked if given). Other sessions of the user end."""
    user_id, actor = path_id(request, "id", "用户"), current_user(request)
    require_self_or_staff(actor, user_id)
    body = await read_body(request)
    old = body.text("oldPassword", required=actor.id == user_id, max_len=1024)
    new = body.text("newPassword", required=True, max_len=auth.PASSWORD_LENGTH[1])
    if new is not None and (why := auth.password_problem(new)) is not None:
        body.bad("newPassword", why)
    body.check()
    assert new is not None
    record = await read(request, lambda db: password_target(db, actor, user_id))
    if old is not None:
        await check_old_password(request, record, old)
    new_hash = await off_loop(request, auth.hash_password, new)
    keep = auth.token_hash(request[TOKEN_KEY]) if actor.id == user_id else ""
    stamp = now_iso(request)

    def store_password(db: sqlite_utils.Database) -> None:
        db.execute(
            "UPDATE users SET password_hash = ?, update_time = ? WHERE id = ?", [new_hash, stamp, user_id]
        )
        db.execute("DELETE FROM tokens WHERE user_id = ? AND token_hash != ?", [user_id, keep])

    await write(request, store_password)
    log.info("password changed", user=user_id, by=actor.id)
    return no_content()


def password_target(db: sqlite_utils.Database, actor: auth.AuthUser, user_id: int) -> auth.LoginRecord:
    row = USERS.row(db, user_id)
    require_not_outranked(actor, user_id, row["level"])
    record = auth.find_login(db, row["username"])
    assert record is not None
    return record


async def check_old_password(request: web.Request, record: auth.LoginRecord, old: str) -> None:
    """Verify oldPassword off the loop; failures count against the login limiter."""
    limiter = auth_settings(request.app).limiter
    limiter.check(record.username, request.remote)
    if not await off_loop(request, auth.verify_password, old, record.password_hash):
        limiter.record_failure(record.username, request.remote)
        raise invalid("oldPassword", "does not match the current password")


async def top_up(request: web.Request) -> web.StreamResponse:
    """PUT /api/Users/{id}/balance: add ``amount`` yuan atomically and notify the user (type 4)."""
    user_id, actor = path_id(request, "id", "用户"), current_user(request)
    body = await read_body(request)
    cents = body.money_cents("amount", maximum_cents=TOP_UP_MAX_CENTS)
    body.check()
    assert cents is not None
    stamp = now_iso(request)

    def credit(db: sqlite_utils.Database) -> int:
        cursor = db.execute(
            "UPDATE users SET balance_cents = balance_cents + ?, update_time = ? WHERE id = ?",
            [cents, stamp, user_id],
        )
        if cursor.rowcount == 0:
            raise not_found("用户", user_id)
        balance = int(db.execute("SELECT balance_cents FROM users WHERE id = ?", [user_id]).fetchone()[0])
        content = f"您的账户已充值 {cents / 100:.2f} 元，当前余额 {balance / 100:.2f} 元。"
        insert_notification(db, user_id, NotificationText("余额充值成功", content, 4, None), stamp)
        return balance

    balance = await write(request, credit)
    log.info("balance topped up", user=user_id, cents=cents, balance_cents=balance, by=actor.id)
    return no_content()


# --- roles -----------------------------------------------------------------------------------------

_ROLE_SELECT = "SELECT id, name, description, permission_level, is_system FROM roles"


def role_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """The spec's role shape."""
    return {
        "id": row["id"],
        "name": row["name"],
        "description": row["description"],
        "permissionLevel": row["permission_level"],
        "permissionLevelDescription": described(row["permission_level"], PERMISSION_LEVEL),
        "isSystem": bool(row["is_system"]),
    }


ROLES = Resource("角色", _ROLE_SELECT, "id", "id", role_json)


def require_free_name(db: sqlite_utils.Database, name: str, role_id: int = 0) -> None:
    taken = db.execute("SELECT 1 FROM roles WHERE name = ? AND id != ?", [name, role_id]).fetchone()
    if taken is not None:
        raise conflict(f"角色名称 name {name!r} 已存在")


async def list_roles(request: web.Request) -> web.StreamResponse:
    """GET /api/UserRoles (level >= 3)."""
    return await list_response(request, ROLES)


async def get_role(request: web.Request) -> web.StreamResponse:
    """GET /api/UserRoles/{id} (level >= 3)."""
    return await item_response(request, ROLES, path_id(request, "id", "角色"))


@dataclass(frozen=True)
class RoleInput:
    """A role body; None fields were not given (an update keeps them)."""

    name: str | None
    description: str | None
    level: int | None
    description_given: bool

    @classmethod
    def read(cls, body: Body, *, required: bool) -> RoleInput:
        role = cls(
            body.text("name", required=required, max_len=50),
            body.text("description", max_len=200),
            body.integer("permissionLevel", required=required, choices=PERMISSION_LEVEL),
            body.present("description"),
        )
        body.check()
        return role


async def create_role(request: web.Request) -> web.StreamResponse:
    """POST /api/UserRoles (level 4)."""
    require_super(current_user(request))
    role = RoleInput.read(await read_body(request), required=True)
    assert role.name is not None
    stamp = now_iso(request)

    def insert(db: sqlite_utils.Database) -> int:
        require_free_name(db, role.name or "")
        cursor = db.execute(
            "INSERT INTO roles (name, description, permission_level, is_system, create_time, update_time)"
            " VALUES (?, ?, ?, 0, ?, ?)",
            [role.name, role.description, role.level, stamp, stamp],
        )
        return int(cursor.lastrowid or 0)

    role_id = await write(request, insert)
    log.info("role created", role=role_id, level=role.level)
    return created(role_id)


async def update_role(request: web.Request) -> web.StreamResponse:
    """PUT /api/UserRoles/{id} (level 4): a system role's level cannot change (409)."""
    role_id = path_id(request, "id", "角色")
    require_super(current_user(request))
    role = RoleInput.read(await read_body(request), required=False)
    stamp = now_iso(request)

    def update(db: sqlite_utils.Database) -> None:
        row = ROLES.row(db, role_id)
        level = role.level if role.level is not None else row["permission_level"]
        if row["is_system"] and level != row["permission_level"]:
            raise conflict(f"系统角色 {row['name']} 的权限级别不能修改")
        if role.name is not None:
            require_free_name(db, role.name, role_id)
        description = role.description if role.description_given else row["description"]
        before = active_super_admins(db)
        db.execute(
            "UPDATE roles SET name = ?, description = ?, permission_level = ?, update_time = ? WHERE id = ?",
            [role.name or row["name"], description, level, stamp, role_id],
        )
        keep_a_super_admin(db, before)

    await write(request, update)
    return no_content()


async def delete_role(request: web.Request) -> web.StreamResponse:
    """DELETE /api/UserRoles/{id} (level 4): system roles cannot be deleted (409)."""
    role_id = path_id(request, "id", "角色")
    require_super(current_user(request))

    def delete(db: sqlite_utils.Database) -> None:
        row = ROLES.row(db, role_id)
        if row["is_system"]:
            raise conflict(f"系统角色 {row['name']} 不能删除")
        before = active_super_admins(db)
        db.execute("DELETE FROM roles WHERE id = ?", [role_id])
        keep_a_super_admin(db, before)

    await write(request, delete)
    log.info("role deleted", role=role_id)
    return no_content()


def roles_of(db: sqlite_utils.Database, user_id: int) -> list[dict[str, Any]]:
    require_user(db, user_id)
    return list(
        db.query(
            "SELECT r.id, r.name, r.description, r.permission_level, r.is_system FROM roles r"
            " JOIN user_roles ur ON ur.role_id = r.id WHERE ur.user_id = ? ORDER BY r.id",
            [user_id],
        )
    )


async def roles_by_user(request: web.Request) -> web.StreamResponse:
    """GET /api/UserRoles/byUser/{userId}: yourself, or level >= 3."""
    user_id = path_id(request, "userId", "用户")
    require_self_or_staff(current_user(request), user_id)
    return await list_response(request, ROLES, lambda db: roles_of(db, user_id))


async def assign_role(request: web.Request) -> web.StreamResponse:
    """POST /api/UserRoles/assign {"userId", "roleId"} (level 4); assigning a held role is a no-op."""
    actor = current_user(request)
    require_super(actor)
    body = await read_body(request)
    user_id, role_id = body.integer("userId", required=True), body.integer("roleId", required=True)
    body.check()
    assert user_id is not None and role_id is not None
    stamp = now_iso(request)

    def assign(db: sqlite_utils.Database) -> int:
        require_user(db, user_id)
        role = ROLES.row(db, role_id)
        if actor.id == user_id and role["permission_level"] > actor.level:
            raise forbidden("权限不足: 不能提升自己的权限级别")
        db.execute(
            "INSERT OR IGNORE INTO user_roles (user_id, role_id, assigned_time) VALUES (?, ?, ?)",
            [user_id, role_id, stamp],
        )
        return auth.permission_level(db, user_id)

    level = await write(request, assign)
    log.info("role assigned", user=user_id, role=role_id, by=actor.id)
    return json_response({"userId": user_id, "roleId": role_id, "permissionLevel": level})


async def remove_role(request: web.Request) -> web.StreamResponse:
    """DELETE /api/UserRoles/remove/{userId}/{roleId} (level 4); without roles a user is level 1."""
    user_id, role_id = path_id(request, "userId", "用户"), path_id(request, "roleId", "角色")
    actor = current_user(request)
    require_super(actor)

    def remove(db: sqlite_utils.Database) -> None:
        require_user(db, user_id)
        ROLES.row(db, role_id)
        before = active_super_admins(db)
        cursor = db.execute("DELETE FROM user_roles WHERE user_id = ? AND role_id = ?", [user_id, role_id])
        if cursor.rowcount == 0:
            raise ApiError(404, "RESOURCE_NOT_FOUND", f"用户 {user_id} 没有角色 {role_id}")
        keep_a_super_admin(db, before)

    await write(request, remove)
    log.info("role removed", user=user_id, role=role_id, by=actor.id)
    return no_content()


async def check_role(request: web.Request) -> web.StreamResponse:
    """GET /api/UserRoles/check/{userId}/{roleId} → true / false."""
    user_id, role_id = path_id(request, "userId", "用户"), path_id(request, "roleId", "角色")
    require_self_or_staff(current_user(request), user_id)

    def holds(db: sqlite_utils.Database) -> bool:
        require_user(db, user_id)
        ROLES.row(db, role_id)
        row = db.execute("SELECT 1 FROM user_roles WHERE user_id = ? AND role_id = ?", [user_id, role_id])
        return row.fetchone() is not None

    return json_response(await read(request, holds))


async def check_permission(request: web.Request) -> web.StreamResponse:
    """GET /api/UserRoles/checkPermission/{userId}/{permissionLevel} → level >= permissionLevel."""
    user_id = path_id(request, "userId", "用户")
    raw = request.match_info["permissionLevel"]
    if not INT_TEXT.fullmatch(raw) or int(raw) not in PERMISSION_LEVEL:
        raise invalid("permissionLevel", f"must be one of 1, 2, 3, 4; got {raw[:40]!r}")
    require_self_or_staff(current_user(request), user_id)

    def level_of(db: sqlite_utils.Database) -> int:
        require_user(db, user_id)
        return auth.permission_level(db, user_id)

    return json_response(await read(request, level_of) >= int(raw))


# --- addresses -------------------------------------------------------------------------------------

_ADDRESS_TEXT = {  # JSON name -> (column, required, max length)
    "recipientName": ("recipient_name", True, 50),
    "province": ("province", True, 50),
    "city": ("city", True, 50),
    "district": ("district", False, 50),
    "detailAddress": ("detail_address", True, 200),
    "tag": ("tag", False, 20),
}


def address_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """The spec's address shape; fullAddress = province + city + district + detailAddress."""
    parts = (row["province"], row["city"], row["district"], row["detail_address"])
    return {
        "id": row["id"],
        "userId": row["user_id"],
        "recipientName": row["recipient_name"],
        "recipientPhone": row["recipient_phone"],
        "province": row["province"],
        "city": row["city"],
        "district": row["district"],
        "detailAddress": row["detail_address"],
        "fullAddress": "".join(part or "" for part in parts),
        "postalCode": row["postal_code"],
        "isDefault": bool(row["is_default"]),
        "tag": row["tag"],
        "createTime": utc_z(row["create_time"]),
        "updateTime": utc_z(row["update_time"]),
    }


ADDRESSES = Resource("地址", "SELECT * FROM user_addresses", "id", "is_default DESC, id", address_json)


def own_address(db: sqlite_utils.Database, actor: auth.AuthUser, address_id: int) -> dict[str, Any]:
    """The address, if the caller may act on it (404 absent, 403 another user's)."""
    row = ADDRESSES.row(db, address_id)
    require_self_or_staff(actor, row["user_id"])
    return row


@dataclass(frozen=True)
class AddressInput:
    """A validated address body: column values and the isDefault wish (None: not given)."""

    columns: dict[str, Any]
    is_default: bool | None

    @classmethod
    def read(cls, body: Body) -> AddressInput:
        columns = {
            column: body.text(name, required=required, max_len=max_len)
            for name, (column, required, max_len) in _ADDRESS_TEXT.items()
        }
        columns["recipient_phone"] = body.text(
            "recipientPhone", required=True, max_len=32, pattern=auth.PHONE_RE, hint=_PHONE_HINT
        )
        columns["postal_code"] = body.text(
            "postalCode", max_len=16, pattern=_POSTAL, hint="must be 3 to 16 letters, digits, spaces or -"
        )
        is_default = body.boolean("isDefault")
        body.check()
        return cls(columns, is_default)


def make_default(db: sqlite_utils.Database, user_id: int, address_id: int) -> None:
    """The one default address of the user (inside the caller's transaction)."""
    db.execute("UPDATE user_addresses SET is_default = (id = ?) WHERE user_id = ?", [address_id, user_id])


async def addresses_by_user(request: web.Request) -> web.StreamResponse:
    """GET /api/UserAddresses/byUser/{userId}: the default first."""
    user_id = path_id(request, "userId", "用户")
    require_self_or_staff(current_user(request), user_id)

    def rows(db: sqlite_utils.Database) -> list[dict[str, Any]]:
        require_user(db, user_id)
        return ADDRESSES.rows(db, "user_id = ?", [user_id])

    return await list_response(request, ADDRESSES, rows)


async def get_address(request: web.Request) -> web.StreamResponse:
    """GET /api/UserAddresses/{id}."""
    address_id, actor = path_id(request, "id", "地址"), current_user(request)
    return json_response(address_json(await read(request, lambda db: own_address(db, actor, address_id))))


async def default_address(request: web.Request) -> web.StreamResponse:
    """GET /api/UserAddresses/default/{userId}: 404 when the user has no address."""
    user_id = path_id(request, "userId", "用户")
    require_self_or_staff(current_user(request), user_id)

    def default(db: sqlite_utils.Database) -> dict[str, Any]:
        require_user(db, user_id)
        rows = list(db.query("SELECT * FROM user_addresses WHERE user_id = ? AND is_default = 1", [user_id]))
        if not rows:
            raise ApiError(404, "RESOURCE_NOT_FOUND", f"用户 {user_id} 没有默认地址")
        return rows[0]

    return json_response(address_json(await read(request, default)))


async def create_address(request: web.Request) -> web.StreamResponse:
    """POST /api/UserAddresses/{userId}: the first address (or isDefault true) becomes the default."""
    user_id = path_id(request, "userId", "用户")
    require_self_or_staff(current_user(request), user_id)
    address = AddressInput.read(await read_body(request))
    stamp = now_iso(request)

    def insert(db: sqlite_utils.Database) -> int:
        require_user(db, user_id)
        count = db.execute("SELECT COUNT(*) FROM user_addresses WHERE user_id = ?", [user_id]).fetchone()[0]
        if count >= MAX_ADDRESSES:
            raise conflict(f"用户 {user_id} 已有 {count} 个地址 (最多 {MAX_ADDRESSES} 个)")
        row = {
            **address.columns,
            "user_id": user_id,
            "is_default": 0,
            "create_time": stamp,
            "update_time": stamp,
        }
        address_id = int(db.table("user_addresses").insert(row).last_rowid or 0)
        if count == 0 or address.is_default:
            make_default(db, user_id, address_id)
        return address_id

    return created(await write(request, insert))


async def update_address(request: web.Request) -> web.StreamResponse:
    """PUT /api/UserAddresses/{id}: replace the fields; isDefault true makes it the default (false on
    the default address keeps it: set another address as default instead)."""
    address_id, actor = path_id(request, "id", "地址"), current_user(request)
    address = AddressInput.read(await read_body(request))
    stamp = now_iso(request)

    def update(db: sqlite_utils.Database) -> None:
        row = own_address(db, actor, address_id)
        db.table("user_addresses").update(address_id, {**address.columns, "update_time": stamp})
        if address.is_default:
            make_default(db, row["user_id"], address_id)

    await write(request, update)
    return no_content()


async def delete_address(request: web.Request) -> web.StreamResponse:
    """DELETE /api/UserAddresses/{id}: if it was the default, the newest remaining one becomes it."""
    address_id, actor = path_id(request, "id", "地址"), current_user(request)

    def delete(db: sqlite_utils.Database) -> None:
        row = own_address(db, actor, address_id)
        db.execute("DELETE FROM user_addresses WHERE id = ?", [address_id])
        if row["is_default"]:
            newest = db.execute(
                "SELECT id FROM user_addresses WHERE user_id = ? ORDER BY id DESC LIMIT 1", [row["user_id"]]
            ).fetchone()
            if newest is not None:
                make_default(db, row["user_id"], int(newest[0]))

    await write(request, delete)
    return no_content()


async def set_default_address(request: web.Request) -> web.StreamResponse:
    """PUT /api/UserAddresses/{userId}/default/{addressId}: one transaction clears the others."""
    user_id, address_id = path_id(request, "userId", "用户"), path_id(request, "addressId", "地址")
    require_self_or_staff(current_user(request), user_id)
    stamp = now_iso(request)

    def set_default(db: sqlite_utils.Database) -> None:
        require_user(db, user_id)
        row = ADDRESSES.row(db, address_id)
        if row["user_id"] != user_id:
            raise ApiError(404, "RESOURCE_NOT_FOUND", f"地址 {address_id} 不属于用户 {user_id}")
        make_default(db, user_id, address_id)
        db.execute("UPDATE user_addresses SET update_time = ? WHERE id = ?", [stamp, address_id])

    await write(request, set_default)
    return no_content()


# --- notifications ---------------------------------------------------------------------------------

_NOTIFICATION_SELECT = (
    "SELECT id, user_id, title, content, type, related_id, is_read, read_time, create_time FROM notifications"
)


@dataclass(frozen=True)
class NotificationText:
    """What a new notification says."""

    title: str
    content: str
    type: int
    related_id: str | None


def insert_notification(db: sqlite_utils.Database, user_id: int, text: NotificationText, stamp: str) -> int:
    """One notification row, visible to both APIs (kind from :data:`KIND_OF_TYPE`)."""
    cursor = db.execute(
        "INSERT INTO notifications (user_id, kind, type, title, content, related_id, is_read, create_time)"
        " VALUES (?, ?, ?, ?, ?, ?, 0, ?)",
        [user_id, KIND_OF_TYPE[text.type], text.type, text.title, text.content, text.related_id, stamp],
    )
    return int(cursor.lastrowid or 0)


def notification_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """The spec's notification shape."""
    return {
        "id": row["id"],
        "userId": row["user_id"],
        "title": row["title"],
        "content": row["content"],
        "type": row["type"],
        "typeDescription": described(row["type"], NOTIFICATION_TYPE),
        "relatedId": row["related_id"],
        "isRead": bool(row["is_read"]),
        "readTime": utc_z(row["read_time"]),
        "createTime": utc_z(row["create_time"]),
    }


NOTIFICATIONS = Resource(
    "通知", _NOTIFICATION_SELECT, "id", "julianday(create_time) DESC, id DESC", notification_json
)


def notification_row(db: sqlite_utils.Database, actor: auth.AuthUser, notification_id: int) -> dict[str, Any]:
    """The notification, if the caller may act on it (404 absent, 403 another user's)."""
    row = NOTIFICATIONS.row(db, notification_id)
    require_self_or_staff(actor, row["user_id"])
    return row


def read_notification_text(body: Body) -> NotificationText:
    title = body.text("title", required=True, max_len=100)
    content = body.text("content", required=True, max_len=2000)
    kind = body.integer("type", required=True, choices=NOTIFICATION_TYPE)
    related = body.text("relatedId", max_len=64)
    body.check()
    assert title is not None and content is not None and kind is not None
    return NotificationText(title, content, kind, related)


def user_notifications(
    request: web.Request, *, unread_only: bool
) -> Callable[[sqlite_utils.Database], list[dict[str, Any]]]:
    """The access-checked query of a user's notifications (path ``userId``)."""
    user_id = path_id(request, "userId", "用户")
    require_self_or_staff(current_user(request), user_id)
    unread = " AND is_read = 0" if unread_only else ""

    def rows(db: sqlite_utils.Database) -> list[dict[str, Any]]:
        require_user(db, user_id)
        return NOTIFICATIONS.rows(db, f"user_id = ?{unread}", [user_id])

    return rows


async def notifications_by_user(request: web.Request) -> web.StreamResponse:
    """GET /api/UserNotifications/byUser/{userId}: newest first."""
    return await list_response(request, NOTIFICATIONS, user_notifications(request, unread_only=False))


async def unread_notifications(request: web.Request) -> web.StreamResponse:
    """GET /api/UserNotifications/unread/{userId}: newest first."""
    return await list_response(request, NOTIFICATIONS, user_notifications(request, unread_only=True))


async def get_notification(request: web.Request) -> web.StreamResponse:
    """GET /api/UserNotifications/{id}."""
    notification_id, actor = path_id(request, "id", "通知"), current_user(request)
    row = await read(request, lambda db: notification_row(db, actor, notification_id))
    return json_response(notification_json(row))


async def create_notification(request: web.Request) -> web.StreamResponse:
    """POST /api/UserNotifications (level >= 3)."""
    body = await read_body(request)
    user_id = body.integer("userId", required=True)
    text = read_notification_text(body)
    assert user_id is not None
    stamp = now_iso(request)

    def insert(db: sqlite_utils.Database) -> int:
        require_user(db, user_id)
        return insert_notification(db, user_id, text, stamp)

    return created(await write(request, insert))


def require_users(db: sqlite_utils.Database, user_ids: Iterable[int]) -> None:
    missing = [uid for uid in user_ids if not row_exists(db, "users", uid)]
    if missing:
        shown = ", ".join(map(str, missing[:20])) + (" ..." if len(missing) > 20 else "")
        raise ApiError(404, "RESOURCE_NOT_FOUND", f"用户不存在: {shown}")


async def batch_notifications(request: web.Request) -> web.StreamResponse:
    """POST /api/UserNotifications/batch (level >= 3): one notification per user; 201 {"count"}."""
    body = await read_body(request)
    user_ids = body.ids("userIds")
    text = read_notification_text(body)
    assert user_ids is not None
    stamp = now_iso(request)

    def insert(db: sqlite_utils.Database) -> int:
        require_users(db, user_ids)
        for user_id in user_ids:
            insert_notification(db, user_id, text, stamp)
        return len(user_ids)

    return json_response({"count": await write(request, insert)}, 201)


def mark_read_sql(where: str) -> str:
    return f"UPDATE notifications SET is_read = 1, read_time = ? WHERE is_read = 0 AND {where}"  # noqa: S608


async def read_notification(request: web.Request) -> web.StreamResponse:
    """PUT /api/UserNotifications/read/{id}: 204 (already read: unchanged)."""
    notification_id, actor = path_id(request, "id", "通知"), current_user(request)
    stamp = now_iso(request)

    def mark(db: sqlite_utils.Database) -> None:
        notification_row(db, actor, notification_id)
        db.execute(mark_read_sql("id = ?"), [stamp, notification_id])

    await write(request, mark)
    return no_content()


async def batch_read(request: web.Request) -> web.StreamResponse:
    """PUT /api/UserNotifications/batchRead {"notificationIds"}: {"count"} newly read; unknown ids
    are skipped, another user's need level >= 3 (403)."""
    actor = current_user(request)
    body = await read_body(request)
    ids = body.ids("notificationIds", allow_empty=True)
    body.check()
    assert ids is not None
    stamp = now_iso(request)

    def mark(db: sqlite_utils.Database) -> int:
        count = 0
        for notification_id in ids:
            owner = db.execute("SELECT user_id FROM notifications WHERE id = ?", [notification_id]).fetchone()
            if owner is None:
                continue
            require_self_or_staff(actor, int(owner[0]))
            count += db.execute(mark_read_sql("id = ?"), [stamp, notification_id]).rowcount
        return count

    return json_response({"count": await write(request, mark)})


async def read_all(request: web.Request) -> web.StreamResponse:
    """PUT /api/UserNotifications/readAll/{userId}: {"count"} newly read."""
    user_id = path_id(request, "userId", "用户")
    require_self_or_staff(current_user(request), user_id)
    stamp = now_iso(request)

    def mark(db: sqlite_utils.Database) -> int:
        require_user(db, user_id)
        return int(db.execute(mark_read_sql("user_id = ?"), [stamp, user_id]).rowcount)

    return json_response({"count": await write(request, mark)})


async def delete_notification(request: web.Request) -> web.StreamResponse:
    """DELETE /api/UserNotifications/{id}."""
    notification_id, actor = path_id(request, "id", "通知"), current_user(request)

    def delete(db: sqlite_utils.Database) -> None:
        notification_row(db, actor, notification_id)
        db.execute("DELETE FROM notifications WHERE id = ?", [notification_id])

    await write(request, delete)
    return no_content()


async def unread_count(request: web.Request) -> web.StreamResponse:
    """GET /api/UserNotifications/unreadCount/{userId}: {"count"}."""
    user_id = path_id(request, "userId", "用户")
    require_self_or_staff(current_user(request), user_id)

    def count(db: sqlite_utils.Database) -> int:
        require_user(db, user_id)
        row = db.execute("SELECT COUNT(*) FROM notifications WHERE user_id = ? AND is_read = 0", [user_id])
        return int(row.fetchone()[0])

    return json_response({"count": await read(request, count)})


# --- the route table -------------------------------------------------------------------------------

_PHONE = r"^\+?[0-9][0-9 \-]{2,30}$"
_EMAIL = r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$"
USER = obj_schema(
    {
        "id": INT,
        "openId": STR,
        "nickname": NSTR,
        "avatar": NSTR,
        "phone": NSTR,
        "email": NSTR,
        "balance": {**NUM, "description": "yuan"},
        "registerTime": DATETIME,
        "lastLoginTime": DATETIME,
        "status": codes_schema(USER_STATUS),
        "statusDescription": STR,
        "gender": codes_schema(GENDER),
        "genderDescription": STR,
        "permissionLevel": codes_schema(PERMISSION_LEVEL),
        "permissionLevelDescription": STR,
    }
)
_PROFILE_FIELDS = {
    "nickname": text_schema(64),
    "avatar": text_schema(1024),
    "phone": text_schema(32, pattern=_PHONE),
    "email": text_schema(254, pattern=_EMAIL),
    "gender": codes_schema(GENDER, nullable=True),
}
USER_CREATE = obj_schema(
    {
        "openId": {"type": "string", "pattern": r"^[A-Za-z0-9_.\-@]{3,64}$"},
        "password": {
            "type": "string",
            "minLength": auth.PASSWORD_LENGTH[0],
            "pattern": r"\S",
            "maxLength": auth.PASSWORD_LENGTH[1],
        },
        **_PROFILE_FIELDS,
    },
    ("openId", "password"),
)
USER_UPDATE = obj_schema({**_PROFILE_FIELDS, "status": codes_schema(USER_STATUS, nullable=True)})
LOGIN = obj_schema(
    {"openId": text_schema(256, nullable=False), "password": text_schema(1024, nullable=False)},
    ("openId", "password"),
)
LOGIN_RESULT = obj_schema(
    {
        "id": INT,
        "openId": STR,
        "nickname": NSTR,
        "avatar": NSTR,
        "token": STR,
        "permissionLevel": INT,
        "permissionLevelDescription": STR,
    }
)
PASSWORD = obj_schema(
    {
        "oldPassword": {**text_schema(1024), "description": "required when changing your own password"},
        "newPassword": {
            "type": "string",
            "minLength": auth.PASSWORD_LENGTH[0],
            "pattern": r"\S",
            "maxLength": auth.PASSWORD_LENGTH[1],
        },
    },
    ("newPassword",),
)
BALANCE = obj_schema(
    {
        "amount": {
            "type": "number",
            "exclusiveMinimum": 0,
            "maximum": TOP_UP_MAX_CENTS // 100,
            "multipleOf": 0.01,
            "description": "yuan, at most 2 decimals",
        }
    },
    ("amount",),
)
ROLE = obj_schema(
    {
        "id": INT,
        "name": STR,
        "description": NSTR,
        "permissionLevel": codes_schema(PERMISSION_LEVEL),
        "permissionLevelDescription": STR,
        "isSystem": BOOL,
    }
)
ROLE_FIELDS = {
    "name": text_schema(50, nullable=False),
    "description": text_schema(200),
    "permissionLevel": codes_schema(PERMISSION_LEVEL),
}
ASSIGN = obj_schema(
    {"userId": ID_SCHEMA, "roleId": ID_SCHEMA},
    ("userId", "roleId"),
)
ADDRESS = obj_schema(
    {
        "id": INT,
        "userId": INT,
        "recipientName": STR,
        "recipientPhone": STR,
        "province": STR,
        "city": STR,
        "district": NSTR,
        "detailAddress": STR,
        "fullAddress": STR,
        "postalCode": NSTR,
        "isDefault": BOOL,
        "tag": NSTR,
        "createTime": DATETIME,
        "updateTime": DATETIME,
    }
)
ADDRESS_BODY = obj_schema(
    {
        **{
            name: text_schema(size, nullable=not required)
            for name, (_c, required, size) in _ADDRESS_TEXT.items()
        },
        "recipientPhone": text_schema(32, nullable=False, pattern=_PHONE),
        "postalCode": text_schema(16, pattern=r"^[A-Za-z0-9 \-]{3,16}$"),
        "isDefault": {"type": ["boolean", "null"]},
    },
    [*(name for name, (_c, required, _s) in _ADDRESS_TEXT.items() if required), "recipientPhone"],
)
NOTIFICATION = obj_schema(
    {
        "id": INT,
        "userId": INT,
        "title": STR,
        "content": STR,
        "type": codes_schema(NOTIFICATION_TYPE),
        "typeDescription": STR,
        "relatedId": NSTR,
        "isRead": BOOL,
        "readTime": DATETIME,
        "createTime": DATETIME,
    }
)
_NOTIFICATION_TEXT = {
    "title": text_schema(100, nullable=False),
    "content": text_schema(2000, nullable=False),
    "type": codes_schema(NOTIFICATION_TYPE),
    "relatedId": text_schema(64),
}
_IDS = {"type": "array", "items": ID_SCHEMA, "maxItems": MAX_BATCH}
NOTIFICATION_BODY = obj_schema(
    {"userId": ID_SCHEMA, **_NOTIFICATION_TEXT},
    ("userId", "title", "content", "type"),
)
BATCH_BODY = obj_schema(
    {"userIds": {**_IDS, "minItems": 1}, **_NOTIFICATION_TEXT}, ("userIds", "title", "content", "type")
)
BATCH_READ = obj_schema({"notificationIds": _IDS}, ("notificationIds",))
COUNT_RESULT = obj_schema({"count": INT}, ("count",))

_USER_ID = id_path("userId", "用户ID")
_STAFF_NOTE = "Needs permission level >= 3 (管理员)."
_OWN_NOTE = "Your own data, or any user's with permission level >= 3 (管理员); otherwise 403."
_SUPER_NOTE = "Needs permission level 4 (超级管理员); otherwise 403."


def _route(
    method: str, path: str, handler: Any, summary: str, access: Access, tag: str, **options: Any
) -> RouteSpec:
    errors = tuple(options.pop("errors", ()))
    if access is not Access.PUBLIC:
        errors = (DENIED_403, *errors)
    return RouteSpec(method, path, handler, summary, access, tag, PLATFORM_STYLE, errors=errors, **options)


def _user_routes() -> list[RouteSpec]:
    s, u, tag, uid = Access.STAFF, Access.USER, "Users", (id_path("id", "用户ID"),)
    return [
        _route(
            "GET",
            "/api/Users",
            list_users,
            "获取所有用户",
            s,
            tag,
            response={"type": "array", "items": USER},
            description=_STAFF_NOTE,
        ),
        _route(
            "GET",
            "/api/Users/paged",
            paged_users,
            "获取用户分页列表",
            s,
            tag,
            parameters=(
                *PAGE_PARAMETERS,
                {"name": "status", "in": "query", "schema": codes_schema(USER_STATUS)},
            ),
            response=page_schema(USER),
            description=f"{_STAFF_NOTE} keyword matches openId, nickname, phone or email; "
            "pageSize above 100 is clamped to 100, 0 or less is 400.",
        ),
        _route(
            "POST",
            "/api/Users/login",
            platform_login,
            "用户登录 (token for both APIs)",
            Access.PUBLIC,
            tag,
            request_body=LOGIN,
            response=LOGIN_RESULT,
            errors=((401, "AUTH_INVALID"), (429, "AUTH_INVALID")),
            description="The driver API's login: 5 failures per account in 5 minutes, or 20 per "
            "address, give 429 with Retry-After. Use the token as "
            "`Authorization: Bearer <token>` (or `Token <token>`).",
        ),
        _route(
            "GET",
            "/api/Users/{id}",
            get_user,
            "获取用户详情",
            u,
            tag,
            parameters=uid,
            response=USER,
            errors=(MISSING_404,),
            description=_OWN_NOTE,
        ),
        _route(
            "POST",
            "/api/Users",
            create_user,
            "创建用户",
            s,
            tag,
            request_body=USER_CREATE,
            response=ID_RESULT,
            status=201,
            errors=(CONFLICT_409,),
            description=f"{_STAFF_NOTE} openId (= the driver API's username) must be unused "
            "(409 otherwise); the new user has level 1.",
        ),
        _route(
            "PUT",
            "/api/Users/{id}",
            update_user,
            "更新用户",
            u,
            tag,
            parameters=uid,
            request_body=USER_UPDATE,
            status=204,
            errors=(MISSING_404, CONFLICT_409),
            description=f"{_OWN_NOTE} Fields left out are kept; a text field sent as null or "
            '"" is cleared. status needs level >= 3; an administrator cannot '
            "change a user of a higher level; nobody disables their own account.",
        ),
        _route(
            "DELETE",
            "/api/Users/{id}",
            delete_user,
            "删除用户",
            s,
            tag,
            parameters=uid,
            status=204,
            errors=(MISSING_404, CONFLICT_409),
            description=f"{_STAFF_NOTE} 409 while the user has an active charging request or "
            "a charging order, and for a user with orders or charging records "
            "(kept for billing: disable with status 0 instead); 409 for yourself.",
        ),
        _route(
            "PUT",
            "/api/Users/{id}/password",
            change_password,
            "修改密码",
            u,
            tag,
            parameters=uid,
            request_body=PASSWORD,
            status=204,
            errors=(MISSING_404, (429, "AUTH_INVALID")),
            description=f"{_OWN_NOTE} Changing your own password needs oldPassword (a wrong one "
            "is 400 naming oldPassword and counts as a failed login); an "
            "administrator resetting another user's may omit it. The user's other "
            "tokens are revoked.",
        ),
        _route(
            "PUT",
            "/api/Users/{id}/balance",
            top_up,
            "充值余额",
            s,
            tag,
            parameters=uid,
            request_body=BALANCE,
            status=204,
            errors=(MISSING_404,),
            description=f"{_STAFF_NOTE} amount > 0, at most 2 decimals, at most 100000; "
            "the user gets a 充值通知 (type 4) notification.",
        ),
    ]


def _role_routes() -> list[RouteSpec]:
    s, u, tag, rid = Access.STAFF, Access.USER, "UserRoles", (id_path("id", "角色ID"),)
    pair = (_USER_ID, id_path("roleId", "角色ID"))
    return [
        _route(
            "GET",
            "/api/UserRoles",
            list_roles,
            "获取所有角色",
            s,
            tag,
            response={"type": "array", "items": ROLE},
            description=_STAFF_NOTE,
        ),
        _route(
            "GET",
            "/api/UserRoles/{id}",
            get_role,
            "获取角色详情",
            s,
            tag,
            parameters=rid,
            response=ROLE,
            errors=(MISSING_404,),
            description=_STAFF_NOTE,
        ),
        _route(
            "POST",
            "/api/UserRoles",
            create_role,
            "创建角色",
            s,
            tag,
            request_body=obj_schema(ROLE_FIELDS, ("name", "permissionLevel")),
            response=ID_RESULT,
            status=201,
            errors=(CONFLICT_409,),
            description=f"{_SUPER_NOTE} name must be unused.",
        ),
        _route(
            "PUT",
            "/api/UserRoles/{id}",
            update_role,
            "更新角色",
            s,
            tag,
            parameters=rid,
            request_body=obj_schema(ROLE_FIELDS),
            status=204,
            errors=(MISSING_404, CONFLICT_409),
            description=f"{_SUPER_NOTE} Fields left out are kept; a system role's "
            "permissionLevel cannot change (409).",
        ),
        _route(
            "DELETE",
            "/api/UserRoles/{id}",
            delete_role,
            "删除角色",
            s,
            tag,
            parameters=rid,
            status=204,
            errors=(MISSING_404, CONFLICT_409),
            description=f"{_SUPER_NOTE} System roles cannot be deleted (409).",
        ),
        _route(
            "GET",
            "/api/UserRoles/byUser/{userId}",
            roles_by_user,
            "获取用户的角色列表",
            u,
            tag,
            parameters=(_USER_ID,),
            response={"type": "array", "items": ROLE},
            errors=(MISSING_404,),
            description=_OWN_NOTE,
        ),
        _route(
            "POST",
            "/api/UserRoles/assign",
            assign_role,
            "分配用户角色",
            s,
            tag,
            request_body=ASSIGN,
            errors=(MISSING_404,),
            response=obj_schema({"userId": INT, "roleId": INT, "permissionLevel": INT}),
            description=f"{_SUPER_NOTE} Assigning a role the user holds changes nothing; "
            "nobody raises their own level.",
        ),
        _route(
            "DELETE",
            "/api/UserRoles/remove/{userId}/{roleId}",
            remove_role,
            "移除用户角色",
            s,
            tag,
            parameters=pair,
            status=204,
            errors=(MISSING_404, CONFLICT_409),
            description=f"{_SUPER_NOTE} A user without roles is level 1; the last active super "
            "administrator cannot lose level 4 (409).",
        ),
        _route(
            "GET",
            "/api/UserRoles/check/{userId}/{roleId}",
            check_role,
            "检查用户是否拥有指定角色",
            u,
            tag,
            parameters=pair,
            response=BOOL,
            errors=(MISSING_404,),
            description=_OWN_NOTE,
        ),
        _route(
            "GET",
            "/api/UserRoles/checkPermission/{userId}/{permissionLevel}",
            check_permission,
            "检查用户是否拥有指定权限级别",
            u,
            tag,
            parameters=(
                _USER_ID,
                path_parameter(
                    "permissionLevel", "权限级别", {"type": "integer", "enum": list(PERMISSION_LEVEL)}
                ),
            ),
            response=BOOL,
            errors=(MISSING_404,),
            description=f"{_OWN_NOTE} true when the user's level >= permissionLevel.",
        ),
    ]


def _address_routes() -> list[RouteSpec]:
    u, tag, aid = Access.USER, "UserAddresses", (id_path("id", "地址ID"),)
    one = {"response": ADDRESS, "errors": (MISSING_404,), "description": _OWN_NOTE}
    return [
        _route(
            "GET",
            "/api/UserAddresses/byUser/{userId}",
            addresses_by_user,
            "获取用户的所有地址",
            u,
            tag,
            parameters=(_USER_ID,),
            response={"type": "array", "items": ADDRESS},
            errors=(MISSING_404,),
            description=f"{_OWN_NOTE} The default address first.",
        ),
        _route("GET", "/api/UserAddresses/{id}", get_address, "获取地址详情", u, tag, parameters=aid, **one),
        _route(
            "GET",
            "/api/UserAddresses/default/{userId}",
            default_address,
            "获取用户的默认地址",
            u,
            tag,
            parameters=(_USER_ID,),
            **one,
        ),
        _route(
            "POST",
            "/api/UserAddresses/{userId}",
            create_address,
            "创建用户地址",
            u,
            tag,
            parameters=(_USER_ID,),
            request_body=ADDRESS_BODY,
            response=ID_RESULT,
            status=201,
            errors=(MISSING_404, CONFLICT_409),
            description=f"{_OWN_NOTE} The user's first address, or one with isDefault true, "
            f"becomes the only default. At most {MAX_ADDRESSES} addresses (409).",
        ),
        _route(
            "PUT",
            "/api/UserAddresses/{id}",
            update_address,
            "更新用户地址",
            u,
            tag,
            parameters=aid,
            request_body=ADDRESS_BODY,
            status=204,
            errors=(MISSING_404,),
            description=f"{_OWN_NOTE} Replaces the fields; isDefault true makes it the only "
            "default (false keeps the current default: set another one instead).",
        ),
        _route(
            "DELETE",
            "/api/UserAddresses/{id}",
            delete_address,
            "删除用户地址",
            u,
            tag,
            parameters=aid,
            status=204,
            errors=(MISSING_404,),
            description=f"{_OWN_NOTE} Deleting the default makes the newest remaining one default.",
        ),
        _route(
            "PUT",
            "/api/UserAddresses/{userId}/default/{addressId}",
            set_default_address,
            "设置默认地址",
            u,
            tag,
            parameters=(_USER_ID, id_path("addressId", "地址ID")),
            status=204,
            errors=(MISSING_404,),
            description=f"{_OWN_NOTE} 404 when the address is not the user's.",
        ),
    ]


def _notification_routes() -> list[RouteSpec]:
    s, u, tag, nid = Access.STAFF, Access.USER, "UserNotifications", (id_path("id", "通知ID"),)
    many = {
        "response": {"type": "array", "items": NOTIFICATION},
        "errors": (MISSING_404,),
        "description": f"{_OWN_NOTE} Newest first.",
    }
    count = {"response": COUNT_RESULT, "errors": (MISSING_404,), "description": _OWN_NOTE}
    return [
        _route(
            "GET",
            "/api/UserNotifications/byUser/{userId}",
            notifications_by_user,
            "获取用户的所有通知",
            u,
            tag,
            parameters=(_USER_ID,),
            **many,
        ),
        _route(
            "GET",
            "/api/UserNotifications/unread/{userId}",
            unread_notifications,
            "获取用户的未读通知",
            u,
            tag,
            parameters=(_USER_ID,),
            **many,
        ),
        _route(
            "GET",
            "/api/UserNotifications/{id}",
            get_notification,
            "获取通知详情",
            u,
            tag,
            parameters=nid,
            response=NOTIFICATION,
            errors=(MISSING_404,),
            description=_OWN_NOTE,
        ),
        _route(
            "POST",
            "/api/UserNotifications",
            create_notification,
            "创建用户通知",
            s,
            tag,
            request_body=NOTIFICATION_BODY,
            response=ID_RESULT,
            status=201,
            errors=(MISSING_404,),
            description=f"{_STAFF_NOTE} The driver API lists it too (its type: "
            "system / order / activity / recharge).",
        ),
        _route(
            "POST",
            "/api/UserNotifications/batch",
            batch_notifications,
            "批量创建用户通知",
            s,
            tag,
            request_body=BATCH_BODY,
            response=COUNT_RESULT,
            status=201,
            errors=(MISSING_404,),
            description=f"{_STAFF_NOTE} One notification per distinct user id; any unknown "
            "user id is 404 and nothing is created.",
        ),
        _route(
            "PUT",
            "/api/UserNotifications/read/{id}",
            read_notification,
            "标记通知为已读",
            u,
            tag,
            parameters=nid,
            status=204,
            errors=(MISSING_404,),
            description=_OWN_NOTE,
        ),
        _route(
            "PUT",
            "/api/UserNotifications/batchRead",
            batch_read,
            "批量标记通知为已读",
            u,
            tag,
            request_body=BATCH_READ,
            response=COUNT_RESULT,
            description=f"{_OWN_NOTE} count = notifications newly marked read; unknown ids are skipped.",
        ),
        _route(
            "PUT",
            "/api/UserNotifications/readAll/{userId}",
            read_all,
            "标记用户所有通知为已读",
            u,
            tag,
            parameters=(_USER_ID,),
            **count,
        ),
        _route(
            "DELETE",
            "/api/UserNotifications/{id}",
            delete_notification,
            "删除通知",
            u,
            tag,
            parameters=nid,
            status=204,
            errors=(MISSING_404,),
            description=_OWN_NOTE,
        ),
        _route(
            "GET",
            "/api/UserNotifications/unreadCount/{userId}",
            unread_count,
            "获取用户未读通知数量",
            u,
            tag,
            parameters=(_USER_ID,),
            **count,
        ),
    ]


ROUTES: list[RouteSpec] = [*_user_routes(), *_role_routes(), *_address_routes(), *_notification_routes()]
