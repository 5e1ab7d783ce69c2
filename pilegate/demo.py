"""``pilegate demo``: one whole station on one machine, each part a real process.

It starts an MQTT broker (Mosquitto when on PATH, else the embedded Python broker), the simulated
piles of the station parameters (default 2 fast + 3 trickle, each a Modbus TCP server), and the
gateway polling them; prints ``READY <url>`` once every part is up, then a compact live view of the
telemetry read back from the broker. Ctrl-C or SIGTERM stops every child, gateway first so it can
flush its outbox and leave its status ``offline``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from pilegate.broker import free_port, start_broker

STATION, GATEWAY = "demo", "gw1"


class DemoError(click.ClickException):
    """A part of the demo did not come up."""


@dataclass
class Child:
    """A child process of the demo with its name, for ordered shutdown and error messages."""

    name: str
    process: asyncio.subprocess.Process
    log_path: Path

    async def stop(self, timeout_s: float = 10.0) -> None:
        if self.process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), timeout_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.process.wait()


async def spawn(name: str, argv: list[str], data_dir: Path) -> Child:
    """Start a child with its output in ``data_dir/NAME.log``, in its own session."""
    log_path = data_dir / f"{name}.log"
    with log_path.open("ab") as log_file:
        process = await asyncio.create_subprocess_exec(
            *argv, stdout=log_file, stderr=log_file, stdin=asyncio.subprocess.DEVNULL,
            start_new_session=True)
    return Child(name, process, log_path)


async def wait_for_file(path: Path, child: Child, timeout_s: float) -> dict[str, Any]:
    """The JSON a child writes to ``path`` once it is ready; fails if the child dies first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists():
            return dict(json.loads(path.read_text()))
        if child.process.returncode is not None:
            raise DemoError(f"{child.name} exited with {child.process.returncode}; "
                            f"see {child.log_path}")
        await asyncio.sleep(0.05)
    raise DemoError(f"{child.name} not ready after {timeout_s}s; see {child.log_path}")


async def wait_for_http(url: str, child: Child, timeout_s: float) -> None:
    """Poll ``url`` until it answers 200."""
    import aiohttp

    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if child.process.returncode is not None:
                raise DemoError(f"{child.name} exited with {child.process.returncode}; "
                                f"see {child.log_path}")
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise DemoError(f"{child.name} did not answer {url} after {timeout_s}s")


async def wait_for_piles_online(url: str, child: Child, piles: set[str], timeout_s: float) -> None:
    """Poll the gateway's status until it has read every pile once (commands need that)."""
    import aiohttp

    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            async with session.get(url) as resp:
                states = {k: v["state"] for k, v in (await resp.json())["piles"].items()}
            if all(states.get(p) in ("online", "faulted") for p in piles):
                return
            await asyncio.sleep(0.1)
    raise DemoError(f"piles not online after {timeout_s}s: {states}; see {child.log_path}")


def gateway_toml(piles: dict[str, Any], mqtt_port: int, control_port: int,
                 data_dir: Path, poll_period_s: float) -> str:
    """A gateway config for the simulated piles (one TCP bus per pile)."""
    lines = [
        "[gateway]", f'id = "{GATEWAY}"', f'station = "{STATION}"',
        f'data_dir = "{data_dir / "gateway"}"', f"poll_period_s = {poll_period_s}",
        f'control_listen = "127.0.0.1:{control_port}"', 'log_format = "json"', "",
        "[mqtt]", f'url = "mqtt://127.0.0.1:{mqtt_port}"', "",
    ]
    for pile_id, ep in sorted(piles.items()):
        lines += ["[[bus]]", f'name = "tcp-{pile_id}"', 'transport = "tcp"',
                  f'host = "{ep["host"]}"', f"port = {ep['port']}",
                  f"timeout_s = {min(0.5, poll_period_s / 2)}", "",
                  "[[pile]]", f'id = "{pile_id}"', f'bus = "tcp-{pile_id}"',
                  f"unit = {ep.get('unit', 1)}", f"ports = {ep.get('ports', 1)}",
                  f'kind = "{ep["kind"]}"', ""]
    return "\n".join(lines)


