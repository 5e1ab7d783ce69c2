"""What the family end-to-end tests share: the shipped charger families, the unit id each answers on
(the one its vendor document gives) and the read-back registers the simulator has no model for,
fixed per family in the simulator's pile config."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.e2e.harness import SimProcess, spawn, wait_until

FAMILIES = ("keba-p30", "alfen-ng9xx", "bender-cc61x", "abb-terra-ac")
UNITS = {"keba-p30": 255}  # a KEBA P30 answers on unit 255 only; the others on 1 here
# read-back registers the simulator has no model for, fixed per family in its pile config
FIXED_REGISTERS = {
    "alfen-ng9xx": {"availability": 1},  # operative
    "abb-terra-ac": {"user_max_A": 32},  # the installer's maximum (caps the current)
    "keba-p30": {"max_supported_A": 32},  # the hardware's maximum (caps the current)
}


def unit_of(family: str) -> int:
    """The unit id a pile of ``family`` answers on."""
    return UNITS.get(family, 1)


def fixed_registers_toml(family: str) -> str:
    """The simulator pile config line fixing ``family``'s unmodelled read-back registers."""
    fixed = FIXED_REGISTERS.get(family)
    return "registers = { " + ", ".join(f"{k} = {v}" for k, v in fixed.items()) + " }\n" if fixed else ""


def sim_pile_toml(pile: str, family: str, rated_power_W: int) -> str:
    """A ``[[piles]]`` entry of the simulator's config: one trickle pile of ``family`` on Modbus TCP."""
    return (
        f'[[piles]]\nid = "{pile}"\nkind = "trickle"\nrated_power_W = {rated_power_W}\n'
        f'unit = {unit_of(family)}\nmap = "{family}"\n' + fixed_registers_toml(family) + "\n"
    )


@contextmanager
def running_sim(workdir: Path, config_text: str) -> Iterator[SimProcess]:
    """The simulator on ``config_text`` (written to ``workdir/sim.toml``), ready, stopped afterwards."""
    config = workdir / "sim.toml"
    config.write_text(config_text)
    ready = workdir / "sim.ready.json"
    proc = spawn("sim", ["sim", "--config", str(config), "--ready-file", str(ready)], workdir)
    try:
        doc = wait_until(
            lambda: ready.exists() and json.loads(ready.read_text()), 30, "simulator ready", proc
        )
        yield SimProcess(proc, doc["piles"], int(doc["control_port"]))
    finally:
        proc.stop()


def gateway_toml(
    sim: SimProcess,
    station: str,
    piles: Iterable[tuple[str, str | None]],
    mqtt_port: int,
    data_dir: Path,
    control_port: int,
) -> str:
    """A gateway config with one Modbus TCP bus per (pile, family) of ``piles``; family None is a
    pilegate-sim-v1 pile (the gateway's default map)."""
    lines = [
        f'[gateway]\nid = "gw1"\nstation = "{station}"\ndata_dir = "{data_dir}"\npoll_period_s = 0.5',
        f'control_listen = "127.0.0.1:{control_port}"\nlog_format = "json"\n',
        f'[mqtt]\nurl = "mqtt://127.0.0.1:{mqtt_port}"\nkeepalive_s = 5\n',
    ]
    for pile, family in piles:
        endpoint = sim.piles[pile]
        unit = unit_of(family) if family else 1
        map_line = f'map = "{family}"\n' if family else ""
        lines += [
            f'[[bus]]\nname = "b-{pile}"\ntransport = "tcp"\nhost = "{endpoint["host"]}"',
            f"port = {endpoint['port']}\ntimeout_s = 0.2\n",
            f'[[pile]]\nid = "{pile}"\nbus = "b-{pile}"\nunit = {unit}\nports = 1\n{map_line}',
        ]
    return "\n".join(lines)
