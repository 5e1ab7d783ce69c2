"""``pilegate demo``: one whole station on one machine, each part a real process.

It starts an MQTT broker (Mosquitto when on PATH, else the embedded Python broker), the simulated
piles of the station parameters (default 2 fast + 3 trickle, each a Modbus TCP server), the gateway
polling them, and the central service with its REST APIs; prints ``READY http://127.0.0.1:<port>``
and the operator login once every part is up, then a compact live view of the telemetry read back
from the broker. Ctrl-C or SIGTERM stops every child, central and gateway first so the gateway can
flush its outbox and leave its status ``offline``; if the demo itself is killed (even SIGKILL) every
child gets SIGTERM from the kernel.

The broker is run as production runs it: no anonymous clients, a random password per user (the
central, the gateway, and the read-only live view) kept in ``<data dir>/secrets/<user>.password``
(mode 0600) and given to the gateway and central through their generated configs, and the
station's ACL, so no other local process can publish commands.
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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import click

from gateway.config import load_config
from pilegate.broker import (
    BrokerHandle,
    StationAccess,
    die_with_parent,
    free_port,
    gateway_user,
    start_broker,
)

STATION, GATEWAY = "demo", "gw1"
CENTRAL_USER, VIEW_USER = "pilegate-central", "demo-view"
T = TypeVar("T")


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
    """Start a child with its output in ``data_dir/NAME.log``, in its own session; it gets SIGTERM
    when the demo dies."""
    log_path = data_dir / f"{name}.log"
    with log_path.open("ab") as log_file:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdout=log_file,
            stderr=log_file,
            stdin=asyncio.subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )
    return Child(name, process, log_path)


async def wait_for(child: Child, timeout_s: float, what: str, probe: Callable[[], Awaitable[T | None]]) -> T:
    """Poll ``probe`` until it returns a value; fail when ``child`` dies or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if child.process.returncode is not None:
            raise DemoError(f"{child.name} exited with {child.process.returncode}; see {child.log_path}")
        result = await probe()
        if result is not None:
            return result
        await asyncio.sleep(0.05)
    raise DemoError(f"{child.name}: no {what} after {timeout_s}s; see {child.log_path}")


async def wait_for_file(path: Path, child: Child, timeout_s: float) -> dict[str, Any]:
    """The JSON a child writes to ``path`` once it is ready."""

    async def ready() -> dict[str, Any] | None:
        return dict(json.loads(path.read_text())) if path.exists() else None

    return await wait_for(child, timeout_s, f"ready file {path}", ready)


async def wait_for_token(path: Path, child: Child, timeout_s: float) -> str:
    """The gateway's control API token, once the gateway has written its token file."""

    async def token() -> str | None:
        if not path.exists():
            return None
        return path.read_text().strip() or None  # empty while the gateway is writing it

    return await wait_for(child, timeout_s, f"control token file {path}", token)


async def get_json(url: str, token: str | None = None) -> Any:
    """``url``'s JSON body when it answers 200, else None (not up yet); ``token`` as bearer."""
    import aiohttp

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with contextlib.suppress(aiohttp.ClientError, OSError):
        async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as resp:
            if resp.status == 200:
                return await resp.json(content_type=None)
    return None


async def wait_for_http(url: str, child: Child, timeout_s: float, token: str | None = None) -> None:
    """Poll ``url`` until it answers 200."""
    await wait_for(child, timeout_s, f"answer from {url}", lambda: get_json(url, token))


async def wait_for_piles_online(
    url: str, child: Child, piles: set[str], timeout_s: float, token: str
) -> None:
    """Poll the gateway's status until it has read every pile once (commands need that)."""

    async def all_online() -> bool | None:
        status = await get_json(url, token)
        states = {k: v["state"] for k, v in status["piles"].items()} if status else {}
        return True if all(states.get(p) in ("online", "faulted") for p in piles) else None

    await wait_for(child, timeout_s, f"every pile online at {url}", all_online)


