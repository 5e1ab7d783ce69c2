"""Reconciliation of the central's sessions with what the ports report: a dispatched segment the
pile does not run is closed and its car re-queued; charging the central did not order is stopped
and reported. Station: F1 (30 kW) and T1 (10 kW), 10:00 (peak), fake wall clock."""

from __future__ import annotations

import pytest

pytest.register_assert_rewrite("tests.integration.central_fixtures")

from central.application import live  # noqa: E402
from central.application.live import START_GRACE_S  # noqa: E402
from tests.helpers import wait_for  # noqa: E402
from tests.integration.central_fixtures import start_central, stop_central  # noqa: E402
from tests.integration.live_helpers import ops  # noqa: E402

pytest_plugins = ("tests.integration.central_fixtures",)


async def submit(central, account, mode="fast", kwh=20):
    body = {"charging_mode": mode, "requested_amount": kwh}
    return await central.call("POST", "/api/charging/request/", user=account, json=body)


async def test_a_port_that_stays_idle_after_dispatch_closes_the_segment_and_requeues_the_car(central, driver):
    _status, body = await submit(central, driver)
    request_id = body["data"]["request_id"]
    assert ops(central, "F1") == ["start"]
    central.telemetry("F1", "idle", 1_000)
    central.wall.advance(START_GRACE_S / 2)
    central.telemetry("F1", "idle", 1_000)  # within the grace: the pile may still be starting
    assert ops(central, "F1") == ["start"]
    central.wall.advance(START_GRACE_S)
    central.telemetry("F1", "idle", 1_000)  # the pile does not run it (e.g. it restarted idle)
    await wait_for(lambda: ops(central, "F1") == ["start", "stop"], timeout_s=5, what="stop")
    central.wall.advance(1)
    central.telemetry("F1", "idle", 1_000)  # the port is seen stopped after the stop: the start goes
    await wait_for(
        lambda: ops(central, "F1") == ["start", "stop", "start"],
        timeout_s=5,
        what="stop, then the car dispatched again",
    )
    orders = await central.store.read(
        lambda db: list(
            db.query(
                "SELECT status, end_time FROM orders WHERE request_id = ? ORDER BY create_time", [request_id]
            )
        )
    )
    assert len(orders) == 2 and orders[0]["end_time"] is not None and orders[1]["end_time"] is None
    notices = await central.store.read(
        lambda db: [
            r["content"] for r in db.query("SELECT content FROM notifications WHERE title = '重新排队'")
        ]
    )
    assert notices == ["充电桩 F1 未能开始充电，剩余电量将优先重新调度"]
    status, body = await central.call("GET", "/api/charging/request/status/", user=driver)
    assert status == 200 and body["data"]["current_status"] == "charging"
    central.wall.advance(2)
    central.telemetry("F1", "charging", 1_000)
    central.wall.advance(600)
    central.telemetry("F1", "charging", 6_000)
    status, body = await central.call("GET", "/api/charging/request/status/", user=driver)
    assert body["data"]["current_amount"] == 5.0


async def test_charging_nobody_ordered_is_stopped_and_reported_once(central):
    central.telemetry("T1", "charging", 1_000)
    await wait_for(lambda: ops(central, "T1") == ["stop"], timeout_s=5, what="stop")
    assert central.service.live.meter_anomalies()["unordered_charging"] == 1
    central.wall.advance(1)
    central.telemetry("T1", "charging", 1_005)  # the port stops a moment later
    central.wall.advance(1)
    central.telemetry("T1", "idle", 1_008)
    assert central.service.live.meter_anomalies()["unordered_charging"] == 1
    assert ops(central, "T1") == ["stop"]


async def test_a_pile_faulted_by_a_failed_start_recovers_after_a_restart(
    tmp_path, station_params, monkeypatch
):
    """The cool-down of a failed start outlives a crash of the central: the restarted central clears
    it and dispatches again (a pile faulted this way used to stay faulted for good)."""
    monkeypatch.setattr(live, "COMMAND_FAULT_COOLDOWN_S", 0.2)
    central = await start_central(tmp_path, station_params)
    driver = await central.user("driver1")
    _status, body = await submit(central, driver)
    car = body["data"]["request_id"]
    central.service.live.on_command_outcome("F1", "start", car, "rejected", "port 1 cannot start in state 2")
    await wait_for(lambda: central.service.faulted_by.get("F1"), timeout_s=5, what="F1 faulted")
    await stop_central(central)  # before the cool-down ends
    restarted = await start_central(tmp_path, station_params, start=central.wall.now())
    try:
        await wait_for(
            lambda: ops(restarted, "F1") == ["start"], timeout_s=5, what="the car dispatched again"
        )
        assert not restarted.service.faulted_by.get("F1")
    finally:
        await stop_central(restarted)


async def test_a_port_that_stops_short_by_itself_requeues_the_rest_once_then_completes(central, driver):
    """Found by the chaos bench: a stale stop ended the next car's charge, and the request was closed
    "completed" with a third of its amount. The rest now waits at the head of the queue; a second
    short stop (a car that takes no more energy) completes the request."""
    _status, body = await submit(central, driver, kwh=12)
    assert ops(central, "F1") == ["start"]
    central.telemetry("F1", "idle", 1_000)
    central.wall.advance(1)
    central.telemetry("F1", "charging", 1_000)
    central.wall.advance(480)  # 4 kWh at 30 kW
    central.telemetry("F1", "charging", 5_000)
    central.wall.advance(1)
    central.telemetry("F1", "finished", 5_000)  # nobody asked it to stop
    await wait_for(lambda: ops(central, "F1") == ["start", "start"], timeout_s=5, what="re-dispatch")
    assert central.commands.sent[-1][3] == {"energy_Wh": 8_000}  # the remainder, as the pile's target
    status, body = await central.call("GET", "/api/charging/request/status/", user=driver)
    assert status == 200 and body["data"]["current_status"] == "charging"
    central.wall.advance(2)
    central.telemetry("F1", "charging", 5_000)
    central.wall.advance(120)  # 1 kWh more, then the car takes nothing
    central.telemetry("F1", "charging", 6_000)
    central.wall.advance(1)
    central.telemetry("F1", "finished", 6_000)
    await wait_for(
        lambda: central.service.current_request(driver.user_id).current_status == "completed",
        timeout_s=5,
        what="completed after the second short stop",
    )
    assert ops(central, "F1") == ["start", "start"]  # no third dispatch (the port stopped itself: no stop)
    bills = await central.store.read(
        lambda db: list(db.query("SELECT electricity FROM orders WHERE user_id = ?", [driver.user_id]))
    )
    assert sorted(round(float(b["electricity"]), 3) for b in bills) == [1.0, 4.0]
    notices = await central.store.read(
        lambda db: list(
            db.query("SELECT title, content FROM notifications WHERE user_id = ?", [driver.user_id])
        )
    )
    short = [n for n in notices if n["title"] == "充电提前结束"]
    assert len(short) == 1 and "1.0 kWh" in short[0]["content"]  # told once, with what was delivered
    # the first short stop was no fault: the driver was told the rest waits, not that F1 faulted
    assert not [n for n in notices if n["title"] == "充电桩故障"]
    requeued = [n["content"] for n in notices if n["title"] == "重新排队"]
    assert requeued == ["充电桩 F1 提前停止充电，剩余电量将优先重新调度"]
