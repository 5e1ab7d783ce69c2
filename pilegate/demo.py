"""``pilegate demo``: one whole living station on one machine, each part a real process.

It starts an MQTT broker (Mosquitto when on PATH, else the embedded Python broker), the simulated
piles of the station parameters (default 2 fast + 3 trickle, each a Modbus TCP server), the gateway
polling them, and the central service with its REST APIs and dashboard; prints
``READY http://127.0.0.1:<port>/`` with the operator and a driver login once every part is up (the
central itself says it serves, over the systemd notification protocol, so READY never names a port
another process answers on), then a compact live view of the telemetry read back from the broker.
Simulated drivers (:mod:`pilegate.traffic`) fill the station and keep arriving, changing and
cancelling; at the default time scale a charge takes about a minute.

Everything lives in one data directory (``data/demo`` by default): configs, logs, databases and
secrets. Running again on it continues the station (its clock goes on where it stopped, at the new
time scale); ``--fresh`` starts over. Ctrl-C or SIGTERM stops every child, central and gateway first
so the gateway can flush its outbox and leave its status ``offline``; if the demo itself is killed
(even SIGKILL) every child gets SIGTERM from the kernel.

The broker is run as production runs it: no anonymous clients, a random password per user (the
central, its ingest, the gateway, and the read-only live view) kept in ``<data dir>/secrets/<user>.password``
(mode 0600) and given to the gateway and central through their generated configs, and the
station's ACL, so no other local process can publish commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
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
from pilegate.traffic import DriverTraffic, sign_in

STATION, GATEWAY = "demo", "gw1"
CENTRAL_USER, VIEW_USER = "pilegate-central", "demo-view"
INGEST_USER = "pilegate-ingest"  # the central's telemetry ingest process: a reader of the station
DRIVER = "demo-driver"  # the newcomer's own driver account; the simulated ones are demo-car-N
SIMULATED_DRIVERS = 12
FAST_QUEUE = 3  # fast cars the simulated drivers keep waiting at most
# what the demo writes in its data directory (``--fresh`` removes exactly these)
DEMO_ENTRIES = (
    "central",
    "gateway",
    "broker",
    "secrets",
    "central.toml",
    "gateway.toml",
    "station.toml",
    "sim.ready.json",
    "sim.log",
    "gateway.log",
    "central.log",
)
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


async def spawn(name: str, argv: list[str], data_dir: Path, env: dict[str, str] | None = None) -> Child:
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
            env={**os.environ, **(env or {})},
        )
    return Child(name, process, log_path)


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Whether another process listens on ``host:port`` (a bind as the servers do it fails)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def check_ports(http_port: int, mqtt_port: int | None) -> None:
    """Refuse, in one line naming the option, a port another process holds."""
    if port_in_use(http_port):
        raise DemoError(
            f"HTTP port {http_port} is in use by another process; choose another with --http-port"
        )
    if mqtt_port and port_in_use(mqtt_port):
        raise DemoError(
            f"MQTT port {mqtt_port} is in use by another process; choose another with --mqtt-port "
            "(or leave it out for a free one)"
        )


class ReadySocket:
    """An abstract unix datagram socket a child names as ``NOTIFY_SOCKET``: it says READY=1 there
    once it serves (the systemd notification protocol)."""

    def __init__(self) -> None:
        self.name = f"@pilegate-demo-{os.getpid()}-{secrets.token_hex(4)}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.name[1:])
        self.sock.setblocking(False)

    async def wait_ready(self, child: Child, timeout_s: float) -> None:
        """Return when ``child`` said READY=1; fail when it exits first or time runs out."""
        loop = asyncio.get_running_loop()

        async def ready() -> bool | None:
            with contextlib.suppress(TimeoutError):
                data = await asyncio.wait_for(loop.sock_recv(self.sock, 4096), 0.1)
                lines = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
                if lines.get("READY") == "1" and lines.get("MAINPID") == str(child.process.pid):
                    return True
            return None

        await wait_for(child, timeout_s, "READY", ready)

    def close(self) -> None:
        self.sock.close()


async def wait_for(child: Child, timeout_s: float, what: str, probe: Callable[[], Awaitable[T | None]]) -> T:
    """Poll ``probe`` until it returns a value; fail when ``child`` dies or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if child.process.returncode is not None:
            raise DemoError(exit_message(child))
        result = await probe()
        if result is not None:
            return result
        await asyncio.sleep(0.05)
    raise DemoError(f"{child.name}: no {what} after {timeout_s}s; see {child.log_path}")


def exit_message(child: Child) -> str:
    """Why a child is gone: its own one-line refusal (a port taken) when it gave one, else its log."""
    tail = (
        child.log_path.read_text(errors="replace").strip().splitlines()[-1:]
        if child.log_path.exists()
        else []
    )
    if tail and tail[0].startswith("cannot listen on "):
        return f"{child.name}: {tail[0]}; choose another port with --http-port"
    return f"{child.name} exited with {child.process.returncode}; see {child.log_path}"


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
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with contextlib.suppress(aiohttp.ClientError, OSError):
        async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as resp:
            if resp.status == 200:
                return await resp.json(content_type=None)
    return None


