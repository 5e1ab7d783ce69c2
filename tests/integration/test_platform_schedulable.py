"""A pile created through the operator API joins the charging queue once its gateway reports it."""

from __future__ import annotations

import pytest

from central.domain.params import params_from_mapping
from tests.helpers import wait_for

pytest_plugins = ("tests.integration.platform_fixtures",)


@pytest.fixture
def platform_station_params():
    """No built-in trickle pile: a slow request can only go to the pile created here."""
    return params_from_mapping({"FastChargingPileNum": 1, "TrickleChargingPileNum": 0})


async def test_created_pile_becomes_schedulable_when_online_and_stays_while_charging(
    platform, admin_user, normal_user
):
    _, station = await platform.call(
        "POST", "/api/ChargingStations", user=admin_user, json={"name": "站", "address": "a"}
    )
    status, reply = await platform.call(
        "POST",
        "/api/ChargingPiles",
        user=admin_user,
        json={"stationId": station["id"], "pileNo": "E5", "pileType": 2, "powerRate": 7, "totalPorts": 1},
    )
    assert status == 201, reply
    status, port = await platform.call(
        "POST", "/api/ChargingPorts", user=admin_user, json={"pileId": reply["id"], "portNo": 1}
    )
    assert status == 201, port
    service = platform.service
    assert "E5" not in service.scheduler.points  # not before its gateway says it is there
    service.live.on_pile_state("E5", "online")
    platform.telemetry("E5", "available", 1_000)
    await wait_for(
        lambda: "E5" in service.scheduler.points and service.scheduler.points["E5"].working,
        timeout_s=5,
        what="E5 working",
    )
    status, body = await platform.call(
        "POST",
        "/api/charging/request/",
        user=normal_user,
        json={"charging_mode": "slow", "requested_amount": 5},
    )
    assert status == 201, body
    assert body["data"]["queue_position"] == 0  # charging at once, at E5
    assert platform.commands.sent[-1][:3] == ("E5", 1, "start")
    status, problem = await platform.call("DELETE", f"/api/ChargingPiles/{reply['id']}", user=admin_user)
    assert status == 409, problem  # a car is charging there
    _, held = await platform.call("GET", f"/api/ChargingPorts/{port['id']}", user=admin_user)
    assert held["currentOrderId"] is not None  # the driver session's order holds the port


async def test_charging_points_follow_the_piles_ports(platform, admin_user):
    _, station = await platform.call(
        "POST", "/api/ChargingStations", user=admin_user, json={"name": "站", "address": "a"}
    )
    _, pile = await platform.call(
        "POST",
        "/api/ChargingPiles",
        user=admin_user,
        json={"stationId": station["id"], "pileNo": "E7", "pileType": 2, "powerRate": 7, "totalPorts": 3},
    )
    _, port1 = await platform.call(
        "POST", "/api/ChargingPorts", user=admin_user, json={"pileId": pile["id"], "portNo": 1}
    )
    service = platform.service
    service.live.on_pile_state("E7", "online")
    platform.telemetry("E7", "available", 1_000)
    await wait_for(lambda: "E7-1" in service.scheduler.points, timeout_s=5, what="E7-1")
    assert sorted(p for p in service.scheduler.points if p.startswith("E7")) == ["E7-1"]  # no port 2, 3
    status, port3 = await platform.call(
        "POST", "/api/ChargingPorts", user=admin_user, json={"pileId": pile["id"], "portNo": 3}
    )
    assert status == 201, port3
    assert sorted(p for p in service.scheduler.points if p.startswith("E7")) == ["E7-1", "E7-3"]
    status, _ = await platform.call("DELETE", f"/api/ChargingPorts/{port1['id']}", user=admin_user)
    assert status == 204
    assert sorted(p for p in service.scheduler.points if p.startswith("E7")) == ["E7-3"]
