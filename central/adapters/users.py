"""The users and tokens tables: accounts, logins, tokens, levels, profiles, balances.

Plain functions of a database connection, :class:`~central.adapters.database.Db` (run them inside
``Store.read`` / ``Store.write``).
Hashing, token generation and the rules of acceptable registrations are in
:mod:`central.application.auth`; an account's level is the highest level among its roles.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime, timedelta
from typing import Any

from central.adapters.database import Db, IntegrityError
from central.adapters.query import Resource, where_clause
from central.application.auth import (
    DEFAULT_TOKEN_TTL,
    AccountValidationError,
    AuthUser,
    InvalidToken,
    LoginRecord,
    check_login,
    hash_password,
    iso_utc,
    new_token,
    password_problem,
    registration_problems,
    token_hash,
)
from central.domain.levels import SYSTEM_LEVELS, PermissionLevel, is_staff_level
from central.domain.orders import OrderStatus

_LEVEL_OF_U = (
    "COALESCE((SELECT MAX(r.permission_level) FROM user_roles ur JOIN roles r ON r.id = ur.role_id"
    " WHERE ur.user_id = u.id), 1)"
)
USER_ROWS = Resource(
    "用户",
    "SELECT u.id, u.username, u.nickname, u.avatar, u.phone, u.email, u.gender, u.balance_cents,"  # noqa: S608
    f" u.status, u.register_time, u.last_login_time, {_LEVEL_OF_U} AS level FROM users u",
    "u.id",
    "u.id",
    count_from="users u",
)
"""The operator API's user rows, with each user's permission ``level``."""
_USER_SEARCH = ("u.username", "u.nickname", "u.phone", "u.email")
ACTIVE_REQUEST_STATES = ("waiting", "charging")


class UserStillReferenced(Exception):
    """Deleting the user would break rows that still refer to it."""


# --- accounts ----------------------------------------------------------------------------------


def username_taken(db: Db, username: str) -> bool:
    """Whether an account with this username exists (case-insensitively)."""
    row = db.execute("SELECT 1 FROM users WHERE username = ? COLLATE NOCASE", [username]).fetchone()
    return row is not None


def insert_user(
    db: Db,
    username: str,
    password_hash: str,
    *,
    email: str | None = None,
    phone: str | None = None,
    nickname: str | None = None,
    avatar: str | None = None,
    gender: int = 0,
    level: int = PermissionLevel.USER,
    now: datetime,
) -> int:
    """Insert an already-validated account with a precomputed hash; a taken name is a validation error."""
    stamp = iso_utc(now)
    try:
        cursor = db.execute(
            "INSERT INTO users (username, password_hash, email, phone, nickname, avatar, gender,"
            " register_time, update_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            [username, password_hash, email, phone, nickname or username, avatar, gender, stamp, stamp],
        )
    except IntegrityError as exc:
        raise AccountValidationError({"username": "already taken"}) from exc
    user_id = int(cursor.fetchone()[0])
    grant_level(db, user_id, level, now=now)
    return user_id


def create_user(
    db: Db,
    username: str,
    password: str,
    *,
    email: str | None = None,
    phone: str | None = None,
    nickname: str | None = None,
    level: int = PermissionLevel.USER,
    now: datetime,
) -> int:
    """Validate, hash and insert an account with the system role of ``level``; returns its id."""
    problems = registration_problems(username, password, email, phone)
    if not problems and username_taken(db, username):
        problems["username"] = "already taken"
    if problems:
        raise AccountValidationError(problems)
    return insert_user(
        db,
        username,
        hash_password(password),
        email=email,
        phone=phone,
        nickname=nickname,
        level=level,
        now=now,
    )


def create_or_update_user(
    db: Db,
    username: str,
    password: str,
    *,
    level: int = PermissionLevel.USER,
    update: bool = False,
    now: datetime | None = None,
) -> str:
    """``pilegate create-user`` / the demo's admin: create the account, or with ``update`` set the
    password of an existing one (and grant the role of ``level``). Returns "created" or "updated"."""
    now = now or datetime.now(UTC)
    record = find_login(db, username)
    if record is None:
        create_user(db, username, password, level=level, now=now)
        return "created"
    if not update:
        raise AccountValidationError({"username": "already taken (use --update to set its password)"})
    if (why := password_problem(password)) is not None:
        raise AccountValidationError({"password": why})
    db.execute(
        "UPDATE users SET password_hash = ?, status = 1, update_time = ? WHERE id = ?",
        [hash_password(password), iso_utc(now), record.user_id],
    )
    grant_level(db, record.user_id, level, now=now)
    return "updated"


def grant_level(db: Db, user_id: int, level: int, *, now: datetime) -> None:
    """Give the user the system role of ``level`` (roles already held are kept)."""
    if level not in SYSTEM_LEVELS:
        raise AccountValidationError({"level": f"must be one of {SYSTEM_LEVELS}, got {level!r}"})
    db.execute(
        "INSERT OR IGNORE INTO user_roles (user_id, role_id, assigned_time)"
        " SELECT ?, id, ? FROM roles WHERE permission_level = ? AND is_system = 1",
        [user_id, iso_utc(now), level],
    )


def permission_level(db: Db, user_id: int) -> int:
    """The highest permission level among the user's roles (1 when the user has none)."""
    row = db.execute(
        "SELECT MAX(r.permission_level) FROM user_roles ur JOIN roles r ON r.id = ur.role_id"
        " WHERE ur.user_id = ?",
        [user_id],
    ).fetchone()
    return int(row[0]) if row is not None and row[0] is not None else int(PermissionLevel.USER)


