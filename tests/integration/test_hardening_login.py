"""Login throttling slows the attacker without denying the owner, on both login routes; the client
address comes from X-Forwarded-For only through a configured trusted proxy; registration is slowed
per address."""

from __future__ import annotations

from ipaddress import ip_network
from typing import Any

import pytest

pytest.register_assert_rewrite("tests.integration.platform_fixtures")

from central.web.keys import AUTH  # noqa: E402
from tests.integration.platform_fixtures import Account, Central, problem  # noqa: E402

pytest_plugins = ("tests.integration.platform_fixtures",)

ATTACKER, OWNER = "203.0.113.9", "198.51.100.7"


def behind_proxy(platform: Central) -> None:
    """The test client (127.0.0.1) acts as the reverse proxy the example config recommends."""
    platform.app[AUTH].trusted_proxies = (ip_network("127.0.0.0/8"),)


async def driver_login(
    platform: Central, username: str, password: str, via: str | None = None
) -> tuple[int, Any]:
    headers = {"X-Forwarded-For": via} if via else {}
    return await platform.call(
        "POST", "/api/auth/login/", json={"username": username, "password": password}, headers=headers
    )


async def platform_login(
    platform: Central, open_id: str, password: str, via: str | None = None
) -> tuple[int, Any]:
    headers = {"X-Forwarded-For": via} if via else {}
    return await platform.call(
        "POST", "/api/Users/login", json={"openId": open_id, "password": password}, headers=headers
    )


async def test_guesses_from_one_address_do_not_lock_the_owner_out(
    platform: Central, admin_user: Account
) -> None:
    behind_proxy(platform)
    for _ in range(8):
        await driver_login(platform, admin_user.username, "wrong-guess", via=ATTACKER)
    status, body = await driver_login(platform, admin_user.username, "wrong-guess", via=ATTACKER)
    assert status == 429 and body["error"]["details"]["retry_after_s"] > 0, body
    status, body = await driver_login(platform, admin_user.username, admin_user.password, via=OWNER)
    assert status == 200, body
    status, body = await platform_login(platform, admin_user.username, admin_user.password, via=OWNER)
    assert status == 200, body


async def test_twenty_bad_logins_from_one_address_do_not_lock_admin(
    platform: Central, super_admin: Account
) -> None:
    behind_proxy(platform)
    for i in range(25):
        await platform_login(platform, f"nobody{i}", "wrong-guess", via=ATTACKER)
    problem(await platform_login(platform, super_admin.username, super_admin.password, via=ATTACKER), 429)
    status, body = await platform_login(platform, super_admin.username, super_admin.password, via=OWNER)
    assert status == 200, body


async def test_the_owner_at_the_attackers_address_waits_seconds_not_minutes(
    platform: Central, normal_user: Account
) -> None:
    for _ in range(5):
        assert (await driver_login(platform, normal_user.username, "wrong-guess"))[0] == 401
    async with platform.client.post(
        "/api/auth/login/", json={"username": normal_user.username, "password": normal_user.password}
    ) as response:
        assert response.status == 429
        wait = int(response.headers["Retry-After"])
    assert 1 <= wait <= 5
    platform.wall.advance(wait)
    status, body = await driver_login(platform, normal_user.username, normal_user.password)
    assert status == 200, body


async def test_forwarded_for_from_an_untrusted_peer_is_ignored(
    platform: Central, normal_user: Account
) -> None:
    for i in range(6):
        await driver_login(platform, normal_user.username, "wrong-guess", via=f"10.9.9.{i}")
    status, _body = await driver_login(platform, normal_user.username, normal_user.password, via=OWNER)
    assert status == 429  # the peer itself failed: a made-up header does not make it a new client


async def test_only_the_last_untrusted_hop_counts(platform: Central, normal_user: Account) -> None:
    behind_proxy(platform)
    for i in range(6):  # the attacker varies the part of the header it controls
        await driver_login(platform, normal_user.username, "wrong-guess", via=f"10.9.9.{i}, {ATTACKER}")
    status, _body = await driver_login(platform, normal_user.username, normal_user.password, via=ATTACKER)
    assert status == 429
    status, body = await driver_login(platform, normal_user.username, normal_user.password, via=OWNER)
    assert status == 200, body


async def test_registration_is_slowed_per_address(platform: Central) -> None:
    behind_proxy(platform)
    free = platform.app[AUTH].limiter.registration.free
    statuses = []
    for i in range(free + 2):
        status, _body = await platform.call(
            "POST",
            "/api/auth/register/",
            json={"username": f"bot{i}", "password": "bot-password-1"},
            headers={"X-Forwarded-For": ATTACKER},
        )
        statuses.append(status)
    assert statuses[: free + 1] == [201] * (free + 1) and statuses[-1] == 429, statuses
    status, body = await platform.call(
        "POST",
        "/api/auth/register/",
        json={"username": "human", "password": "human-password-1"},
        headers={"X-Forwarded-For": OWNER},
    )
    assert status == 201, body
