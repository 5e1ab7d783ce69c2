"""Operator platform API, charging piles (spec section 2): CRUD, port capacity, byStation, paging,
validation, access, live fields written by the real ingest, deletion guarded by active sessions, and
the driver API's pile list.
"""

from __future__ import annotations

from typing import Any

import pytest

pytest.register_assert_rewrite("tests.integration.platform_fixtures")
from aiohttp.test_utils import make_mocked_request  # noqa: E402

from central.adapters.ingest import Ingest  # noqa: E402
from central.web.platform.stations import piles_status_with_registered  # noqa: E402
from protocols import topics  # noqa: E402
from protocols.payloads import PileStatus, Telemetry  # noqa: E402
from tests.integration.platform_fixtures import invalid, problem  # noqa: E402

pytest_plugins = ("tests.integration.platform_fixtures",)


BASE = "/api/ChargingPiles"
PILE_FIELDS = {
    "id",
    "station",  # beyond the spec: the code of the station that runs it
    "stationId",
    "stationName",
    "pileNo",
    "pileType",
    "pileTypeDescription",
    "status",
    "statusDescription",
    "powerRate",
    "manufacturer",
    "imei",
    "totalPorts",
    "protocolVersion",
    "softwareVersion",
    "hardwareVersion",
    "onlineStatus",
    "onlineStatusDescription",
    "signalStrength",
    "temperature",
    "lastHeartbeatTime",
    "installationDate",
    "lastMaintenanceDate",
    "updateTime",
    "gateway",
}


@pytest.fixture
async def station(platform, admin_user) -> str:
    status, reply = await platform.call(
        "POST", "/api/ChargingStations", user=admin_user, json={"name": "一号站", "address": "a"}
    )
    assert status == 201
    return str(reply["id"])


def pile_body(station: str, **fields: Any) -> dict[str, Any]:
    return {
        "stationId": station,
        "pileNo": "E1",
        "pileType": 1,
        "powerRate": 60,
        "manufacturer": "ACME",
        "imei": "860000000000001",
        "totalPorts": 2,
        "protocolVersion": "1.0",
        "softwareVersion": "2.1",
        "hardwareVersion": "B",
        "installationDate": "2025-01-01",
        **fields,
    }


async def new_pile(platform: Any, admin: Any, station: str, **fields: Any) -> str:
    status, reply = await platform.call("POST", BASE, user=admin, json=pile_body(station, **fields))
    assert status == 201, reply
    return str(reply["id"])


async def test_created_pile_reads_back_with_its_station_and_dictionary_texts(
    platform, admin_user, normal_user, station
):
    pile_id = await new_pile(platform, admin_user, station)
    status, pile = await platform.call("GET", f"{BASE}/{pile_id}", user=normal_user)
    assert status == 200 and set(pile) == PILE_FIELDS
    assert (pile["stationId"], pile["stationName"], pile["pileNo"]) == (station, "一号站", "E1")
    assert (pile["pileType"], pile["pileTypeDescription"], pile["powerRate"]) == (1, "直流快充", 60.0)
    assert (pile["status"], pile["statusDescription"]) == (0, "离线")  # until its gateway reports it
    assert (pile["onlineStatus"], pile["onlineStatusDescription"]) == (0, "离线")
    assert (
        pile["signalStrength"] is None and pile["temperature"] is None and pile["lastHeartbeatTime"] is None
    )
    assert (pile["installationDate"], pile["lastMaintenanceDate"]) == ("2025-01-01", None)
    assert (pile["manufacturer"], pile["imei"], pile["totalPorts"]) == ("ACME", "860000000000001", 2)


async def add_ports(platform: Any, admin: Any, pile_id: str, *numbers: int) -> None:
    """The documented second step: POST /api/ChargingPorts for each port number."""
    for number in numbers:
        status, reply = await platform.call(
            "POST", "/api/ChargingPorts", user=admin, json={"pileId": pile_id, "portNo": number}
        )
        assert status == 201, reply


