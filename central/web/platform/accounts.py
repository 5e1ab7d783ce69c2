"""The operator platform API's accounts part: users, roles, addresses and notifications, over the
same tables as the driver API.

One users table: ``openId`` is the driver API's ``username``; a token from ``POST /api/Users/login``
works on both APIs (the same rate-limited login). Who may do what is :mod:`central.web.permissions`
(in short: your own data, or anyone's with level >= 3; role management needs level 4; nobody
manages a higher level, and the last active super administrator stays). The rows are read and
written by the repositories :mod:`central.adapters.users`, :mod:`~central.adapters.roles`,
:mod:`~central.adapters.addresses` and :mod:`~central.adapters.notifications`.

Request bodies and responses are msgspec Structs (declared with their handlers): bodies are checked
field by field against them (:func:`central.web.platform.common.read_shape`), responses are built as
them, and the OpenAPI document is generated from the same declarations.

Notifications written here are the rows the driver API lists under /api/charging/notifications/.
Money is integer cents in the database and yuan (2 decimals) here; datetimes are ISO 8601 UTC with
``Z``. :data:`ROUTES` is the route table (see :mod:`central.web.openapi`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any

import msgspec
import structlog
from aiohttp import web

from central.adapters import addresses, notifications, roles, users
from central.adapters.database import Db
from central.adapters.query import RowNotFound, require_user, row_exists
from central.application import auth
from central.domain.levels import PERMISSION_LEVEL_NAMES
from central.web.errors import PLATFORM_STYLE, ApiError, conflict, json_response
from central.web.middleware import TOKEN_KEY, auth_settings, client_address, current_user, off_loop
from central.web.openapi import RouteSpec
from central.web.permissions import (
    Access,
    check_deletion,
    check_role_grant,
    check_status_change,
    keep_a_super_admin,
    require_not_outranked,
    require_role_manager,
    require_self_or_staff,
)
from central.web.platform.common import (
    CONFLICT_409,
    DENIED_403,
    GENDER,
    ID_RESULT,
    INT_TEXT,
    MAX_BATCH,
    MISSING_404,
    NOTIFICATION_TYPE,
    PAGE_PARAMETERS,
    USER_STATUS,
    Id,
    Page,
    UtcTime,
    codes_schema,
    created,
    described,
    id_path,
    invalid,
    no_content,
    not_found,
    now_iso,
    page_offset,
    paging,
    path_id,
    path_parameter,
    query_code,
    query_keyword,
    read,
    read_shape,
    read_shape_given,
    utc_z,
    write,
)
from central.web.sessions import login_with_password
from central.web.shapes import MULTILINE, Password, codes, whole

log = structlog.get_logger(__name__)

TOP_UP_MAX_CENTS = 100_000_00
MAX_ADDRESSES = 50
_POSTAL = re.compile(r"[A-Za-z0-9 \-]{3,16}")


def text(max_length: int) -> msgspec.Meta:
    """The ``Meta`` of a text field of at most ``max_length`` characters."""
    return msgspec.Meta(max_length=max_length)


FILLED = msgspec.Meta(extra_json_schema={"minLength": 1, "pattern": r"\S"})
"""A required text: blank text reads as absent, so it needs a character other than white space."""
Level = Annotated[int, codes(PERMISSION_LEVEL_NAMES)]
Yuan = Annotated[float, msgspec.Meta(description="yuan")]


def yuan(cents: int) -> float:
    """Integer cents as a yuan number with 2 decimals."""
    return round(cents / 100, 2)


def exact_cents(amount: float) -> int | None:
    """The cents of an amount in yuan, or None when it has more than 2 decimals."""
    cents = Decimal(repr(amount)) * 100
    return int(cents) if cents == cents.to_integral_value() else None


def guarding_super_admins(db: Db, change: Callable[[], None]) -> None:
    """Inside a write: run ``change`` and refuse it (409, rolled back) if it leaves no active super
    administrator."""
    before = users.active_super_admins(db)
    change()
    keep_a_super_admin(before, users.active_super_admins(db))


class Count(msgspec.Struct):
    """How many rows an operation counted or changed."""

    count: int


# --- users -----------------------------------------------------------------------------------------


class User(msgspec.Struct, rename="camel"):
    """The platform's user (plus gender and permission level)."""

    id: int
    open_id: str
    nickname: str | None
    avatar: str | None
    phone: str | None
    email: str | None
    balance: Yuan
    register_time: UtcTime
    last_login_time: UtcTime
    status: Annotated[int, codes(USER_STATUS)]
    status_description: str | None
    gender: Annotated[int, codes(GENDER)]
    gender_description: str | None
    permission_level: Level
    permission_level_description: str | None


def user_of(row: Mapping[str, Any]) -> User:
    """A users row (with its ``level``) as the platform's user."""
    return User(
        id=row["id"],
        open_id=row["username"],
        nickname=row["nickname"],
        avatar=row["avatar"],
        phone=row["phone"],
        email=row["email"],
        balance=yuan(row["balance_cents"]),
        register_time=utc_z(row["register_time"]),
        last_login_time=utc_z(row["last_login_time"]),
        status=row["status"],
        status_description=described(row["status"], USER_STATUS),
        gender=row["gender"],
        gender_description=described(row["gender"], GENDER),
        permission_level=row["level"],
        permission_level_description=described(row["level"], PERMISSION_LEVEL_NAMES),
    )