async def wait_for_http(url: str, child: Child, timeout_s: float, token: str | None = None) -> None:
    """Poll ``url`` until it answers 200."""
    await wait_for(child, timeout_s, f"answer from {url}", lambda: get_json(url, token))


async def wait_for_piles_working(
    url: str, child: Child, piles: set[str], timeout_s: float, token: str
) -> None:
    """Poll the central's pile list until every pile can take cars (seen online with its meter)."""

    async def working() -> bool | None:
        body = await get_json(f"{url}/api/charging/piles/status/", token)
        data = body.get("data", {}) if isinstance(body, dict) else {}
        ok = {
            p["pile_id"]
            for key in ("fast_piles", "slow_piles")
            for p in data.get(key, [])
            if p["status"] == "normal"
        }
        return True if piles <= ok else None

    await wait_for(child, timeout_s, "every pile working at the central", working)


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
    """Latest telemetry per port, fed by an MQTT subscription, rendered as one compact line per port.

    The kWh shown is the current (or last) session's: the meter since the port began charging, not
    the pile's cumulative meter.
    """

    ports: dict[str, dict[str, Any]] = field(default_factory=dict)
    piles: dict[str, str] = field(default_factory=dict)
    session_start_wh: dict[str, int] = field(default_factory=dict)  # meter when the port began charging
    messages: int = 0

    def on_message(self, topic: str, payload: bytes) -> None:
        parts = topic.split("/")
        try:
            data = json.loads(payload)
        except ValueError:
            return
        if parts[-1] == "telemetry":
            key = f"{parts[4]}/{parts[6]}"
            previous = self.ports.get(key, {})
            if data.get("state") == "charging" and previous.get("state") != "charging":
                self.session_start_wh[key] = int(data.get("energy_Wh", 0))
            self.ports[key] = data
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
            session_wh = t.get("energy_Wh", 0) - self.session_start_wh.get(key, t.get("energy_Wh", 0))
            cells.append(
                f"{key} {label:<9} {t.get('power_W', 0) / 1000:5.1f}kW "
                f"{session_wh / 1000:6.2f}kWh this session {t.get('temperature_C', 0):4.1f}°C"
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


def driver_password(data_dir: Path) -> str:
    """The password of the demo's driver accounts, made at the first run and kept for the next."""
    path = data_dir / "secrets" / "drivers.password"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(9) + "\n")
    return path.read_text().strip()


async def your_driver(url: str, password: str, central: Child) -> str:
    """The token of the newcomer's own driver account (registered at the first run)."""

    async def token() -> str | None:
        async with aiohttp.ClientSession() as session:
            return await sign_in(session, url, DRIVER, password)

    return await wait_for(central, 30, f"a login of {DRIVER}", token)


async def start_traffic(url: str, password: str, piles: dict[str, Any], rate_per_min: float) -> None:
    """Simulated drivers filling the ports, then acting at ``rate_per_min``: fast cars queue (up to
    ``FAST_QUEUE`` waiting), and one slow port stays free for an operator's order."""
    ports = {"fast": 0, "slow": 0}
    for ep in piles.values():
        ports["fast" if ep["kind"] == "fast" else "slow"] += int(ep.get("ports", 1))
    caps = {"fast": ports["fast"] + FAST_QUEUE, "slow": max(0, ports["slow"] - 1)}
    cars = [f"demo-car-{n}" for n in range(1, SIMULATED_DRIVERS + 1)]
    await DriverTraffic(url, cars, password, rate_per_min, caps).run(ports)


def password_file(data_dir: Path, user: str) -> Path:
    """Where the demo keeps a broker user's password."""
    return (data_dir / "secrets" / f"{user}.password").resolve()


def secrets_dir(data_dir: Path) -> Path:
    """The demo's secrets directory (mode 0700)."""
    path = data_dir / "secrets"
    path.mkdir(mode=0o700, exist_ok=True)
    path.chmod(0o700)
    return path


def broker_access(data_dir: Path, piles: list[str]) -> StationAccess:
    """New random broker passwords for the demo's users, each written to its 0600 password file;
    the gateway may publish for ``piles``."""
    secrets_dir(data_dir)
    users = [CENTRAL_USER, gateway_user(STATION, GATEWAY), VIEW_USER, INGEST_USER]
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
        readers=[VIEW_USER, INGEST_USER],
    )


