"""Fixtures for the central REST APIs: a real app over a real Store and the real ChargingService.

No pytest-aiohttp here: :func:`central` builds the app, serves it with aiohttp's TestServer on
127.0.0.1 (ephemeral port) and wraps a TestClient. Station time runs on a fake wall clock (the
service's StationClock takes it), so tests move time instead of sleeping. The piles' side of the
MQTT command path is :class:`RecordingCommands`; meter readings reach the service through its
public ``on_telemetry`` input, as the ingest would deliver them.

A test module loads them with ``pytest_plugins = ("tests.integration.central_fixtures",)`` and imports
nothing else from here (the plugin must be imported by pytest first, for assertion rewriting).

The store is on SQLite unless the module runs on both engines: ``pytestmark = BOTH_ENGINES`` (from
:mod:`tests.postgres_server`) parametrizes the ``database`` fixture, and on ``postgresql`` each test gets a
fresh database copied from a migrated template on one PostgreSQL server per session
(:mod:`tests.postgres_server`). ``PILEGATE_TEST_DATABASE=postgresql`` makes PostgreSQL every
module's default.
"""

from __future__ import annotations

import functools
import itertools
import os
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from central.adapters import postgres, users
from central.adapters.schema import migrations
from central.adapters.storage import Store
from central.adapters.unit_of_work import SqliteUnitOfWork
from central.application import auth
from central.application.charging import ChargingService
from central.application.clock import ClockAnchor, StationClock
from central.application.orders import OperatorOrders
from central.domain.params import StationParams, params_from_mapping
from central.web import add_user_api
from central.web.keys import AUTH, STATIONS, STORE
from central.web.station_runtime import StationRuntime, Stations
from protocols.payloads import Telemetry
from tests.postgres_server import PgServer, create_database, drop_database, start_server

PASSWORD = "correct-horse-9"
START = datetime(2025, 6, 2, 2, 0, tzinfo=UTC)  # 10:00 in Asia/Shanghai: the peak period starts
SMALL_STATION = {
    "FastChargingPileNum": 1,
    "TrickleChargingPileNum": 1,
    "WaitingAreaSize": 2,
    "ChargingQueueLen": 1,
}


@functools.cache
def password_hash() -> str:
    """One scrypt hash for every fixture account (hashing costs ~60 ms)."""
    return auth.hash_password(PASSWORD)


class FakeWall:
    """Wall-clock seconds that move only when a test says so."""

    def __init__(self, start: datetime) -> None:
        self.s = start.timestamp()

    def __call__(self) -> float:
        return self.s

    def advance(self, seconds: float) -> None:
        self.s += seconds

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.s, UTC)

    @property
    def ms(self) -> int:
        return int(self.s * 1000)


@dataclass
class RecordingCommands:
    """The piles' side of the command path: records what the service sends."""

    sent: list[tuple[str, int, str, dict[str, int], str | None]] = field(default_factory=list)

    async def send(
        self,
        pile_no: str,
        port: int,
        op: str,
        params: Mapping[str, int],
        *,
        car: str | None = None,
        expires_in_s: float = 30.0,
    ) -> str:
        self.sent.append((pile_no, port, op, dict(params), car))
        return f"cmd-{len(self.sent)}"


@dataclass(frozen=True)
class Account:
    """A fixture user and a valid token."""

    user_id: int
    username: str
    token: str
    password: str = PASSWORD

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Token {self.token}"}


@dataclass
class Central:
    """A running central app: client, store, service, fake wall clock, recorded commands."""

    client: TestClient[web.Request, web.Application]
    app: web.Application
    store: Store
    service: ChargingService
    wall: FakeWall
    commands: RecordingCommands
    _seq: int = 0

    async def call(
        self, method: str, path: str, *, user: Account | None = None, json: Any = None, **kwargs: Any
    ) -> tuple[int, Any]:
        """One request; returns (status, decoded JSON body)."""
        headers = dict(kwargs.pop("headers", {}))
        if user is not None:
            headers.update(user.headers)
        if json is not None:
            kwargs["json"] = json
        async with self.client.request(method, path, headers=headers, **kwargs) as response:
            return response.status, await response.json(content_type=None)

    async def user(self, username: str, *, level: int = 1) -> Account:
        """An account created directly in the store, with a fresh token."""
        now, hashed = self.wall.now(), password_hash()

        def create(db: Any) -> tuple[int, str]:
            user_id = users.insert_user(
                db, username, hashed, email=f"{username}@example.com", level=level, now=now
            )
            return user_id, users.issue_token(db, user_id, now=now)

        user_id, token = await self.store.write(create)
        return Account(user_id, username, token)

    def telemetry(self, pile_no: str, state: str, energy_Wh: int, *, port: int = 1) -> None:
        """Feed one meter reading to the service, stamped now on the fake wall clock."""
        self._seq += 1
        reading = Telemetry(
            ts=self.wall.ms,
            session=1,
            seq=self._seq,
            state=state,
            voltage_V=400.0,
            current_A=0.0,
            power_W=0.0,
            energy_Wh=energy_Wh,
            temperature_C=25.0,
            fault="none",
        )
        self.service.live.on_telemetry(pile_no, port, reading)


