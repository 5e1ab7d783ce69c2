"""Accounts without storage: password hashing, tokens, login checks and throttling, the caller.

Passwords are scrypt hashes stored as ``scrypt$n$r$p$salt_b64$hash_b64``; a token is shown to its
owner once and only its sha256 is stored, with an expiry. Times are aware datetimes, stored as
ISO 8601 UTC strings (:func:`iso_utc`). The account rows themselves are read and written by
:mod:`central.adapters.users`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from central.domain.levels import is_staff_level

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
SALT_BYTES, HASH_BYTES = 16, 32
PASSWORD_LENGTH = (6, 128)
USERNAME_RE = re.compile(r"[A-Za-z0-9_.\-@]{3,64}")
EMAIL_RE = re.compile(r"[^@\s]{1,64}@[^@\s]+\.[^@\s]+")
PHONE_RE = re.compile(r"\+?[0-9][0-9 \-]{2,30}")
DEFAULT_TOKEN_TTL = timedelta(days=7)


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
        return cls(user_id, username, level, is_staff_level(level))


def iso_utc(at: datetime) -> str:
    """An aware time as the stored ISO 8601 UTC text (a naive time is a programming error)."""
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


# --- registration and login ---------------------------------------------------------------------


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


@dataclass(frozen=True)
class LoginRecord:
    """What a login needs to know before checking the password."""

    user_id: int
    username: str
    password_hash: str
    active: bool


def check_login(record: LoginRecord | None, password: str) -> LoginRecord:
    """Verify a password against what the account lookup found (slow: run it off the loop)."""
    if record is None:
        burn_password_check(password)
        raise InvalidCredentials("wrong username or password")
    if not verify_password(password, record.password_hash) or not record.active:
        raise InvalidCredentials("wrong username or password")
    return record


# --- tokens ------------------------------------------------------------------------------------


def new_token() -> str:
    """A fresh random token (shown to its owner once; only :func:`token_hash` of it is stored)."""
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """What the tokens table stores for a token."""
    return hashlib.sha256(token.encode()).hexdigest()


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