async def run_demo(opts: dict[str, Any]) -> None:
    data_dir: Path = opts["data_dir"]
    if opts["fresh"]:
        clear_data_dir(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    check_ports(opts["http_port"], opts["mqtt_port"])
    children: list[Child] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    mqtt_port = opts["mqtt_port"] or free_port()
    broker: BrokerHandle | None = None
    view_client = None
    traffic: asyncio.Task[None] | None = None
    ready_socket = ReadySocket()
    try:
        python = sys.executable
        ready_file = data_dir / "sim.ready.json"
        ready_file.unlink(missing_ok=True)
        params = opts["params"] or _default_params(data_dir)
        sim_argv = [
            python,
            "-m",
            "pilegate.cli",
            "sim",
            "--ready-file",
            str(ready_file),
            "--time-scale",
            str(opts["time_scale"]),
            "--station",
            str(params),
        ]
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
        central_argv = ["central", "--config", str(central_path), "--port", str(opts["http_port"])]
        central = await spawn(
            "central",
            [python, "-m", "pilegate.cli", *central_argv],
            data_dir,
            env={"NOTIFY_SOCKET": ready_socket.name},
        )
        children.append(central)
        await ready_socket.wait_ready(central, 30)  # our central serves the port, not another process
        url = f"http://127.0.0.1:{opts['http_port']}"
        drivers = driver_password(data_dir)
        await wait_for_piles_working(url, central, set(piles), 30, await your_driver(url, drivers, central))
        view = LiveView()
        view_client = subscribe_live_view(view, mqtt_port, access.passwords[VIEW_USER])
        print_ready(opts, url, password, drivers, getattr(broker, "name", "broker"), mqtt_port, piles)
        traffic = loop.create_task(start_traffic(url, drivers, piles, opts["traffic"]), name="traffic")
        await _live(view, stop, children, opts["view_interval_s"])
    finally:
        ready_socket.close()
        if traffic is not None:
            traffic.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await traffic
        if view_client is not None:
            view_client.loop_stop()
            view_client.disconnect()
        for child in reversed(children):
            await child.stop()
        if broker is not None:
            broker.stop()
        click.echo("demo stopped")


def print_ready(
    opts: dict[str, Any],
    url: str,
    admin_password: str,
    driver_password: str,
    broker_name: str,
    mqtt_port: int,
    piles: dict[str, Any],
) -> None:
    """The READY block: where to look, how to log in, where everything is."""
    data_dir = opts["data_dir"]
    pilectl = Path(sys.executable).parent / "pilectl"
    scale = opts["time_scale"]
    traffic = f"{opts['traffic']:g} driver actions a minute" if opts["traffic"] else "no simulated drivers"
    lines = [
        f"READY {url}/",
        f"  dashboard    {url}/   (open it in a browser)",
        f"  operator     admin / {admin_password}   (user API username, operator API openId)",
        f"  driver       {DRIVER} / {driver_password}   (yours; the simulated drivers demo-car-N share it)",
        f"  driver API   {url}/api/charging/...   OpenAPI {url}/api/openapi.json",
        f"  broker       mqtt://127.0.0.1:{mqtt_port} ({broker_name}; no anonymous clients; users' "
        f"passwords in {data_dir / 'secrets'})",
        f"  piles        {', '.join(sorted(piles))} (time scale x{scale:g}: an hour of station time takes "
        f"{60 / scale:.3g} min; {traffic})",
        f"  gateway      {_shown(pilectl)} status --config {data_dir / 'gateway.toml'}",
        f"  data         {data_dir} (configs, *.log, databases, secrets; --fresh starts over)",
    ]
    click.echo("\n".join(lines))
    sys.stdout.flush()


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it is below it (``.venv/bin/pilectl``)."""
    with contextlib.suppress(ValueError):
        return str(path.relative_to(Path.cwd()))
    return str(path)


def clear_data_dir(data_dir: Path) -> None:
    """Remove what an earlier demo wrote in ``data_dir`` (and nothing else)."""
    for name in DEMO_ENTRIES:
        path = data_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


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
            "[ingest]",
            f'username = "{INGEST_USER}"',
            f'password_file = "{password_file(data_dir, INGEST_USER)}"',
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
    default=60.0,
    show_default=True,
    help="simulated seconds per real second (60: a charge takes about a minute)",
)
@click.option("--admin-password", default=None, help="password of the operator account admin")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("data/demo"),
    show_default=True,
    help="configs, logs, databases and secrets; running again on it continues the station",
)
@click.option("--fresh", is_flag=True, help="start over: remove what an earlier demo left in the data dir")
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
    "--traffic",
    type=click.FloatRange(0, 600),
    default=6.0,
    show_default=True,
    help="simulated driver actions a minute (arrive, change, cancel) after filling every port; 0: none",
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

        pilegate demo --time-scale 120 --traffic 10
    """
    broker = opts["broker"]
    opts["broker"] = "mosquitto" if broker in ("auto", "mosquitto") else "embedded"
    # absolute: the generated configs name paths relative to their own directory otherwise
    opts["data_dir"] = opts["data_dir"].resolve()
    if broker == "mosquitto" and not _has_mosquitto():
        raise click.ClickException("mosquitto is not on PATH (use --broker embedded)")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_demo(opts))


def _has_mosquitto() -> bool:
    return shutil.which("mosquitto") is not None or Path("/usr/sbin/mosquitto").exists()
