"""What belongs to an earlier segment never acts on the car's current one: a stopped reading that
ended segment 1 does not end segment 2, the outcome of segment 1's start does not fault the pile
under segment 2, and the tail of a charge the central stopped is nobody's (the next segment's start
waits until the port obeyed the stop). Each test stages a sequence the chaos bench found
(``bench/chaos.py``). Station: F1 (30 kW) and T1 (10 kW), one car per pile, 10:00 (peak), fake
wall clock."""

from __future__ import annotations

from fractions import Fraction

import pytest

pytest.register_assert_rewrite("tests.integration.central_fixtures")

from central.application import charging  # noqa: E402
from central.application.live import START_GRACE_S  # noqa: E402
from central.domain.model import RequestState  # noqa: E402
from tests.helpers import wait_for  # noqa: E402
from tests.integration.live_helpers import handled, ops, submit  # noqa: E402

pytest_plugins = ("tests.integration.central_fixtures",)


async def completed(central, account) -> None:
    await wait_for(
        lambda: central.service.current_request(account.user_id).current_status == "completed",
        timeout_s=5,
        what="the request completed",
    )


async def test_stopped_readings_of_segment_1_do_not_end_segment_2(central, driver):
    """Seeds 1 and 3: the simulator was killed while F1 charged; it came back idle with its meter at
    0, and the gateway's backlog brought three idle readings at once. Each scheduled "the segment
    is done": the first re-queued the rest (the port stopped short by itself), the next two found
    the car's new segment and completed the request with nothing delivered in it."""
    car = await submit(central, driver, kwh=12)
    central.telemetry("F1", "idle", 1_000)
    central.telemetry("F1", "charging", 1_000)
    central.wall.advance(349)
    central.telemetry("F1", "charging", 3_907)  # 2.907 kWh
    for _ in range(3):  # the pile restarted idle, meter 0: read three times
        central.wall.advance(0.5)
        central.telemetry("F1", "idle", 0)
    await wait_for(lambda: ops(central, "F1")[:2] == ["start", "start"], timeout_s=5, what="re-dispatch")
    assert central.commands.sent[1][3] == {"energy_Wh": 9_093}
    await wait_for(lambda: handled(central), timeout_s=5, what="every scheduled update run")
    assert central.service.current_request(driver.user_id).current_status == "charging"
    assert ops(central, "F1") == ["start", "start"]  # no stop of the new segment
    central.wall.advance(1)
    central.telemetry("F1", "charging", 0)
    central.wall.advance(1091)
    central.telemetry("F1", "charging", 9_093)
    await wait_for(lambda: ops(central, "F1")[-1] == "stop", timeout_s=5, what="stopped at the amount")
    central.wall.advance(1)
    central.telemetry("F1", "finished", 9_093)
    await completed(central, driver)
    bill = central.service.bills[car]
    assert [d.kwh for d in bill.details] == [Fraction("2.907"), Fraction("9.093")] and bill.kwh == 12


async def test_the_next_start_waits_until_the_port_obeyed_the_last_stop(
    central, driver, driver2, monkeypatch
):
    """Seeds 1 and 3: a segment was closed while its port still charged and a stop went out; the
    next car's start went out at once with the last reading as its baseline, so the tail of the
    earlier charge (and, had the stop come after the start, the stop) counted for the next car:
    billed 5.128 of 5 and 12.097 of 12. Now the start waits for a reading of the stopped port,
    the baseline."""
    monkeypatch.setattr(charging, "STOP_WAIT_S", 0.2)
    first = await submit(central, driver, kwh=5)
    second = await submit(central, driver2, kwh=5)
    central.telemetry("F1", "idle", 1_000)
    central.telemetry("F1", "charging", 1_000)
    central.wall.advance(120)
    central.telemetry("F1", "charging", 2_000)
    await central.service.cancel(driver.user_id, first)  # the port does not answer within the wait
    assert central.service.bills[first].kwh == 1
    await wait_for(lambda: handled(central), timeout_s=5, what="every scheduled update run")
    assert ops(central, "F1") == ["start", "stop"]  # the second car's start waits
    assert central.service.sessions[second].start_held
    central.wall.advance(12)
    central.telemetry("F1", "charging", 2_100)  # the first car's charge runs on a moment
    central.wall.advance(6)
    central.telemetry("F1", "finished", 2_150)  # the stop arrived
    await wait_for(
        lambda: central.commands.sent[-1] == ("F1", 1, "start", {"energy_Wh": 5_000}, second),
        timeout_s=5,
        what="the held start sent",
    )
    central.wall.advance(1)
    central.telemetry("F1", "charging", 2_150)
    central.wall.advance(600)
    central.telemetry("F1", "charging", 7_150)
    await wait_for(lambda: ops(central, "F1")[-1] == "stop", timeout_s=5, what="stopped at the amount")
    central.wall.advance(1)
    central.telemetry("F1", "finished", 7_150)
    await completed(central, driver2)
    assert central.service.bills[second].kwh == 5  # not 5.15: the 150 Wh tail is the first car's


async def test_the_outcome_of_segment_1s_start_does_not_fault_the_pile_under_segment_2(central, driver):
    """The start of a segment that was closed (the port stayed idle) is finally refused after the
    car was dispatched again: it is not the current segment's start, so F1 stays in service."""
    car = await submit(central, driver, kwh=5)
    central.telemetry("F1", "idle", 1_000)
    central.wall.advance(START_GRACE_S + 1)
    central.telemetry("F1", "idle", 1_000)  # idle 16 s after dispatch: the segment is lost
    await wait_for(lambda: "stop" in ops(central, "F1"), timeout_s=5, what="stop")
    central.wall.advance(1)
    central.telemetry("F1", "idle", 1_000)
    await wait_for(lambda: ops(central, "F1") == ["start", "stop", "start"], timeout_s=5, what="again")
    central.service.live.on_command_outcome("F1", "start", car, "rejected", "late", "cmd-1")
    await wait_for(lambda: handled(central), timeout_s=5, what="every scheduled update run")
    assert not central.service.faulted_by.get("F1")
    assert central.service.scheduler.get(car).state is RequestState.CHARGING
    central.service.live.on_command_outcome("F1", "start", car, "rejected", "refused", "cmd-3")
    await wait_for(lambda: central.service.scheduler.points["F1"].faulted, timeout_s=5, what="F1 faulted")


async def test_a_held_start_gets_its_own_grace_before_its_segment_counts_as_lost(
    central, driver, driver2, monkeypatch
):
    """The grace a dispatched port has to start charging runs from when its start was sent: a start
    held longer than the grace is not taken for lost at the first reading after it went out."""
    monkeypatch.setattr(charging, "STOP_WAIT_S", 0.2)
    first = await submit(central, driver, kwh=5)
    second = await submit(central, driver2, kwh=5)
    central.telemetry("F1", "idle", 1_000)
    central.telemetry("F1", "charging", 1_000)
    central.wall.advance(120)
    central.telemetry("F1", "charging", 2_000)
    await central.service.cancel(driver.user_id, first)
    central.wall.advance(START_GRACE_S + 5)
    central.telemetry("F1", "finished", 2_000)  # the port stopped: the held start goes
    await wait_for(lambda: ops(central, "F1") == ["start", "stop", "start"], timeout_s=5, what="start")
    central.wall.advance(0.5)
    central.telemetry("F1", "finished", 2_000)  # read before the pile ran the start
    await wait_for(lambda: handled(central), timeout_s=5, what="every scheduled update run")
    assert ops(central, "F1") == ["start", "stop", "start"]  # not closed as lost, not stopped
    assert central.service.sessions[second].meter.base_wh == 2_000
