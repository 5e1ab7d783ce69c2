"""Operator platform API, charging ports (spec section 8): list, detail, by-pile, paging, create,
update, delete, validation, access, and live fields written by the real ingest.
"""

from __future__ import annotations

from typing import Any

import pytest

pytest.register_assert_rewrite("tests.integration.platform_fixtures")
from central.adapters.ingest import Ingest  # noqa: E402
from protocols import topics  # noqa: E402
from protocols.payloads import PileStatus, Telemetry  # noqa: E402
from tests.integration.platform_fixtures import invalid, problem  # noqa: E402

pytest_plugins = ("tests.integration.platform_fixtures",)


BASE = "/api/ChargingPorts"
PORT_FIELDS = {
    "id",
    "pileId",
    "pileNo",
    "portNo",
    "portType",
    "portTypeDescription",
    "status",
    "statusDescription",
    "faultType",
    "faultTypeDescription",
    "isDisabled",
    "currentOrderId",
    "voltage",
    "currentAmpere",
    "power",
    "temperature",
    "electricity",
    "totalChargingTimes",
    "totalChargingDuration",
    "totalPowerConsumption",
    "lastCheckTime",
    "lastOrderId",
    "updateTime",
}


@pytest.fixture
async def pile(platform, admin_user) -> dict[str, Any]:
    """Pile E1 for up to 10 ports, with port 1 added (the documented two steps), at a new station."""
    _, station = await platform.call("POST", "/api/ChargingStations", user=admin_user, json={"name": "站"})
    body = {"stationId": station["id"], "pileNo": "E1", "pileType": 1, "powerRate": 30, "totalPorts": 10}
    status, reply = await platform.call("POST", "/api/ChargingPiles", user=admin_user, json=body)
    assert status == 201
    _, ports = await platform.call("GET", f"{BASE}/by-pile/{reply['id']}", user=admin_user)
    assert ports == []  # a pile created here starts with no ports
    status, port = await platform.call(
        "POST", BASE, user=admin_user, json={"pileId": reply["id"], "portNo": 1}
    )
    assert status == 201, port
    return {"id": reply["id"], "port1": port["id"]}


async def new_port(
    platform: Any, admin: Any, pile_id: str, port_no: Any, port_type: int | None = None
) -> str:
    body = {"pileId": pile_id, "portNo": port_no, **({"portType": port_type} if port_type else {})}
    status, reply = await platform.call("POST", BASE, user=admin, json=body)
    assert status == 201, reply
    return str(reply["id"])


async def test_a_new_port_reads_back_with_the_spec_fields(platform, admin_user, normal_user, pile):
    port_id = await new_port(platform, admin_user, pile["id"], "2", 2)
    status, port = await platform.call("GET", f"{BASE}/{port_id}", user=normal_user)
    assert status == 200 and set(port) == PORT_FIELDS
    assert (port["pileId"], port["pileNo"], port["portNo"]) == (pile["id"], "E1", "2")
    assert (port["portType"], port["portTypeDescription"]) == (2, "欧标")
    assert (port["status"], port["statusDescription"], port["faultType"], port["faultTypeDescription"]) == (
        0,
        "离线",
        0,
        "无故障",
    )
    assert port["isDisabled"] is False and port["currentOrderId"] is None
    assert port["voltage"] is None and port["electricity"] is None  # no telemetry yet: nothing invented
    _, pile_now = await platform.call("GET", f"/api/ChargingPiles/{pile['id']}", user=admin_user)
    assert pile_now["totalPorts"] == 10  # the capacity, not a count of ports


async def test_list_by_pile_and_paged(platform, admin_user, pile):
    await new_port(platform, admin_user, pile["id"], 3)
    await new_port(platform, admin_user, pile["id"], 2)
    _, every = await platform.call("GET", BASE, user=admin_user)
    assert [p["portNo"] for p in every] == ["1", "2", "3"]
    _, by_pile = await platform.call("GET", f"{BASE}/by-pile/{pile['id']}", user=admin_user)
    assert [p["portNo"] for p in by_pile] == ["1", "2", "3"]
    _, page = await platform.call(
        "GET", f"{BASE}/paged?pileId={pile['id']}&pageSize=2&pageNumber=2", user=admin_user
    )
    assert (page["totalCount"], page["totalPages"], [p["portNo"] for p in page["items"]]) == (3, 2, ["3"])
    _, keyword = await platform.call("GET", f"{BASE}/paged?keyword=E1", user=admin_user)
    assert keyword["totalCount"] == 3
    _, offline = await platform.call("GET", f"{BASE}/paged?status=1", user=admin_user)
    assert offline["totalCount"] == 0
    problem(await platform.call("GET", f"{BASE}/by-pile/nope", user=admin_user), 404)
    invalid(await platform.call("GET", f"{BASE}/paged?pageSize=0", user=admin_user), "pageSize")


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"portNo": 2}, "pileId"),
        ({"pileId": "P"}, "portNo"),
        ({"pileId": "P", "portNo": 0}, "portNo"),
        ({"pileId": "P", "portNo": 100}, "portNo"),
        ({"pileId": "P", "portNo": "A"}, "portNo"),
        ({"pileId": "P", "portNo": True}, "portNo"),
        ({"pileId": "P", "portNo": 2, "portType": 4}, "portType"),
    ],
)
async def test_create_names_each_bad_field(platform, admin_user, pile, body, named):
    body = {k: pile["id"] if v == "P" else v for k, v in body.items()}
    status, reply = await platform.call("POST", BASE, user=admin_user, json=body)
    assert set(invalid((status, reply), named)) == {named}