def gateway_toml(
    piles: dict[str, Any], mqtt_port: int, control_port: int, data_dir: Path, poll_period_s: float
) -> str:
    """A gateway config for the simulated piles (one TCP bus per pile), with its broker login."""
    user = gateway_user(STATION, GATEWAY)
    lines = [
        "[gateway]",
        f'id = "{GATEWAY}"',
        f'station = "{STATION}"',
        f'data_dir = "{data_dir / "gateway"}"',
        f"poll_period_s = {poll_period_s}",
        f'control_listen = "127.0.0.1:{control_port}"',
        'log_format = "json"',
        "",
        "[mqtt]",
        f'url = "mqtt://127.0.0.1:{mqtt_port}"',
        f'username = "{user}"',
        f'password_file = "{password_file(data_dir, user)}"',
        "",
    ]
    for pile_id, ep in sorted(piles.items()):
        lines += [
            "[[bus]]",
            f'name = "tcp-{pile_id}"',
            'transport = "tcp"',
            f'host = "{ep["host"]}"',
            f"port = {ep['port']}",
            f"timeout_s = {min(0.5, poll_period_s / 2)}",
            "",
            "[[pile]]",
            f'id = "{pile_id}"',
            f'bus = "tcp-{pile_id}"',
            f"unit = {ep.get('unit', 1)}",
            f"ports = {ep.get('ports', 1)}",
            f'kind = "{ep["kind"]}"',
            "",
        ]
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
            cells.append(
                f"{key} {label:<9} {t.get('power_W', 0) / 1000:5.1f}kW "
                f"{t.get('energy_Wh', 0) / 1000:8.2f}kWh {t.get('temperature_C', 0):4.1f}°C"
            )
        return time.strftime("%H:%M:%S ") + f"msgs {self.messages}\n  " + "\n  ".join(cells)


def subscribe_live_view(view: LiveView, port: int, password: str) -> Any:
    """A paho client (own thread) that feeds ``view`` from the station's topics (read-only user)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"demo-view-{os.getpid()}")
    client.username_pw_set(VIEW_USER, password)
    client.on_connect = lambda c, *_: c.subscribe(f"pilegate/v1/{STATION}/#", qos=0)
    client.on_message = lambda _c, _u, msg: view.on_message(msg.topic, bytes(msg.payload))
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


DEMO_DRIVERS = [
    ("demo-fast-1", "fast", 30),
    ("demo-fast-2", "fast", 20),
    ("demo-slow-1", "slow", 10),
    ("demo-slow-2", "slow", 8),
    ("demo-slow-3", "slow", 6),
]


async def start_demo_charging(url: str) -> None:
    """Demo drivers register and ask for a charge through the driver API (the real flow)."""
    import aiohttp

    async with aiohttp.ClientSession() as session:
        for username, mode, kwh in DEMO_DRIVERS:
            password = secrets.token_urlsafe(12)
            body = {
                "username": username,
                "password": password,
                "email": f"{username}@example.invalid",
                "phone": "13800000000",
            }
            async with session.post(f"{url}/api/auth/register/", json=body) as resp:
                if resp.status >= 300:
                    continue  # the driver exists from an earlier demo run
                token = (await resp.json())["data"]["token"]
            request = {"charging_mode": mode, "requested_amount": kwh, "battery_capacity": 60}
            async with session.post(
                f"{url}/api/charging/request/", json=request, headers={"Authorization": f"Token {token}"}
            ) as resp:
                await resp.read()


def password_file(data_dir: Path, user: str) -> Path:
    """Where the demo keeps a broker user's password."""
    return (data_dir / "secrets" / f"{user}.password").resolve()