async def list_users(request: web.Request) -> web.StreamResponse:
    """GET /api/Users: every user (level >= 3)."""
    rows = await read(request, users.USER_ROWS.rows)
    return json_response([user_of(row) for row in rows])


async def paged_users(request: web.Request) -> web.StreamResponse:
    """GET /api/Users/paged: status filter, keyword over openId / nickname / phone / email."""
    page, size = paging(request)  # read before the filters: a bad page is the error reported first
    status = query_code(request, "status", USER_STATUS)
    keyword, offset = query_keyword(request), page_offset(page, size)
    total, rows = await read(request, lambda db: users.user_page(db, status, keyword, size, offset))
    return json_response(Page.of(page, size, total, [user_of(row) for row in rows]))


async def get_user(request: web.Request) -> web.StreamResponse:
    """GET /api/Users/{id}: yourself, or anyone with level >= 3."""
    user_id = path_id(request, "id", "用户")
    require_self_or_staff(current_user(request), user_id)
    return json_response(user_of(await read(request, lambda db: users.USER_ROWS.row(db, user_id))))


_PHONE_HINT = "must be a phone number: digits, optionally + at the start, spaces or -"
_EMAIL_HINT = "must be an e-mail address like name@example.com"
_OPEN_ID_HINT = "must be 3 to 64 characters: letters, digits, _ . - @"
_OPEN_ID_TAKEN = "is already taken by another user"

Nickname = Annotated[str, text(64)]
Avatar = Annotated[str, text(1024)]
Phone = Annotated[str, text(32), whole(auth.PHONE_RE, _PHONE_HINT)]
Email = Annotated[str, text(254), whole(auth.EMAIL_RE, _EMAIL_HINT)]
Gender = Annotated[int, codes(GENDER)]
NewPassword = Annotated[
    Password, text(auth.PASSWORD_LENGTH[1]), msgspec.Meta(extra_json_schema={"pattern": r"\S"})
]


class UserCreate(msgspec.Struct, rename="camel"):
    """A new account: openId (the driver API's username) and password, and optional profile fields."""

    open_id: Annotated[str, text(64), whole(auth.USERNAME_RE, _OPEN_ID_HINT)]
    password: NewPassword
    nickname: Nickname | None = None
    avatar: Avatar | None = None
    phone: Phone | None = None
    email: Email | None = None
    gender: Gender | None = None


class UserUpdate(msgspec.Struct, rename="camel"):
    """Profile fields to change (a text field sent as null or "" is cleared), and the status."""

    nickname: Nickname | None = None
    avatar: Avatar | None = None
    phone: Phone | None = None
    email: Email | None = None
    gender: Gender | None = None
    status: Annotated[int, codes(USER_STATUS)] | None = None


def strong_password(attribute: str, name: str) -> Callable[[Mapping[str, Any]], Mapping[str, str]]:
    """The body rule refusing a weak new password (``attribute``: the field's attribute name,
    ``name``: its JSON name)."""

    def rule(valid: Mapping[str, Any]) -> Mapping[str, str]:
        why = auth.password_problem(valid[attribute]) if attribute in valid else None
        return {name: why} if why is not None else {}

    return rule


async def create_user(request: web.Request) -> web.StreamResponse:
    """POST /api/Users: a new account (openId + password required), level 1; a taken openId is a
    bad parameter (400 naming openId)."""
    body = await read_shape(request, UserCreate, strong_password("password", "password"))
    password_hash = await off_loop(request, auth.hash_password, body.password)
    now = auth_settings(request.app).clock()

    def insert(db: Db) -> int:
        if users.username_taken(db, body.open_id):
            raise invalid("openId", _OPEN_ID_TAKEN)
        try:
            return users.insert_user(
                db,
                body.open_id,
                password_hash,
                email=body.email,
                phone=body.phone,
                nickname=body.nickname,
                avatar=body.avatar,
                gender=body.gender or 0,
                now=now,
            )
        except auth.AccountValidationError:
            raise invalid("openId", _OPEN_ID_TAKEN) from None

    user_id = await write(request, insert)
    log.info("user created", user=user_id, by=current_user(request).id)
    return created(user_id)


_PROFILE_TEXT = ("nickname", "avatar", "phone", "email")  # JSON name = attribute = column


def profile_changes(body: UserUpdate, given: frozenset[str]) -> dict[str, Any]:
    """Columns to set: a text field given (even as null or "") is set; gender only when not null."""
    changes = {name: getattr(body, name) for name in _PROFILE_TEXT if name in given}
    if body.gender is not None:
        changes["gender"] = body.gender
    return changes