async def test_port_numbers_are_unique_within_a_pile(platform, admin_user, pile):
    status, body = await platform.call(
        "POST", BASE, user=admin_user, json={"pileId": pile["id"], "portNo": "1"}
    )
    assert set(invalid((status, body), "portNo")) == {"portNo"}


async def test_port_numbers_stay_within_the_piles_total_ports(platform, admin_user, pile):
    for number in range(2, 11):
        await new_port(platform, admin_user, pile["id"], number)
    status, body = await platform.call(
        "POST", BASE, user=admin_user, json={"pileId": pile["id"], "portNo": 11}
    )
    assert set(invalid((status, body), "portNo")) == {"portNo"}
    await platform.call("PUT", f"/api/ChargingPiles/{pile['id']}", user=admin_user, json={"totalPorts": 2})
    _, ports = await platform.call("GET", f"{BASE}/by-pile/{pile['id']}", user=admin_user)
    assert [p["portNo"] for p in ports] == ["1", "2"]  # ports above the new capacity are removed
    status, body = await platform.call(
        "POST", BASE, user=admin_user, json={"pileId": pile["id"], "portNo": 3}
    )
    assert set(invalid((status, body), "portNo")) == {"portNo"}


async def test_unknown_pile_is_404(platform, admin_user):
    status, body = await platform.call("POST", BASE, user=admin_user, json={"pileId": "ghost", "portNo": 1})
    assert "pileId" in problem((status, body), 404)["detail"]


async def test_update_type_disable_and_renumber(platform, admin_user, pile):
    second = await new_port(platform, admin_user, pile["id"], 2)
    body = {"portType": 3, "isDisabled": True, "portNo": "5"}
    status, _ = await platform.call("PUT", f"{BASE}/{second}", user=admin_user, json=body)
    assert status == 204
    _, port = await platform.call("GET", f"{BASE}/{second}", user=admin_user)
    assert (port["portType"], port["portTypeDescription"], port["isDisabled"], port["portNo"]) == (
        3,
        "美标",
        True,
        "5",
    )
    status, body = await platform.call("PUT", f"{BASE}/{second}", user=admin_user, json={"portNo": 1})
    assert set(invalid((status, body), "portNo")) == {"portNo"}
    status, body = await platform.call("PUT", f"{BASE}/{second}", user=admin_user, json={"portNo": 11})
    assert set(invalid((status, body), "portNo")) == {"portNo"}  # beyond totalPorts
    status, body = await platform.call("PUT", f"{BASE}/{second}", user=admin_user, json={"isDisabled": "yes"})
    invalid((status, body), "isDisabled")


async def test_delete_ports_down_to_none(platform, admin_user, pile):
    second = await new_port(platform, admin_user, pile["id"], 2)
    status, _ = await platform.call("DELETE", f"{BASE}/{second}", user=admin_user)
    assert status == 204
    problem(await platform.call("GET", f"{BASE}/{second}", user=admin_user), 404)
    status, _ = await platform.call("DELETE", f"{BASE}/{pile['port1']}", user=admin_user)
    assert status == 204  # a pile may have no ports, as it has when created
    _, ports = await platform.call("GET", f"{BASE}/by-pile/{pile['id']}", user=admin_user)
    assert ports == []
    _, pile_now = await platform.call("GET", f"/api/ChargingPiles/{pile['id']}", user=admin_user)
    assert pile_now["totalPorts"] == 10
    await new_port(platform, admin_user, pile["id"], 1)  # and takes a port again


async def test_unknown_ids_are_404(platform, admin_user):
    for method, json in (("GET", None), ("PUT", {"portType": 1}), ("DELETE", None)):
        problem(await platform.call(method, f"{BASE}/nope", user=admin_user, json=json), 404)


async def test_tokens_and_levels(platform, admin_user, normal_user, pile):
    problem(await platform.call("GET", BASE), 401)
    problem(await platform.call("GET", f"{BASE}/{pile['port1']}"), 401)
    status, _ = await platform.call("GET", f"{BASE}/{pile['port1']}", user=normal_user)
    assert status == 200
    body = {"pileId": pile["id"], "portNo": 2}
    problem(await platform.call("POST", BASE, user=normal_user, json=body), 403)
    problem(
        await platform.call("PUT", f"{BASE}/{pile['port1']}", user=normal_user, json={"portType": 2}), 403
    )
    problem(await platform.call("DELETE", f"{BASE}/{pile['port1']}", user=normal_user), 403)


async def test_live_fields_come_from_the_ingest(platform, admin_user, pile):
    ingest = Ingest(platform.store, "test", platform.service.live, clock_ms=lambda: platform.wall.ms)
    ingest.handle(topics.pile_status("test", "E1"), PileStatus(state="online", ts=platform.wall.ms).to_json())
    reading = Telemetry(
        ts=platform.wall.ms,
        session=1,
        seq=1,
        state="charging",
        voltage_V=398.5,
        current_A=45.0,
        power_W=17932.5,
        energy_Wh=123456,
        temperature_C=36.0,
        fault="over_temperature",
    )
    ingest.handle(topics.telemetry("test", "E1", 1), reading.to_json())
    await ingest.flush()
    _, port = await platform.call("GET", f"{BASE}/{pile['port1']}", user=admin_user)
    assert (port["voltage"], port["currentAmpere"], port["power"], port["temperature"]) == (
        398.5,
        45.0,
        17.9325,
        36.0,
    )
    assert port["electricity"] == 123.456  # the cumulative meter in kWh
    assert (port["status"], port["statusDescription"]) == (3, "故障")
    assert port["faultType"] != 0 and port["faultTypeDescription"] is not None
    assert port["lastCheckTime"] == "2025-06-02T02:00:00Z"
