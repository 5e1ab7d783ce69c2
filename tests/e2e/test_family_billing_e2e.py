"""End to end with the central for each shipped charger family: a driver's trickle request is
charged by a simulated pile of the family (``map = NAME``) through the gateway and Mosquitto, the
central stops the port at the amount (these families take no energy target), and the bill is the
family's meter as the central saw it: the difference of the whole-Wh meter readings the gateway
published for the session, priced by the tariff; and those readings are the pile's own meter.

One station serves every family: a sim-v1 fast pile (F1) and one trickle pile per family (T1..T4),
one gateway, one central; the four drivers' sessions run side by side and each family's case checks
its own pile's bill.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pilegate.broker import MosquittoBroker, free_port
from tests.broker_fixtures import MqttProbe
from tests.e2e.family_probe import FAMILIES, gateway_toml, running_sim, sim_pile_toml
from tests.e2e.harness import (
    Api,
    CentralProcess,
    GatewayProcess,
    SimProcess,
    spawn,
    start_central,
    wait_until,
)

pytestmark = pytest.mark.e2e

STATION = "s1"
SCALE = 60.0
TRICKLE_W = 10_000  # the central's slow_power_kw; the simulated piles are rated the same
RATES = {"peak_cost": 1.2, "normal_cost": 0.8, "valley_cost": 0.4}
REQUESTED_KWH = 1.0
PILES = {family: f"T{i}" for i, family in enumerate(FAMILIES, start=1)}
BILL_ROUNDING_KWH = 0.005  # the bill shows kWh to 0.01


@pytest.fixture(params=FAMILIES)
def family(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("billing")


@pytest.fixture(scope="module")
def broker(workdir: Path) -> Iterator[MosquittoBroker]:
    broker = MosquittoBroker(free_port(), workdir / "mosquitto", persistence=True)
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(scope="module")
def sim(workdir: Path) -> Iterator[SimProcess]:
    text = (
        f"time_scale = {SCALE}\ncontrol_port = 0\n\n"
        '[[piles]]\nid = "F1"\nkind = "fast"\nrated_power_W = 30000\n\n'
        + "".join(sim_pile_toml(pile, family, TRICKLE_W) for family, pile in PILES.items())
    )
    with running_sim(workdir, text) as sim:
        yield sim


@pytest.fixture(scope="module")
def probe(broker: MosquittoBroker) -> Iterator[MqttProbe]:
    """Sees what the central sees: every port's telemetry as the gateway publishes it."""
    probe = MqttProbe(broker.port, client_id=f"probe-{uuid.uuid4().hex[:6]}")
    asyncio.run(probe.connect())
    asyncio.run(probe.subscribe(f"pilegate/v1/{STATION}/pile/+/port/+/telemetry", qos=1))
    yield probe
    probe.close()


def meter_Wh(sim: SimProcess, pile: str) -> float:
    """The pile's own meter (the simulator's decoded register: 0.1 Wh steps for KEBA)."""
    ports = sim.snapshot()["piles"][pile]["ports"]
    first = ports["1"] if isinstance(ports, dict) else ports[0]
    return float(first["energy_Wh"])


def power_W(sim: SimProcess, pile: str) -> int:
    ports = sim.snapshot()["piles"][pile]["ports"]
    first = ports["1"] if isinstance(ports, dict) else ports[0]
    return int(first["power_W"])


def status(driver: Api) -> dict[str, Any]:
    code, body = driver.call("GET", "/api/charging/request/status/")
    assert code == 200, body
    return dict(body["data"])


def piles_online(api: Api, piles: set[str]) -> bool:
    code, body = api.call("GET", "/api/charging/piles/status/")
    entries = body["data"]["fast_piles"] + body["data"]["slow_piles"] if code == 200 else []
    return piles <= {p["pile_id"] for p in entries if p["status"] == "normal"}


@dataclass
class Session:
    """One driver's charge as the test saw it: the pile it ran on, the pile's meter before and
    after, and the driver's bill."""

    pile: str
    before_Wh: float
    after_Wh: float
    bill: dict[str, Any]