async def update_user(request: web.Request) -> web.StreamResponse:
    """PUT /api/Users/{id}: profile fields (yourself or level >= 3); status only level >= 3."""
    user_id, actor = path_id(request, "id", "用户"), current_user(request)
    require_self_or_staff(actor, user_id)
    body, given = await read_shape_given(request, UserUpdate)
    changes, status = profile_changes(body, given), body.status
    stamp = now_iso(request)

    def update(db: Db) -> None:
        row = users.USER_ROWS.row(db, user_id)
        require_not_outranked(actor, user_id, row["level"])
        if status is not None and status != row["status"]:
            check_status_change(actor, user_id, status)
            changes["status"] = status
        guarding_super_admins(db, lambda: users.update_user(db, user_id, changes, stamp))

    await write(request, update)
    return no_content()


async def delete_user(request: web.Request) -> web.StreamResponse:
    """DELETE /api/Users/{id}: level >= 3; refused (409) while charging or with billing history."""
    user_id, actor = path_id(request, "id", "用户"), current_user(request)

    def delete(db: Db) -> None:
        row = users.USER_ROWS.row(db, user_id)
        require_not_outranked(actor, user_id, row["level"])
        check_deletion(actor, user_id)
        if (why := users.deletion_blocker(db, user_id)) is not None:
            raise conflict(why)
        try:
            guarding_super_admins(db, lambda: users.delete_user(db, user_id))
        except users.UserStillReferenced as exc:
            raise conflict(f"用户 {user_id} 仍被其他记录引用: {exc}") from None

    await write(request, delete)
    log.info("user deleted", user=user_id, by=actor.id)
    return no_content()


class UserLogin(msgspec.Struct, rename="camel"):
    open_id: Annotated[str, text(256), FILLED]
    password: Annotated[str, text(1024), FILLED]


class LoginResult(msgspec.Struct, rename="camel"):
    """Who logged in, and the token for both APIs."""

    id: int
    open_id: str
    nickname: str | None
    avatar: str | None
    token: str
    permission_level: Level
    permission_level_description: str | None


async def platform_login(request: web.Request) -> web.StreamResponse:
    """POST /api/Users/login: openId + password → a token for both APIs (rate-limited)."""
    body = await read_shape(request, UserLogin)
    user, token = await login_with_password(request, body.open_id, body.password)
    row = await read(request, lambda db: users.USER_ROWS.row(db, user.id))
    return json_response(
        LoginResult(
            id=user.id,
            open_id=user.username,
            nickname=row["nickname"],
            avatar=row["avatar"],
            token=token,
            permission_level=user.level,
            permission_level_description=described(user.level, PERMISSION_LEVEL_NAMES),
        )
    )


class PasswordChange(msgspec.Struct, rename="camel", kw_only=True):
    old_password: (
        Annotated[str, text(1024), msgspec.Meta(description="required when changing your own password")]
        | None
    ) = None
    new_password: NewPassword


async def change_password(request: web.Request) -> web.StreamResponse:
    """PUT /api/Users/{id}/password: your own (oldPassword required), or an administrator resetting
    another user's (oldPassword optional; checked if given). Other sessions of the user end."""
    user_id, actor = path_id(request, "id", "用户"), current_user(request)
    require_self_or_staff(actor, user_id)
    strong = strong_password("new_password", "newPassword")

    def old_for_your_own(valid: Mapping[str, Any]) -> Mapping[str, str]:
        missing = actor.id == user_id and "old_password" not in valid
        return {**({"oldPassword": "is required"} if missing else {}), **strong(valid)}

    body = await read_shape(request, PasswordChange, old_for_your_own)
    record = await read(request, lambda db: password_target(db, actor, user_id))
    if body.old_password is not None:
        await check_old_password(request, record, body.old_password)
    new_hash = await off_loop(request, auth.hash_password, body.new_password)
    keep = auth.token_hash(request[TOKEN_KEY]) if actor.id == user_id else ""
    stamp = now_iso(request)
    await write(request, lambda db: users.set_password(db, user_id, new_hash, stamp, keep_token_hash=keep))
    log.info("password changed", user=user_id, by=actor.id)
    return no_content()


def password_target(db: Db, actor: auth.AuthUser, user_id: int) -> auth.LoginRecord:
    """The login record of the user whose password changes (404 absent, 403 outranked)."""
    row = users.USER_ROWS.row(db, user_id)
    require_not_outranked(actor, user_id, row["level"])
    record = users.find_login(db, row["username"])
    assert record is not None
    return record


async def check_old_password(request: web.Request, record: auth.LoginRecord, old: str) -> None:
    """Verify oldPassword off the loop; failures count against the login limiter."""
    limiter, address = auth_settings(request.app).limiter, client_address(request)
    limiter.check(record.username, address)
    if not await off_loop(request, auth.verify_password, old, record.password_hash):
        limiter.record_failure(record.username, address)
        raise invalid("oldPassword", "does not match the current password")


class TopUp(msgspec.Struct, rename="camel"):
    amount: Annotated[
        float,
        msgspec.Meta(
            gt=0,
            le=TOP_UP_MAX_CENTS // 100,
            description="yuan, at most 2 decimals",
            extra_json_schema={"multipleOf": 0.01},
        ),
    ]


def two_decimals(valid: Mapping[str, Any]) -> Mapping[str, str]:
    """The body rule refusing an amount with more than 2 decimals."""
    if "amount" in valid and exact_cents(valid["amount"]) is None:
        return {"amount": f"must be a number with at most 2 decimals, got {valid['amount']!r}"}
    return {}


