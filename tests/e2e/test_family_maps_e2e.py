"""End to end for each shipped charger family: simulated piles of the four families -> one gateway
(each pile with ``map = NAME``, KEBA on its unit 255) -> Mosquitto, all real processes on loopback,
shared by the family cases (each drives its own pile). Start, limit and stop go through the family's
recipe as the gateway writes it; telemetry shows the current the family was set to and a meter that
counts while it charges and stands while it does not; a fault injected through the simulator's
control API arrives the family's way.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pilegate.broker import MosquittoBroker, free_port
from protocols.registers import CurrentRecipe, get_map
from tests.broker_fixtures import MqttProbe
from tests.e2e.family_probe import FAMILIES, gateway_toml, running_sim, sim_pile_toml
from tests.e2e.harness import GatewayProcess, SimProcess, spawn, wait_until
from tests.helpers import wait_for

pytestmark = pytest.mark.e2e

STATION = "s1"
PILES = {family: f"W{i}" for i, family in enumerate(FAMILIES, start=1)}


@pytest.fixture(params=FAMILIES)
def family(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("families")


@pytest.fixture(scope="module")
def broker(workdir: Path) -> Iterator[MosquittoBroker]:
    broker = MosquittoBroker(free_port(), workdir / "mosquitto", persistence=False)
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(scope="module")
def sim(workdir: Path) -> Iterator[SimProcess]:
    text = "time_scale = 60.0\ncontrol_port = 0\n\n" + "".join(
        sim_pile_toml(pile, family, 22_000) for family, pile in PILES.items()
    )
    with running_sim(workdir, text) as sim:
        yield sim


@pytest.fixture(scope="module")
def probe(broker: MosquittoBroker) -> Iterator[MqttProbe]:
    probe = MqttProbe(broker.port, client_id=f"central-{uuid.uuid4().hex[:6]}")
    asyncio.run(probe.connect())
    asyncio.run(probe.subscribe(f"pilegate/v1/{STATION}/#", qos=1))
    yield probe
    probe.close()


@pytest.fixture(scope="module")
def gateway(
    workdir: Path, sim: SimProcess, broker: MosquittoBroker, probe: MqttProbe
) -> Iterator[GatewayProcess]:
    control_port = free_port()
    config_path = workdir / "gateway.toml"
    config_path.write_text(
        gateway_toml(
            sim, STATION, [(p, f) for f, p in PILES.items()], broker.port, workdir / "gw-data", control_port
        )
    )
    proc = spawn("gateway", ["gateway", "--config", str(config_path)], workdir)
    gw = GatewayProcess(proc, config_path, control_port, workdir / "gw-data")
    try:
        wait_until(gw.answering, 30, "gateway control API", proc)
        yield gw
    finally:
        proc.stop()


def pile_port(sim: SimProcess, family: str) -> dict[str, Any]:
    """The simulator's own view of the family pile's port: its registers, and the current limit
    and enable flag its physics took from the writes."""
    ports = sim.snapshot()["piles"][PILES[family]]["ports"]
    return dict(ports["1"] if isinstance(ports, dict) else ports[0])


def port_topic(family: str) -> str:
    return f"pilegate/v1/{STATION}/pile/{PILES[family]}/port/1"


def latest(probe: MqttProbe, family: str) -> dict[str, Any]:
    readings = probe.matching(f"{port_topic(family)}/telemetry")
    return readings[-1].json() if readings else {}


async def command(probe: MqttProbe, family: str, op: str, params: dict[str, int]) -> dict[str, Any]:
    """Send ``op`` and return its final result (whatever it is)."""
    command_id = f"t-{uuid.uuid4().hex[:10]}"
    body = {"id": command_id, "op": op, "params": params, "expires_at": int((time.time() + 30) * 1000)}
    probe.publish(f"{port_topic(family)}/cmd", json.dumps(body).encode())

    def final() -> dict[str, Any] | None:
        answers = [
            m.json()
            for m in probe.matching(f"{port_topic(family)}/cmd/result")
            if m.json()["id"] == command_id
        ]
        return next((a for a in answers if a["status"] != "accepted"), None)

    result = await wait_for(final, timeout_s=10, what=f"{op} result")
    assert result is not None
    return result


async def reading(probe: MqttProbe, family: str, what: str, check: Any) -> dict[str, Any]:
    found: dict[str, Any] = await wait_for(
        lambda: check(latest(probe, family)) and latest(probe, family), timeout_s=15, what=what
    )
    return found


async def test_start_limit_stop_and_a_fault_the_family_way(gateway, probe, sim, family):
    idle = await reading(
        probe, family, f"{family} idle", lambda r: r.get("state") in ("available", "plugged")
    )
    assert idle["fault"] == "none"

    started = await command(probe, family, "start", {"power_W": 11_000})  # 11000 / (230 V x 3) -> 15 A
    assert started["status"] == "done", started
    charging = await reading(
        probe,
        family,
        f"{family} charging at 15 A with a rising meter",
        lambda r: (
            r["state"] == "charging" and r["current_A"] == 15.0 and r["energy_Wh"] > idle["energy_Wh"] + 20
        ),
    )
    assert charging["power_W"] == pytest.approx(3 * 15 * charging["voltage_V"], rel=0.02)
    pile = pile_port(sim, family)  # the recipe wrote the current (and the enable flag, where there is one)
    assert (pile["current_limit_A"], pile["enabled"]) == (15.0, True)

    limited = await command(probe, family, "limit", {"power_W": 5_520})  # -> 8 A
    assert limited["status"] == "done", limited
    await reading(
        probe, family, f"{family} at 8 A", lambda r: r["state"] == "charging" and r["current_A"] == 8.0
    )
    assert pile_port(sim, family)["current_limit_A"] == 8.0

    stopped = await command(probe, family, "stop", {})
    assert stopped["status"] == "done", stopped
    finished = await reading(
        probe,
        family,
        f"{family} stopped",
        lambda r: r["state"] in ("finished", "plugged") and r["power_W"] == 0,
    )
    assert finished["energy_Wh"] > charging["energy_Wh"]
    recipe = get_map(family).recipe
    assert isinstance(recipe, CurrentRecipe)
    pile = pile_port(sim, family)
    if recipe.stop == "disable":  # KEBA: the enable flag off, the current left as it was
        assert (pile["enabled"], pile["current_limit_A"]) == (False, 8.0)
    else:  # the others: 0 A
        assert pile["current_limit_A"] == 0.0
    stood = await reading(probe, family, "two more readings", lambda r: r["seq"] >= finished["seq"] + 2)
    assert stood["energy_Wh"] == finished["energy_Wh"]

    sim.fault(PILES[family], "over_temperature")
    faulted = await reading(
        probe, family, f"{family} faulted", lambda r: r["state"] == "faulted" or r["fault"] != "none"
    )
    assert faulted["power_W"] == 0