async def test_a_created_pile_gets_its_ports_from_the_operator(platform, admin_user, station):
    pile_id = await new_pile(platform, admin_user, station, totalPorts=3)
    status, ports = await platform.call("GET", f"/api/ChargingPorts/by-pile/{pile_id}", user=admin_user)
    assert status == 200 and ports == []  # totalPorts is the capacity, not ports created
    await add_ports(platform, admin_user, pile_id, 1, 2, 3)
    status, ports = await platform.call("GET", f"/api/ChargingPorts/by-pile/{pile_id}", user=admin_user)
    assert status == 200 and [p["portNo"] for p in ports] == ["1", "2", "3"]
    assert {(p["pileNo"], p["portType"], p["isDisabled"]) for p in ports} == {("E1", 1, False)}
    status, body = await platform.call(
        "POST", "/api/ChargingPorts", user=admin_user, json={"pileId": pile_id, "portNo": 4}
    )
    assert set(invalid((status, body), "portNo")) == {"portNo"}  # beyond totalPorts
    _, pile = await platform.call("GET", f"{BASE}/{pile_id}", user=admin_user)
    assert pile["totalPorts"] == 3


async def test_list_and_by_station(platform, admin_user, station):
    other = (await platform.call("POST", "/api/ChargingStations", user=admin_user, json={"name": "二号站"}))[
        1
    ]
    await new_pile(platform, admin_user, station, pileNo="E2")
    await new_pile(platform, admin_user, other["id"], pileNo="E1")
    _, every = await platform.call("GET", BASE, user=admin_user)
    assert [p["pileNo"] for p in every] == ["E1", "E2"]
    status, mine = await platform.call("GET", f"{BASE}/byStation/{station}", user=admin_user)
    assert status == 200 and [p["pileNo"] for p in mine] == ["E2"]
    status, body = await platform.call("GET", f"{BASE}/byStation/nope", user=admin_user)
    problem((status, body), 404)


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"pileNo": None}, "pileNo"),
        ({"pileNo": "E 1"}, "pileNo"),
        ({"pileNo": "E/1"}, "pileNo"),
        ({"pileType": 3}, "pileType"),
        ({"pileType": None}, "pileType"),
        ({"powerRate": 0.05}, "powerRate"),
        ({"powerRate": 500.5}, "powerRate"),
        ({"powerRate": "60"}, "powerRate"),
        ({"totalPorts": 0}, "totalPorts"),
        ({"totalPorts": 11}, "totalPorts"),
        ({"totalPorts": 1.5}, "totalPorts"),
        ({"stationId": None}, "stationId"),
        ({"installationDate": "2025-13-01"}, "installationDate"),
        ({"imei": "9" * 40}, "imei"),
    ],
)
async def test_create_names_each_bad_field(platform, admin_user, station, fields, named):
    status, body = await platform.call("POST", BASE, user=admin_user, json=pile_body(station, **fields))
    assert set(invalid((status, body), named)) == {named}


async def test_power_rate_bounds_are_inclusive(platform, admin_user, station):
    await new_pile(platform, admin_user, station, pileNo="LOW", powerRate=0.1, totalPorts=1)
    await new_pile(platform, admin_user, station, pileNo="HIGH", powerRate=500, totalPorts=10)


async def test_duplicate_pile_no_is_a_bad_request_naming_it(platform, admin_user, station):
    await new_pile(platform, admin_user, station)
    status, body = await platform.call("POST", BASE, user=admin_user, json=pile_body(station))
    assert set(invalid((status, body), "pileNo")) == {"pileNo"}


async def test_unknown_station_is_404_naming_it(platform, admin_user):
    status, body = await platform.call("POST", BASE, user=admin_user, json=pile_body("ghost"))
    assert "stationId" in problem((status, body), 404)["detail"]