async def top_up(request: web.Request) -> web.StreamResponse:
    """PUT /api/Users/{id}/balance: add ``amount`` yuan atomically and notify the user (type 4)."""
    user_id, actor = path_id(request, "id", "用户"), current_user(request)
    cents = exact_cents((await read_shape(request, TopUp, two_decimals)).amount)
    assert cents is not None
    stamp = now_iso(request)

    def credit(db: Db) -> int:
        balance = users.credit_balance(db, user_id, cents, stamp)
        if balance is None:
            raise not_found("用户", user_id)
        content = f"您的账户已充值 {cents / 100:.2f} 元，当前余额 {balance / 100:.2f} 元。"
        add_notification(db, user_id, NotificationText("余额充值成功", content, 4, None), stamp)
        return balance

    balance = await write(request, credit)
    log.info("balance topped up", user=user_id, cents=cents, balance_cents=balance, by=actor.id)
    return no_content()


# --- roles -----------------------------------------------------------------------------------------


class Role(msgspec.Struct, rename="camel"):
    """The platform's role."""

    id: int
    name: str
    description: str | None
    permission_level: Level
    permission_level_description: str | None
    is_system: bool


def role_of(row: Mapping[str, Any]) -> Role:
    """A roles row as the platform's role."""
    return Role(
        id=row["id"],
        name=row["name"],
        description=row["description"],
        permission_level=row["permission_level"],
        permission_level_description=described(row["permission_level"], PERMISSION_LEVEL_NAMES),
        is_system=bool(row["is_system"]),
    )


def require_free_name(db: Db, name: str, role_id: int = 0) -> None:
    """A role name another role has is a bad parameter (400 naming name)."""
    if roles.name_taken(db, name, role_id):
        raise invalid("name", f"{name!r} is already the name of another role")


async def list_roles(request: web.Request) -> web.StreamResponse:
    """GET /api/UserRoles (level >= 3)."""
    return json_response([role_of(row) for row in await read(request, roles.ROLE_ROWS.rows)])


async def get_role(request: web.Request) -> web.StreamResponse:
    """GET /api/UserRoles/{id} (level >= 3)."""
    role_id = path_id(request, "id", "角色")
    return json_response(role_of(await read(request, lambda db: roles.ROLE_ROWS.row(db, role_id))))


RoleName = Annotated[str, text(50), FILLED]
RoleDescription = Annotated[str, text(200), MULTILINE] | None


class RoleCreate(msgspec.Struct, rename="camel", kw_only=True):
    name: RoleName
    description: RoleDescription = None
    permission_level: Level


class RoleUpdate(msgspec.Struct, rename="camel"):
    """The fields to change; left out: kept (a description sent as null or "" is cleared)."""

    name: RoleName | None = None
    description: RoleDescription = None
    permission_level: Level | None = None


async def create_role(request: web.Request) -> web.StreamResponse:
    """POST /api/UserRoles (level 4)."""
    require_role_manager(current_user(request))
    role = await read_shape(request, RoleCreate)
    stamp = now_iso(request)

    def insert(db: Db) -> int:
        require_free_name(db, role.name)
        return roles.insert_role(db, role.name, role.description, role.permission_level, stamp)

    role_id = await write(request, insert)
    log.info("role created", role=role_id, level=role.permission_level)
    return created(role_id)


async def update_role(request: web.Request) -> web.StreamResponse:
    """PUT /api/UserRoles/{id} (level 4): a system role's level cannot change (409)."""
    role_id = path_id(request, "id", "角色")
    require_role_manager(current_user(request))
    role, given = await read_shape_given(request, RoleUpdate)
    stamp = now_iso(request)

    def update(db: Db) -> None:
        row = roles.ROLE_ROWS.row(db, role_id)
        level = role.permission_level if role.permission_level is not None else row["permission_level"]
        if row["is_system"] and level != row["permission_level"]:
            raise conflict(f"系统角色 {row['name']} 的权限级别不能修改")
        if role.name is not None:
            require_free_name(db, role.name, role_id)
        name = role.name or row["name"]
        description = role.description if "description" in given else row["description"]
        guarding_super_admins(db, lambda: roles.update_role(db, role_id, name, description, level, stamp))

    await write(request, update)
    return no_content()


async def delete_role(request: web.Request) -> web.StreamResponse:
    """DELETE /api/UserRoles/{id} (level 4): system roles cannot be deleted (409)."""
    role_id = path_id(request, "id", "角色")
    require_role_manager(current_user(request))

    def delete(db: Db) -> None:
        row = roles.ROLE_ROWS.row(db, role_id)
        if row["is_system"]:
            raise conflict(f"系统角色 {row['name']} 不能删除")
        guarding_super_admins(db, lambda: roles.delete_role(db, role_id))

    await write(request, delete)
    log.info("role deleted", role=role_id)
    return no_content()


def roles_of(db: Db, user_id: int) -> list[dict[str, Any]]:
    """The roles of an existing user (404 otherwise)."""
    require_user(db, user_id)
    return roles.roles_of_user(db, user_id)


