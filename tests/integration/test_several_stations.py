"""Several stations in one central: the real composition root (``create_app``) on a real Mosquitto
and a real database (SQLite and PostgreSQL), a probe playing the gateways of every station.

Two configured stations, ``north`` (the default, Asia/Shanghai, the default prices) and ``south``
(Europe/Berlin, one flat rate), both with a pile F1. Station time runs 3600x, so a few hundred wall
milliseconds of meter readings are a plausible charge for a 30 kW pile.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from central.adapters import users
from central.app import create_app
from central.application import auth
from central.config import parse_config
from central.web.keys import STATIONS, STORE
from pilegate.broker import MosquittoBroker
from protocols import topics
from protocols.payloads import GatewayStatus, PileStatus, Telemetry
from tests.helpers import wait_for

if TYPE_CHECKING:
    from tests.broker_fixtures import MqttProbe

pytest_plugins = ("tests.broker_fixtures", "tests.integration.central_fixtures")

SOUTH_PRICING = {"peak_rate": 2.0, "normal_rate": 2.0, "valley_rate": 2.0, "service_rate": 1.0}
ONE_FAST = {"FastChargingPileNum": 1, "TrickleChargingPileNum": 0, "WaitingAreaSize": 3}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class Site:
    """A running central, a probe on its broker, and accounts."""

    client: TestClient[web.Request, web.Application]
    app: web.Application
    probe: MqttProbe
    seq: int = 0

    async def call(self, method: str, path: str, token: str, json: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Token {token}"}
        async with self.client.request(method, path, headers=headers, json=json) as response:
            return response.status, await response.json(content_type=None)

    async def account(self, username: str, level: int = 1) -> str:
        now, hashed = datetime.now(UTC), auth.hash_password("correct-horse-9")

        def create(db: Any) -> str:
            user_id = users.insert_user(db, username, hashed, level=level, now=now)
            return users.issue_token(db, user_id, now=now)

        return str(await self.app[STORE].write(create))

    def pile_online(self, station: str, pile: str, gateway: str, meter_wh: int) -> None:
        """The gateway's birth, the pile's retained status, and an idle reading of its meter."""
        self.probe.publish(
            topics.gw_status(station, gateway),
            GatewayStatus("online", 1, now_ms(), piles=(pile,)).to_json(),
            retain=True,
        )
        status = PileStatus("online", now_ms(), kind="fast", ports=1, rated_power_W=30_000, vendor="ACME")
        self.probe.publish(topics.pile_status(station, pile), status.to_json(), retain=True)
        self.reading(station, pile, "available", meter_wh)

    def reading(self, station: str, pile: str, state: str, meter_wh: int) -> None:
        self.seq += 1
        reading = Telemetry(now_ms(), 1, self.seq, state, 400.0, 0.0, 0.0, meter_wh, 30.0, "none")
        self.probe.publish(topics.telemetry(station, pile, 1), reading.to_json())


def central_toml(database: Path | str, data_dir: Path, mqtt_port: int) -> dict[str, Any]:
    url = database if isinstance(database, str) else f"sqlite:///{database}"
    return {
        "central": {"station": "north", "data_dir": str(data_dir), "database": url, "time_scale": 3600},
        "mqtt": {"url": f"mqtt://127.0.0.1:{mqtt_port}", "client_id": "central-stations-test"},
        "http": {"metrics": "open"},
        "station": {**ONE_FAST, "timezone": "Asia/Shanghai"},
        "stations": {
            "south": {"name": "South", **ONE_FAST, "timezone": "Europe/Berlin", "pricing": SOUTH_PRICING}
        },
    }


@pytest.fixture
async def site(
    tmp_path: Path, each_database: Path | str, mosquitto: MosquittoBroker, mqtt_probe: MqttProbe
) -> AsyncIterator[Site]:
    config = parse_config(
        central_toml(each_database, tmp_path / "data", mosquitto.port), "central.toml", tmp_path
    )
    app = create_app(config)
    client = TestClient(TestServer(app, host="127.0.0.1", port=0))
    await client.start_server()
    await mqtt_probe.subscribe("pilegate/v1/+/pile/+/port/+/cmd")
    try:
        yield Site(client, app, mqtt_probe)
    finally:
        await client.close()


async def test_a_request_on_the_second_station_charges_and_bills_there(site: Site) -> None:
    admin, driver = await site.account("boss", level=3), await site.account("dana")
    site.pile_online("north", "F1", "gw-n", 500_000)
    site.pile_online("south", "F1", "gw-s", 100_000)
    south = site.app[STATIONS].get("south").service
    north = site.app[STATIONS].get("north").service
    await wait_for(lambda: south.live.last_meter("F1", 1) is not None, timeout_s=5, what="south F1 meter")
    await wait_for(lambda: north.live.last_meter("F1", 1) is not None, timeout_s=5, what="north F1 meter")

    body = {"charging_mode": "fast", "requested_amount": 2, "station": "south"}
    status, reply = await site.call("POST", "/api/charging/request/", driver, body)
    assert status == 201, reply
    assert (reply["data"]["station"], reply["data"]["charging_pile_id"]) == ("south", "F1")
    assert reply["data"]["created_at"].endswith(("+01:00", "+02:00"))  # Berlin time
    await wait_for(lambda: site.probe.matching(topics.cmd("south", "F1", 1)), timeout_s=5, what="start")
    assert site.probe.matching(topics.cmd("north", "F1", 1)) == []  # north's F1 got nothing

    # per-station reads: south's queue has the car charging, north's has nobody
    _, north_queue = await site.call("GET", "/api/charging/queue/status/", driver)
    _, south_piles = await site.call("GET", "/api/charging/piles/status/?station=south", driver)
    assert north_queue["data"]["waiting_area_capacity"]["max"] == 3
    assert [p["is_working"] for p in south_piles["data"]["fast_piles"]] == [True]
    _, north_piles = await site.call("GET", "/api/charging/piles/status/", driver)
    assert [p["is_working"] for p in north_piles["data"]["fast_piles"]] == [False]
    _, mine = await site.call("GET", "/api/charging/request/status/", driver)  # found at south
    assert mine["data"]["station"] == "south"
    _, south_params = await site.call("GET", "/api/charging/config/parameters/?station=south", driver)
    assert (south_params["data"]["timezone"], south_params["data"]["pricing"]["peak_rate"]) == (
        "Europe/Berlin",
        2.0,
    )

    # the pile charges 2 kWh; the central stops it and bills south's flat 2.0 + 1.0 per kWh
    site.reading("south", "F1", "charging", 100_000)
    for meter in (101_000, 102_000):
        await _later()
        site.reading("south", "F1", "charging", meter)
    await wait_for(
        lambda: len(site.probe.matching(topics.cmd("south", "F1", 1))) >= 2, timeout_s=5, what="stop"
    )
    await _later()
    site.reading("south", "F1", "available", 102_000)
    await wait_for(lambda: not south.scheduler.requests, timeout_s=5, what="south request finished")

    status, bills = await site.call("GET", "/api/charging/bills/", driver)
    assert status == 200 and len(bills["data"]["bills"]) == 1, bills
    bill = bills["data"]["bills"][0]
    assert (bill["station"], bill["charging_amount"], bill["total_cost"]) == ("south", 2.0, 6.0)
    assert bill["start_time"].endswith(("+01:00", "+02:00"))
    assert (await site.call("GET", "/api/charging/bills/?station=north", driver))[1]["data"]["bills"] == []
    _, orders = await site.call("GET", "/api/Orders?station=south", admin)
    assert [(o["station"], o["pileNo"], o["totalAmount"]) for o in orders] == [("south", "F1", 6.0)]
    assert (await site.call("GET", "/api/Orders?station=north", admin))[1] == []
    assert not north.scheduler.requests and north.scheduler.waiting_count == 0  # untouched

    status, problem = await site.call("GET", "/api/charging/queue/status/?station=nowhere", driver)
    assert status == 404 and problem["success"] is False, problem
    assert (await site.call("GET", "/api/Orders?station=nowhere", admin))[0] == 404
    async with site.client.get("/metrics") as response:
        text = await response.text()
    assert 'pilegate_central_live_sessions{station="south"} 0' in text
    assert 'pilegate_central_waiting_cars{station="north"} 0' in text


async def _later() -> None:
    """Pace the simulated meter: its readings 50 wall ms apart are 3 station minutes apart (3600x).
    (Pacing a simulated device, not waiting for a condition.)"""
    await asyncio.sleep(0.05)


async def test_an_operator_creates_a_station_that_runs_at_once_and_is_stopped_only_when_idle(
    site: Site,
) -> None:
    admin, driver = await site.account("boss", level=3), await site.account("dana")
    status, created = await site.call(
        "POST", "/api/ChargingStations", admin, {"name": "East", "code": "east"}
    )
    assert status == 201, created
    status, queue = await site.call("GET", "/api/charging/queue/status/?station=east", driver)
    assert status == 200 and queue["data"]["waiting_area_capacity"]["max"] == 6, queue  # default parameters
    _, station = await site.call("GET", f"/api/ChargingStations/{created['id']}", admin)
    assert (station["code"], station["running"]) == ("east", True)

    site.pile_online("east", "E9", "gw-e", 1_000)  # its gateway's pile registers
    await wait_for(lambda: "E9" in site.app[STATIONS].get("east").service.live.health, timeout_s=5, what="E9")

    async def e9() -> list[Any]:
        _, piles = await site.call("GET", "/api/ChargingPiles", admin)
        return [p for p in piles if p["pileNo"] == "E9"]

    await wait_for(e9, timeout_s=5, what="E9 recorded")
    assert [(p["station"], p["stationId"]) for p in await e9()] == [("east", created["id"])]

    body = {"charging_mode": "slow", "requested_amount": 5, "station": "east"}
    status, reply = await site.call("POST", "/api/charging/request/", driver, body)
    assert status == 201 and reply["data"]["station"] == "east", reply
    status, problem = await site.call("DELETE", f"/api/ChargingStations/{created['id']}", admin)
    assert status == 409 and "east" in problem["detail"], problem
    status, problem = await site.call("PUT", f"/api/ChargingStations/{created['id']}", admin, {"status": 0})
    assert status == 409, problem
    assert "east" in site.app[STATIONS].running  # still running

    request_id = reply["data"]["request_id"]
    status, _ = await site.call("DELETE", f"/api/charging/request/{request_id}/cancel/", driver)
    assert status == 200
    status, _ = await site.call("PUT", f"/api/ChargingStations/{created['id']}", admin, {"status": 0})
    assert status == 204
    status, problem = await site.call("GET", "/api/charging/queue/status/?station=east", driver)
    assert status == 503 and "not running" in problem["error"]["message"], problem
    status, _ = await site.call("DELETE", f"/api/ChargingStations/{created['id']}", admin)
    assert status == 204
    assert (await site.call("GET", "/api/charging/queue/status/?station=east", driver))[0] == 404
    status, problem = await site.call(
        "DELETE", "/api/ChargingStations/" + await _id_of(site, admin, "north"), admin
    )
    assert status == 409, problem  # the default station always runs


async def _id_of(site: Site, token: str, code: str) -> str:
    _, stations = await site.call("GET", "/api/ChargingStations", token)
    return str(next(s["id"] for s in stations if s["code"] == code))


async def test_a_driver_holds_one_active_request_across_stations_even_when_both_submits_race(
    site: Site,
) -> None:
    driver = await site.account("dana")
    north = {"charging_mode": "fast", "requested_amount": 2}
    south = {**north, "station": "south"}
    for attempt in range(5):  # the race has two outcomes either way; a few tries cover both orders
        replies = await asyncio.gather(
            site.call("POST", "/api/charging/request/", driver, north),
            site.call("POST", "/api/charging/request/", driver, south),
        )
        assert sorted(status for status, _ in replies) == [201, 409], replies
        refused = next(body for status, body in replies if status == 409)
        assert refused["error"]["code"] == "DUPLICATE_REQUEST", refused
        active = await site.app[STORE].read(
            lambda db: db.execute(
                "SELECT id, station FROM charging_requests WHERE current_status IN ('waiting', 'charging')"
            ).fetchall()
        )
        taken = next(body["data"] for status, body in replies if status == 201)
        assert [(row[0], row[1]) for row in active] == [(taken["request_id"], taken["station"])]
        # the refused station kept nothing of it: its queue is empty, the driver can go there next
        other = "north" if taken["station"] == "south" else "south"
        assert not site.app[STATIONS].get(other).service.scheduler.requests, attempt
        cancel = f"/api/charging/request/{taken['request_id']}/cancel/"
        status, body = await site.call("DELETE", cancel, driver)
        assert status == 200, body
