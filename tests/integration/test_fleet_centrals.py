"""Two centrals on one PostgreSQL database and one Mosquitto, through the real composition root.

Central ``a`` runs in this process (``create_app`` on an aiohttp test server); central ``b`` is a
``pilegate central`` process of its own, so that it can be killed with -9. Two stations, ``north``
(the default) and ``south``, each with a fast pile F1 played by a probe. ``a`` starts first and
owns both; once ``b`` runs, ``a`` hands ``south`` over (fair share), so ``b`` owns south and ``a``
north. A driver's request for south sent to ``a`` is applied once by ``b`` and answered through
``a``; reads on either instance see it; an operator change and a refused second request through
``a`` answer as ``b`` would. Then ``b`` is killed mid-charge: ``a`` owns south within 10 s, with the
queue and the live session restored, and the charge finishes there and is billed from the meter.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from central.adapters import users
from central.app import create_app
from central.application import auth
from central.application.charging import ChargingService
from central.config import parse_config
from central.domain.model import RequestState
from central.web.keys import STATIONS, STORE
from pilegate.broker import MosquittoBroker, free_port
from protocols import topics
from protocols.payloads import CommandResult, GatewayStatus, PileStatus, Telemetry
from tests.e2e.harness import stop_process
from tests.helpers import next_event, wait_for
from tests.integration.fleet_helpers import lease_holders
from tests.postgres_server import PgServer, create_database, drop_database

if TYPE_CHECKING:
    from tests.broker_fixtures import MqttProbe

pytest_plugins = ("tests.broker_fixtures", "tests.integration.central_fixtures")

ROOT = Path(__file__).resolve().parents[2]
ONE_FAST = {"FastChargingPileNum": 1, "TrickleChargingPileNum": 0, "WaitingAreaSize": 3}
PASSWORD = "correct-horse-9"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def central_toml(url: str, data_dir: Path, mqtt_port: int, instance: str, http_port: int) -> str:
    """A central's configuration (TOML text): both stations, this instance's name, client id, port."""
    return f"""
[central]
station = "north"
data_dir = {json.dumps(str(data_dir))}
database = {json.dumps(url)}
time_scale = 3600
instance = "{instance}"
log_format = "json"

[http]
port = {http_port}
metrics = "open"

[mqtt]
url = "mqtt://127.0.0.1:{mqtt_port}"
client_id = "central-{instance}"

[station]
FastChargingPileNum = 1
TrickleChargingPileNum = 0
WaitingAreaSize = 3
timezone = "Asia/Shanghai"

[stations.south]
name = "South"
FastChargingPileNum = 1
TrickleChargingPileNum = 0
WaitingAreaSize = 3
timezone = "Asia/Shanghai"
"""


@dataclass
class Other:
    """Central ``b``: a process of its own, reached over HTTP."""

    popen: subprocess.Popen[bytes]
    url: str
    output: Path

    def exited(self) -> str | None:
        code = self.popen.poll()
        if code is None:
            return None
        return f"central b exited with {code}: {self.output.read_text(errors='replace')[-3000:]}"


@dataclass
class Fleet:
    url: str
    a: TestClient[web.Request, web.Application]
    app: web.Application
    b: Other
    session: aiohttp.ClientSession
    probe: MqttProbe
    seq: int = 0

    async def call_a(self, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Token {token}"}
        async with self.a.request(method, path, headers=headers, json=body) as response:
            return response.status, await response.json(content_type=None)

    async def call_b(self, method: str, path: str, token: str | None, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Token {token}"} if token else {}
        async with self.session.request(method, self.b.url + path, headers=headers, json=body) as response:
            return response.status, await response.json(content_type=None)

    async def account(self, username: str, level: int = 1) -> str:
        now, hashed = datetime.now(UTC), auth.hash_password(PASSWORD)

        def create(db: Any) -> str:
            user_id = users.insert_user(db, username, hashed, level=level, now=now)
            return users.issue_token(db, user_id, now=now)

        return str(await self.app[STORE].write(create))

    def pile_online(self, station: str, gateway: str, meter_wh: int) -> None:
        self.probe.publish(
            topics.gw_status(station, gateway),
            GatewayStatus("online", 1, now_ms(), piles=("F1",)).to_json(),
            retain=True,
        )
        status = PileStatus("online", now_ms(), kind="fast", ports=1, rated_power_W=30_000, vendor="ACME")
        self.probe.publish(topics.pile_status(station, "F1"), status.to_json(), retain=True)
        self.reading(station, "available", meter_wh)

    def reading(self, station: str, state: str, meter_wh: int) -> None:
        self.seq += 1
        reading = Telemetry(now_ms(), 1, self.seq, state, 400.0, 0.0, 0.0, meter_wh, 30.0, "none")
        self.probe.publish(topics.telemetry(station, "F1", 1), reading.to_json())

    async def answer_commands(self) -> None:
        """Play the gateways' side of commands: every command is answered ``done``."""
        answered = 0
        while True:
            commands = self.probe.matching("pilegate/v1/+/pile/+/port/+/cmd")
            for message in commands[answered:]:
                station, pile, port = message.topic.split("/")[2], message.topic.split("/")[4], 1
                result = CommandResult(message.json()["id"], "done", now_ms())
                self.probe.publish(topics.cmd_result(station, pile, port), result.to_json())
            answered = len(commands)
            await asyncio.sleep(0.02)

    async def holders(self, station: str) -> list[str]:
        """The instances holding ``station``'s lease according to pg_locks (a quick blocking query)."""
        return lease_holders(self.url, [station])[station]


