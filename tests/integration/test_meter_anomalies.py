"""Meter anomalies through the real service: a meter that goes backwards, an implausible reading.
Station: one fast pile F1 (30 kW), one trickle pile T1 (10 kW); 10:00 (peak) on a fake wall clock."""

from __future__ import annotations

import asyncio

from tests.helpers import wait_for

pytest_plugins = ("tests.integration.central_fixtures",)


async def submit(central, account, mode="fast", kwh=20):
    body = {"charging_mode": mode, "requested_amount": kwh}
    return await central.call("POST", "/api/charging/request/", user=account, json=body)


async def complete(central, account, final_wh):
    done = asyncio.ensure_future(central.call("POST", "/api/charging/complete/", user=account))
    await wait_for(lambda: any(c[2] == "stop" for c in central.commands.sent), timeout_s=5, what="stop")
    central.wall.advance(1)
    central.telemetry("F1", "finished", final_wh)
    return await done


async def test_a_meter_that_goes_backwards_keeps_what_was_measured_and_counts_on(central, driver, driver2):
    await submit(central, driver)
    central.telemetry("F1", "charging", 1_000)
    central.wall.advance(600)
    central.telemetry("F1", "charging", 6_000)  # 5 kWh in 10 minutes
    central.wall.advance(60)
    for _ in range(3):  # the pile rebooted: its meter starts again near 0, reading after reading
        central.telemetry("F1", "charging", 100)
        central.wall.advance(1)
    await submit(central, driver2)  # a waiting driver still reads the queue
    for path in ("/api/charging/request/status/", "/api/charging/queue/status"):
        status, _body = await central.call("GET", path, user=driver2)
        assert status == 200, path
    central.wall.advance(537)
    central.telemetry("F1", "charging", 4_100)  # 4 kWh more on the new meter
    status, body = await central.call("GET", "/api/charging/request/status/", user=driver)
    assert status == 200 and body["data"]["current_amount"] == 9.0
    status, body = await complete(central, driver, 4_100)
    assert status == 200 and body["data"]["total_amount"] == 9.0
    assert central.service.live.meter_anomalies()["meter_resets"] == 1  # reported once, not per reading


async def test_an_implausible_reading_is_rejected_counted_and_loses_nothing(central, driver):
    await submit(central, driver, kwh=20)
    central.telemetry("F1", "idle", 1_000)
    central.wall.advance(1)
    central.telemetry("F1", "charging", 1_000)
    central.wall.advance(240)
    central.telemetry("F1", "charging", 1_000 + 2**31 - 1)  # a forged reading: a huge meter
    central.wall.advance(1)
    central.telemetry("F1", "charging", 1_016)
    assert not any(c[2] == "stop" for c in central.commands.sent)
    central.wall.advance(358)
    central.telemetry("F1", "charging", 4_000)  # 3 kWh in 10 minutes: the real pile
    status, body = await central.call("GET", "/api/charging/request/status/", user=driver)
    assert status == 200 and body["data"]["current_status"] == "charging"
    assert body["data"]["current_amount"] == 3.0
    assert central.service.live.meter_anomalies()["implausible_readings"] == 1
    status, body = await complete(central, driver, 4_000)
    assert status == 200 and body["data"]["total_amount"] == 3.0


async def test_a_rise_beyond_the_pile_rating_is_not_billed(central, driver):
    await submit(central, driver, mode="slow", kwh=30)  # T1: 10 kW
    central.telemetry("T1", "charging", 500)
    central.wall.advance(240)
    central.telemetry("T1", "charging", 500 + 14_330)  # 14.33 kWh in 4 minutes on a 10 kW pile
    status, body = await central.call("GET", "/api/charging/request/status/", user=driver)
    assert status == 200 and body["data"]["current_amount"] == 0.0
    assert central.service.live.meter_anomalies()["implausible_readings"] == 1


async def test_a_segment_the_central_ends_on_a_fault_stops_the_port(central, driver):
    await submit(central, driver)
    central.telemetry("F1", "charging", 1_000)
    central.wall.advance(60)
    central.telemetry("F1", "charging", 1_400)
    await central.service.declare_fault("F1", True)
    assert central.commands.sent[-1][:3] == ("F1", 1, "stop")
