"""Live-mode rules of the central, through the running service: it stops a port at the requested
amount; a pile in ``comm_fault``, a pile whose gateway is lost, a pile whose driver ``start`` finally
failed and a pile that never reported after start-up are faulted piles for the scheduler.

Station: one fast pile F1 (30 kW), one trickle pile T1 (10 kW), two waiting places and two cars per
pile (one charging, one queued); 10:00 (peak) on a fake wall clock. Pile and gateway statuses go
through the real :class:`Ingest`, as the MQTT client hands them over; meter readings and command
outcomes go straight to the service's live input.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from fractions import Fraction
from pathlib import Path
from typing import Literal

import pytest

from central.adapters.ingest import Ingest
from central.application import live
from central.domain.model import Mode, RequestState
from central.domain.params import StationParams, params_from_mapping
from protocols import topics
from protocols.payloads import GatewayStatus, PileState, PileStatus
from tests.helpers import wait_for

pytest.register_assert_rewrite("tests.integration.central_fixtures")
from tests.integration.central_fixtures import start_central, stop_central  # noqa: E402
from tests.integration.live_helpers import handled, ops, submit  # noqa: E402

pytest_plugins = ("tests.integration.central_fixtures",)

STATION = "test"  # the MQTT station id the ingest listens for


@pytest.fixture
def station_params() -> StationParams:
    return params_from_mapping(
        {"FastChargingPileNum": 1, "TrickleChargingPileNum": 1, "WaitingAreaSize": 2, "ChargingQueueLen": 2}
    )


class Gateway:
    """Plays one gateway (gw1) serving F1 and T1: its birth, its piles' statuses, its last will."""

    def __init__(self, ingest: Ingest, wall_ms: Callable[[], int]) -> None:
        self.ingest = ingest
        self.wall_ms = wall_ms
        self.session = 0

    def birth(self) -> None:
        self.session += 1
        status = GatewayStatus("online", self.session, self.wall_ms(), piles=("F1", "T1"))
        self.ingest.handle(topics.gw_status(STATION, "gw1"), status.to_json())

    def lost(self) -> None:
        self.ingest.handle(topics.gw_status(STATION, "gw1"), GatewayStatus("lost", self.session).to_json())

    def pile(self, pile_no: str, state: PileState) -> None:
        kind: Literal["fast", "trickle"] = "fast" if pile_no.startswith("F") else "trickle"
        status = PileStatus(state, self.wall_ms(), kind=kind, ports=1)
        self.ingest.handle(topics.pile_status(STATION, pile_no), status.to_json())


@pytest.fixture
async def gateway(central) -> AsyncIterator[Gateway]:
    """The real ingest in front of the service's live input, with gw1 born and its piles online with
    a known meter (schedulable)."""
    ingest = Ingest(central.store, STATION, central.service.live, clock_ms=lambda: central.wall.ms)
    await ingest.start()
    played = Gateway(ingest, lambda: central.wall.ms)
    played.birth()
    for pile_no in ("F1", "T1"):
        played.pile(pile_no, "online")
        central.telemetry(pile_no, "idle", 1_000)
    await wait_for(
        lambda: all(p.working for p in central.service.scheduler.point_states()),
        timeout_s=5,
        what="F1 and T1 schedulable",
    )
    try:
        yield played
    finally:
        await ingest.stop()


async def five_kwh_charged_and_one_queued(central, driver, driver2):
    """A 20 kWh car charging at F1 with 5 kWh on its meter and a second car queued behind it."""
    charging = await submit(central, driver, kwh=20)
    queued = await submit(central, driver2, kwh=10)
    assert central.service.scheduler.points["F1"].queue == [charging, queued]
    central.telemetry("F1", "charging", 1_000)
    central.wall.advance(600)
    central.telemetry("F1", "charging", 6_000)  # 5 kWh in 10 minutes at 30 kW
    return charging, queued


async def assert_segment_billed_and_rest_requeued(central, charging, queued):
    """F1 is faulted: the 5 kWh segment is one fault detail, the remaining 15 kWh heads F1's fault
    group with its number, the queued car behind it, and the port is stopped."""
    await wait_for(
        lambda: central.service.scheduler.get(charging).state is RequestState.FAULT_QUEUE,
        timeout_s=5,
        what="the charging car in the fault group",
    )
    scheduler = central.service.scheduler
    assert scheduler.points["F1"].faulted and scheduler.points["F1"].queue == []
    assert scheduler.fault_groups[Mode.FAST] == [charging, queued]
    request = scheduler.get(charging)
    assert request.queue_number == "F1"
    assert [(d.kwh, d.reason, d.pile_id) for d in request.details] == [(Fraction(5), "fault", "F1")]
    assert request.remaining_kwh == 15
    assert central.commands.sent[-1][:3] == ("F1", 1, "stop")