@pytest.fixture
def fleet_database(postgres_server: PgServer) -> Iterator[str]:
    name = f"pilegate_centrals_{os.getpid()}"
    drop_database(postgres_server, name)
    url = create_database(postgres_server, name, template="pilegate_template")
    yield url
    drop_database(postgres_server, name)


def _start_b(tmp_path: Path, url: str, mqtt_port: int) -> Other:
    port = free_port()
    config = tmp_path / "b.toml"
    config.write_text(central_toml(url, tmp_path / "b-data", mqtt_port, "b", port), encoding="utf-8")
    output = tmp_path / "b.log"
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    with output.open("wb") as sink:
        popen = subprocess.Popen(
            [sys.executable, "-m", "pilegate.cli", "central", "--config", str(config)],
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    return Other(popen, f"http://127.0.0.1:{port}", output)


@pytest.fixture
async def fleet(
    tmp_path: Path, fleet_database: str, mosquitto: MosquittoBroker, mqtt_probe: MqttProbe
) -> AsyncIterator[Fleet]:
    text = central_toml(fleet_database, tmp_path / "a-data", mosquitto.port, "a", free_port())
    config = parse_config(tomllib.loads(text), "a.toml", tmp_path)
    app = create_app(config)
    client = TestClient(TestServer(app, host="127.0.0.1", port=0))
    await client.start_server()  # a owns both stations before it serves (its first lease round)
    await mqtt_probe.subscribe("pilegate/v1/+/pile/+/port/+/cmd")
    other = _start_b(tmp_path, fleet_database, mosquitto.port)
    session = aiohttp.ClientSession()
    running = Fleet(fleet_database, client, app, other, session, mqtt_probe)
    answering = asyncio.create_task(running.answer_commands())
    try:
        yield running
    finally:
        answering.cancel()
        await asyncio.gather(answering, return_exceptions=True)
        await session.close()
        stop_process(other.popen)
        await client.close()


async def _dashboard_of_south_through_a(fleet: Fleet, driver: str) -> None:
    """South's live hub is b's; a relays the dashboard's ticket and streams there."""

    async def b_serves() -> bool:  # b may own south before its HTTP side listens (its first lease round)
        try:
            async with fleet.session.get(f"{fleet.b.url}/") as page:
                return page.status == 200
        except aiohttp.ClientConnectionError:
            return False

    await wait_for(b_serves, timeout_s=20, what="b's HTTP side", give_up=fleet.b.exited)
    async with fleet.a.get("/dashboard/stream?station=south") as public:
        assert public.status == 200, await public.text()
        assert public.headers["Content-Type"].startswith("text/event-stream")
        event, data = await next_event(public)
        assert (event, data["ch"]) == ("snapshot", "public") and "point:F1" in data["state"]
    headers = {"Authorization": f"Token {driver}"}
    async with fleet.a.post("/dashboard/ticket?station=south", headers=headers, json={}) as answer:
        assert answer.status == 200, await answer.text()
        ticket = (await answer.json())["data"]["ticket"]
    async with fleet.a.get(f"/dashboard/stream?station=south&ticket={ticket}") as mine:
        assert mine.status == 200
        channels = {(await next_event(mine))[1]["ch"] for _ in range(2)}
        assert "public" in channels and any(c.startswith("driver:") for c in channels), channels
    # b issued the ticket and a's relay used it up there: it opens nothing more, on either instance
    async with fleet.session.get(f"{fleet.b.url}/dashboard/stream?station=south&ticket={ticket}") as again:
        assert again.status == 401
    async with fleet.a.get(f"/dashboard/stream?station=south&ticket={ticket}") as again:
        assert again.status == 401
    # a request that says it was relayed already is not relayed again (no loops)
    async with fleet.a.get("/dashboard/stream?station=south", headers={"X-Pilegate-Relayed": "1"}) as looped:
        assert looped.status == 503


def _active(service: ChargingService) -> list[str]:
    return list(service.scheduler.requests)


async def test_two_centrals_share_the_stations_and_one_takes_over_when_the_other_dies(fleet: Fleet) -> None:
    stations = fleet.app[STATIONS]
    assert set(stations.running) == {"north", "south"}  # alone, a runs both
    admin, driver = await fleet.account("boss", level=3), await fleet.account("dana")

    # b starts; a hands south over (the station it took last) and b takes it: one each
    async def spread() -> bool:
        return set(stations.running) == {"north"} and await fleet.holders("south") == ["b"]

    await wait_for(spread, timeout_s=20, what="south owned by b, north by a", give_up=fleet.b.exited)
    assert await fleet.holders("north") == ["a"]
    await _dashboard_of_south_through_a(fleet, driver)

    # a token issued by one central works on the other
    status, login = await fleet.call_b(
        "POST", "/api/auth/login/", None, {"username": "dana", "password": PASSWORD}
    )
    assert status == 200, login
    token_b = login["data"]["token"]
    status, me = await fleet.call_a("GET", "/api/charging/request/status/", token_b)
    assert status == 200 and me["data"] is None, me

    fleet.pile_online("north", "gw-n", 500_000)
    fleet.pile_online("south", "gw-s", 100_000)

    async def south_pile_online() -> bool:
        status, piles = await fleet.call_b("GET", "/api/charging/piles/status/?station=south", driver)
        return status == 200 and piles["data"]["fast_piles"][0]["status"] != "offline"

    await wait_for(south_pile_online, timeout_s=10, what="b sees south's F1", give_up=fleet.b.exited)

    # a driver's request for south, sent to a: applied once by b, answered through a
    body = {"charging_mode": "fast", "requested_amount": 2, "station": "south"}
    status, reply = await fleet.call_a("POST", "/api/charging/request/", driver, body)
    assert status == 201, reply
    request_id = reply["data"]["request_id"]
    assert (reply["data"]["station"], reply["data"]["charging_pile_id"]) == ("south", "F1")
    await wait_for(lambda: fleet.probe.matching(topics.cmd("south", "F1", 1)), timeout_s=5, what="start by b")
    rows = await fleet.app[STORE].read(
        lambda db: db.query("SELECT id, station FROM charging_requests WHERE current_status != 'cancelled'")
    )
    assert [(r["id"], r["station"]) for r in rows] == [(request_id, "south")]  # applied once
    assert "south" not in stations.running  # a only forwarded it

    # reads on either instance see it
    for call in (fleet.call_a, fleet.call_b):
        status, mine = await call("GET", "/api/charging/request/status/", driver)
        assert status == 200 and mine["data"]["request_id"] == request_id, mine
        assert mine["data"]["station"] == "south"
    _, queue_a = await fleet.call_a("GET", "/api/charging/queue/status/?station=south", driver)
    _, queue_b = await fleet.call_b("GET", "/api/charging/queue/status/?station=south", driver)
    assert queue_a["data"] == queue_b["data"]

    # an error comes back as the owner answers it
    answers = [
        await call("POST", "/api/charging/request/", driver, body) for call in (fleet.call_a, fleet.call_b)
    ]
    assert [(s, r["error"]["code"]) for s, r in answers] == [(409, "DUPLICATE_REQUEST")] * 2
    assert answers[0][1]["error"]["message"] == answers[1][1]["error"]["message"]

    # an operator change through a reaches b (and a's next read sees it)
    change = {"pricing": {"service_rate": 0.9}}
    status, params = await fleet.call_a(
        "PUT", "/api/charging/config/parameters/?station=south", admin, change
    )
    assert status == 200 and params["data"]["pricing"]["service_rate"] == 0.9, params
    _, on_b = await fleet.call_b("GET", "/api/charging/config/parameters/?station=south", driver)
    assert on_b["data"]["pricing"]["service_rate"] == 0.9
    _, on_a = await fleet.call_a("GET", "/api/charging/config/parameters/?station=south", driver)
    assert on_a["data"]["pricing"]["service_rate"] == 0.9

    # south's F1 charges 1 kWh under b, whose sessions flush reaches the database
    fleet.reading("south", "charging", 100_000)
    await asyncio.sleep(0.1)  # readings 0.1 s apart: 6 minutes of station time, room for 1 kWh at 30 kW
    fleet.reading("south", "charging", 101_000)

    async def charged_stored() -> bool:
        _, mine = await fleet.call_a("GET", "/api/charging/request/status/", driver)
        return bool(mine["data"]["current_status"] == "charging" and mine["data"]["current_amount"] >= 1.0)

    await wait_for(charged_stored, timeout_s=10, what="1 kWh stored by b", give_up=fleet.b.exited)

    # b dies (kill -9): a owns south within 10 s, queue and live session restored from the database
    killed_at = time.monotonic()
    fleet.b.popen.send_signal(signal.SIGKILL)
    fleet.b.popen.wait(10)
    await wait_for(lambda: "south" in stations.running, timeout_s=10, what="a takes south over")
    takeover_s = time.monotonic() - killed_at
    south = stations.running["south"].service
    assert _active(south) == [request_id]
    assert south.scheduler.requests[request_id].state is RequestState.CHARGING
    assert request_id in south.sessions
    assert await fleet.holders("south") == ["a"]
    print(f"takeover of south after kill -9: {takeover_s:.2f} s")

    # the charge goes on under a: 1 kWh more, then the driver ends it; billed from the meter
    await asyncio.sleep(0.1)
    fleet.reading("south", "charging", 102_000)
    await wait_for(lambda: south.sessions[request_id].delivered_wh >= 2000, timeout_s=5, what="a reads on")
    starts_before = len(fleet.probe.matching(topics.cmd("south", "F1", 1)))

    async def finish() -> None:
        await wait_for(
            lambda: len(fleet.probe.matching(topics.cmd("south", "F1", 1))) > starts_before,
            timeout_s=5,
            what="a stops F1",
        )
        fleet.reading("south", "available", 102_000)

    finisher = asyncio.create_task(finish())
    status, done = await fleet.call_a("POST", "/api/charging/complete/", driver)
    await finisher
    assert status == 200, done
    assert done["data"]["total_amount"] == 2.0  # 100,000 -> 102,000 Wh: nothing lost or counted twice
    _, bills = await fleet.call_a("GET", "/api/charging/bills/?station=south", driver)
    assert [b["charging_amount"] for b in bills["data"]["bills"]] == [2.0]
    assert not south.scheduler.requests

    async with fleet.a.get("/metrics") as response:
        metrics = await response.text()
    assert "pilegate_central_stations_owned 2" in metrics
    assert "pilegate_central_forwarded_calls_sent_total" in metrics
