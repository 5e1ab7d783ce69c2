"""Accounts, passwords, tokens and login throttling, shared by the user API and the operator API.

Pure functions of a sqlite-utils ``Database`` (run them inside ``store.read`` / ``store.write``) and a
few small classes; nothing here knows HTTP. Passwords are scrypt hashes stored as
``scrypt$n$r$p$salt_b64$hash_b64``; a token is shown to its owner once and only its sha256 is stored,
with an expiry. Times are aware datetimes, stored as ISO 8601 UTC strings.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlite_utils

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
SALT_BYTES, HASH_BYTES = 16, 32
PASSWORD_LENGTH = (6, 128)
USERNAME_RE = re.compile(r"[A-Za-z0-9_.\-@]{3,64}")
EMAIL_RE = re.compile(r"[^@\s]{1,64}@[^@\s]+\.[^@\s]+")
PHONE_RE = re.compile(r"\+?[0-9][0-9 \-]{2,30}")
DEFAULT_TOKEN_TTL = timedelta(days=7)
STAFF_LEVEL = 3  # 管理员 and above are staff (is_staff on the user API)
SYSTEM_LEVELS = (1, 2, 3, 4)


class AuthError(Exception):
    """Base of every account error."""


class InvalidCredentials(AuthError):
    """Unknown username, wrong password or disabled account (deliberately indistinguishable)."""


class InvalidToken(AuthError):
    """The token is unknown, expired, or its account is disabled."""


class AccountValidationError(AuthError):
    """Registration data is unacceptable; ``problems`` maps each field to what is wrong."""

    def __init__(self, problems: dict[str, str]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{k}: {v}" for k, v in problems.items()))


class LoginThrottled(AuthError):
    """Too many failed logins for this account or client address; retry after ``retry_after_s``."""

    def __init__(self, retry_after_s: float) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(f"too many failed logins, retry in {retry_after_s:.0f} s")


@dataclass(frozen=True)
class AuthUser:
    """Who is calling: the account behind a valid token (or a successful login)."""

    id: int
    username: str
    level: int
    is_staff: bool

    @classmethod
    def of(cls, user_id: int, username: str, level: int) -> AuthUser:
        """``is_staff`` follows from the permission level."""
        return cls(user_id, username, level, level >= STAFF_LEVEL)


def _iso(at: datetime) -> str:
    if at.tzinfo is None:
        raise ValueError(f"naive datetime {at.isoformat()}: pass an aware time")
    return at.astimezone(UTC).isoformat()


# --- passwords ---------------------------------------------------------------------------------


def password_problem(password: object) -> str | None:
    """Why ``password`` is not acceptable as a new password, or None."""
    low, high = PASSWORD_LENGTH
    if not isinstance(password, str):
        return "must be a string"
    if not low <= len(password) <= high:
        return f"must be {low} to {high} characters long (got {len(password)})"
    if not password.strip():
        return "must not be blank"
    return None


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """A fresh-salted scrypt hash in the stored ``scrypt$n$r$p$salt$hash`` form (~60 ms)."""
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(password, salt, n, r, p)
    b64 = base64.b64encode
    return f"scrypt${n}${r}${p}${b64(salt).decode()}${b64(digest).decode()}"


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=2**26, dklen=HASH_BYTES)


def verify_password(password: str, stored: str) -> bool:
    """Constant-time check of ``password`` against a stored hash; a malformed hash never matches."""
    try:
        scheme, n, r, p, salt_b64, hash_b64 = stored.split("$")
        if scheme != "scrypt":
            return False
        salt, expected = base64.b64decode(salt_b64), base64.b64decode(hash_b64)
        digest = _scrypt(password, salt, int(n), int(r), int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(digest, expected)


_DUMMY_HASH: list[str] = []


def burn_password_check(password: str) -> None:
    """Spend the time of one verification, so an unknown username is not faster to reject."""
    if not _DUMMY_HASH:
        _DUMMY_HASH.append(hash_password(secrets.token_urlsafe(12)))
    verify_password(password, _DUMMY_HASH[0])


# --- users -------------------------------------------------------------------------------------


def registration_problems(
    username: object, password: object, email: object = None, phone: object = None
) -> dict[str, str]:
    """Every problem of a registration, by field (empty when acceptable); uniqueness not checked."""
    problems: dict[str, str] = {}
    if not isinstance(username, str) or not USERNAME_RE.fullmatch(username):
        problems["username"] = "must be 3 to 64 characters: letters, digits, _ . - @"
    if (why := password_problem(password)) is not None:
        problems["password"] = why
    if email is not None and (
        not isinstance(email, str) or len(email) > 254 or not EMAIL_RE.fullmatch(email)
    ):
        problems["email"] = "must be an e-mail address like name@example.com"
    if phone is not None and (not isinstance(phone, str) or not PHONE_RE.fullmatch(phone)):
        problems["phone"] = "must be a phone number: digits, optionally + at the start, spaces or -"
    return problems


def username_taken(db: sqlite_utils.Database, username: str) -> bool:
    """Whether an account with this username exists (case-insensitively)."""
    row = db.execute("SELECT 1 FROM users WHERE username = ? COLLATE NOCASE", [username]).fetchone()
    return row is not None


def insert_user(
    db: sqlite_utils.Database,
    username: str,
    password_hash: str,
    *,
    email: str | None = None,
    phone: str | None = None,
    nickname: str | None = None,
    level: int = 1,
    now: datetime,
) -> int:
    """Insert an already-validated account with a precomputed hash; a taken name is a validation error."""
    stamp = _iso(now)
    try:
        cursor = db.execute(
            "INSERT INTO users (username, password_hash, email, phone, nickname, register_time, update_time)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            [username, password_hash, email, phone, nickname or username, stamp, stamp],
        )
    except sqlite3.IntegrityError as exc:
        raise AccountValidationError({"username": "already taken"}) from exc
    user_id = int(cursor.lastrowid or 0)
    grant_level(db, user_id, level, now=now)
    return user_id


def create_user(
    db: sqlite_utils.Database,
    username: str,
    password: str,
    *,
    email: str | None = None,
    phone: str | None = None,
    nickname: str | None = None,
    level: int = 1,
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


def permission_level(db: sqlite_utils.Database, user_id: int) -> int:
    """The highest permission level among the user's roles (1 when the user has none)."""
    row = db.execute(
        "SELECT MAX(r.permission_level) FROM user_roles ur JOIN roles r ON r.id = ur.role_id"
        " WHERE ur.user_id = ?",
        [user_id],
    ).fetchone()
    return int(row[0]) if row is not None and row[0] is not None else 1


