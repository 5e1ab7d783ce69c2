"""Accounts: scrypt password hashes and token expiry on a fake clock.

The account repository runs on an in-memory sqlite-utils database with the central schema.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from central.adapters import users
from central.adapters.database import Db, SqliteDatabase
from central.adapters.schema import migrations
from central.application import auth

T0 = datetime(2025, 6, 2, 8, 0, tzinfo=UTC)


@pytest.fixture
def db() -> Iterator[Db]:
    database = SqliteDatabase(sqlite3.connect(":memory:"))
    migrations.apply(database)
    yield database
    database.conn.close()


# --- passwords -----------------------------------------------------------------------------------


def test_password_hash_has_the_documented_scrypt_format_and_verifies():
    stored = auth.hash_password("s3cret-pw")
    scheme, n, r, p, salt, digest = stored.split("$")
    assert (scheme, n, r, p) == ("scrypt", str(2**14), "8", "1")
    assert len(salt) == 24 and len(digest) == 44  # base64 of 16 and 32 bytes
    assert auth.verify_password("s3cret-pw", stored)
    assert not auth.verify_password("s3cret-pw ", stored)


def test_same_password_hashes_differently_each_time():
    assert auth.hash_password("s3cret-pw") != auth.hash_password("s3cret-pw")


@pytest.mark.parametrize(
    "stored", ["", "plain", "md5$1$2$3$YQ==$YQ==", "scrypt$x$8$1$YQ==$YQ==", "scrypt$16$8$1$!!$YQ=="]
)
def test_malformed_stored_hash_never_matches(stored):
    assert not auth.verify_password("anything", stored)


@pytest.mark.parametrize(
    ("password", "problem"),
    [("12345", "6 to 128"), ("x" * 129, "6 to 128"), ("      ", "blank"), (123456, "string")],
)
def test_password_rules_name_the_problem(password, problem):
    assert problem in (auth.password_problem(password) or "")


def test_acceptable_password_has_no_problem():
    assert auth.password_problem("abcdef") is None
    assert auth.password_problem("x" * 128) is None


# --- users ---------------------------------------------------------------------------------------


def test_create_user_assigns_the_system_role_of_its_level(db):
    driver = users.create_user(db, "ann", "pw-123456", now=T0)
    admin = users.create_user(db, "root", "pw-123456", level=4, now=T0)
    assert users.permission_level(db, driver) == 1
    assert users.permission_level(db, admin) == 4
    admin_profile, driver_profile = users.get_profile(db, admin), users.get_profile(db, driver)
    assert admin_profile is not None and admin_profile["is_staff"] is True
    assert driver_profile is not None and driver_profile["is_staff"] is False


def test_user_without_roles_has_level_one(db):
    user_id = users.create_user(db, "ann", "pw-123456", now=T0)
    db.execute("DELETE FROM user_roles WHERE user_id = ?", [user_id])
    assert users.permission_level(db, user_id) == 1


def test_username_is_unique_case_insensitively(db):
    users.create_user(db, "Ann", "pw-123456", now=T0)
    with pytest.raises(auth.AccountValidationError) as caught:
        users.create_user(db, "aNN", "pw-123456", now=T0)
    assert caught.value.problems == {"username": "already taken"}


def test_registration_problems_name_every_bad_field():
    problems = auth.registration_problems("a", "123", "not-an-email", "phone?")
    assert set(problems) == {"username", "password", "email", "phone"}


@pytest.mark.parametrize("name", ["ab", "x" * 65, "has space", "ünï", "a/b"])
def test_bad_usernames_are_refused(name):
    assert "username" in auth.registration_problems(name, "pw-123456")


def test_authenticate_checks_the_password_and_stamps_the_login(db):
    user_id = users.create_user(db, "ann", "pw-123456", now=T0)
    user = users.authenticate(db, "ANN", "pw-123456", now=T0 + timedelta(hours=1))
    assert (user.id, user.username, user.level, user.is_staff) == (user_id, "ann", 1, False)
    assert db["users"].get(user_id)["last_login_time"] == (T0 + timedelta(hours=1)).isoformat()
    with pytest.raises(auth.InvalidCredentials):
        users.authenticate(db, "ann", "wrong-pw", now=T0)
    with pytest.raises(auth.InvalidCredentials):
        users.authenticate(db, "nobody", "pw-123456", now=T0)


def test_disabled_account_cannot_log_in(db):
    user_id = users.create_user(db, "ann", "pw-123456", now=T0)
    db.execute("UPDATE users SET status = 0 WHERE id = ?", [user_id])
    with pytest.raises(auth.InvalidCredentials):
        users.authenticate(db, "ann", "pw-123456", now=T0)


def test_create_or_update_user_sets_a_new_password_only_when_asked(db):
    assert users.create_or_update_user(db, "admin", "first-pw", level=4, now=T0) == "created"
    with pytest.raises(auth.AccountValidationError):
        users.create_or_update_user(db, "admin", "second-pw", level=4, now=T0)
    assert users.create_or_update_user(db, "admin", "second-pw", level=4, update=True, now=T0) == "updated"
    assert users.authenticate(db, "admin", "second-pw", now=T0).level == 4


# --- tokens --------------------------------------------------------------------------------------


def test_only_the_token_hash_is_stored(db):
    user_id = users.create_user(db, "ann", "pw-123456", now=T0)
    token = users.issue_token(db, user_id, now=T0)
    stored = [row["token_hash"] for row in db["tokens"].rows]
    assert stored == [auth.token_hash(token)] and token not in stored


def test_token_is_valid_until_its_expiry_on_a_fake_clock(db):
    user_id = users.create_user(db, "ann", "pw-123456", now=T0)
    token = users.issue_token(db, user_id, now=T0, ttl=timedelta(hours=2))
    assert users.verify_token(db, token, now=T0 + timedelta(hours=1, minutes=59)).id == user_id
    with pytest.raises(auth.InvalidToken, match="expired"):
        users.verify_token(db, token, now=T0 + timedelta(hours=2))


def test_default_token_lifetime_is_seven_days(db):
    user_id = users.create_user(db, "ann", "pw-123456", now=T0)
    token = users.issue_token(db, user_id, now=T0)
    users.verify_token(db, token, now=T0 + timedelta(days=7) - timedelta(seconds=1))
    with pytest.raises(auth.InvalidToken):
        users.verify_token(db, token, now=T0 + timedelta(days=7))


def test_unknown_and_revoked_tokens_are_invalid(db):
    user_id = users.create_user(db, "ann", "pw-123456", now=T0)
    token = users.issue_token(db, user_id, now=T0)
    with pytest.raises(auth.InvalidToken, match="unknown"):
        users.verify_token(db, "not-a-token", now=T0)
    assert users.revoke_token(db, token) is True
    assert users.revoke_token(db, token) is False
    with pytest.raises(auth.InvalidToken):
        users.verify_token(db, token, now=T0)


def test_token_of_a_disabled_account_is_invalid(db):
    user_id = users.create_user(db, "ann", "pw-123456", now=T0)
    token = users.issue_token(db, user_id, now=T0)
    db.execute("UPDATE users SET status = 0 WHERE id = ?", [user_id])
    with pytest.raises(auth.InvalidToken, match="disabled"):
        users.verify_token(db, token, now=T0)


def test_issuing_a_token_purges_expired_ones(db):
    user_id = users.create_user(db, "ann", "pw-123456", now=T0)
    users.issue_token(db, user_id, now=T0, ttl=timedelta(minutes=5))
    users.issue_token(db, user_id, now=T0, ttl=timedelta(days=1))
    users.issue_token(db, user_id, now=T0 + timedelta(hours=1))
    assert db["tokens"].count == 2