async def assert_recovered_and_redispatched(central, charging, queued):
    """F1 takes the cars back once it is read again (its meter may have run on while it was away):
    the interrupted car first, for what it still needs."""
    assert central.service.scheduler.points["F1"].faulted  # online, but not read since it came back
    assert central.commands.sent[-1][:3] == ("F1", 1, "stop")
    central.wall.advance(1)
    central.telemetry("F1", "finished", 6_000)  # read again: it obeyed the stop
    await wait_for(
        lambda: central.commands.sent[-1:] == [("F1", 1, "start", {"energy_Wh": 15_000}, charging)],
        timeout_s=5,
        what="the interrupted car started again for its remaining 15 kWh",
    )
    assert central.service.scheduler.points["F1"].queue == [charging, queued]


# --- the amount reached ------------------------------------------------------------------------------


async def test_the_central_stops_the_port_when_the_amount_is_reached(central, driver):
    car = await submit(central, driver, kwh=5)
    assert central.commands.sent == [("F1", 1, "start", {"energy_Wh": 5_000}, car)]
    central.telemetry("F1", "charging", 1_000)
    central.wall.advance(588)
    central.telemetry("F1", "charging", 5_900)
    status, body = await central.call("GET", "/api/charging/request/status/", user=driver)
    assert status == 200 and body["data"]["current_amount"] == 4.9
    assert ops(central, "F1") == ["start"]  # 4.9 kWh: not yet
    central.wall.advance(12)
    central.telemetry("F1", "charging", 6_000)  # 5 kWh: the pile ignores its own target
    await wait_for(lambda: ops(central, "F1") == ["start", "stop"], timeout_s=5, what="stop at 5 kWh")
    assert central.commands.sent[-1] == ("F1", 1, "stop", {}, car)
    central.wall.advance(1)
    central.telemetry("F1", "charging", 6_000)  # still charging a moment after the stop
    central.wall.advance(1)
    central.telemetry("F1", "finished", 6_000)
    await wait_for(
        lambda: central.service.current_request(driver.user_id).current_status == "completed",
        timeout_s=5,
        what="the request completed",
    )
    assert ops(central, "F1") == ["start", "stop"]  # one stop, not one per reading
    status, body = await central.call("GET", f"/api/charging/bills/{car}/", user=driver)
    assert status == 200 and body["data"]["charging_amount"] == 5.0


# --- piles the scheduler must treat as faulted ---------------------------------------------------------


async def test_a_pile_in_comm_fault_is_a_faulted_pile_for_the_scheduler(central, gateway, driver, driver2):
    charging, queued = await five_kwh_charged_and_one_queued(central, driver, driver2)
    gateway.pile("F1", "comm_fault")  # the gateway lost the pile's Modbus link
    await assert_segment_billed_and_rest_requeued(central, charging, queued)
    gateway.pile("F1", "online")
    await assert_recovered_and_redispatched(central, charging, queued)


async def test_a_pile_whose_gateway_is_lost_is_a_faulted_pile_for_the_scheduler(
    central, gateway, driver, driver2
):
    charging, queued = await five_kwh_charged_and_one_queued(central, driver, driver2)
    gateway.lost()  # the gateway's last will: its piles go offline
    await assert_segment_billed_and_rest_requeued(central, charging, queued)
    await wait_for(lambda: central.service.scheduler.points["T1"].faulted, timeout_s=5, what="T1 faulted")
    gateway.pile("F1", "online")  # a retained status of a gateway that is down changes nothing
    assert central.service.live.pile_health("F1") == "offline"
    assert central.service.scheduler.points["F1"].faulted
    gateway.birth()
    gateway.pile("F1", "online")
    await assert_recovered_and_redispatched(central, charging, queued)