@dataclass(frozen=True)
class LoginRecord:
    """What a login needs to know before checking the password."""

    user_id: int
    username: str
    password_hash: str
    active: bool


def find_login(db: sqlite_utils.Database, username: str) -> LoginRecord | None:
    """The account a login names (case-insensitively), or None."""
    row = db.execute(
        "SELECT id, username, password_hash, status FROM users WHERE username = ? COLLATE NOCASE",
        [username],
    ).fetchone()
    return None if row is None else LoginRecord(int(row[0]), str(row[1]), str(row[2]), row[3] == 1)


def check_login(record: LoginRecord | None, password: str) -> LoginRecord:
    """Verify a password against what :func:`find_login` returned (slow: run it off the loop)."""
    if record is None:
        burn_password_check(password)
        raise InvalidCredentials("wrong username or password")
    if not verify_password(password, record.password_hash) or not record.active:
        raise InvalidCredentials("wrong username or password")
    return record


def authenticate(db: sqlite_utils.Database, username: str, password: str, *, now: datetime) -> AuthUser:
    """Check a username and password, stamp the login time; raises :class:`InvalidCredentials`."""
    record = check_login(find_login(db, username), password)
    db.execute("UPDATE users SET last_login_time = ? WHERE id = ?", [_iso(now), record.user_id])
    return AuthUser.of(record.user_id, record.username, permission_level(db, record.user_id))


def get_profile(db: sqlite_utils.Database, user_id: int) -> dict[str, Any] | None:
    """The user-API profile fields of an account, or None."""
    row = db.execute("SELECT id, username, email, phone FROM users WHERE id = ?", [user_id]).fetchone()
    if row is None:
        return None
    level = permission_level(db, user_id)
    return {
        "id": row[0],
        "username": row[1],
        "email": row[2],
        "phone": row[3],
        "is_staff": level >= STAFF_LEVEL,
    }


# --- tokens ------------------------------------------------------------------------------------


def token_hash(token: str) -> str:
    """What the tokens table stores for a token."""
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(
    db: sqlite_utils.Database, user_id: int, *, now: datetime, ttl: timedelta = DEFAULT_TOKEN_TTL
) -> str:
    """A new token for ``user_id`` valid for ``ttl``; also purges expired tokens. Returns the token."""
    if ttl <= timedelta(0):
        raise ValueError(f"token ttl must be positive, got {ttl}")
    purge_expired_tokens(db, now=now)
    token = secrets.token_urlsafe(32)
    db.execute(
        "INSERT INTO tokens (token_hash, user_id, created_at, expires_at) VALUES (?, ?, ?, ?)",
        [token_hash(token), user_id, _iso(now), _iso(now + ttl)],
    )
    return token