async def test_update_changes_fields_and_the_port_capacity(platform, admin_user, station):
    pile_id = await new_pile(platform, admin_user, station, totalPorts=3)
    await add_ports(platform, admin_user, pile_id, 1, 2, 3)
    body = {
        "pileNo": "E9",
        "powerRate": 120,
        "totalPorts": 1,
        "lastMaintenanceDate": "2025-03-01",
        "manufacturer": "",
    }
    status, _ = await platform.call("PUT", f"{BASE}/{pile_id}", user=admin_user, json=body)
    assert status == 204
    _, pile = await platform.call("GET", f"{BASE}/{pile_id}", user=admin_user)
    assert (pile["pileNo"], pile["powerRate"], pile["totalPorts"]) == ("E9", 120.0, 1)
    assert (pile["lastMaintenanceDate"], pile["manufacturer"], pile["imei"]) == (
        "2025-03-01",
        None,
        "860000000000001",
    )
    _, ports = await platform.call("GET", f"/api/ChargingPorts/by-pile/{pile_id}", user=admin_user)
    assert [p["portNo"] for p in ports] == ["1"]
    await platform.call("PUT", f"{BASE}/{pile_id}", user=admin_user, json={"totalPorts": 4})
    _, ports = await platform.call("GET", f"/api/ChargingPorts/by-pile/{pile_id}", user=admin_user)
    assert [p["portNo"] for p in ports] == ["1"]  # a larger capacity adds no ports
    _, pile = await platform.call("GET", f"{BASE}/{pile_id}", user=admin_user)
    assert pile["totalPorts"] == 4
    await add_ports(platform, admin_user, pile_id, 4)


async def test_update_to_a_taken_pile_no_is_a_bad_request(platform, admin_user, station):
    await new_pile(platform, admin_user, station, pileNo="E1")
    second = await new_pile(platform, admin_user, station, pileNo="E2")
    status, body = await platform.call("PUT", f"{BASE}/{second}", user=admin_user, json={"pileNo": "E1"})
    assert set(invalid((status, body), "pileNo")) == {"pileNo"}
    status, body = await platform.call("PUT", f"{BASE}/{second}", user=admin_user, json={"pileType": 5})
    invalid((status, body), "pileType")


async def test_delete_removes_the_pile_and_its_ports(platform, admin_user, station):
    pile_id = await new_pile(platform, admin_user, station)
    await add_ports(platform, admin_user, pile_id, 1, 2)
    status, _ = await platform.call("DELETE", f"{BASE}/{pile_id}", user=admin_user)
    assert status == 204
    problem(await platform.call("GET", f"{BASE}/{pile_id}", user=admin_user), 404)
    _, ports = await platform.call("GET", "/api/ChargingPorts", user=admin_user)
    assert ports == []


async def test_delete_of_a_pile_with_a_charging_driver_is_a_conflict(
    platform, admin_user, normal_user, station
):
    pile_id = await new_pile(platform, admin_user, station, pileNo="F1", totalPorts=1)
    await add_ports(platform, admin_user, pile_id, 1)
    status, _ = await platform.call(
        "POST",
        "/api/charging/request/",
        user=normal_user,
        json={"charging_mode": "fast", "requested_amount": 5},
    )
    assert status == 201  # the scheduler sends the car to F1 at once
    status, body = await platform.call("DELETE", f"{BASE}/{pile_id}", user=admin_user)
    assert "F1" in problem((status, body), 409)["detail"]
    _, ports = await platform.call("GET", f"/api/ChargingPorts/by-pile/{pile_id}", user=admin_user)
    assert ports[0]["currentOrderId"] is not None  # the driver session's order holds the port


async def test_unknown_ids_are_404(platform, admin_user):
    for method, json in (("GET", None), ("PUT", {"powerRate": 10}), ("DELETE", None)):
        status, body = await platform.call(method, f"{BASE}/nope", user=admin_user, json=json)
        problem((status, body), 404)


async def test_tokens_and_levels(platform, admin_user, normal_user, station):
    pile_id = await new_pile(platform, admin_user, station)
    problem(await platform.call("GET", BASE), 401)
    problem(await platform.call("GET", f"{BASE}/{pile_id}"), 401)
    status, body = await platform.call("POST", BASE, user=normal_user, json=pile_body(station, pileNo="E7"))
    problem((status, body), 403)
    problem(await platform.call("PUT", f"{BASE}/{pile_id}", user=normal_user, json={"totalPorts": 1}), 403)
    problem(await platform.call("DELETE", f"{BASE}/{pile_id}", user=normal_user), 403)
    status, _ = await platform.call("GET", f"{BASE}/byStation/{station}", user=normal_user)
    assert status == 200


