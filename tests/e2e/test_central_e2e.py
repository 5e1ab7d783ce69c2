"""End to end for the central service: Mosquitto + simulated piles + gateway + central, all real.

A registered driver asks for a charge over the REST API; the central queues and dispatches it, the
simulated pile charges over MQTT and Modbus, and the bill matches the pile's own meter and the
tariff. Station time runs 120x faster than real time.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

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
RATES = {"peak_cost": 1.2, "normal_cost": 0.8, "valley_cost": 0.4}


@pytest.fixture
def station(tmp_path: Path):
    broker = MosquittoBroker(free_port(), tmp_path / "mosquitto", persistence=True)
    broker.start()
    sim = start_sim(tmp_path, fast=2, trickle=1, time_scale=SCALE)
    gateway = start_gateway(
        tmp_path, sim.piles, broker.port, GatewaySettings(station="s1", poll_period_s=0.5)
    )
    central = start_central(tmp_path, broker.port, time_scale=SCALE, fast=2, trickle=1)
    parts: dict[str, Any] = {
        "broker": broker,
        "sim": sim,
        "gateway": gateway,
        "central": central,
        "dir": tmp_path,
    }
    yield parts
    parts["central"].proc.stop()
    gateway.proc.stop()
    sim.proc.stop()
    broker.stop()


def meter(sim: SimProcess, pile: str) -> int:
    ports = sim.snapshot()["piles"][pile]["ports"]
    first = ports["1"] if isinstance(ports, dict) else ports[0]
    return int(first["energy_Wh"])


def status(driver: Api) -> dict[str, Any]:
    code, body = driver.call("GET", "/api/charging/request/status/")
    assert code == 200, body
    return dict(body["data"])


def piles_online(api: Api, piles: set[str]) -> bool:
    code, body = api.call("GET", "/api/charging/piles/status/")
    entries = body["data"]["fast_piles"] + body["data"]["slow_piles"] if code == 200 else []
    return {p["pile_id"] for p in entries if p["status"] == "normal"} >= piles


def assert_fees_match_tariff(bill: dict[str, Any]) -> None:
    kwh_from_fees = sum(bill[k] / rate for k, rate in RATES.items())
    assert kwh_from_fees == pytest.approx(bill["charging_amount"], abs=0.05)
    assert bill["service_cost"] == pytest.approx(0.8 * bill["charging_amount"], abs=0.011)
    parts = bill["peak_cost"] + bill["normal_cost"] + bill["valley_cost"] + bill["service_cost"]
    assert bill["total_cost"] == pytest.approx(parts, abs=0.011)


def bills_of(driver: Api) -> list[dict[str, Any]]:
    code, body = driver.call("GET", "/api/charging/bills/")
    assert code == 200, body
    return list(body["data"]["bills"])


def test_a_fast_request_is_charged_to_the_amount_and_billed_by_the_meter(station):
    central: CentralProcess = station["central"]
    driver = Api(central.url).register("driver1")
    wait_until(lambda: piles_online(driver, {"F1", "F2"}), 20, "fast piles online")
    before = {p: meter(station["sim"], p) for p in ("F1", "F2")}
    code, body = driver.call(
        "POST",
        "/api/charging/request/",
        {"charging_mode": "fast", "requested_amount": 5, "battery_capacity": 60},
    )
    assert code in (200, 201), body
    assert body["data"]["queue_number"] == "F1"
    wait_until(lambda: status(driver)["current_status"] == "charging", 20, "charging")
    pile = status(driver)["charging_pile_id"]
    assert pile in ("F1", "F2")
    wait_until(lambda: status(driver)["current_status"] == "completed", 60, "completed")
    delivered_wh = meter(station["sim"], pile) - before[pile]
    assert delivered_wh == 5000, "the pile stops itself at the requested amount"
    [bill] = bills_of(driver)
    assert bill["pile_id"] == pile
    assert bill["charging_amount"] == pytest.approx(delivered_wh / 1000, abs=0.005)
    assert_fees_match_tariff(bill)
    code, notes = driver.call("GET", "/api/charging/notifications/")
    kinds = {n["type"] for n in notes["data"]}
    assert {"queue_update", "charging_start", "charging_complete"} <= kinds


def test_a_fault_mid_charge_requeues_the_rest_and_one_bill_has_two_details(station):
    central: CentralProcess = station["central"]
    sim: SimProcess = station["sim"]
    driver = Api(central.url).register("driver2")
    wait_until(lambda: piles_online(driver, {"F1", "F2"}), 20, "fast piles online")
    total_before = meter(sim, "F1") + meter(sim, "F2")
    code, body = driver.call(
        "POST",
        "/api/charging/request/",
        {"charging_mode": "fast", "requested_amount": 20, "battery_capacity": 80},
    )
    assert code in (200, 201), body
    wait_until(
        lambda: status(driver)["current_status"] == "charging" and status(driver)["current_amount"] > 2,
        30,
        "2 kWh charged",
    )
    first = status(driver)["charging_pile_id"]
    sim.fault(first, "over_temperature")
    other = {"F1": "F2", "F2": "F1"}[first]
    wait_until(
        lambda: status(driver)["charging_pile_id"] == other,
        30,
        "the remainder charging on the other fast pile",
    )
    wait_until(lambda: status(driver)["current_status"] == "completed", 90, "completed")
    delivered_wh = meter(sim, "F1") + meter(sim, "F2") - total_before
    details = bills_of(driver)
    assert sorted(d["pile_id"] for d in details) == sorted([first, other])
    assert sum(d["charging_amount"] for d in details) == pytest.approx(delivered_wh / 1000, abs=0.011)
    assert delivered_wh == pytest.approx(20_000, abs=10)
    for detail in details:
        assert_fees_match_tariff(detail)
    code, notes = driver.call("GET", "/api/charging/notifications/")
    assert "pile_fault" in {n["type"] for n in notes["data"]}


def test_kill_9_mid_charge_restores_queue_and_session_and_the_bill_is_exact(station):
    central: CentralProcess = station["central"]
    sim: SimProcess = station["sim"]
    driver = Api(central.url).register("driver3")
    waiting = Api(central.url).register("driver4")
    wait_until(lambda: piles_online(driver, {"F1", "F2"}), 20, "fast piles online")
    before = {p: meter(sim, p) for p in ("F1", "F2")}
    driver.call(
        "POST",
        "/api/charging/request/",
        {"charging_mode": "fast", "requested_amount": 15, "battery_capacity": 60},
    )
    waiting.call(
        "POST",
        "/api/charging/request/",
        {"charging_mode": "slow", "requested_amount": 30, "battery_capacity": 60},
    )
    wait_until(
        lambda: status(driver)["current_status"] == "charging" and status(driver)["current_amount"] > 1,
        30,
        "charging",
    )
    seen = status(driver), status(waiting)
    central.proc.stop(signal.SIGKILL)
    central = station["central"] = central.restart(station["dir"])
    after = status(driver), status(waiting)
    for old, new in zip(seen, after, strict=True):
        assert new["queue_number"] == old["queue_number"]
        assert new["charging_pile_id"] == old["charging_pile_id"]
    assert after[0]["current_status"] == "charging"
    wait_until(lambda: status(driver)["current_status"] == "completed", 60, "completed")
    pile = seen[0]["charging_pile_id"]
    delivered_wh = meter(sim, pile) - before[pile]
    [bill] = bills_of(driver)
    assert delivered_wh == 15_000
    assert bill["charging_amount"] == pytest.approx(15.0, abs=0.005)
    assert_fees_match_tariff(bill)
