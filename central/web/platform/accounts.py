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

import math
import re
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import sqlite_utils
import structlog
from aiohttp import web

from central import auth
from central.web.errors import PERMISSION_DENIED, VALIDATION_ERROR, ApiError, json_response
from central.web.middleware import TOKEN_KEY, Access, auth_settings, current_user, off_loop, store_of
from central.web.openapi import RouteSpec
from central.web.platform.common import (
    GENDER,
    NOTIFICATION_TYPE,
    PAGE_PARAMETERS,
    PERMISSION_LEVEL,
    PLATFORM_STYLE,
    USER_STATUS,
    conflict,
    described,
    invalid,
    not_found,
    page_object,
    page_schema,
    paging,
)
from central.web.user_api import json_object, json_type, login_with_password

log = structlog.get_logger(__name__)

MAX_ID = 2**63 - 1  # SQLite's INTEGER range: a larger id names nothing
SUPER_LEVEL = 4
KIND_OF_TYPE = {1: "system", 2: "order", 3: "activity", 4: "recharge"}  # notifications.kind
TOP_UP_MAX_CENTS = 100_000_00
MAX_ADDRESSES = 50
MAX_BATCH = 1000
KEYWORD_MAX = 100
ACTIVE_REQUEST_STATES = ("waiting", "charging")
ORDER_CHARGING = 1
_INT_TEXT = re.compile(r"[+-]?\d{1,40}")
_POSTAL = re.compile(r"[A-Za-z0-9 \-]{3,16}")

# --- input -----------------------------------------------------------------------------------------


