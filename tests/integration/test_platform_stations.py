"""Operator platform API, charging stations (spec section 1): CRUD, paging, validation, access.

A real app serving both APIs over one store (tests.integration.platform_fixtures).
"""

from __future__ import annotations

from typing import Any

import pytest

pytest.register_assert_rewrite("tests.integration.platform_fixtures")
from tests.integration.platform_fixtures import invalid, problem  # noqa: E402

pytest_plugins = ("tests.integration.platform_fixtures",)

BASE = "/api/ChargingStations"
STATION_FIELDS = {
    "id",
    "code",  # beyond the spec: the MQTT {station} of a station the central runs
    "running",  # beyond the spec: whether this instance runs it
    "name",
    "status",
    "statusDescription",
    "address",
    "location",
    "updateTime",
    "pileCount",
}


async def new_station(platform: Any, admin: Any, **fields: Any) -> str:
    body = {"name": "城东充电站", "status": 1, "address": "东大街 1 号", "location": "116.40,39.90", **fields}
    status, reply = await platform.call("POST", BASE, user=admin, json=body)
    assert status == 201, reply
    return str(reply["id"])


async def new_pile(platform: Any, admin: Any, station_id: str, pile_no: str = "E1") -> str:
    body = {"stationId": station_id, "pileNo": pile_no, "pileType": 1, "powerRate": 60, "totalPorts": 1}
    status, reply = await platform.call("POST", "/api/ChargingPiles", user=admin, json=body)
    assert status == 201, reply
    return str(reply["id"])


async def test_created_station_reads_back_with_the_spec_fields(platform, admin_user, normal_user):
    station_id = await new_station(platform, admin_user)
    status, body = await platform.call("GET", f"{BASE}/{station_id}", user=normal_user)
    assert status == 200 and set(body) == STATION_FIELDS
    assert body["name"] == "城东充电站" and body["status"] == 1 and body["statusDescription"] == "在线"
    assert body["pileCount"] == 0 and body["updateTime"] == "2025-06-02T02:00:00Z"
    status, listing = await platform.call("GET", BASE, user=normal_user)
    assert status == 200 and [s["id"] for s in listing] == [station_id]


async def test_status_defaults_to_online_and_descriptions_follow_the_dictionary(platform, admin_user):
    first = await new_station(platform, admin_user, status=None)
    second = await new_station(platform, admin_user, name="维护站", status=2)
    _, one = await platform.call("GET", f"{BASE}/{first}", user=admin_user)
    _, two = await platform.call("GET", f"{BASE}/{second}", user=admin_user)
    assert (one["status"], one["statusDescription"]) == (1, "在线")
    assert (two["status"], two["statusDescription"]) == (2, "维护中")


async def test_pile_count_is_joined_from_the_piles(platform, admin_user):
    station_id = await new_station(platform, admin_user)
    await new_pile(platform, admin_user, station_id, "E1")
    await new_pile(platform, admin_user, station_id, "E2")
    _, body = await platform.call("GET", f"{BASE}/{station_id}", user=admin_user)
    assert body["pileCount"] == 2


async def test_update_changes_given_fields_and_keeps_the_rest(platform, admin_user):
    station_id = await new_station(platform, admin_user)
    platform.wall.advance(60)
    status, body = await platform.call(
        "PUT", f"{BASE}/{station_id}", user=admin_user, json={"name": "新名字", "status": 3, "location": ""}
    )
    assert status == 204 and body is None
    _, station = await platform.call("GET", f"{BASE}/{station_id}", user=admin_user)
    assert (station["name"], station["status"], station["statusDescription"]) == ("新名字", 3, "故障")
    assert station["address"] == "东大街 1 号" and station["location"] is None
    assert station["updateTime"] == "2025-06-02T02:01:00Z"


async def test_delete_removes_an_empty_station(platform, admin_user):
    station_id = await new_station(platform, admin_user)
    status, _ = await platform.call("DELETE", f"{BASE}/{station_id}", user=admin_user)
    assert status == 204
    status, body = await platform.call("GET", f"{BASE}/{station_id}", user=admin_user)
    problem((status, body), 404)


async def test_delete_of_a_station_with_piles_is_a_conflict(platform, admin_user):
    station_id = await new_station(platform, admin_user)
    await new_pile(platform, admin_user, station_id)
    status, body = await platform.call("DELETE", f"{BASE}/{station_id}", user=admin_user)
    assert "充电桩" in problem((status, body), 409)["detail"]
    status, _ = await platform.call("GET", f"{BASE}/{station_id}", user=admin_user)
    assert status == 200


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({}, {"name"}),
        ({"name": ""}, {"name"}),
        ({"name": 5}, {"name"}),
        ({"name": "x" * 101}, {"name"}),
        ({"name": "ok", "status": 9}, {"status"}),
        ({"name": "ok", "status": "1"}, {"status"}),
        ({"name": "ok", "address": ["a"]}, {"address"}),
    ],
)
async def test_create_names_each_bad_field(platform, admin_user, body, fields):
    status, reply = await platform.call("POST", BASE, user=admin_user, json=body)
    assert set(invalid((status, reply), *fields)) == fields