def broker_access(data_dir: Path, piles: list[str]) -> StationAccess:
    """New random broker passwords for the demo's users, each written to its 0600 password file;
    the gateway may publish for ``piles``."""
    secrets_dir = data_dir / "secrets"
    secrets_dir.mkdir(mode=0o700, exist_ok=True)
    secrets_dir.chmod(0o700)
    users = [CENTRAL_USER, gateway_user(STATION, GATEWAY), VIEW_USER]
    passwords = {user: secrets.token_urlsafe(24) for user in users}
    for user, password in passwords.items():
        path = password_file(data_dir, user)
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(password + "\n")
    return StationAccess(
        station=STATION,
        central_user=CENTRAL_USER,
        gateways={GATEWAY: piles},
        passwords=passwords,
        readers=[VIEW_USER],
    )


async def run_demo(opts: dict[str, Any]) -> None:
    data_dir: Path = opts["data_dir"]
    data_dir.mkdir(parents=True, exist_ok=True)
    children: list[Child] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    mqtt_port = opts["mqtt_port"] or free_port()
    broker: BrokerHandle | None = None
    view_client = None
    try:
        python = sys.executable
        ready_file = data_dir / "sim.ready.json"
        ready_file.unlink(missing_ok=True)
        sim_argv = [
            python,
            "-m",
            "pilegate.cli",
            "sim",
            "--ready-file",
            str(ready_file),
            "--time-scale",
            str(opts["time_scale"]),
        ]
        if opts["params"]:
            sim_argv += ["--station", str(opts["params"])]
        else:
            sim_argv += ["--station", str(_default_params(data_dir))]
        sim = await spawn("sim", sim_argv, data_dir)
        children.append(sim)
        piles = (await wait_for_file(ready_file, sim, 30))["piles"]
        access = broker_access(data_dir, sorted(piles))
        # started from this (the main) thread, so that it dies with the demo
        broker = start_broker(
            mqtt_port, data_dir / "broker", prefer=opts["broker"], access=access, die_with_parent=True
        )
        control_port = free_port()
        config_path = data_dir / "gateway.toml"
        config_path.write_text(gateway_toml(piles, mqtt_port, control_port, data_dir, opts["poll_period_s"]))
        gateway = await spawn(
            "gateway", [python, "-m", "pilegate.cli", "gateway", "--config", str(config_path)], data_dir
        )
        children.append(gateway)
        control = f"http://127.0.0.1:{control_port}"
        token = await wait_for_token(load_config(config_path).control_token_file, gateway, 30)
        await wait_for_http(f"{control}/status", gateway, 30, token)
        await wait_for_piles_online(f"{control}/status", gateway, set(piles), 30, token)
        central_path = data_dir / "central.toml"
        central_path.write_text(central_toml(mqtt_port, data_dir, opts))
        password = opts["admin_password"] or secrets.token_urlsafe(12)
        await create_admin(python, central_path, password, data_dir)
        central = await spawn(
            "central",
            [
                python,
                "-m",
                "pilegate.cli",
                "central",
                "--config",
                str(central_path),
                "--port",
                str(opts["http_port"]),
            ],
            data_dir,
        )
        children.append(central)
        url = f"http://127.0.0.1:{opts['http_port']}"
        await wait_for_http(f"{url}/api/openapi.json", central, 30)
        view = LiveView()
        view_client = subscribe_live_view(view, mqtt_port, access.passwords[VIEW_USER])
        click.echo(f"READY {url}")
        click.echo(f"  operator login: admin / {password}  (user API username, operator API openId)")
        click.echo(f"  driver API   {url}/api/charging/...   OpenAPI {url}/api/openapi.json")
        click.echo(
            f"  broker       mqtt://127.0.0.1:{mqtt_port} "
            f"({getattr(broker, 'name', 'broker')}; no anonymous clients; users' passwords "
            f"in {data_dir / 'secrets'})"
        )
        click.echo(f"  piles        {', '.join(sorted(piles))} (time scale x{opts['time_scale']})")
        click.echo(f"  gateway      pilectl --config {config_path} status")
        click.echo(f"  logs         {data_dir}/*.log")
        sys.stdout.flush()
        if opts["charge"]:
            await start_demo_charging(url)
        await _live(view, stop, children, opts["view_interval_s"])
    finally:
        if view_client is not None:
            view_client.loop_stop()
            view_client.disconnect()
        for child in reversed(children):
            await child.stop()
        if broker is not None:
            broker.stop()
        click.echo("demo stopped")