async def roles_by_user(request: web.Request) -> web.StreamResponse:
    """GET /api/UserRoles/byUser/{userId}: yourself, or level >= 3."""
    user_id = path_id(request, "userId", "用户")
    require_self_or_staff(current_user(request), user_id)
    return json_response([role_of(row) for row in await read(request, lambda db: roles_of(db, user_id))])


class RoleAssign(msgspec.Struct, rename="camel"):
    user_id: Id
    role_id: Id


class RoleAssigned(msgspec.Struct, rename="camel"):
    """The user's permission level once the role is theirs."""

    user_id: int
    role_id: int
    permission_level: Level


async def assign_role(request: web.Request) -> web.StreamResponse:
    """POST /api/UserRoles/assign {"userId", "roleId"} (level 4); assigning a held role is a no-op."""
    actor = current_user(request)
    require_role_manager(actor)
    body = await read_shape(request, RoleAssign)
    user_id, role_id = body.user_id, body.role_id
    stamp = now_iso(request)

    def assign(db: Db) -> int:
        require_user(db, user_id)
        role = roles.ROLE_ROWS.row(db, role_id)
        check_role_grant(actor, user_id, role["permission_level"])
        roles.assign_role(db, user_id, role_id, stamp)
        return users.permission_level(db, user_id)

    level = await write(request, assign)
    log.info("role assigned", user=user_id, role=role_id, by=actor.id)
    return json_response(RoleAssigned(user_id, role_id, level))


async def remove_role(request: web.Request) -> web.StreamResponse:
    """DELETE /api/UserRoles/remove/{userId}/{roleId} (level 4); without roles a user is level 1."""
    user_id, role_id = path_id(request, "userId", "用户"), path_id(request, "roleId", "角色")
    actor = current_user(request)
    require_role_manager(actor)

    def remove(db: Db) -> None:
        require_user(db, user_id)
        roles.ROLE_ROWS.row(db, role_id)

        def take() -> None:
            if not roles.remove_role(db, user_id, role_id):
                raise ApiError(404, "RESOURCE_NOT_FOUND", "该用户没有这个角色")

        guarding_super_admins(db, take)

    await write(request, remove)
    log.info("role removed", user=user_id, role=role_id, by=actor.id)
    return no_content()


async def check_role(request: web.Request) -> web.StreamResponse:
    """GET /api/UserRoles/check/{userId}/{roleId} → true / false."""
    user_id, role_id = path_id(request, "userId", "用户"), path_id(request, "roleId", "角色")
    require_self_or_staff(current_user(request), user_id)

    def holds(db: Db) -> bool:
        require_user(db, user_id)
        roles.ROLE_ROWS.row(db, role_id)
        return roles.holds_role(db, user_id, role_id)

    return json_response(await read(request, holds))


async def check_permission(request: web.Request) -> web.StreamResponse:
    """GET /api/UserRoles/checkPermission/{userId}/{permissionLevel} → level >= permissionLevel."""
    user_id = path_id(request, "userId", "用户")
    raw = request.match_info["permissionLevel"]
    if not INT_TEXT.fullmatch(raw) or int(raw) not in PERMISSION_LEVEL_NAMES:
        raise invalid("permissionLevel", f"must be one of 1, 2, 3, 4; got {raw[:40]!r}")
    require_self_or_staff(current_user(request), user_id)

    def level_of(db: Db) -> int:
        require_user(db, user_id)
        return users.permission_level(db, user_id)

    return json_response(await read(request, level_of) >= int(raw))


# --- addresses -------------------------------------------------------------------------------------


class Address(msgspec.Struct, rename="camel"):
    """The platform's address; fullAddress = province + city + district + detailAddress."""

    id: int
    user_id: int
    recipient_name: str
    recipient_phone: str
    province: str
    city: str
    district: str | None
    detail_address: str
    full_address: str
    postal_code: str | None
    is_default: bool
    tag: str | None
    create_time: UtcTime
    update_time: UtcTime


def address_of(row: Mapping[str, Any]) -> Address:
    """A user_addresses row as the platform's address."""
    parts = (row["province"], row["city"], row["district"], row["detail_address"])
    return Address(
        id=row["id"],
        user_id=row["user_id"],
        recipient_name=row["recipient_name"],
        recipient_phone=row["recipient_phone"],
        province=row["province"],
        city=row["city"],
        district=row["district"],
        detail_address=row["detail_address"],
        full_address="".join(part or "" for part in parts),
        postal_code=row["postal_code"],
        is_default=bool(row["is_default"]),
        tag=row["tag"],
        create_time=utc_z(row["create_time"]),
        update_time=utc_z(row["update_time"]),
    )


def own_address(db: Db, actor: auth.AuthUser, address_id: int) -> dict[str, Any]:
    """The address, if the caller may act on it (404 absent, 403 another user's)."""
    row = addresses.ADDRESS_ROWS.row(db, address_id)
    require_self_or_staff(actor, row["user_id"])
    return row