@dataclass
class LiveView:
    """Latest telemetry per port, fed by an MQTT subscription, rendered as one compact line."""

    ports: dict[str, dict[str, Any]] = field(default_factory=dict)
    piles: dict[str, str] = field(default_factory=dict)
    messages: int = 0

    def on_message(self, topic: str, payload: bytes) -> None:
        parts = topic.split("/")
        try:
            data = json.loads(payload)
        except ValueError:
            return
        if parts[-1] == "telemetry":
            self.ports[f"{parts[4]}/{parts[6]}"] = data
            self.messages += 1
        elif parts[3] == "pile" and parts[-1] == "status":
            self.piles[parts[4]] = data.get("state", "?")

    def render(self) -> str:
        cells = []
        for key in sorted(self.ports):
            t = self.ports[key]
            pile = key.split("/")[0]
            state = self.piles.get(pile, "?")
            label = t.get("state", "?") if state == "online" else state
            cells.append(f"{key} {label:<9} {t.get('power_W', 0) / 1000:5.1f}kW "
                         f"{t.get('energy_Wh', 0) / 1000:8.2f}kWh {t.get('temperature_C', 0):4.1f}°C")
        return time.strftime("%H:%M:%S ") + f"msgs {self.messages}\n  " + "\n  ".join(cells)


def subscribe_live_view(view: LiveView, port: int) -> Any:
    """A paho client (own thread) that feeds ``view`` from the station's topics."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"demo-view-{os.getpid()}")
    client.on_connect = lambda c, *_: c.subscribe(f"pilegate/v1/{STATION}/#", qos=0)
    client.on_message = lambda _c, _u, msg: view.on_message(msg.topic, bytes(msg.payload))
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


async def start_demo_charging(port: int, piles: dict[str, Any], time_scale: float) -> None:
    """Start a session on every port through the real command path (MQTT cmd topic)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"demo-cmd-{os.getpid()}")
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        expires = int(time.time() * 1000) + 60_000
        for pile_id, ep in sorted(piles.items()):
            for p in range(1, int(ep.get("ports", 1)) + 1):
                energy = int(ep["rated_power_W"]) // 2  # half an hour at rated power
                cmd = {"id": f"demo-{pile_id}-{p}-{secrets.token_hex(3)}", "op": "start",
                       "params": {"energy_Wh": energy}, "expires_at": expires}
                client.publish(f"pilegate/v1/{STATION}/pile/{pile_id}/port/{p}/cmd",
                               json.dumps(cmd), qos=1).wait_for_publish(5)
    finally:
        client.loop_stop()
        client.disconnect()