RouteSet = Callable[[web.Application], None]


async def start_central(
    tmp_path: Path,
    params: StationParams,
    start: datetime = START,
    *,
    route_sets: Sequence[RouteSet] = (add_user_api,),
    database: Path | str | None = None,
    station: str = "test",
) -> Central:
    """Store (on ``database``, default ``tmp_path/central.db``), service (piles online), an app serving
    ``route_sets`` (default: the user API) and a client; stop it with :func:`stop_central`."""
    store = Store(database or tmp_path / "central.db", [migrations])
    await store.open()
    wall = FakeWall(start)
    clock = StationClock(1.0, ClockAnchor(wall(), wall()), wall=wall)
    commands = RecordingCommands()
    uow = SqliteUnitOfWork(store, station)
    service = ChargingService(uow, params, clock, commands, station=station)
    orders = OperatorOrders(service, uow, clock)
    await service.start()
    await orders.start()
    for pile in [f"F{i}" for i in range(1, params.fast_pile_num + 1)] + [
        f"T{i}" for i in range(1, params.trickle_pile_num + 1)
    ]:
        service.live.health[pile] = "online"
    app = web.Application()
    stations = Stations(station)
    stations.add(StationRuntime(station, service, orders))
    app[STORE], app[STATIONS] = store, stations
    app[AUTH] = auth.AuthSettings(clock=wall.now, limiter=auth.LoginRateLimiter(clock=wall))
    for add_routes in route_sets:
        add_routes(app)
    client = TestClient(TestServer(app, host="127.0.0.1", port=0))
    await client.start_server()
    return Central(client, app, store, service, wall, commands)


async def stop_central(central: Central) -> None:
    """Stop the client and server, the service's tasks, then the store."""
    await central.client.close()
    for runtime in central.app[STATIONS].runtimes():
        await runtime.orders.close()
        await runtime.service.close()
    await central.store.close()


@pytest.fixture
def station_params() -> StationParams:
    """One fast and one trickle pile, two waiting places, one car per pile (override per module)."""
    return params_from_mapping(SMALL_STATION)


TEMPLATE = "pilegate_template"
# PILEGATE_TEST_DATABASE=postgresql runs every central test on PostgreSQL (the suite keeps SQLite)
DEFAULT_ENGINE = os.environ.get("PILEGATE_TEST_DATABASE", "sqlite")
_database_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PgServer]:
    """One PostgreSQL server for the session, with a template database the central migrations built."""
    server = start_server()
    try:
        url = create_database(server, TEMPLATE)
        db = postgres.connect(url)
        try:
            migrations.apply(db)
        finally:
            db.conn.close()
        yield server
    finally:
        server.stop()


def _database(request: pytest.FixtureRequest, tmp_path: Path, engine: str) -> Iterator[Path | str]:
    if engine == "sqlite":
        yield tmp_path / "central.db"
        return
    server: PgServer = request.getfixturevalue("postgres_server")
    name = f"pilegate_test_{next(_database_numbers)}"
    yield create_database(server, name, template=TEMPLATE)
    drop_database(server, name)


@pytest.fixture
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path | str]:
    """Where the test's store lives: ``tmp_path/central.db``, or (parametrized ``postgresql``) a
    fresh PostgreSQL database copied from the migrated template, dropped after the test."""
    yield from _database(request, tmp_path, getattr(request, "param", DEFAULT_ENGINE))


@pytest.fixture(params=["sqlite", "postgresql"])
def each_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path | str]:
    """:func:`database` on each engine in turn: for a fixture (a module's ``store``) whose tests
    should all run on both while the module's other tests run once."""
    yield from _database(request, tmp_path, request.param)


@pytest.fixture
async def central(
    tmp_path: Path, station_params: StationParams, database: Path | str
) -> AsyncIterator[Central]:
    """A running central app (see :class:`Central`) on the test's ``database``."""
    running = await start_central(tmp_path, station_params, database=database)
    try:
        yield running
    finally:
        await stop_central(running)


@pytest.fixture
async def driver(central: Central) -> Account:
    return await central.user("driver1")


@pytest.fixture
async def driver2(central: Central) -> Account:
    return await central.user("driver2")


@pytest.fixture
async def staff(central: Central) -> Account:
    return await central.user("operator", level=3)


__all__ = [
    "PASSWORD",
    "START",
    "TEMPLATE",
    "Account",
    "Central",
    "central",
    "database",
    "driver",
    "driver2",
    "each_database",
    "postgres_server",
    "staff",
    "start_central",
    "station_params",
    "stop_central",
]