class AddressBody(msgspec.Struct, rename="camel", kw_only=True):
    """An address as a user gives it (an update replaces every field)."""

    recipient_name: Annotated[str, text(50), FILLED]
    province: Annotated[str, text(50), FILLED]
    city: Annotated[str, text(50), FILLED]
    district: Annotated[str, text(50)] | None = None
    detail_address: Annotated[str, text(200), FILLED]
    tag: Annotated[str, text(20)] | None = None
    recipient_phone: Phone
    postal_code: (
        Annotated[str, text(16), whole(_POSTAL, "must be 3 to 16 letters, digits, spaces or -")] | None
    ) = None
    is_default: bool | None = None

    def columns(self) -> dict[str, Any]:
        """The address's column values (every one: None clears it)."""
        fields = msgspec.structs.asdict(self)
        del fields["is_default"]
        return fields


async def addresses_by_user(request: web.Request) -> web.StreamResponse:
    """GET /api/UserAddresses/byUser/{userId}: the default first."""
    user_id = path_id(request, "userId", "用户")
    require_self_or_staff(current_user(request), user_id)

    def rows(db: Db) -> list[dict[str, Any]]:
        require_user(db, user_id)
        return addresses.addresses_of_user(db, user_id)

    return json_response([address_of(row) for row in await read(request, rows)])


async def get_address(request: web.Request) -> web.StreamResponse:
    """GET /api/UserAddresses/{id}."""
    address_id, actor = path_id(request, "id", "地址"), current_user(request)
    return json_response(address_of(await read(request, lambda db: own_address(db, actor, address_id))))


async def default_address(request: web.Request) -> web.StreamResponse:
    """GET /api/UserAddresses/default/{userId}: 404 when the user has no address."""
    user_id = path_id(request, "userId", "用户")
    require_self_or_staff(current_user(request), user_id)

    def default(db: Db) -> dict[str, Any]:
        require_user(db, user_id)
        row = addresses.default_address(db, user_id)
        if row is None:
            raise ApiError(404, "RESOURCE_NOT_FOUND", "该用户没有默认地址")
        return row

    return json_response(address_of(await read(request, default)))


async def create_address(request: web.Request) -> web.StreamResponse:
    """POST /api/UserAddresses/{userId}: the first address (or isDefault true) becomes the default."""
    user_id = path_id(request, "userId", "用户")
    require_self_or_staff(current_user(request), user_id)
    address = await read_shape(request, AddressBody)
    stamp = now_iso(request)

    def insert(db: Db) -> int:
        require_user(db, user_id)
        count = addresses.count_addresses(db, user_id)
        if count >= MAX_ADDRESSES:
            raise conflict(f"该用户已有 {count} 个地址 (最多 {MAX_ADDRESSES} 个)")
        address_id = addresses.insert_address(db, user_id, address.columns(), stamp)
        if count == 0 or address.is_default:
            addresses.make_default(db, user_id, address_id)
        return address_id

    return created(await write(request, insert))


async def update_address(request: web.Request) -> web.StreamResponse:
    """PUT /api/UserAddresses/{id}: replace the fields; isDefault true makes it the default (false on
    the default address keeps it: set another address as default instead)."""
    address_id, actor = path_id(request, "id", "地址"), current_user(request)
    address = await read_shape(request, AddressBody)
    stamp = now_iso(request)

    def update(db: Db) -> None:
        row = own_address(db, actor, address_id)
        addresses.update_address(db, address_id, address.columns(), stamp)
        if address.is_default:
            addresses.make_default(db, row["user_id"], address_id)

    await write(request, update)
    return no_content()


async def delete_address(request: web.Request) -> web.StreamResponse:
    """DELETE /api/UserAddresses/{id}: if it was the default, the newest remaining one becomes it."""
    address_id, actor = path_id(request, "id", "地址"), current_user(request)

    def delete(db: Db) -> None:
        row = own_address(db, actor, address_id)
        addresses.delete_address(db, address_id, row["user_id"], bool(row["is_default"]))

    await write(request, delete)
    return no_content()


async def set_default_address(request: web.Request) -> web.StreamResponse:
    """PUT /api/UserAddresses/{userId}/default/{addressId}: one transaction clears the others."""
    user_id, address_id = path_id(request, "userId", "用户"), path_id(request, "addressId", "地址")
    require_self_or_staff(current_user(request), user_id)
    stamp = now_iso(request)

    def set_default(db: Db) -> None:
        require_user(db, user_id)
        row = addresses.ADDRESS_ROWS.row(db, address_id)
        if row["user_id"] != user_id:
            raise RowNotFound(addresses.ADDRESS_ROWS.what, address_id)  # another user's: as if absent
        addresses.make_default(db, user_id, address_id)
        addresses.touch_address(db, address_id, stamp)

    await write(request, set_default)
    return no_content()


# --- notifications ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class NotificationText:
    """What a new notification says."""

    title: str
    content: str
    type: int
    related_id: str | None


def add_notification(db: Db, user_id: int, text: NotificationText, stamp: str) -> int:
    """One notification row, visible to both APIs."""
    return notifications.insert_notification(
        db,
        user_id,
        title=text.title,
        content=text.content,
        type_code=text.type,
        related_id=text.related_id,
        stamp=stamp,
    )


class UserNotification(msgspec.Struct, rename="camel"):
    """The platform's notification."""

    id: int
    user_id: int
    title: str
    content: str
    type: Annotated[int, codes(NOTIFICATION_TYPE)]
    type_description: str | None
    related_id: str | None
    is_read: bool
    read_time: UtcTime
    create_time: UtcTime


