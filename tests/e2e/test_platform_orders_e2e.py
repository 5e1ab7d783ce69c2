"""End to end for operator orders: Mosquitto + a simulated pile + gateway + central, all real.

An administrator (logged in on the operator API) creates an order on the fast pile's port with
billing mode 1; the central takes the port out of the queue and starts it over MQTT and Modbus,
the simulated pile charges (its meter rises), complete stops it, and the order's electricity is the
pile's own meter difference with fees by the tariff. The driver then pays it from their balance,
topped up through the operator API. Station time runs 120x faster than real time.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from pilegate.broker import MosquittoBroker, free_port
from tests.e2e.harness import (
    Api,
    CentralProcess,
    GatewaySettings,
    SimProcess,
    start_central,
    start_gateway,
    start_sim,
    wait_until,
)

pytestmark = pytest.mark.e2e
SCALE = 120.0
ADMIN_PASSWORD = "admin-pw-e2e-1"
RATES = {"peak": 1.2, "normal": 0.8, "valley": 0.4}
SERVICE_RATE = 0.8
ZONE = ZoneInfo("Asia/Shanghai")


@pytest.fixture
def station(tmp_path: Path) -> Iterator[dict[str, Any]]:
    broker = MosquittoBroker(free_port(), tmp_path / "mosquitto")
    broker.start()
    sim = start_sim(tmp_path, fast=1, trickle=1, time_scale=SCALE)
    gateway = start_gateway(
        tmp_path, sim.piles, broker.port, GatewaySettings(station="s1", poll_period_s=0.5)
    )
    central = start_central(
        tmp_path, broker.port, time_scale=SCALE, fast=1, trickle=1, admin_password=ADMIN_PASSWORD
    )
    try:
        yield {"sim": sim, "central": central}
    finally:
        central.proc.stop()
        gateway.proc.stop()
        sim.proc.stop()
        broker.stop()


def meter_Wh(sim: SimProcess, pile: str) -> int:
    ports = sim.snapshot()["piles"][pile]["ports"]
    first = ports["1"] if isinstance(ports, dict) else ports[0]
    return int(first["energy_Wh"])


def call(api: Api, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
    status, reply = api.call(method, path, body)
    assert status == expect, (method, path, status, reply)
    return reply


def period_of(at_utc: str) -> str:
    """The default tariff's period of an instant (station local time)."""
    local = datetime.fromisoformat(at_utc.replace("Z", "+00:00")).astimezone(ZONE)
    minute = local.hour * 60 + local.minute
    if 600 <= minute < 900 or 1080 <= minute < 1260:
        return "peak"
    if 420 <= minute < 600 or 900 <= minute < 1080 or 1260 <= minute < 1380:
        return "normal"
    return "valley"


def admin_api(central: CentralProcess) -> Api:
    status, body = Api(central.url).call(
        "POST", "/api/Users/login", {"openId": "admin", "password": ADMIN_PASSWORD}
    )
    if status == 404:
        pytest.skip("the operator platform API is not registered in central.app.create_app yet")
    assert status == 200, body
    return Api(central.url, body["token"])


def fast_pile(admin: Api) -> tuple[str, str]:
    piles = {p["pileNo"]: p for p in call(admin, "GET", "/api/ChargingPiles")}
    ports = call(admin, "GET", f"/api/ChargingPorts/by-pile/{piles['F1']['id']}")
    return piles["F1"]["id"], ports[0]["id"]


def pile_ready(api: Api, pile: str) -> bool:
    status, body = api.call("GET", "/api/charging/piles/status/")
    entries = body["data"]["fast_piles"] + body["data"]["slow_piles"] if status == 200 else []
    return any(p["pile_id"] == pile and p["status"] == "normal" for p in entries)


def test_an_operator_order_charges_the_pile_bills_its_meter_and_is_paid_by_balance(station):
    central: CentralProcess = station["central"]
    sim: SimProcess = station["sim"]
    admin = admin_api(central)
    registered = call(Api(central.url), "POST", "/api/auth/register/",
                      {"username": "driver1", "password": "secret-pw-1"}, expect=201)  # fmt: skip
    driver = Api(central.url, registered["data"]["token"])
    user_id = registered["data"]["user_id"]
    wait_until(lambda: pile_ready(admin, "F1"), 30, "pile F1 online with a known meter")
    pile_id, port_id = fast_pile(admin)
    before_Wh = meter_Wh(sim, "F1")

    body = {"userId": user_id, "pileId": pile_id, "portId": port_id, "billingMode": 1}
    order_id = call(admin, "POST", "/api/Orders", body, expect=201)["id"]
    wait_until(lambda: meter_Wh(sim, "F1") - before_Wh >= 2_000, 30, "2 kWh delivered")
    charging = call(admin, "GET", f"/api/Orders/{order_id}")
    assert (charging["status"], charging["statusDescription"]) == (1, "充电中")
    call(admin, "POST", f"/api/Orders/{order_id}/complete", expect=204)
    after_Wh = meter_Wh(sim, "F1")
    wait_until(lambda: meter_Wh(sim, "F1") == after_Wh, 5, "the pile stopped")

    order = call(driver, "GET", f"/api/Orders/{order_id}")
    kwh = (after_Wh - before_Wh) / 1000
    assert (order["status"], order["statusDescription"]) == (0, "待支付")
    assert order["electricity"] == pytest.approx(kwh, abs=0.0011)
    assert order["serviceFee"] == pytest.approx(kwh * SERVICE_RATE, abs=0.011)
    first, last = period_of(order["startTime"]), period_of(order["endTime"])
    if first == last:
        assert order["amount"] == pytest.approx(kwh * RATES[first], abs=0.011)
    else:  # crossed a period boundary: between the two rates
        low, high = sorted((RATES[first], RATES[last]))
        assert kwh * low - 0.011 <= order["amount"] <= kwh * high + 0.011
    assert order["totalAmount"] == pytest.approx(order["amount"] + order["serviceFee"], abs=0.011)
    assert wait_until(lambda: pile_ready(admin, "F1"), 10, "F1 back in the driver queue")

    call(admin, "PUT", f"/api/Users/{user_id}/balance", {"amount": 100}, expect=204)
    call(driver, "POST", f"/api/Orders/{order_id}/pay", {"paymentMethod": 3}, expect=204)
    status, again = driver.call("POST", f"/api/Orders/{order_id}/pay", {"paymentMethod": 3})
    assert status == 409, again
    balance = call(admin, "GET", f"/api/Users/{user_id}")["balance"]
    assert balance == pytest.approx(100 - order["totalAmount"], abs=0.001)
    paid = call(driver, "GET", f"/api/Orders/{order_id}")
    assert (paid["status"], paid["paymentStatus"], paid["paymentMethodDescription"]) == (2, 1, "余额")
    notes = call(driver, "GET", f"/api/UserNotifications/byUser/{user_id}")
    assert {2, 4} <= {n["type"] for n in notes}