async def test_paged_filters(platform, admin_user, station):
    other = (await platform.call("POST", "/api/ChargingStations", user=admin_user, json={"name": "机场站"}))[
        1
    ]
    await new_pile(platform, admin_user, station, pileNo="E1", manufacturer="ACME")
    await new_pile(platform, admin_user, station, pileNo="E2", manufacturer="Volta")
    await new_pile(platform, admin_user, other["id"], pileNo="X1", manufacturer="ACME")
    _, by_station = await platform.call("GET", f"{BASE}/paged?stationId={station}", user=admin_user)
    assert [p["pileNo"] for p in by_station["items"]] == ["E1", "E2"]
    _, acme = await platform.call("GET", f"{BASE}/paged?keyword=acme&pageSize=1", user=admin_user)
    assert (acme["totalCount"], acme["totalPages"], acme["hasNext"]) == (2, 2, True)
    _, airport = await platform.call("GET", f"{BASE}/paged?keyword=机场", user=admin_user)
    assert [p["pileNo"] for p in airport["items"]] == ["X1"]
    _, offline = await platform.call("GET", f"{BASE}/paged?status=0", user=admin_user)
    assert offline["totalCount"] == 3
    invalid(await platform.call("GET", f"{BASE}/paged?status=5", user=admin_user), "status")
    invalid(await platform.call("GET", f"{BASE}/paged?pageSize=-1", user=admin_user), "pageSize")


async def test_live_fields_come_from_the_ingest(platform, admin_user, station):
    pile_id = await new_pile(platform, admin_user, station, pileNo="E1", totalPorts=1)
    ingest = Ingest(platform.store, "test", platform.service.live, clock_ms=lambda: platform.wall.ms)
    status = PileStatus(state="online", ts=platform.wall.ms, kind="fast", ports=1)
    ingest.handle(topics.pile_status("test", "E1"), status.to_json())
    reading = Telemetry(
        ts=platform.wall.ms,
        session=1,
        seq=1,
        state="charging",
        voltage_V=400.0,
        current_A=50.0,
        power_W=20000.0,
        energy_Wh=1500,
        temperature_C=41.5,
        fault="none",
    )
    ingest.handle(topics.telemetry("test", "E1", 1), reading.to_json())
    await ingest.flush()
    _, pile = await platform.call("GET", f"{BASE}/{pile_id}", user=admin_user)
    assert (pile["onlineStatus"], pile["onlineStatusDescription"]) == (1, "在线")
    assert (pile["status"], pile["statusDescription"], pile["temperature"]) == (2, "使用中", 41.5)
    assert pile["lastHeartbeatTime"] == "2025-06-02T02:00:00Z"


async def test_a_pile_created_here_shows_in_the_driver_pile_list(platform, admin_user, normal_user, station):
    await new_pile(platform, admin_user, station, pileNo="E5", pileType=2, totalPorts=1)
    status, body = await platform.call("GET", "/api/charging/piles/status/", user=normal_user)
    assert status == 200
    slow = {p["pile_id"]: p for p in body["data"]["slow_piles"]}
    assert slow["E5"] == {
        "pile_id": "E5",
        "pile_type": "slow",
        "status": "offline",
        "is_working": False,
        "current_user": None,
        "queue": [],
    }


async def test_the_driver_list_helper_adds_recorded_piles_the_scheduler_does_not_know(
    platform, admin_user, station
):
    await new_pile(platform, admin_user, station, pileNo="E5", pileType=2, totalPorts=1)
    await new_pile(platform, admin_user, station, pileNo="F1", pileType=1, totalPorts=1)  # a scheduler pile
    request = make_mocked_request("GET", "/api/charging/piles/status/", app=platform.app)
    merged = await piles_status_with_registered(request)
    assert [p["pile_id"] for p in merged["fast_piles"]] == ["F1"]  # listed once, by the scheduler
    assert [p["pile_id"] for p in merged["slow_piles"]] == ["T1", "E5"]
    assert merged["slow_piles"][1]["status"] == "offline"