def notification_of(row: Mapping[str, Any]) -> UserNotification:
    """A notifications row as the platform's notification."""
    return UserNotification(
        id=row["id"],
        user_id=row["user_id"],
        title=row["title"],
        content=row["content"],
        type=row["type"],
        type_description=described(row["type"], NOTIFICATION_TYPE),
        related_id=row["related_id"],
        is_read=bool(row["is_read"]),
        read_time=utc_z(row["read_time"]),
        create_time=utc_z(row["create_time"]),
    )


def notification_row(db: Db, actor: auth.AuthUser, notification_id: int) -> dict[str, Any]:
    """The notification, if the caller may act on it (404 absent, 403 another user's)."""
    row = notifications.NOTIFICATION_ROWS.row(db, notification_id)
    require_self_or_staff(actor, row["user_id"])
    return row


Title = Annotated[str, text(100), FILLED]
Content = Annotated[str, text(2000), FILLED, MULTILINE]
NotificationType = Annotated[int, codes(NOTIFICATION_TYPE)]
RelatedId = Annotated[str, text(64)] | None
Ids = Annotated[list[Id], msgspec.Meta(max_length=MAX_BATCH)]
"""Row ids (a repeated id counts once)."""


class NotificationCreate(msgspec.Struct, rename="camel"):
    user_id: Id
    title: Title
    content: Content
    type: NotificationType
    related_id: RelatedId = None

    def message(self) -> NotificationText:
        return NotificationText(self.title, self.content, self.type, self.related_id)


class NotificationBatch(msgspec.Struct, rename="camel"):
    """One notification for each of the users."""

    user_ids: Annotated[Ids, msgspec.Meta(min_length=1)]
    title: Title
    content: Content
    type: NotificationType
    related_id: RelatedId = None

    def message(self) -> NotificationText:
        return NotificationText(self.title, self.content, self.type, self.related_id)


class BatchRead(msgspec.Struct, rename="camel"):
    notification_ids: Ids


def user_notifications(request: web.Request, *, unread_only: bool) -> Callable[[Db], list[dict[str, Any]]]:
    """The access-checked read of a user's notifications (path ``userId``)."""
    user_id = path_id(request, "userId", "用户")
    require_self_or_staff(current_user(request), user_id)

    def rows(db: Db) -> list[dict[str, Any]]:
        require_user(db, user_id)
        return notifications.notifications_of_user(db, user_id, unread_only=unread_only)

    return rows


async def notification_list(request: web.Request, *, unread_only: bool) -> web.StreamResponse:
    """The JSON array of a user's notifications, newest first."""
    rows = await read(request, user_notifications(request, unread_only=unread_only))
    return json_response([notification_of(row) for row in rows])


async def notifications_by_user(request: web.Request) -> web.StreamResponse:
    """GET /api/UserNotifications/byUser/{userId}: newest first."""
    return await notification_list(request, unread_only=False)


async def unread_notifications(request: web.Request) -> web.StreamResponse:
    """GET /api/UserNotifications/unread/{userId}: newest first."""
    return await notification_list(request, unread_only=True)


async def get_notification(request: web.Request) -> web.StreamResponse:
    """GET /api/UserNotifications/{id}."""
    notification_id, actor = path_id(request, "id", "通知"), current_user(request)
    row = await read(request, lambda db: notification_row(db, actor, notification_id))
    return json_response(notification_of(row))


async def create_notification(request: web.Request) -> web.StreamResponse:
    """POST /api/UserNotifications (level >= 3)."""
    body = await read_shape(request, NotificationCreate)
    stamp = now_iso(request)

    def insert(db: Db) -> int:
        require_user(db, body.user_id)
        return add_notification(db, body.user_id, body.message(), stamp)

    return created(await write(request, insert))


def require_users(db: Db, user_ids: Iterable[int]) -> None:
    """404 naming (the first 20 of) the user ids that do not exist, if any."""
    missing = [uid for uid in user_ids if not row_exists(db, "users", uid)]
    if missing:
        shown = ", ".join(map(str, missing[:20])) + (" ..." if len(missing) > 20 else "")
        raise ApiError(404, "RESOURCE_NOT_FOUND", f"用户不存在: {shown}")


async def batch_notifications(request: web.Request) -> web.StreamResponse:
    """POST /api/UserNotifications/batch (level >= 3): one notification per user; 201 {"count"}."""
    body = await read_shape(request, NotificationBatch)
    user_ids, text = list(dict.fromkeys(body.user_ids)), body.message()
    stamp = now_iso(request)

    def insert(db: Db) -> int:
        require_users(db, user_ids)
        for user_id in user_ids:
            add_notification(db, user_id, text, stamp)
        return len(user_ids)

    return json_response(Count(await write(request, insert)), 201)


async def read_notification(request: web.Request) -> web.StreamResponse:
    """PUT /api/UserNotifications/read/{id}: 204 (already read: unchanged)."""
    notification_id, actor = path_id(request, "id", "通知"), current_user(request)
    stamp = now_iso(request)

    def mark(db: Db) -> None:
        notification_row(db, actor, notification_id)
        notifications.mark_read(db, notification_id, stamp)

    await write(request, mark)
    return no_content()