def _unicode_ok(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates cannot be stored
        return False
    return True


class Body:
    """Reads the camelCase fields of a JSON object body, collecting problems per field."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.data = data
        self.problems: dict[str, list[str]] = {}

    def present(self, name: str) -> bool:
        """Whether the body names the field at all (even as null)."""
        return name in self.data

    def bad(self, name: str, message: str) -> None:
        self.problems.setdefault(name, []).append(message)

    def _missing(self, name: str, value: Any, required: bool) -> bool:
        if value is None and required:
            self.bad(name, "is required")
        return value is None

    def text(
        self,
        name: str,
        *,
        required: bool = False,
        max_len: int = 200,
        pattern: re.Pattern[str] | None = None,
        hint: str = "",
    ) -> str | None:
        """A string (blank reads as absent)."""
        value = self.data.get(name)
        if isinstance(value, str) and not value.strip():
            value = None
        if self._missing(name, value, required):
            return None
        if not isinstance(value, str):
            self.bad(name, f"must be a string, got {json_type(value)}")
        elif len(value) > max_len:
            self.bad(name, f"must be at most {max_len} characters (got {len(value)})")
        elif not _unicode_ok(value):
            self.bad(name, "must be valid Unicode text")
        elif pattern is not None and not pattern.fullmatch(value):
            self.bad(name, hint or f"must match {pattern.pattern}")
        else:
            return value
        return None

    def integer(
        self,
        name: str,
        *,
        required: bool = False,
        choices: Mapping[int, str] | None = None,
        bounds: tuple[int, int] = (1, MAX_ID),
    ) -> int | None:
        """An integer (one of ``choices`` when given, else within ``bounds``)."""
        value = self.data.get(name)
        if self._missing(name, value, required):
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.bad(name, f"must be an integer, got {json_type(value)}")
        elif choices is not None and value not in choices:
            codes = ", ".join(f"{code}={text}" for code, text in choices.items())
            self.bad(name, f"must be one of {codes}; got {value}")
        elif choices is None and not bounds[0] <= value <= bounds[1]:
            self.bad(name, f"must be an integer from {bounds[0]} to {bounds[1]}, got {value}")
        else:
            return value
        return None

    def boolean(self, name: str) -> bool | None:
        """true / false (absent or null: None)."""
        value = self.data.get(name)
        if value is None or isinstance(value, bool):
            return value
        self.bad(name, f"must be true or false, got {json_type(value)}")
        return None

    def ids(self, name: str, *, allow_empty: bool = False) -> list[int] | None:
        """A list of positive integer ids (duplicates dropped, order kept), at most MAX_BATCH."""
        value = self.data.get(name)
        if self._missing(name, value, True):
            return None
        if not isinstance(value, list):
            self.bad(name, f"must be an array of integers, got {json_type(value)}")
        elif not value and not allow_empty:
            self.bad(name, "must not be empty")
        elif len(value) > MAX_BATCH:
            self.bad(name, f"must have at most {MAX_BATCH} items (got {len(value)})")
        elif not all(_is_id(item) for item in value):
            self.bad(name, f"every item must be an integer from 1 to {MAX_ID}")
        else:
            return list(dict.fromkeys(value))
        return None

    def money_cents(self, name: str, *, maximum_cents: int) -> int | None:
        """A required amount in yuan: > 0, at most 2 decimals, at most the maximum; as cents."""
        value = self.data.get(name)
        if self._missing(name, value, True):
            return None
        cents = _cents(value)
        if cents is None:
            self.bad(name, f"must be a number with at most 2 decimals, got {value!r}")
        elif not 0 < cents <= maximum_cents:
            self.bad(name, f"must be greater than 0 and at most {maximum_cents // 100}, got {value!r}")
        else:
            return cents
        return None

    def check(self) -> None:
        """Raise the 400 problem naming every bad field, if any."""
        if self.problems:
            summary = "; ".join(f"{k}: {' '.join(v)}" for k, v in self.problems.items())
            raise ApiError(400, VALIDATION_ERROR, summary, self.problems)


def _is_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_ID


def _cents(value: object) -> int | None:
    """Exact cents of a JSON number with at most 2 decimals, else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    try:
        amount = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    except InvalidOperation:
        return None
    cents = amount * 100
    return int(cents) if cents == cents.to_integral_value() else None


async def read_body(request: web.Request) -> Body:
    """The request's JSON object body (400 naming ``body`` otherwise)."""
    return Body(await json_object(request))


def path_id(request: web.Request, name: str, what: str) -> int:
    """An integer path parameter: not an integer → 400 naming it; out of id range → 404."""
    text = request.match_info[name]
    if not _INT_TEXT.fullmatch(text):
        raise invalid(name, f"must be an integer, got {text[:40]!r}")
    value = int(text)
    if not 1 <= value <= MAX_ID:
        raise not_found(what, value)
    return value


def query_code(request: web.Request, name: str, table: Mapping[int, str]) -> int | None:
    """An optional enum code in the query (400 naming it unless one of ``table``)."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    if not _INT_TEXT.fullmatch(raw) or int(raw) not in table:
        codes = ", ".join(f"{code}={text}" for code, text in table.items())
        raise invalid(name, f"must be one of {codes}; got {raw[:40]!r}")
    return int(raw)


def query_keyword(request: web.Request) -> str | None:
    """The optional ``keyword`` (at most KEYWORD_MAX characters)."""
    raw = request.query.get("keyword", "").strip()
    if not raw:
        return None
    if len(raw) > KEYWORD_MAX or not _unicode_ok(raw):
        raise invalid("keyword", f"must be valid text of at most {KEYWORD_MAX} characters")
    return raw


def like_pattern(keyword: str) -> str:
    """A LIKE pattern (ESCAPE '\\') matching ``keyword`` anywhere."""
    escaped = keyword.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def page_offset(page: int, size: int) -> int:
    """The row offset of a page, bounded so a page far past the end cannot overflow SQLite."""
    return min((page - 1) * size, MAX_ID // 2)


# --- output and small helpers ----------------------------------------------------------------------


def utc_z(text: str | None) -> str | None:
    """A stored time as ISO 8601 UTC with ``Z`` (naive values are UTC)."""
    if not text:
        return None
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        return text
    at = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def yuan(cents: int) -> float:
    """Integer cents as a yuan number with 2 decimals."""
    return round(cents / 100, 2)


def now_iso(request: web.Request) -> str:
    """Now (the app's account clock) as a stored ISO 8601 UTC string."""
    return auth_settings(request.app).clock().astimezone(UTC).isoformat()


def no_content() -> web.Response:
    return web.Response(status=204)


def created(new_id: int) -> web.Response:
    return json_response({"id": new_id}, 201)


def forbidden(message: str) -> ApiError:
    """403 PERMISSION_DENIED."""
    return ApiError(403, PERMISSION_DENIED, message)


def require_self_or_staff(actor: auth.AuthUser, user_id: int) -> None:
    """A user may act on their own data; another user's needs level >= 3."""
    if actor.id != user_id and not actor.is_staff:
        raise forbidden(f"权限不足: 用户 {user_id} 的数据需要管理员权限 (permission level >= 3)")


def require_super(actor: auth.AuthUser) -> None:
    """Role management needs level 4."""
    if actor.level < SUPER_LEVEL:
        raise forbidden("权限不足: 角色管理需要超级管理员 (permission level 4)")


def require_not_outranked(actor: auth.AuthUser, user_id: int, target_level: int) -> None:
    """An administrator may not manage a user of a higher level than their own."""
    if actor.id != user_id and target_level > actor.level:
        raise forbidden(f"权限不足: 用户 {user_id} 的权限级别 ({target_level}) 高于你的 ({actor.level})")


def _exists(db: sqlite_utils.Database, table: str, row_id: int) -> bool:
    return db.execute(f"SELECT 1 FROM {table} WHERE id = ?", [row_id]).fetchone() is not None  # noqa: S608


def require_user(db: sqlite_utils.Database, user_id: int) -> None:
    if not _exists(db, "users", user_id):
        raise not_found("用户", user_id)


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


async def read(request: web.Request, fn: Callable[[sqlite_utils.Database], Any]) -> Any:
    return await store_of(request).read(fn)


async def write(request: web.Request, fn: Callable[[sqlite_utils.Database], Any]) -> Any:
    return await store_of(request).write(fn)


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


def user_row(db: sqlite_utils.Database, user_id: int) -> dict[str, Any]:
    rows = list(db.query(f"{_USER_SELECT} WHERE u.id = ?", [user_id]))
    if not rows:
        raise not_found("用户", user_id)
    return rows[0]


@dataclass(frozen=True)
class UserFilter:
    """The paged list's filters."""

    status: int | None
    keyword: str | None

    def where(self) -> tuple[str, list[Any]]:
        clauses, args = ["1 = 1"], list[Any]()
        if self.status is not None:
            clauses.append("u.status = ?")
            args.append(self.status)
        if self.keyword is not None:
            columns = ("u.username", "u.nickname", "u.phone", "u.email")
            clauses.append("(" + " OR ".join(f"{c} LIKE ? ESCAPE '\\'" for c in columns) + ")")
            args += [like_pattern(self.keyword)] * len(columns)
        return " AND ".join(clauses), args


def user_page(db: sqlite_utils.Database, filt: UserFilter, page: int, size: int) -> tuple[int, list[Any]]:
    where, args = filt.where()
    total = db.execute(f"SELECT COUNT(*) FROM users u WHERE {where}", args).fetchone()[0]  # noqa: S608
    rows = db.query(
        f"{_USER_SELECT} WHERE {where} ORDER BY u.id LIMIT ? OFFSET ?",
        [*args, size, page_offset(page, size)],
    )
    return int(total), [user_json(row) for row in rows]


async def list_users(request: web.Request) -> web.StreamResponse:
    """GET /api/Users: every user (level >= 3)."""
    rows = await read(request, lambda db: list(db.query(f"{_USER_SELECT} ORDER BY u.id")))
    return json_response([user_json(row) for row in rows])


async def paged_users(request: web.Request) -> web.StreamResponse:
    """GET /api/Users/paged: status filter, keyword over openId / nickname / phone / email."""
    page, size = paging(request)
    filt = UserFilter(query_code(request, "status", USER_STATUS), query_keyword(request))
    total, items = await read(request, lambda db: user_page(db, filt, page, size))
    return json_response(page_object(page, size, total, items))


async def get_user(request: web.Request) -> web.StreamResponse:
    """GET /api/Users/{id}: yourself, or anyone with level >= 3."""
    user_id = path_id(request, "id", "用户")
    require_self_or_staff(current_user(request), user_id)
    return json_response(user_json(await read(request, lambda db: user_row(db, user_id))))


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
        row = user_row(db, user_id)
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
        row = user_row(db, user_id)
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
    row = await read(request, lambda db: user_row(db, user.id))
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
    row = user_row(db, user_id)
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


def role_row(db: sqlite_utils.Database, role_id: int) -> dict[str, Any]:
    rows = list(db.query(f"{_ROLE_SELECT} WHERE id = ?", [role_id]))
    if not rows:
        raise not_found("角色", role_id)
    return rows[0]


def require_free_name(db: sqlite_utils.Database, name: str, role_id: int = 0) -> None:
    taken = db.execute("SELECT 1 FROM roles WHERE name = ? AND id != ?", [name, role_id]).fetchone()
    if taken is not None:
        raise conflict(f"角色名称 name {name!r} 已存在")


async def list_roles(request: web.Request) -> web.StreamResponse:
    """GET /api/UserRoles (level >= 3)."""
    rows = await read(request, lambda db: list(db.query(f"{_ROLE_SELECT} ORDER BY id")))
    return json_response([role_json(row) for row in rows])


async def get_role(request: web.Request) -> web.StreamResponse:
    """GET /api/UserRoles/{id} (level >= 3)."""
    role_id = path_id(request, "id", "角色")
    return json_response(role_json(await read(request, lambda db: role_row(db, role_id))))


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
        row = role_row(db, role_id)
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
        row = role_row(db, role_id)
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
    rows = await read(request, lambda db: roles_of(db, user_id))
    return json_response([role_json(row) for row in rows])


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
        role = role_row(db, role_id)
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
        role_row(db, role_id)
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
        role_row(db, role_id)
        row = db.execute("SELECT 1 FROM user_roles WHERE user_id = ? AND role_id = ?", [user_id, role_id])
        return row.fetchone() is not None

    return json_response(await read(request, holds))


async def check_permission(request: web.Request) -> web.StreamResponse:
    """GET /api/UserRoles/checkPermission/{userId}/{permissionLevel} → level >= permissionLevel."""
    user_id = path_id(request, "userId", "用户")
    raw = request.match_info["permissionLevel"]
    if not _INT_TEXT.fullmatch(raw) or int(raw) not in PERMISSION_LEVEL:
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


def address_row(db: sqlite_utils.Database, address_id: int) -> dict[str, Any]:
    rows = list(db.query("SELECT * FROM user_addresses WHERE id = ?", [address_id]))
    if not rows:
        raise not_found("地址", address_id)
    return rows[0]


def own_address(db: sqlite_utils.Database, actor: auth.AuthUser, address_id: int) -> dict[str, Any]:
    """The address, if the caller may act on it (404 absent, 403 another user's)."""
    row = address_row(db, address_id)
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
        return list(
            db.query("SELECT * FROM user_addresses WHERE user_id = ? ORDER BY is_default DESC, id", [user_id])
        )

    return json_response([address_json(row) for row in await read(request, rows)])


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
        row = address_row(db, address_id)
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
_NEWEST_FIRST = "ORDER BY julianday(create_time) DESC, id DESC"


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


def notification_row(db: sqlite_utils.Database, actor: auth.AuthUser, notification_id: int) -> dict[str, Any]:
    """The notification, if the caller may act on it (404 absent, 403 another user's)."""
    rows = list(db.query(f"{_NOTIFICATION_SELECT} WHERE id = ?", [notification_id]))
    if not rows:
        raise not_found("通知", notification_id)
    require_self_or_staff(actor, rows[0]["user_id"])
    return rows[0]


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
        sql = f"{_NOTIFICATION_SELECT} WHERE user_id = ?{unread} {_NEWEST_FIRST}"
        return list(db.query(sql, [user_id]))

    return rows


async def notifications_by_user(request: web.Request) -> web.StreamResponse:
    """GET /api/UserNotifications/byUser/{userId}: newest first."""
    rows = await read(request, user_notifications(request, unread_only=False))
    return json_response([notification_json(row) for row in rows])


async def unread_notifications(request: web.Request) -> web.StreamResponse:
    """GET /api/UserNotifications/unread/{userId}: newest first."""
    rows = await read(request, user_notifications(request, unread_only=True))
    return json_response([notification_json(row) for row in rows])


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
    missing = [uid for uid in user_ids if not _exists(db, "users", uid)]
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

_INT, _STR, _BOOL, _NUM = {"type": "integer"}, {"type": "string"}, {"type": "boolean"}, {"type": "number"}
_NSTR = {"type": ["string", "null"]}
_DT = {"type": ["string", "null"], "format": "date-time"}


def _obj(properties: Mapping[str, Any], required: Iterable[str] = ()) -> dict[str, Any]:
    return {"type": "object", "properties": dict(properties), "required": list(required)}


def _codes(table: Mapping[int, str], *, nullable: bool = False) -> dict[str, Any]:
    codes: list[Any] = list(table)
    text = ", ".join(f"{code}={name}" for code, name in table.items())
    return {"enum": [*codes, None] if nullable else codes, "description": text}


def _text(max_len: int, *, nullable: bool = True, pattern: str | None = None) -> dict[str, Any]:
    """A text field; a required one (not nullable) must hold a non-blank character."""
    schema: dict[str, Any] = {"type": ["string", "null"] if nullable else "string", "maxLength": max_len}
    if pattern is None and not nullable:
        schema["minLength"], pattern = 1, r"\S"
    if pattern is not None:
        schema["pattern"] = pattern
    return schema


def _path(name: str, description: str, schema: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": dict(schema or {"type": "integer", "minimum": 1}),
    }


_PHONE = r"^\+?[0-9][0-9 \-]{2,30}$"
_EMAIL = r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$"
USER = _obj(
    {
        "id": _INT,
        "openId": _STR,
        "nickname": _NSTR,
        "avatar": _NSTR,
        "phone": _NSTR,
        "email": _NSTR,
        "balance": {**_NUM, "description": "yuan"},
        "registerTime": _DT,
        "lastLoginTime": _DT,
        "status": _codes(USER_STATUS),
        "statusDescription": _STR,
        "gender": _codes(GENDER),
        "genderDescription": _STR,
        "permissionLevel": _codes(PERMISSION_LEVEL),
        "permissionLevelDescription": _STR,
    }
)
_PROFILE_FIELDS = {
    "nickname": _text(64),
    "avatar": _text(1024),
    "phone": _text(32, pattern=_PHONE),
    "email": _text(254, pattern=_EMAIL),
    "gender": _codes(GENDER, nullable=True),
}
USER_CREATE = _obj(
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
USER_UPDATE = _obj({**_PROFILE_FIELDS, "status": _codes(USER_STATUS, nullable=True)})
LOGIN = _obj(
    {"openId": _text(256, nullable=False), "password": _text(1024, nullable=False)}, ("openId", "password")
)
LOGIN_RESULT = _obj(
    {
        "id": _INT,
        "openId": _STR,
        "nickname": _NSTR,
        "avatar": _NSTR,
        "token": _STR,
        "permissionLevel": _INT,
        "permissionLevelDescription": _STR,
    }
)
PASSWORD = _obj(
    {
        "oldPassword": {**_text(1024), "description": "required when changing your own password"},
        "newPassword": {
            "type": "string",
            "minLength": auth.PASSWORD_LENGTH[0],
            "pattern": r"\S",
            "maxLength": auth.PASSWORD_LENGTH[1],
        },
    },
    ("newPassword",),
)
BALANCE = _obj(
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
ROLE = _obj(
    {
        "id": _INT,
        "name": _STR,
        "description": _NSTR,
        "permissionLevel": _codes(PERMISSION_LEVEL),
        "permissionLevelDescription": _STR,
        "isSystem": _BOOL,
    }
)
ROLE_FIELDS = {
    "name": _text(50, nullable=False),
    "description": _text(200),
    "permissionLevel": _codes(PERMISSION_LEVEL),
}
ASSIGN = _obj(
    {"userId": {"type": "integer", "minimum": 1}, "roleId": {"type": "integer", "minimum": 1}},
    ("userId", "roleId"),
)
ADDRESS = _obj(
    {
        "id": _INT,
        "userId": _INT,
        "recipientName": _STR,
        "recipientPhone": _STR,
        "province": _STR,
        "city": _STR,
        "district": _NSTR,
        "detailAddress": _STR,
        "fullAddress": _STR,
        "postalCode": _NSTR,
        "isDefault": _BOOL,
        "tag": _NSTR,
        "createTime": _DT,
        "updateTime": _DT,
    }
)
ADDRESS_BODY = _obj(
    {
        **{name: _text(size, nullable=not required) for name, (_c, required, size) in _ADDRESS_TEXT.items()},
        "recipientPhone": _text(32, nullable=False, pattern=_PHONE),
        "postalCode": _text(16, pattern=r"^[A-Za-z0-9 \-]{3,16}$"),
        "isDefault": {"type": ["boolean", "null"]},
    },
    [*(name for name, (_c, required, _s) in _ADDRESS_TEXT.items() if required), "recipientPhone"],
)
NOTIFICATION = _obj(
    {
        "id": _INT,
        "userId": _INT,
        "title": _STR,
        "content": _STR,
        "type": _codes(NOTIFICATION_TYPE),
        "typeDescription": _STR,
        "relatedId": _NSTR,
        "isRead": _BOOL,
        "readTime": _DT,
        "createTime": _DT,
    }
)
_NOTIFICATION_TEXT = {
    "title": _text(100, nullable=False),
    "content": _text(2000, nullable=False),
    "type": _codes(NOTIFICATION_TYPE),
    "relatedId": _text(64),
}
_IDS = {"type": "array", "items": {"type": "integer", "minimum": 1}, "maxItems": MAX_BATCH}
NOTIFICATION_BODY = _obj(
    {"userId": {"type": "integer", "minimum": 1}, **_NOTIFICATION_TEXT},
    ("userId", "title", "content", "type"),
)
BATCH_BODY = _obj(
    {"userIds": {**_IDS, "minItems": 1}, **_NOTIFICATION_TEXT}, ("userIds", "title", "content", "type")
)
BATCH_READ = _obj({"notificationIds": _IDS}, ("notificationIds",))
ID_RESULT, COUNT_RESULT = _obj({"id": _INT}, ("id",)), _obj({"count": _INT}, ("count",))

_DENIED = (403, PERMISSION_DENIED)
_MISSING = (404, "RESOURCE_NOT_FOUND")
_CONFLICT = (409, "CONFLICT")
_USER_ID = _path("userId", "用户ID")
_STAFF_NOTE = "Needs permission level >= 3 (管理员)."
_OWN_NOTE = "Your own data, or any user's with permission level >= 3 (管理员); otherwise 403."
_SUPER_NOTE = "Needs permission level 4 (超级管理员); otherwise 403."


def _route(
    method: str, path: str, handler: Any, summary: str, access: Access, tag: str, **options: Any
) -> RouteSpec:
    errors = tuple(options.pop("errors", ()))
    if access is not Access.PUBLIC:
        errors = (_DENIED, *errors)
    return RouteSpec(method, path, handler, summary, access, tag, PLATFORM_STYLE, errors=errors, **options)


def _user_routes() -> list[RouteSpec]:
    s, u, tag, uid = Access.STAFF, Access.USER, "Users", (_path("id", "用户ID"),)
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
            parameters=(*PAGE_PARAMETERS, {"name": "status", "in": "query", "schema": _codes(USER_STATUS)}),
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
            errors=(_MISSING,),
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
            errors=(_CONFLICT,),
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
            errors=(_MISSING, _CONFLICT),
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
            errors=(_MISSING, _CONFLICT),
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
            errors=(_MISSING, (429, "AUTH_INVALID")),
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
            errors=(_MISSING,),
            description=f"{_STAFF_NOTE} amount > 0, at most 2 decimals, at most 100000; "
            "the user gets a 充值通知 (type 4) notification.",
        ),
    ]


def _role_routes() -> list[RouteSpec]:
    s, u, tag, rid = Access.STAFF, Access.USER, "UserRoles", (_path("id", "角色ID"),)
    pair = (_USER_ID, _path("roleId", "角色ID"))
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
            errors=(_MISSING,),
            description=_STAFF_NOTE,
        ),
        _route(
            "POST",
            "/api/UserRoles",
            create_role,
            "创建角色",
            s,
            tag,
            request_body=_obj(ROLE_FIELDS, ("name", "permissionLevel")),
            response=ID_RESULT,
            status=201,
            errors=(_CONFLICT,),
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
            request_body=_obj(ROLE_FIELDS),
            status=204,
            errors=(_MISSING, _CONFLICT),
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
            errors=(_MISSING, _CONFLICT),
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
            errors=(_MISSING,),
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
            errors=(_MISSING,),
            response=_obj({"userId": _INT, "roleId": _INT, "permissionLevel": _INT}),
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
            errors=(_MISSING, _CONFLICT),
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
            response=_BOOL,
            errors=(_MISSING,),
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
                _path("permissionLevel", "权限级别", {"type": "integer", "enum": list(PERMISSION_LEVEL)}),
            ),
            response=_BOOL,
            errors=(_MISSING,),
            description=f"{_OWN_NOTE} true when the user's level >= permissionLevel.",
        ),
    ]


