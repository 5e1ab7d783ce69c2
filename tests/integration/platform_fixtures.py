"""Fixtures for the operator platform API tests: one real app serving BOTH APIs over one store.

:func:`start_platform` is ``tests.integration.central_fixtures.start_central`` (real Store, real
ChargingService on a fake wall clock, recorded pile commands) registering the user API and the
operator platform API (``add_operator_platform_api``). It returns a ``Central`` (``call``, ``user``,
``telemetry``, ``wall``, ``store``, ``service``), so everything written against the driver API's
fixtures works here too.

A test module loads them with ``pytest_plugins = ("tests.integration.platform_fixtures",)``; to import
the helpers too, first ``pytest.register_assert_rewrite("tests.integration.platform_fixtures")`` (else
pytest warns that the plugin was imported before it could rewrite its asserts). Fixtures:
``platform`` (the running app), ``normal_user`` and ``other_user`` (level 1), ``admin_user``
(level 3, 管理员), ``super_admin`` (level 4, 超级管理员); each account is an ``Account``
(``user_id``, ``username`` (= openId), ``token``, ``password``, ``headers``). Override
``platform_station_params`` in a module for another station. Helpers: :func:`problem` and
:func:`invalid` check a ``(status, body)`` reply (what ``Central.call`` returns) is a problem details
body.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

pytest.register_assert_rewrite("tests.integration.central_fixtures")

from central.domain.params import StationParams, params_from_mapping  # noqa: E402 - after the rewrite registration above
from central.web import add_user_api  # noqa: E402
from central.web.platform import add_operator_platform_api  # noqa: E402
from tests.integration.central_fixtures import (  # noqa: E402
    PASSWORD,
    SMALL_STATION,
    START,
    Account,
    Central,
    database,
    each_database,
    postgres_server,
    start_central,
    stop_central,
)

BOTH_APIS = (add_user_api, add_operator_platform_api)


async def start_platform(
    tmp_path: Path, params: StationParams, start: datetime = START, *, database: Path | str | None = None
) -> Central:
    """:func:`~tests.integration.central_fixtures.start_central` serving both APIs; stop it with
    :func:`stop_platform`."""
    return await start_central(tmp_path, params, start, route_sets=BOTH_APIS, database=database)


stop_platform = stop_central


@pytest.fixture
def platform_station_params() -> StationParams:
    """One fast and one trickle pile (override per module)."""
    return params_from_mapping(SMALL_STATION)


@pytest.fixture
async def platform(
    tmp_path: Path, platform_station_params: StationParams, database: Path | str
) -> AsyncIterator[Central]:
    """A running app serving the user API and the operator platform API (on the test's ``database``)."""
    running = await start_platform(tmp_path, platform_station_params, database=database)
    try:
        yield running
    finally:
        await stop_platform(running)


@pytest.fixture
async def normal_user(platform: Central) -> Account:
    """A level-1 account (普通用户)."""
    return await platform.user("alice")


@pytest.fixture
async def other_user(platform: Central) -> Account:
    """Another level-1 account."""
    return await platform.user("bob")


@pytest.fixture
async def admin_user(platform: Central) -> Account:
    """A level-3 account (管理员): reads and changes other users' data."""
    return await platform.user("admin3", level=3)


@pytest.fixture
async def super_admin(platform: Central) -> Account:
    """A level-4 account (超级管理员): also manages roles."""
    return await platform.user("root4", level=4)


def problem(reply: tuple[int, Any], expected: int) -> dict[str, Any]:
    """Assert a ``(status, body)`` reply is an RFC 7807 problem with ``expected`` status; return the body.

    The shape: ``type`` and ``title`` are strings, ``status`` repeats the HTTP status, and the body
    explains itself with a ``detail`` string or (validation problems) an ``errors`` map of field to
    messages.
    """
    status, body = reply
    assert status == expected, (status, body)
    assert isinstance(body, dict), body
    assert body.get("status") == status, body
    assert isinstance(body.get("type"), str) and body["type"], body
    assert isinstance(body.get("title"), str) and body["title"], body
    detail, errors = body.get("detail"), body.get("errors")
    assert isinstance(detail, str) or isinstance(errors, dict), f"neither detail nor errors: {body}"
    if errors is not None:
        assert errors, body
        for messages in errors.values():
            assert isinstance(messages, list) and all(isinstance(m, str) for m in messages), body
    return body


def invalid(reply: tuple[int, Any], *fields: str) -> dict[str, list[str]]:
    """Assert a ``(status, body)`` reply is a 400 validation problem naming every field of ``fields``.

    Returns its ``errors``.
    """
    body = problem(reply, 400)
    assert body["title"] == "One or more validation errors occurred.", body
    errors: dict[str, list[str]] = body["errors"]
    missing = [field for field in fields if field not in errors]
    assert not missing, f"{missing} not named in {errors}"
    return errors


__all__ = [
    "PASSWORD",
    "Account",
    "Central",
    "admin_user",
    "database",
    "each_database",
    "invalid",
    "normal_user",
    "other_user",
    "platform",
    "platform_station_params",
    "postgres_server",
    "problem",
    "start_platform",
    "stop_platform",
    "super_admin",
]


# --- orders: the piles they run on, and the money around them --------------------------------------


@pytest.fixture
async def piles(platform, admin_user) -> dict[str, dict[str, str]]:
    """The scheduler's piles F1 and T1 as records: {pile_no: {"id", "port"}}."""
    _, station = await platform.call("POST", "/api/ChargingStations", user=admin_user, json={"name": "站"})
    out = {}
    for pile_no, pile_type, power in (("F1", 1, 30), ("T1", 2, 10)):
        body = {
            "stationId": station["id"],
            "pileNo": pile_no,
            "pileType": pile_type,
            "powerRate": power,
            "totalPorts": 1,
        }
        status, pile = await platform.call("POST", "/api/ChargingPiles", user=admin_user, json=body)
        assert status == 201, pile
        port_body = {"pileId": pile["id"], "portNo": 1}
        status, port = await platform.call("POST", "/api/ChargingPorts", user=admin_user, json=port_body)
        assert status == 201, port
        out[pile_no] = {"id": pile["id"], "port": port["id"]}
    return out


async def order(platform: Any, actor: Any, order_id: str) -> dict[str, Any]:
    status, body = await platform.call("GET", f"/api/Orders/{order_id}", user=actor)
    assert status == 200, body
    return dict(body)


async def top_up(platform: Any, admin: Any, user: Any, amount: float) -> None:
    status, body = await platform.call(
        "PUT", f"/api/Users/{user.user_id}/balance", user=admin, json={"amount": amount}
    )
    assert status == 204, body


async def balance(platform: Any, admin: Any, user: Any) -> float:
    _, body = await platform.call("GET", f"/api/Users/{user.user_id}", user=admin)
    return float(body["balance"])