async def test_a_body_that_is_not_a_json_object_is_400(platform, admin_user):
    status, reply = await platform.call(
        "POST", BASE, user=admin_user, data=b"[1", headers={"Content-Type": "application/json"}
    )
    invalid((status, reply), "body")


async def test_unknown_ids_are_404(platform, admin_user):
    for method, json in (("GET", None), ("PUT", {"name": "x"}), ("DELETE", None)):
        status, body = await platform.call(method, f"{BASE}/nope", user=admin_user, json=json)
        assert "nope" in problem((status, body), 404)["detail"]


async def test_every_route_needs_a_token(platform, admin_user):
    station_id = await new_station(platform, admin_user)
    for method, path in (
        ("GET", BASE),
        ("GET", f"{BASE}/paged"),
        ("GET", f"{BASE}/{station_id}"),
        ("POST", BASE),
        ("PUT", f"{BASE}/{station_id}"),
        ("DELETE", f"{BASE}/{station_id}"),
    ):
        status, body = await platform.call(method, path, json={"name": "x"} if method != "GET" else None)
        problem((status, body), 401)


async def test_normal_users_read_but_cannot_change_stations(platform, admin_user, normal_user):
    station_id = await new_station(platform, admin_user)
    status, _ = await platform.call("GET", f"{BASE}/paged", user=normal_user)
    assert status == 200
    for method, path in (("POST", BASE), ("PUT", f"{BASE}/{station_id}"), ("DELETE", f"{BASE}/{station_id}")):
        status, body = await platform.call(method, path, user=normal_user, json={"name": "x"})
        problem((status, body), 403)
    _, station = await platform.call("GET", f"{BASE}/{station_id}", user=normal_user)
    assert station["name"] == "城东充电站"


async def test_paged_filters_by_status_and_keyword(platform, admin_user):
    await new_station(platform, admin_user, name="城东充电站", status=1)
    await new_station(platform, admin_user, name="城西充电站", status=0, address="西大街")
    await new_station(platform, admin_user, name="机场站", status=1, address="机场路")
    _, online = await platform.call("GET", f"{BASE}/paged?status=1", user=admin_user)
    assert online["totalCount"] == 2 and {s["status"] for s in online["items"]} == {1}
    _, west = await platform.call("GET", f"{BASE}/paged?keyword=西大", user=admin_user)
    assert [s["name"] for s in west["items"]] == ["城西充电站"]
    _, none = await platform.call("GET", f"{BASE}/paged?keyword=100%25", user=admin_user)
    assert none["totalCount"] == 0  # % is a literal character, not a wildcard


async def test_paging_object_edges(platform, admin_user):
    for i in range(3):
        await new_station(platform, admin_user, name=f"站{i}")
    _, first = await platform.call("GET", f"{BASE}/paged?pageNumber=1&pageSize=2", user=admin_user)
    assert (first["totalCount"], first["totalPages"], first["hasPrevious"], first["hasNext"]) == (
        3,
        2,
        False,
        True,
    )
    assert [s["name"] for s in first["items"]] == ["站0", "站1"]
    _, past = await platform.call("GET", f"{BASE}/paged?pageNumber=9&pageSize=2", user=admin_user)
    assert past["items"] == [] and past["totalCount"] == 3 and past["hasPrevious"] is True
    _, huge = await platform.call("GET", f"{BASE}/paged?pageSize=100000", user=admin_user)
    assert huge["pageSize"] == 100 and len(huge["items"]) == 3
    for query, field in (
        ("pageSize=0", "pageSize"),
        ("pageNumber=0", "pageNumber"),
        ("pageSize=x", "pageSize"),
        ("status=7", "status"),
    ):
        status, body = await platform.call("GET", f"{BASE}/paged?{query}", user=admin_user)
        invalid((status, body), field)


async def test_openapi_lists_the_refusals_of_each_station_pile_and_port_operation(platform):
    status, doc = await platform.call("GET", "/api/openapi.json")
    assert status == 200
    paths = doc["paths"]
    for base in (BASE, "/api/ChargingPiles", "/api/ChargingPorts"):
        assert "400" in paths[base]["post"]["responses"]  # e.g. a taken pileNo / portNo
        assert "409" in paths[f"{base}/{{id}}"]["delete"]["responses"]  # in use
        assert "404" in paths[f"{base}/{{id}}"]["put"]["responses"]
    for base in ("/api/ChargingPiles", "/api/ChargingPorts"):
        assert "409" in paths[f"{base}/{{id}}"]["put"]["responses"]  # renumbering while charging
        assert "409" not in paths[base]["post"]["responses"]  # uniqueness is a 400
        assert "404" in paths[base]["post"]["responses"]  # stationId / pileId
    # a station the central runs is not stopped while it has charging sessions (several stations)
    assert "409" in paths[f"{BASE}/{{id}}"]["put"]["responses"]