def verify_token(db: sqlite_utils.Database, token: str, *, now: datetime) -> AuthUser:
    """The account a token belongs to; raises :class:`InvalidToken` (unknown, expired, disabled)."""
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


def revoke_token(db: sqlite_utils.Database, token: str) -> bool:
    """Delete a token (logout); whether it existed."""
    cursor = db.execute("DELETE FROM tokens WHERE token_hash = ?", [token_hash(token)])
    return cursor.rowcount > 0


def purge_expired_tokens(db: sqlite_utils.Database, *, now: datetime) -> int:
    """Delete every expired token; how many."""
    cursor = db.execute("DELETE FROM tokens WHERE julianday(expires_at) <= julianday(?)", [_iso(now)])
    return cursor.rowcount


# --- login throttling --------------------------------------------------------------------------


@dataclass
class _Window:
    """Failures counted since ``start`` (monotonic seconds)."""

    start: float
    failures: int


class LoginRateLimiter:
    """Refuses logins after too many failures per account or per client address, for the window.

    A key's window opens at its first failure and lasts ``window_s``; once it holds ``limit``
    failures every further attempt is refused until the window ends. In memory, at most ``max_keys``
    keys (least recently touched ones are forgotten first).
    """

    def __init__(
        self,
        *,
        per_account: int = 5,
        per_address: int = 20,
        window_s: float = 300.0,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_account, self.per_address = per_account, per_address
        self.window_s, self.max_keys, self._clock = window_s, max_keys, clock
        self._windows: OrderedDict[tuple[str, str], _Window] = OrderedDict()

    def _keys(self, account: str, address: str | None) -> list[tuple[tuple[str, str], int]]:
        keys = [(("account", account.strip().lower()), self.per_account)]
        if address:
            keys.append((("address", address), self.per_address))
        return keys

    def _live(self, key: tuple[str, str], now: float) -> _Window | None:
        window = self._windows.get(key)
        if window is not None and now - window.start >= self.window_s:
            del self._windows[key]
            return None
        return window

    def check(self, account: str, address: str | None) -> None:
        """Raise :class:`LoginThrottled` if this attempt must be refused."""
        now = self._clock()
        waits = [
            window.start + self.window_s - now
            for key, limit in self._keys(account, address)
            if (window := self._live(key, now)) is not None and window.failures >= limit
        ]
        if waits:
            raise LoginThrottled(max(waits))

    def record_failure(self, account: str, address: str | None) -> None:
        """Count one failed attempt against the account and the address."""
        now = self._clock()
        for key, _limit in self._keys(account, address):
            window = self._live(key, now)
            if window is None:
                window = self._windows[key] = _Window(now, 0)
            window.failures += 1
            self._windows.move_to_end(key)
        while len(self._windows) > self.max_keys:
            self._windows.popitem(last=False)

    def record_success(self, account: str) -> None:
        """A correct password clears the account's failures (not the address's)."""
        self._windows.pop(("account", account.strip().lower()), None)

    def __len__(self) -> int:
        return len(self._windows)


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class AuthSettings:
    """Per-application account settings: token lifetime, the shared login limiter, the wall clock.

    Tokens expire by real time, not the station clock (which may run fast in the demo).
    """

    token_ttl: timedelta = DEFAULT_TOKEN_TTL
    limiter: LoginRateLimiter = field(default_factory=LoginRateLimiter)
    clock: Callable[[], datetime] = _utcnow


def create_or_update_user(
    db: sqlite_utils.Database,
    username: str,
    password: str,
    *,
    level: int = 1,
    update: bool = False,
    now: datetime | None = None,
) -> str:
    """``pilegate create-user`` / the demo's admin: create the account, or with ``update`` set the
    password of an existing one (and grant the role of ``level``). Returns "created" or "updated"."""
    now = now or _utcnow()
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
        [hash_password(password), _iso(now), record.user_id],
    )
    grant_level(db, record.user_id, level, now=now)
    return "updated"


def grant_level(db: sqlite_utils.Database, user_id: int, level: int, *, now: datetime) -> None:
    """Give the user the system role of ``level`` (roles already held are kept)."""
    if level not in SYSTEM_LEVELS:
        raise AccountValidationError({"level": f"must be one of {SYSTEM_LEVELS}, got {level!r}"})
    db.execute(
        "INSERT OR IGNORE INTO user_roles (user_id, role_id, assigned_time)"
        " SELECT ?, id, ? FROM roles WHERE permission_level = ? AND is_system = 1",
        [user_id, _iso(now), level],
    )
