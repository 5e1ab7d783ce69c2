"""``GET /metrics`` is configurable: behind a token by default (a staff token or the configured metrics
token), open, or off; and the ``[http]`` keys that say so are validated."""

from __future__ import annotations

import tomllib
from collections.abc import AsyncIterator
from ipaddress import ip_network
from pathlib import Path

import pytest
from aiohttp import web

pytest.register_assert_rewrite("tests.integration.central_fixtures")

from central.app import add_metrics_route  # noqa: E402
from central.config import CentralConfig, parse_config  # noqa: E402
from central.domain.params import params_from_mapping  # noqa: E402
from central.web import add_user_api  # noqa: E402
from central.web.keys import STATIONS  # noqa: E402
from pilegate.settings import ConfigError  # noqa: E402
from tests.integration.central_fixtures import SMALL_STATION, Account, Central, start_central, stop_central  # noqa: E402

pytest_plugins = ("tests.integration.central_fixtures",)

METRICS_TOKEN = "metrics-token-0123456789"


class StubIngest:
    def stats(self) -> dict[str, int]:
        return {"stored": 7}


async def serve(tmp_path: Path, config: CentralConfig) -> Central:
    def routes(app: web.Application) -> None:
        add_user_api(app)
        runtime = app[STATIONS].get(app[STATIONS].default)
        runtime.ingest = StubIngest()  # type: ignore[assignment]  # only stats() is read
        add_metrics_route(app, config)

    return await start_central(tmp_path, params_from_mapping(SMALL_STATION), route_sets=(routes,))


def config_with(tmp_path: Path, http: str) -> CentralConfig:
    (tmp_path / "metrics-token").write_text(METRICS_TOKEN + "\n")
    return parse_config(tomllib.loads(f"[http]\n{http}"), "central.toml", tmp_path)


@pytest.fixture
async def guarded(tmp_path: Path) -> AsyncIterator[Central]:
    running = await serve(tmp_path, config_with(tmp_path, 'metrics_token_file = "metrics-token"'))
    try:
        yield running
    finally:
        await stop_central(running)


async def get_metrics(central: Central, token: str | None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with central.client.get("/metrics", headers=headers) as response:
        return response.status, await response.text()


async def test_metrics_need_a_token_by_default(guarded: Central) -> None:
    assert (await get_metrics(guarded, None))[0] == 401
    assert (await get_metrics(guarded, "not-a-token"))[0] == 401


async def test_metrics_answer_the_metrics_token_and_staff(guarded: Central) -> None:
    status, text = await get_metrics(guarded, METRICS_TOKEN)
    assert status == 200 and 'pilegate_central_ingest_stored{station="test"} 7' in text
    staff: Account = await guarded.user("operator", level=3)
    assert (await get_metrics(guarded, staff.token))[0] == 200


async def test_a_drivers_token_does_not_read_metrics(guarded: Central) -> None:
    driver: Account = await guarded.user("driver1")
    assert (await get_metrics(guarded, driver.token))[0] == 403


@pytest.mark.parametrize(("mode", "expected"), [("open", 200), ("off", 404)])
async def test_metrics_open_or_off(tmp_path: Path, mode: str, expected: int) -> None:
    running = await serve(tmp_path, config_with(tmp_path, f'metrics = "{mode}"'))
    try:
        assert (await get_metrics(running, None))[0] == expected
    finally:
        await stop_central(running)


def test_the_default_is_token_without_a_metrics_token() -> None:
    config = parse_config({})
    assert (config.metrics, config.metrics_token, config.trusted_proxies) == ("token", None, ())


def test_trusted_proxies_are_networks(tmp_path: Path) -> None:
    config = config_with(tmp_path, 'trusted_proxies = ["127.0.0.1", "10.0.0.0/8", "::1"]')
    assert config.trusted_proxies == (ip_network("127.0.0.1"), ip_network("10.0.0.0/8"), ip_network("::1"))


@pytest.mark.parametrize(
    ("http", "named"),
    [
        ('metrics = "public"', "http.metrics"),
        ('trusted_proxies = ["proxy.example.com"]', "http.trusted_proxies"),
        ('trusted_proxies = "10.0.0.1"', "http.trusted_proxies"),
        ('metrics_token_file = "absent"', "http.metrics_token_file"),
    ],
)
def test_bad_http_keys_are_named(tmp_path: Path, http: str, named: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_with(tmp_path, http)
    assert any(problem.startswith(named) for problem in info.value.problems), info.value.problems


def test_a_short_metrics_token_is_refused_without_echoing_it(tmp_path: Path) -> None:
    (tmp_path / "short").write_text("abc123\n")
    with pytest.raises(ConfigError) as info:
        parse_config({"http": {"metrics_token_file": "short"}}, "central.toml", tmp_path)
    assert "abc123" not in str(info.value.problems)