async def _live(view: LiveView, stop: asyncio.Event, children: list[Child], interval_s: float) -> None:
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
        dead = [c for c in children if c.process.returncode is not None]
        if dead:
            raise DemoError(
                f"{dead[0].name} exited with {dead[0].process.returncode}; see {dead[0].log_path}"
            )
        if interval_s > 0 and not stop.is_set():
            click.echo(view.render())
            sys.stdout.flush()


def central_toml(mqtt_port: int, data_dir: Path, opts: dict[str, Any]) -> str:
    """A central config for the demo station (its database in the data dir)."""
    params = opts["params"] or _default_params(data_dir)
    return "\n".join(
        [
            "[central]",
            f'station = "{STATION}"',
            'station_name = "pilegate demo station"',
            f'data_dir = "{data_dir / "central"}"',
            f"time_scale = {opts['time_scale']}",
            'log_format = "json"',
            "",
            "[mqtt]",
            f'url = "mqtt://127.0.0.1:{mqtt_port}"',
            'client_id = "pilegate-central-demo"',
            f'username = "{CENTRAL_USER}"',
            f'password_file = "{password_file(data_dir, CENTRAL_USER)}"',
            "",
            "[station]",
            f'params_file = "{Path(params).resolve()}"',
            "",
        ]
    )


async def create_admin(python: str, config: Path, password: str, data_dir: Path) -> None:
    """The operator account ``admin`` with ``password`` (created, or its password reset)."""
    env = {**os.environ, "PILEGATE_PASSWORD": password}
    with (data_dir / "central.log").open("ab") as log_file:
        process = await asyncio.create_subprocess_exec(
            python,
            "-m",
            "pilegate.cli",
            "create-user",
            "--config",
            str(config),
            "--username",
            "admin",
            "--admin",
            "--update",
            env=env,
            stdout=log_file,
            stderr=log_file,
            stdin=asyncio.subprocess.DEVNULL,
            preexec_fn=die_with_parent(),
        )
        if await process.wait() != 0:
            raise DemoError(f"could not create the admin account; see {data_dir}/central.log")


def _default_params(data_dir: Path) -> Path:
    path = data_dir / "station.toml"
    if not path.exists():
        path.write_text(
            "FastChargingPileNum = 2\nTrickleChargingPileNum = 3\nfast_power_kw = 30\nslow_power_kw = 10\n"
        )
    return path


@click.command("demo")
@click.option(
    "--http-port",
    type=click.IntRange(1, 65535),
    default=5045,
    show_default=True,
    help="port of the central service's REST APIs",
)
@click.option(
    "--mqtt-port", type=click.IntRange(0, 65535), default=0, help="broker port (default: a free port)"
)
@click.option(
    "--time-scale",
    type=click.FloatRange(0.1, 3600),
    default=1.0,
    show_default=True,
    help="simulated seconds per real second",
)
@click.option("--admin-password", default=None, help="password of the operator account admin")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("data/demo"),
    show_default=True,
    help="logs, outbox and databases",
)
@click.option(
    "--params",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="station parameters TOML (pile counts and powers)",
)
@click.option(
    "--broker",
    type=click.Choice(["auto", "mosquitto", "embedded"]),
    default="auto",
    show_default=True,
    help="which MQTT broker to run",
)
@click.option(
    "--poll-period",
    "poll_period_s",
    type=click.FloatRange(0.1, 60),
    default=1.0,
    show_default=True,
    help="gateway poll period in seconds",
)
@click.option(
    "--charge/--no-charge",
    default=True,
    show_default=True,
    help="demo drivers ask for charges through the driver API once the station is up",
)
@click.option(
    "--view-interval",
    "view_interval_s",
    type=float,
    default=2.0,
    show_default=True,
    help="seconds between live-view refreshes (0 = none)",
)
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