def active_super_admins(db: Db) -> int:
    """How many enabled accounts hold a level-4 role."""
    row = db.execute(
        "SELECT COUNT(DISTINCT ur.user_id) FROM user_roles ur JOIN roles r ON r.id = ur.role_id"
        " JOIN users u ON u.id = ur.user_id WHERE r.permission_level = ? AND u.status = 1",
        [int(PermissionLevel.SUPER_ADMIN)],
    ).fetchone()
    return int(row[0])


# --- logins and tokens -------------------------------------------------------------------------


def find_login(db: Db, username: str) -> LoginRecord | None:
    """The account a login names (case-insensitively), or None."""
    row = db.execute(
        "SELECT id, username, password_hash, status FROM users WHERE username = ? COLLATE NOCASE",
        [username],
    ).fetchone()
    return None if row is None else LoginRecord(int(row[0]), str(row[1]), str(row[2]), row[3] == 1)


def authenticate(db: Db, username: str, password: str, *, now: datetime) -> AuthUser:
    """Check a username and password, stamp the login time; raises ``InvalidCredentials``."""
    return stamp_login(db, check_login(find_login(db, username), password), now=now)


def stamp_login(db: Db, record: LoginRecord, *, now: datetime) -> AuthUser:
    """After a checked login: stamp its time; the caller it makes."""
    db.execute("UPDATE users SET last_login_time = ? WHERE id = ?", [iso_utc(now), record.user_id])
    return AuthUser.of(record.user_id, record.username, permission_level(db, record.user_id))


def start_session(
    db: Db, record: LoginRecord, *, now: datetime, ttl: timedelta = DEFAULT_TOKEN_TTL
) -> tuple[AuthUser, str]:
    """After a checked login: stamp its time and issue a token; (the caller, the token)."""
    return stamp_login(db, record, now=now), issue_token(db, record.user_id, now=now, ttl=ttl)


def get_profile(db: Db, user_id: int) -> dict[str, Any] | None:
    """The user-API profile fields of an account, or None."""
    row = db.execute("SELECT id, username, email, phone FROM users WHERE id = ?", [user_id]).fetchone()
    if row is None:
        return None
    return {
        "id": row[0],
        "username": row[1],
        "email": row[2],
        "phone": row[3],
        "is_staff": is_staff_level(permission_level(db, user_id)),
    }


def issue_token(db: Db, user_id: int, *, now: datetime, ttl: timedelta = DEFAULT_TOKEN_TTL) -> str:
    """A new token for ``user_id`` valid for ``ttl``; also purges expired tokens. Returns the token."""
    if ttl <= timedelta(0):
        raise ValueError(f"token ttl must be positive, got {ttl}")
    purge_expired_tokens(db, now=now)
    token = new_token()
    db.execute(
        "INSERT INTO tokens (token_hash, user_id, created_at, expires_at) VALUES (?, ?, ?, ?)",
        [token_hash(token), user_id, iso_utc(now), iso_utc(now + ttl)],
    )
    return token


def verify_token(db: Db, token: str, *, now: datetime) -> AuthUser:
    """The account a token belongs to; raises ``InvalidToken`` (unknown, expired, disabled)."""
    row = db.execute(
        "SELECT u.id, u.username, u.status, t.expires_at FROM tokens t JOIN users u ON u.id = t.user_id"
        " WHERE t.token_hash = ?",
        [token_hash(token)],
    ).fetchone()
    if row is None:
        raise InvalidToken("unknown token")
    if datetime.fromisoformat(row[3]) <= now:
        raise InvalidToken("token expired")
    if row[2] != 1:
        raise InvalidToken("account disabled")
    return AuthUser.of(int(row[0]), str(row[1]), permission_level(db, int(row[0])))