async def batch_read(request: web.Request) -> web.StreamResponse:
    """PUT /api/UserNotifications/batchRead {"notificationIds"}: {"count"} newly read; unknown ids
    are skipped, another user's need level >= 3 (403)."""
    actor = current_user(request)
    ids = list(dict.fromkeys((await read_shape(request, BatchRead)).notification_ids))
    stamp = now_iso(request)

    def mark(db: Db) -> int:
        count = 0
        for notification_id in ids:
            owner = notifications.owner_of(db, notification_id)
            if owner is None:
                continue
            require_self_or_staff(actor, owner)
            count += notifications.mark_read(db, notification_id, stamp)
        return count

    return json_response(Count(await write(request, mark)))


async def read_all(request: web.Request) -> web.StreamResponse:
    """PUT /api/UserNotifications/readAll/{userId}: {"count"} newly read."""
    user_id = path_id(request, "userId", "用户")
    require_self_or_staff(current_user(request), user_id)
    stamp = now_iso(request)

    def mark(db: Db) -> int:
        require_user(db, user_id)
        return notifications.mark_all_read(db, user_id, stamp)

    return json_response(Count(await write(request, mark)))


async def delete_notification(request: web.Request) -> web.StreamResponse:
    """DELETE /api/UserNotifications/{id}."""
    notification_id, actor = path_id(request, "id", "通知"), current_user(request)

    def delete(db: Db) -> None:
        notification_row(db, actor, notification_id)
        notifications.delete_notification(db, notification_id)

    await write(request, delete)
    return no_content()


async def unread_count(request: web.Request) -> web.StreamResponse:
    """GET /api/UserNotifications/unreadCount/{userId}: {"count"}."""
    user_id = path_id(request, "userId", "用户")
    require_self_or_staff(current_user(request), user_id)

    def count(db: Db) -> int:
        require_user(db, user_id)
        return notifications.unread_count(db, user_id)

    return json_response(Count(await read(request, count)))


# --- the route table -------------------------------------------------------------------------------

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
            response=list[User],
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
            response=Page[User],
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
            request_body=UserLogin,
            response=LoginResult,
            errors=((401, "AUTH_INVALID"), (429, "AUTH_INVALID")),
            description="The driver API's login and its throttling: failures slow the client address "
            "that makes them (per account from that address, and across accounts), with delays that "
            "double up to 5 minutes; an attempt within a delay gets 429 with Retry-After, the owner "
            "logging in from elsewhere is not slowed. Use the token as "
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
            response=User,
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
            request_body=UserCreate,
            response=ID_RESULT,
            status=201,
            description=f"{_STAFF_NOTE} openId (= the driver API's username) must be unused "
            "(400 naming openId otherwise); the new user has level 1.",
        ),
        _route(
            "PUT",
            "/api/Users/{id}",
            update_user,
            "更新用户",
            u,
            tag,
            parameters=uid,
            request_body=UserUpdate,
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
            request_body=PasswordChange,
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
            request_body=TopUp,
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
            response=list[Role],
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
            response=Role,
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
            request_body=RoleCreate,
            response=ID_RESULT,
            status=201,
            description=f"{_SUPER_NOTE} name must be unused (400 naming name otherwise).",
        ),
        _route(
            "PUT",
            "/api/UserRoles/{id}",
            update_role,
            "更新角色",
            s,
            tag,
            parameters=rid,
            request_body=RoleUpdate,
            status=204,
            errors=(MISSING_404, CONFLICT_409),
            description=f"{_SUPER_NOTE} Fields left out are kept; a name another role has is 400 "
            "naming name; a system role's permissionLevel cannot change (409).",
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
            response=list[Role],
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
            request_body=RoleAssign,
            errors=(MISSING_404,),
            response=RoleAssigned,
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
            response=bool,
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
                    "permissionLevel", "权限级别", {"type": "integer", "enum": list(PERMISSION_LEVEL_NAMES)}
                ),
            ),
            response=bool,
            errors=(MISSING_404,),
            description=f"{_OWN_NOTE} true when the user's level >= permissionLevel.",
        ),
    ]


def _address_routes() -> list[RouteSpec]:
    u, tag, aid = Access.USER, "UserAddresses", (id_path("id", "地址ID"),)
    one = {"response": Address, "errors": (MISSING_404,), "description": _OWN_NOTE}
    return [
        _route(
            "GET",
            "/api/UserAddresses/byUser/{userId}",
            addresses_by_user,
            "获取用户的所有地址",
            u,
            tag,
            parameters=(_USER_ID,),
            response=list[Address],
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
            request_body=AddressBody,
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
            request_body=AddressBody,
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
        "response": list[UserNotification],
        "errors": (MISSING_404,),
        "description": f"{_OWN_NOTE} Newest first.",
    }
    count = {"response": Count, "errors": (MISSING_404,), "description": _OWN_NOTE}
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
            response=UserNotification,
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
            request_body=NotificationCreate,
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
            request_body=NotificationBatch,
            response=Count,
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
            request_body=BatchRead,
            response=Count,
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
