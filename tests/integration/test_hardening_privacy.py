"""What a driver may not learn about other users: their ids in refusals, their order ids on ports, the
existence of their addresses. And the operator's side of a pile's gateway binding."""

from __future__ import annotations

from typing import Any

import pytest

pytest.register_assert_rewrite("tests.integration.platform_fixtures")

from tests.integration.platform_fixtures import Account, Central, invalid, problem  # noqa: E402

pytest_plugins = ("tests.integration.platform_fixtures",)

ADDRESS = {
    "recipientName": "张三",
    "province": "北京",
    "city": "北京",
    "detailAddress": "中关村 1 号",
    "recipientPhone": "13800000000",
}


@pytest.mark.parametrize(
    "path",
    ["/api/Users/{id}", "/api/UserAddresses/byUser/{id}", "/api/UserNotifications/byUser/{id}"],
)
async def test_a_refusal_does_not_name_the_other_users_id(
    platform: Central, normal_user: Account, other_user: Account, path: str
) -> None:
    body = problem(await platform.call("GET", path.format(id=other_user.user_id), user=normal_user), 403)
    assert f"用户 {other_user.user_id}" not in body["detail"] and "其他用户" in body["detail"], body


async def test_another_users_address_is_as_absent_as_a_missing_one(
    platform: Central, normal_user: Account, other_user: Account
) -> None:
    status, created = await platform.call(
        "POST", f"/api/UserAddresses/{other_user.user_id}", user=other_user, json=ADDRESS
    )
    assert status == 201, created
    theirs, absent = created["id"], 999_999
    mine = f"/api/UserAddresses/{normal_user.user_id}/default"
    foreign = problem(await platform.call("PUT", f"{mine}/{theirs}", user=normal_user), 404)
    missing = problem(await platform.call("PUT", f"{mine}/{absent}", user=normal_user), 404)
    assert foreign["detail"] == missing["detail"].replace(str(absent), str(theirs))
    assert f"用户 {normal_user.user_id}" not in foreign["detail"]


async def port_with_orders(platform: Central, current_owner: int, last_owner: int) -> str:
    """F1's port 1, charging an order of ``current_owner`` after one of ``last_owner``."""

    def arrange(db: Any) -> str:
        port = db.execute(
            "SELECT t.id FROM ports t JOIN piles p ON p.id = t.pile_id "
            "WHERE p.pile_no = 'F1' AND t.port_no = '1'"
        ).fetchone()
        if port is None:
            pile = db.execute("SELECT id FROM piles WHERE pile_no = 'F1'").fetchone()
            db.execute(
                "INSERT INTO ports (id, pile_id, port_no, port_type, status, update_time) "
                "VALUES ('port-f1-1', ?, '1', 1, 2, '2025-06-02T02:00:00+00:00')",
                [pile[0]],
            )
            port = ("port-f1-1",)
        for order_id, owner in (("order-now", current_owner), ("order-before", last_owner)):
            db.execute(
                "INSERT INTO orders (id, order_no, user_id, status, create_time) VALUES (?, ?, ?, 1, ?)",
                [order_id, order_id, owner, "2025-06-02T02:00:00+00:00"],
            )
        db.execute(
            "UPDATE ports SET current_order_id = 'order-now', last_order_id = 'order-before' WHERE id = ?",
            [port[0]],
        )
        return str(port[0])

    return await platform.store.write(arrange)


async def ensure_f1(platform: Central, admin: Account) -> None:
    status, stations = await platform.call("GET", "/api/ChargingStations", user=admin)
    if not any(True for _ in stations):
        _status, station = await platform.call(
            "POST", "/api/ChargingStations", user=admin, json={"name": "站"}
        )
        station_id = station["id"]
    else:
        station_id = stations[0]["id"]
    piles = await platform.store.read(
        lambda db: db.execute("SELECT id FROM piles WHERE pile_no = 'F1'").fetchall()
    )
    if not piles:
        body = {"stationId": station_id, "pileNo": "F1", "pileType": 1, "powerRate": 30, "totalPorts": 1}
        status, reply = await platform.call("POST", "/api/ChargingPiles", user=admin, json=body)
        assert status == 201, reply


async def test_drivers_see_only_their_own_order_ids_on_ports(
    platform: Central, normal_user: Account, other_user: Account, admin_user: Account
) -> None:
    await ensure_f1(platform, admin_user)
    port_id = await port_with_orders(platform, other_user.user_id, normal_user.user_id)
    reads = [
        ("GET", "/api/ChargingPorts"),
        ("GET", f"/api/ChargingPorts/{port_id}"),
        ("GET", "/api/ChargingPorts/paged"),
    ]
    for method, path in reads:
        status, body = await platform.call(method, path, user=normal_user)
        assert status == 200, body
        port = (
            body
            if isinstance(body, dict) and "id" in body
            else next(p for p in (body["items"] if isinstance(body, dict) else body) if p["id"] == port_id)
        )
        assert (port["currentOrderId"], port["lastOrderId"]) == (None, "order-before"), (path, port)
        status, body = await platform.call(method, path, user=admin_user)
        port = (
            body
            if isinstance(body, dict) and "id" in body
            else next(p for p in (body["items"] if isinstance(body, dict) else body) if p["id"] == port_id)
        )
        assert (port["currentOrderId"], port["lastOrderId"]) == ("order-now", "order-before"), (path, port)


async def test_an_operator_binds_and_unbinds_a_piles_gateway(platform: Central, admin_user: Account) -> None:
    await ensure_f1(platform, admin_user)
    pile_id = await platform.store.read(
        lambda db: db.execute("SELECT id FROM piles WHERE pile_no = 'F1'").fetchone()[0]
    )
    path = f"/api/ChargingPiles/{pile_id}"
    assert (await platform.call("PUT", path, user=admin_user, json={"gateway": "gw2"}))[0] == 204
    assert (await platform.call("GET", path, user=admin_user))[1]["gateway"] == "gw2"
    assert (await platform.call("PUT", path, user=admin_user, json={"gateway": ""}))[0] == 204
    assert (await platform.call("GET", path, user=admin_user))[1]["gateway"] is None
    invalid(await platform.call("PUT", path, user=admin_user, json={"gateway": "gw/#"}), "gateway")