def live_token_levels(db: Db, hashes: Collection[str], *, now: datetime) -> dict[str, int]:
    """Of the token hashes given, those :func:`verify_token` would still accept (known, unexpired,
    account enabled), each with its account's permission level as of now."""
    if not hashes:
        return {}
    marks = ", ".join("?" * len(hashes))
    rows = db.execute(
        "SELECT t.token_hash, u.id, u.status, t.expires_at FROM tokens t JOIN users u"  # noqa: S608
        f" ON u.id = t.user_id WHERE t.token_hash IN ({marks})",  # placeholders only
        list(hashes),
    ).fetchall()
    good = [(str(r[0]), int(r[1])) for r in rows if r[2] == 1 and datetime.fromisoformat(r[3]) > now]
    levels = {user_id: permission_level(db, user_id) for user_id in {u for _, u in good}}
    return {hashed: levels[user_id] for hashed, user_id in good}


def revoke_token(db: Db, token: str) -> bool:
    """Delete a token (logout); whether it existed."""
    cursor = db.execute("DELETE FROM tokens WHERE token_hash = ?", [token_hash(token)])
    return cursor.rowcount > 0


def purge_expired_tokens(db: Db, *, now: datetime) -> int:
    """Delete every expired token; how many."""
    cursor = db.execute("DELETE FROM tokens WHERE julianday(expires_at) <= julianday(?)", [iso_utc(now)])
    return cursor.rowcount


# --- the operator API's user management --------------------------------------------------------


def user_page(
    db: Db, status: int | None, keyword: str | None, size: int, offset: int
) -> tuple[int, list[dict[str, Any]]]:
    """(how many users match, one page of them): a status filter and a keyword over the username,
    nickname, phone and e-mail."""
    where = where_clause([("u.status = ?", status)], keyword, _USER_SEARCH)
    return USER_ROWS.page(db, where, size, offset)


def update_user(db: Db, user_id: int, changes: dict[str, Any], stamp: str) -> None:
    """Set the given columns of a user (and its update time)."""
    sets = "".join(f"{column} = ?, " for column in changes)
    db.execute(
        f"UPDATE users SET {sets}update_time = ? WHERE id = ?",  # noqa: S608
        [*changes.values(), stamp, user_id],
    )


def set_password(db: Db, user_id: int, password_hash: str, stamp: str, *, keep_token_hash: str) -> None:
    """Store a new password hash and end every other session of the user (all but ``keep_token_hash``)."""
    db.execute(
        "UPDATE users SET password_hash = ?, update_time = ? WHERE id = ?", [password_hash, stamp, user_id]
    )
    db.execute("DELETE FROM tokens WHERE user_id = ? AND token_hash != ?", [user_id, keep_token_hash])


def credit_balance(db: Db, user_id: int, cents: int, stamp: str) -> int | None:
    """Add ``cents`` to the user's balance; the new balance, or None when there is no such user."""
    cursor = db.execute(
        "UPDATE users SET balance_cents = balance_cents + ?, update_time = ? WHERE id = ?",
        [cents, stamp, user_id],
    )
    if cursor.rowcount == 0:
        return None
    return int(db.execute("SELECT balance_cents FROM users WHERE id = ?", [user_id]).fetchone()[0])


def deletion_blocker(db: Db, user_id: int) -> str | None:
    """Why the user cannot be deleted (active charging, or billing history to keep), or None."""
    marks = ", ".join("?" for _ in ACTIVE_REQUEST_STATES)
    active = db.execute(
        f"SELECT COUNT(*) FROM charging_requests WHERE user_id = ? AND current_status IN ({marks})",  # noqa: S608
        [user_id, *ACTIVE_REQUEST_STATES],
    ).fetchone()[0]
    if active:
        return f"用户 {user_id} 有进行中的充电请求"
    charging = db.execute(
        "SELECT COUNT(*) FROM orders WHERE user_id = ? AND status = ?", [user_id, OrderStatus.CHARGING]
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


def delete_user(db: Db, user_id: int) -> None:
    """Delete the user (its roles, tokens, addresses and notifications go with it)."""
    try:
        db.execute("DELETE FROM users WHERE id = ?", [user_id])
    except IntegrityError as exc:
        raise UserStillReferenced(str(exc)) from None
