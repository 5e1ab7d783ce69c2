"""A change of the driver queue is all or nothing, and readers see only committed changes; station
parameters have sane upper bounds. Station: F1 (30 kW) and T1 (10 kW), 10:00 (peak)."""

from __future__ import annotations

import asyncio

import pytest

from central.application import charging
from tests.postgres_server import BOTH_ENGINES

pytest_plugins = ("tests.integration.central_fixtures",)
pytestmark = BOTH_ENGINES


async def submit(central, account, mode="fast", kwh=20):
    body = {"charging_mode": mode, "requested_amount": kwh}
    return await central.call("POST", "/api/charging/request/", user=account, json=body)


class FailingWrites:
    """Wraps the service's unit of work: the next write fails (as a failed commit would)."""

    def __init__(self, uow):
        self.uow, self.fail_next = uow, False
        self.gate: asyncio.Event | None = None

    async def write(self, fn):
        if self.fail_next:
            self.fail_next = False
            raise OverflowError("int too large to convert to float")
        if self.gate is not None:
            await self.gate.wait()
        return await self.uow.write(fn)

    async def read(self, fn):
        return await self.uow.read(fn)


async def test_a_failed_commit_leaves_queue_sessions_and_bills_as_they_were(central, driver, monkeypatch):
    monkeypatch.setattr(charging, "STOP_WAIT_S", 0.2)  # no stopped reading comes: end at once
    _status, body = await submit(central, driver)
    request_id = body["data"]["request_id"]
    central.telemetry("F1", "charging", 1_000)
    central.wall.advance(120)
    central.telemetry("F1", "charging", 2_000)
    await asyncio.sleep(0.3)  # the segment's start is recorded
    service = central.service
    for task in service._tasks:
        if task.get_name() == "sessions-flush":
            task.cancel()  # its periodic write would take the failure
    writes = service.uow = FailingWrites(service.uow)
    writes.fail_next = True
    status, body = await central.call("DELETE", f"/api/charging/request/{request_id}/cancel/", user=driver)
    assert status >= 500 and "Traceback" not in str(body)
    assert request_id in service.scheduler.requests and request_id in service.sessions
    assert request_id not in service.bills
    status, body = await central.call("GET", "/api/charging/request/status/", user=driver)
    assert status == 200 and body["data"]["current_status"] == "charging"
    assert body["data"]["current_amount"] == 1.0
    status, body = await central.call("DELETE", f"/api/charging/request/{request_id}/cancel/", user=driver)
    assert status == 200 and body["data"]["current_status"] == "cancelled"
    rows = await central.store.read(
        lambda db: list(db.query("SELECT status FROM orders WHERE request_id = ?", [request_id]))
    )
    assert len(rows) == 1


async def test_readers_see_a_change_only_once_it_is_committed(central, driver):
    await submit(central, driver)
    service = central.service
    writes = service.uow = FailingWrites(service.uow)
    writes.gate = asyncio.Event()
    task = asyncio.ensure_future(submit(central, await central.user("driver9")))
    try:
        await asyncio.sleep(0.2)  # the second request's transaction is held open
        assert service.scheduler.waiting_count == 0  # not visible before its commit
    finally:
        writes.gate.set()
    status, _body = await task
    assert status == 201 and service.scheduler.waiting_count == 1


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"pricing": {"peak_rate": 1e308}}, "pricing.peak_rate"),
        ({"pricing": {"service_rate": 100.01}}, "pricing.service_rate"),
        ({"WaitingAreaSize": 10**9}, "WaitingAreaSize"),
        ({"ChargingQueueLen": 1001}, "ChargingQueueLen"),
    ],
)
async def test_parameters_beyond_their_bounds_are_refused_naming_the_field(central, staff, changes, field):
    status, body = await central.call("PUT", "/api/charging/config/parameters/", user=staff, json=changes)
    assert (status, set(body["error"]["details"])) == (400, {field})