async def run_demo(opts: dict[str, Any]) -> None:
    data_dir: Path = opts["data_dir"]
    data_dir.mkdir(parents=True, exist_ok=True)
    children: list[Child] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    mqtt_port = opts["mqtt_port"] or free_port()
    broker = start_broker(mqtt_port, data_dir / "broker", prefer=opts["broker"])
    view_client = None
    try:
        python = sys.executable
        ready_file = data_dir / "sim.ready.json"
        ready_file.unlink(missing_ok=True)
        sim_argv = [python, "-m", "pilegate.cli", "sim", "--ready-file", str(ready_file),
                    "--time-scale", str(opts["time_scale"])]
        if opts["params"]:
            sim_argv += ["--station", str(opts["params"])]
        else:
            sim_argv += ["--station", str(_default_params(data_dir))]
        sim = await spawn("sim", sim_argv, data_dir)
        children.append(sim)
        piles = (await wait_for_file(ready_file, sim, 30))["piles"]
        control_port = free_port()
        config_path = data_dir / "gateway.toml"
        config_path.write_text(gateway_toml(piles, mqtt_port, control_port, data_dir,
                                            opts["poll_period_s"]))
        gateway = await spawn("gateway", [python, "-m", "pilegate.cli", "gateway", "--config",
                                          str(config_path)], data_dir)
        children.append(gateway)
        url = f"http://127.0.0.1:{control_port}"
        await wait_for_http(f"{url}/status", gateway, 30)
        await wait_for_piles_online(f"{url}/status", gateway, set(piles), 30)
        view = LiveView()
        view_client = subscribe_live_view(view, mqtt_port)
        click.echo(f"READY {url}")
        click.echo(f"  broker  mqtt://127.0.0.1:{mqtt_port} ({getattr(broker, 'name', 'broker')})")
        click.echo(f"  piles   {', '.join(sorted(piles))} (time scale x{opts['time_scale']})")
        click.echo(f"  gateway control API {url}  (pilectl --url {url} status)")
        click.echo(f"  logs    {data_dir}/*.log")
        sys.stdout.flush()
        if opts["charge"]:
            await start_demo_charging(mqtt_port, piles, opts["time_scale"])
        await _live(view, stop, children, opts["view_interval_s"])
    finally:
        if view_client is not None:
            view_client.loop_stop()
            view_client.disconnect()
        for child in reversed(children):
            await child.stop()
        broker.stop()
        click.echo("demo stopped")


async def _live(view: LiveView, stop: asyncio.Event, children: list[Child],
                interval_s: float) -> None:
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
        dead = [c for c in children if c.process.returncode is not None]
        if dead:
            raise DemoError(f"{dead[0].name} exited with {dead[0].process.returncode}; "
                            f"see {dead[0].log_path}")
        if interval_s > 0 and not stop.is_set():
            click.echo(view.render())
            sys.stdout.flush()


def _default_params(data_dir: Path) -> Path:
    path = data_dir / "station.toml"
    if not path.exists():
        path.write_text("FastChargingPileNum = 2\nTrickleChargingPileNum = 3\n"
                        "fast_power_kw = 30\nslow_power_kw = 10\n")
    return path


@click.command("demo")
@click.option("--http-port", type=click.IntRange(0, 65535), default=5045, show_default=True,
              help="port of the central service's HTTP API (central joins in a later release)")
@click.option("--mqtt-port", type=click.IntRange(0, 65535), default=0,
              help="broker port (default: a free port)")
@click.option("--time-scale", type=click.FloatRange(0.1, 3600), default=1.0, show_default=True,
              help="simulated seconds per real second")
@click.option("--admin-password", default=None, help="password of the operator account admin")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("data/demo"), show_default=True, help="logs, outbox and databases")
@click.option("--params", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="station parameters TOML (pile counts and powers)")
@click.option("--broker", type=click.Choice(["auto", "mosquitto", "embedded"]), default="auto",
              show_default=True, help="which MQTT broker to run")
@click.option("--poll-period", "poll_period_s", type=click.FloatRange(0.1, 60), default=1.0,
              show_default=True, help="gateway poll period in seconds")
@click.option("--charge/--no-charge", default=True, show_default=True,
              help="start a session on every port once the station is up")
@click.option("--view-interval", "view_interval_s", type=float, default=2.0, show_default=True,
              help="seconds between live-view refreshes (0 = none)")
def demo_command(**opts: Any) -> None:
    """Run a whole simulated station on this machine until Ctrl-C.

    Example:

        pilegate demo --time-scale 60
    """
    broker = opts["broker"]
    opts["broker"] = "mosquitto" if broker in ("auto", "mosquitto") else "embedded"
    if broker == "mosquitto" and not _has_mosquitto():
        raise click.ClickException("mosquitto is not on PATH (use --broker embedded)")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_demo(opts))


def _has_mosquitto() -> bool:
    import shutil

    return shutil.which("mosquitto") is not None or Path("/usr/sbin/mosquitto").exists()