def _address_routes() -> list[RouteSpec]:
    u, tag, aid = Access.USER, "UserAddresses", (_path("id", "地址ID"),)
    one = {"response": ADDRESS, "errors": (_MISSING,), "description": _OWN_NOTE}
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
            errors=(_MISSING,),
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
            errors=(_MISSING, _CONFLICT),
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
            errors=(_MISSING,),
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
            errors=(_MISSING,),
            description=f"{_OWN_NOTE} Deleting the default makes the newest remaining one default.",
        ),
        _route(
            "PUT",
            "/api/UserAddresses/{userId}/default/{addressId}",
            set_default_address,
            "设置默认地址",
            u,
            tag,
            parameters=(_USER_ID, _path("addressId", "地址ID")),
            status=204,
            errors=(_MISSING,),
            description=f"{_OWN_NOTE} 404 when the address is not the user's.",
        ),
    ]


def _notification_routes() -> list[RouteSpec]:
    s, u, tag, nid = Access.STAFF, Access.USER, "UserNotifications", (_path("id", "通知ID"),)
    many = {
        "response": {"type": "array", "items": NOTIFICATION},
        "errors": (_MISSING,),
        "description": f"{_OWN_NOTE} Newest first.",
    }
    count = {"response": COUNT_RESULT, "errors": (_MISSING,), "description": _OWN_NOTE}
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
            errors=(_MISSING,),
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
            errors=(_MISSING,),
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
            errors=(_MISSING,),
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
            errors=(_MISSING,),
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
            errors=(_MISSING,),
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