def charge(driver: Api, sim: SimProcess) -> str:
    """Request a trickle charge and wait until it charges; the pile it charges on."""
    code, body = driver.call(
        "POST",
        "/api/charging/request/",
        {"charging_mode": "slow", "requested_amount": REQUESTED_KWH, "battery_capacity": 60},
    )
    assert code in (200, 201), body
    wait_until(lambda: status(driver)["current_status"] == "charging", 30, "charging")
    return str(status(driver)["charging_pile_id"])


@pytest.fixture(scope="module")
def sessions(
    workdir: Path, sim: SimProcess, broker: MosquittoBroker, probe: MqttProbe
) -> Iterator[dict[str, Session]]:
    """One driver per family pile, each charged to the amount side by side; by pile."""
    control_port = free_port()
    config_path = workdir / "gateway.toml"
    config_path.write_text(
        gateway_toml(
            sim,
            STATION,
            [("F1", None), *((p, f) for f, p in PILES.items())],
            broker.port,
            workdir / "gw-data",
            control_port,
        )
    )
    proc = spawn("gateway", ["gateway", "--config", str(config_path)], workdir)
    gateway = GatewayProcess(proc, config_path, control_port, workdir / "gw-data")
    central: CentralProcess | None = None
    try:
        wait_until(gateway.answering, 30, "gateway control API", proc)
        central = start_central(workdir, broker.port, time_scale=SCALE, fast=1, trickle=len(PILES))
        drivers = [Api(central.url).register(f"driver{i}") for i in range(1, len(PILES) + 1)]
        wait_until(lambda: piles_online(drivers[0], set(PILES.values())), 30, "the family piles online")
        before = {pile: meter_Wh(sim, pile) for pile in PILES.values()}
        on_pile = {charge(driver, sim): driver for driver in drivers}  # each on a free pile
        assert sorted(on_pile) == sorted(PILES.values()), on_pile
        for pile, driver in on_pile.items():
            wait_until(lambda d=driver: status(d)["current_status"] == "completed", 60, f"{pile} completed")
            wait_until(lambda p=pile: power_W(sim, p) == 0, 15, f"{pile} stopped by the central")
        yield {
            pile: Session(pile, before[pile], meter_Wh(sim, pile), bill(driver))
            for pile, driver in on_pile.items()
        }
    finally:
        if central is not None:
            central.proc.stop()
        proc.stop()


def bill(driver: Api) -> dict[str, Any]:
    code, body = driver.call("GET", "/api/charging/bills/")
    assert code == 200, body
    [only] = body["data"]["bills"]
    return dict(only)


def published_session_Wh(probe: MqttProbe, pile: str) -> tuple[int, int]:
    """(baseline, end) of the port's session in the meter readings the gateway published: the last
    reading before the port charged or its meter moved, and the last reading (the meter stands after
    the stop)."""
    readings = [m.json() for m in probe.matching(f"pilegate/v1/{STATION}/pile/{pile}/port/1/telemetry")]
    readings.sort(key=lambda r: r["seq"])
    started = next(
        i
        for i, r in enumerate(readings)
        if i and (r["state"] == "charging" or r["energy_Wh"] > readings[i - 1]["energy_Wh"])
    )
    return readings[started - 1]["energy_Wh"], readings[-1]["energy_Wh"]


def test_a_trickle_request_is_stopped_at_the_amount_and_billed_by_the_family_meter(sessions, probe, family):
    session = sessions[PILES[family]]
    baseline_Wh, end_Wh = published_session_Wh(probe, session.pile)
    assert isinstance(baseline_Wh, int) and isinstance(end_Wh, int)  # whole Wh, as published
    seen_Wh = end_Wh - baseline_Wh
    assert seen_Wh >= REQUESTED_KWH * 1000  # the central stopped the port at the amount, not before
    # the published readings are the pile's own meter, each to within the whole Wh it is published in
    assert seen_Wh == pytest.approx(session.after_Wh - session.before_Wh, abs=1.0)
    billed_kWh = session.bill["charging_amount"]
    assert session.bill["pile_id"] == session.pile
    assert billed_kWh == pytest.approx(seen_Wh / 1000, abs=BILL_ROUNDING_KWH + 1e-9)
    kwh_from_fees = sum(session.bill[k] / rate for k, rate in RATES.items())
    assert kwh_from_fees == pytest.approx(billed_kWh, abs=0.05)
    assert session.bill["service_cost"] == pytest.approx(0.8 * billed_kWh, abs=0.011)
