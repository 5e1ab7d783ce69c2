"""End to end with the central for each shipped charger family: a driver's trickle request is
charged by a simulated pile of the family (T1, ``map = NAME``) through the gateway and Mosquitto,
the central stops the port at the amount (these families take no energy target), and the bill is
the family's meter: what the pile delivered, less at most what it delivered after the central's last
reading, priced by the tariff. A sim-v1 fast pile (F1) completes the station.

Where the simulator cannot yet serve a family's registers as the map lays them out, the case says so
as an expected failure (probed over Modbus before the gateway starts), and runs for real once it can.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from pilegate.broker import MosquittoBroker, free_port
from tests.e2e.family_probe import (
    FAMILIES,
    UNIT,
    blank_fields,
    encoder_gap,
    fixed_registers_toml,
    sim_refusal,
)
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
TRICKLE_W = 10_000  # the central's slow_power_kw; the simulated pile is rated the same
RATES = {"peak_cost": 1.2, "normal_cost": 0.8, "valley_cost": 0.4}
REQUESTED_KWH = 1.0


@pytest.fixture(params=FAMILIES)
def family(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def broker(tmp_path: Path):
    broker = MosquittoBroker(free_port(), tmp_path / "mosquitto", persistence=True)
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def sim(tmp_path: Path, family: str):
    config = tmp_path / "sim.toml"
    config.write_text(
        f"time_scale = {SCALE}\ncontrol_port = 0\n\n"
        '[[piles]]\nid = "F1"\nkind = "fast"\nrated_power_W = 30000\n\n'
        f'[[piles]]\nid = "T1"\nkind = "trickle"\nrated_power_W = {TRICKLE_W}\n'
        f'unit = {UNIT}\nmap = "{family}"\n' + fixed_registers_toml(family)
    )
    gap = encoder_gap(family)
    if gap is not None:
        pytest.xfail(f"the simulator cannot render {family} yet: {gap}")
    ready = tmp_path / "sim.ready.json"
    proc = spawn("sim", ["sim", "--config", str(config), "--ready-file", str(ready)], tmp_path)
    try:
        doc = wait_until(
            lambda: ready.exists() and json.loads(ready.read_text()), 30, "simulator ready", proc
        )
    except AssertionError:
        refusal = sim_refusal(proc.log())
        if refusal is None:
            raise
        pytest.xfail(f"the simulator cannot serve {family} yet: {refusal}")
    process = SimProcess(proc, doc["piles"], int(doc["control_port"]))
    try:
        blank = asyncio.run(blank_fields(process, family, "T1"))
        if blank:
            pytest.xfail(
                f"the simulator serves {family}'s {blank} blank (a block's holes over another block)"
            )
        yield process
    finally:
        proc.stop()


def gateway_toml(sim: SimProcess, family: str, mqtt_port: int, data_dir: Path, control_port: int) -> str:
    lines = [
        f'[gateway]\nid = "gw1"\nstation = "{STATION}"\ndata_dir = "{data_dir}"\npoll_period_s = 0.5',
        f'control_listen = "127.0.0.1:{control_port}"\nlog_format = "json"\n',
        f'[mqtt]\nurl = "mqtt://127.0.0.1:{mqtt_port}"\nkeepalive_s = 5\n',
    ]
    for pile, map_line in (("F1", ""), ("T1", f'map = "{family}"')):
        endpoint = sim.piles[pile]
        unit = UNIT if pile == "T1" else 1
        lines += [
            f'[[bus]]\nname = "b-{pile}"\ntransport = "tcp"\nhost = "{endpoint["host"]}"',
            f"port = {endpoint['port']}\ntimeout_s = 0.2\n",
            f'[[pile]]\nid = "{pile}"\nbus = "b-{pile}"\nunit = {unit}\nports = 1\n{map_line}\n',
        ]
    return "\n".join(lines)


@pytest.fixture
def station(tmp_path: Path, sim: SimProcess, broker: MosquittoBroker, family: str):
    control_port = free_port()
    config_path = tmp_path / "gateway.toml"
    config_path.write_text(gateway_toml(sim, family, broker.port, tmp_path / "gw-data", control_port))
    proc = spawn("gateway", ["gateway", "--config", str(config_path)], tmp_path)
    gateway = GatewayProcess(proc, config_path, control_port, tmp_path / "gw-data")
    central: CentralProcess | None = None
    try:
        wait_until(gateway.answering, 30, "gateway control API", proc)
        central = start_central(tmp_path, broker.port, time_scale=SCALE, fast=1, trickle=1)
        yield {"sim": sim, "central": central}
    finally:
        if central is not None:
            central.proc.stop()
        proc.stop()


def meter_Wh(sim: SimProcess, pile: str) -> int:
    ports = sim.snapshot()["piles"][pile]["ports"]
    first = ports["1"] if isinstance(ports, dict) else ports[0]
    return int(first["energy_Wh"])


def power_W(sim: SimProcess, pile: str) -> int:
    ports = sim.snapshot()["piles"][pile]["ports"]
    first = ports["1"] if isinstance(ports, dict) else ports[0]
    return int(first["power_W"])


def status(driver: Api) -> dict[str, Any]:
    code, body = driver.call("GET", "/api/charging/request/status/")
    assert code == 200, body
    return dict(body["data"])


def pile_online(api: Api, pile: str) -> bool:
    code, body = api.call("GET", "/api/charging/piles/status/")
    entries = body["data"]["fast_piles"] + body["data"]["slow_piles"] if code == 200 else []
    return any(p["pile_id"] == pile and p["status"] == "normal" for p in entries)


def test_a_trickle_request_is_stopped_at_the_amount_and_billed_by_the_family_meter(station, family):
    sim: SimProcess = station["sim"]
    driver = Api(station["central"].url).register("driver1")
    wait_until(lambda: pile_online(driver, "T1"), 30, "T1 online")
    before_Wh = meter_Wh(sim, "T1")
    code, body = driver.call(
        "POST",
        "/api/charging/request/",
        {"charging_mode": "slow", "requested_amount": REQUESTED_KWH, "battery_capacity": 60},
    )
    assert code in (200, 201), body
    wait_until(lambda: status(driver)["current_status"] == "charging", 30, f"{family} charging")
    assert status(driver)["charging_pile_id"] == "T1"
    wait_until(lambda: status(driver)["current_status"] == "completed", 60, "completed")
    wait_until(lambda: power_W(sim, "T1") == 0, 15, f"{family} stopped by the central")
    delivered_Wh = meter_Wh(sim, "T1") - before_Wh

    code, body = driver.call("GET", "/api/charging/bills/")
    assert code == 200, body
    [bill] = body["data"]["bills"]
    assert bill["pile_id"] == "T1"
    billed_kWh = bill["charging_amount"]  # rounded to 0.01 kWh
    assert billed_kWh >= REQUESTED_KWH - 0.005
    # the meter ran on between the central's last reading and the pile's stop: at most what the
    # pile delivers at its rating in two poll periods and the command's round trip (scaled time)
    unobserved_kWh = TRICKLE_W * 3.0 * SCALE / 3600 / 1000
    assert delivered_Wh / 1000 - unobserved_kWh - 0.005 <= billed_kWh <= delivered_Wh / 1000 + 0.005
    kwh_from_fees = sum(bill[k] / rate for k, rate in RATES.items())
    assert kwh_from_fees == pytest.approx(bill["charging_amount"], abs=0.05)
    assert bill["service_cost"] == pytest.approx(0.8 * bill["charging_amount"], abs=0.011)
