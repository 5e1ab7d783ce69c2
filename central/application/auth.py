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
from ipaddress import IPv4Network, IPv6Network

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
    """Too many failed logins (or registrations) from this client; retry after ``retry_after_s``."""

    def __init__(self, retry_after_s: float) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(f"too many attempts, retry in {retry_after_s:.0f} s")


class RegistrationThrottled(LoginThrottled):
    """Too many accounts registered from this client address lately; retry after ``retry_after_s``."""


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


@dataclass(frozen=True)
class Backoff:
    """Growing delays for one kind of key: ``free`` events cost nothing, each further one doubles
    the wait (from ``base_s`` up to ``max_s``) before the key may try again; a key quiet for
    ``forget_s`` starts over."""

    free: int
    base_s: float
    max_s: float
    forget_s: float

    def delay(self, count: int) -> float:
        """How long a key must wait after its ``count``-th event."""
        if count <= self.free:
            return 0.0
        return min(self.max_s, self.base_s * 2.0 ** min(count - self.free - 1, 64))


PAIR_BACKOFF = Backoff(free=4, base_s=1.0, max_s=300.0, forget_s=3600.0)
"""One account from one address: a few typos are free, a guesser soon waits minutes per try."""
ADDRESS_BACKOFF = Backoff(free=20, base_s=1.0, max_s=300.0, forget_s=3600.0)
"""One address across accounts: a spray over many accounts is slowed, whatever the account."""
REGISTRATION_BACKOFF = Backoff(free=20, base_s=1.0, max_s=3600.0, forget_s=86400.0)
"""Registrations from one address: a family or a fleet behind one router may sign up, a bot soon
waits an hour per account."""


@dataclass
class _Tally:
    """Events of one key: how many, and when the last was (monotonic seconds)."""

    count: int
    last: float


class LoginRateLimiter:
    """Slows password guessing and mass registration without ever locking an account's owner out.

    Failed logins count per (account, address) pair and per address, each with growing delays
    (:class:`Backoff`): while a key is in its delay every attempt it covers is refused with the time
    left. The account alone is never a key, so guesses against ``admin`` from one address do not
    stop the owner logging in from another, and the right password from an address that has not
    failed is never refused. A success clears its pair (not its address). Registrations count per
    address. In memory, at most ``max_keys`` keys per kind (least recently touched ones are
    forgotten first).
    """

    def __init__(
        self,
        *,
        pair: Backoff = PAIR_BACKOFF,
        address: Backoff = ADDRESS_BACKOFF,
        registration: Backoff = REGISTRATION_BACKOFF,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pair, self.address, self.registration = pair, address, registration
        self.max_keys, self._clock = max_keys, clock
        self._rules = {"pair": pair, "address": address, "registration": registration}
        self._tallies: dict[str, OrderedDict[str, _Tally]] = {kind: OrderedDict() for kind in self._rules}

    @staticmethod
    def _keys(account: str, address: str | None) -> list[tuple[str, str]]:
        keys = [("pair", f"{account.strip().lower()}\n{address or ''}")]
        if address:
            keys.append(("address", address))
        return keys

    def _live(self, kind: str, key: str, now: float) -> _Tally | None:
        tallies, rule = self._tallies[kind], self._rules[kind]
        tally = tallies.get(key)
        if tally is not None and now - tally.last >= rule.forget_s:
            del tallies[key]
            return None
        return tally

    def _check(self, keys: list[tuple[str, str]], refusal: type[LoginThrottled] = LoginThrottled) -> None:
        now = self._clock()
        waits = [
            tally.last + self._rules[kind].delay(tally.count) - now
            for kind, key in keys
            if (tally := self._live(kind, key, now)) is not None
        ]
        wait = max(waits, default=0.0)
        if wait > 0:
            raise refusal(wait)

    def _record(self, keys: list[tuple[str, str]]) -> None:
        now = self._clock()
        for kind, key in keys:
            tallies = self._tallies[kind]
            tally = self._live(kind, key, now)
            if tally is None:
                tally = tallies[key] = _Tally(0, now)
            tally.count, tally.last = tally.count + 1, now
            tallies.move_to_end(key)
            while len(tallies) > self.max_keys:
                tallies.popitem(last=False)

    def check(self, account: str, address: str | None) -> None:
        """Raise :class:`LoginThrottled` if this login attempt falls in a delay."""
        self._check(self._keys(account, address))

    def record_failure(self, account: str, address: str | None) -> None:
        """Count one failed attempt against the pair and the address."""
        self._record(self._keys(account, address))

    def record_success(self, account: str, address: str | None) -> None:
        """A correct password clears its pair's failures (not the address's)."""
        self._tallies["pair"].pop(self._keys(account, address)[0][1], None)

    def check_registration(self, address: str | None) -> None:
        """Raise :class:`RegistrationThrottled` if a registration from ``address`` falls in a delay."""
        if address:
            self._check([("registration", address)], RegistrationThrottled)

    def record_registration(self, address: str | None) -> None:
        """Count one account created from ``address``."""
        if address:
            self._record([("registration", address)])

    def __len__(self) -> int:
        return sum(len(tallies) for tallies in self._tallies.values())


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class AuthSettings:
    """Per-application account settings: token lifetime, the shared login limiter, the wall clock,
    the trusted reverse proxies.

    Tokens expire by real time, not the station clock (which may run fast in the demo).
    """

    token_ttl: timedelta = DEFAULT_TOKEN_TTL
    limiter: LoginRateLimiter = field(default_factory=LoginRateLimiter)
    clock: Callable[[], datetime] = _utcnow
    trusted_proxies: tuple[IPv4Network | IPv6Network, ...] = ()
    """Reverse proxies whose ``X-Forwarded-For`` names the client (the limiter counts per client)."""