async def test_a_pile_back_from_an_outage_takes_cars_only_once_read_again(central, gateway, driver):
    """Found by the chaos bench (seed 2): the gateway was killed while F1 charged a 5 kWh car at
    4.42 kWh; the segment was closed there, the pile went on to its own 5 kWh target unseen. On the
    gateway's return the car was dispatched at once, its baseline the reading from before the
    outage; the pile then started a second 580 Wh charge, the central counted both and stopped at
    1.042 kWh: billed 5.462 of 5. Now the pile takes cars once it is read again, and that reading
    is the new segment's baseline."""
    car = await submit(central, driver, kwh=5)
    central.telemetry("F1", "charging", 1_000)
    central.wall.advance(530)
    central.telemetry("F1", "charging", 5_420)
    gateway.lost()
    await wait_for(
        lambda: central.service.scheduler.get(car).state is RequestState.FAULT_QUEUE,
        timeout_s=5,
        what="the segment closed at 4.42 kWh",
    )
    gateway.birth()
    gateway.pile("F1", "online")
    await wait_for(lambda: central.service.live.pile_health("F1") == "online", timeout_s=5, what="online")
    await wait_for(lambda: handled(central), timeout_s=5, what="the state handled")
    assert ops(central, "F1") == ["start", "stop"]  # not read since it came back: no dispatch yet
    central.wall.advance(3)
    central.telemetry("F1", "finished", 6_000)  # it finished its own 5 kWh while nobody saw it
    await wait_for(
        lambda: central.commands.sent[-1] == ("F1", 1, "start", {"energy_Wh": 580}, car),
        timeout_s=5,
        what="the car started again for its 580 Wh",
    )
    central.wall.advance(1)
    central.telemetry("F1", "charging", 6_000)
    central.wall.advance(70)
    central.telemetry("F1", "charging", 6_580)
    await wait_for(lambda: ops(central, "F1")[-1] == "stop", timeout_s=5, what="stopped at the amount")
    central.wall.advance(1)
    central.telemetry("F1", "finished", 6_580)
    await wait_for(
        lambda: central.service.current_request(driver.user_id).current_status == "completed",
        timeout_s=5,
        what="the request completed",
    )
    details = [d.kwh for d in central.service.bills[car].details]
    assert details == [Fraction("4.42"), Fraction("0.58")] and central.service.bills[car].kwh == 5


async def test_a_drivers_start_that_finally_fails_faults_the_pile_for_the_cooldown(
    central, driver, driver2, monkeypatch
):
    monkeypatch.setattr(live, "COMMAND_FAULT_COOLDOWN_S", 1.5)
    charging = await submit(central, driver, kwh=20)
    queued = await submit(central, driver2, kwh=10)
    failed_at = time.monotonic()
    central.service.live.on_command_outcome("F1", "start", charging, "failed", "timeout")
    await wait_for(
        lambda: central.service.scheduler.points["F1"].faulted,
        timeout_s=1,
        what="F1 faulted once the start failed",
    )
    scheduler = central.service.scheduler
    assert scheduler.fault_groups[Mode.FAST] == [charging, queued]
    assert scheduler.get(charging).remaining_kwh == 20  # nothing was charged
    assert not scheduler.points["T1"].faulted
    await wait_for(
        lambda: not central.service.scheduler.points["F1"].faulted,
        timeout_s=10,
        what="F1 back after the cooldown",
    )
    assert time.monotonic() - failed_at >= live.COMMAND_FAULT_COOLDOWN_S
    await wait_for(
        lambda: central.commands.sent[-1:] == [("F1", 1, "start", {"energy_Wh": 20_000}, charging)],
        timeout_s=5,
        what="the car started again",
    )


async def test_a_pile_that_never_reports_after_start_up_is_faulted_after_the_grace(
    tmp_path: Path, station_params: StationParams
):
    started = time.monotonic()
    central = await start_central(tmp_path, station_params)
    try:
        assert time.monotonic() - started < live.UNKNOWN_PILE_GRACE_S, "the central started too slowly"
        del central.service.live.health["T1"]  # the fixture's "online": T1 has said nothing since start-up
        await wait_for(
            lambda: central.service.scheduler.points["T1"].faulted,
            timeout_s=live.UNKNOWN_PILE_GRACE_S + 10,
            what="the silent pile faulted",
        )
        assert time.monotonic() - started >= live.UNKNOWN_PILE_GRACE_S
        assert not central.service.scheduler.points["F1"].faulted  # F1 reported
        driver = await central.user("driver1")
        car = await submit(central, driver, mode="slow", kwh=5)
        request = central.service.scheduler.get(car)
        assert request is not None and request.state is RequestState.WAITING
        assert ops(central, "T1") == []  # nobody is sent to it
        central.telemetry("T1", "idle", 2_000)
        central.service.live.on_pile_state("T1", "online")  # it reports at last
        await wait_for(
            lambda: central.commands.sent[-1:] == [("T1", 1, "start", {"energy_Wh": 5_000}, car)],
            timeout_s=5,
            what="the car sent to T1 once it reported",
        )
    finally:
        await stop_central(central)
