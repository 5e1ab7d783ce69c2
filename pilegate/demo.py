"""``pilegate demo``: whole living stations on one machine, each part a real process.

It starts an MQTT broker (Mosquitto when on PATH, else the embedded Python broker), per station
(``--stations M``, default 1) the simulated piles of the station parameters (default 2 fast + 3
trickle, each a Modbus TCP server) and a gateway polling them, and the central service with its
REST APIs and dashboard; prints ``READY http://127.0.0.1:<port>/`` with the operator and a driver
login once every part is up (the central itself says it serves, over the systemd notification
protocol, so READY never names a port another process answers on), then a compact live view of
the telemetry read back from the broker. Simulated drivers (:mod:`pilegate.traffic`) fill every
station and keep arriving, changing and cancelling; at the default time scale a charge takes
about a minute. One station is ``demo`` (as it always was); several are ``station1`` ...
``stationM``, each with its own piles (F1 ... at every one), gateway and broker user.

``--database postgresql://...`` keeps the central's data in that PostgreSQL database instead of
SQLite in the data directory, and ``--centrals N`` (which needs it) runs N central instances
sharing it and the broker, on ``--http-port`` P, P+1, ...: each instance its own process, broker
user (so its own MQTT client id) and instance id, the stations spread over them by their leases
(docs/fleet.md). When one dies (even ``kill -9``) the demo goes on with the others and starts it
again after ``RESTART_DELAY_S``, as systemd's ``Restart=`` would (``systemd/pilegate-central.service``),
saying so in one line; the simulated drivers turn to another instance meanwhile.

Everything lives in one data directory (``data/demo`` by default): configs, logs, databases and
secrets. Running again on it continues the stations (their clocks go on where they stopped, at the
new time scale); ``--fresh`` starts over (a PostgreSQL database is never emptied by the demo).
Ctrl-C or SIGTERM stops every child, centrals and gateways first so the gateways can flush their
outboxes and leave their status ``offline``; if the demo itself is killed (even SIGKILL) every
child gets SIGTERM from the kernel.

The broker is run as production runs it: no anonymous clients, a random password per user (each
central, its ingest, each gateway, and the read-only live view) kept in
``<data dir>/secrets/<user>.password`` (mode 0600) and given to the gateways and centrals through
their generated configs, and the stations' ACL, so no other local process can publish commands.
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
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import click

from gateway.config import load_config
from pilegate.broker import (
    BrokerHandle,
    FleetAccess,
    die_with_parent,
    free_port,
    gateway_user,
    start_broker,
)
from pilegate.traffic import DRIVER_PHONE, DriverTraffic, sign_in

STATION, GATEWAY = "demo", "gw1"  # the one station's code; every station's gateway id
CENTRAL_USER, VIEW_USER = "pilegate-central", "demo-view"
INGEST_USER = "pilegate-ingest"  # the central's telemetry ingest process: a reader of the stations
DRIVER = "demo-driver"  # the newcomer's own driver account; the simulated ones are demo-car-N
SIMULATED_DRIVERS = 12  # per station
FAST_QUEUE = 3  # fast cars the simulated drivers keep waiting at most, per station
RESTART_DELAY_S = 2.0  # as systemd/pilegate-central.service's RestartSec
RESTART_ATTEMPTS = 5  # a central that fails to come back this many times in a row ends the demo
# what the demo writes in its data directory (``--fresh`` removes exactly these; globs allowed)
DEMO_ENTRIES = (
    "central",
    "gateway",
    "broker",
    "secrets",
    "stations",
    "central.toml",
    "gateway.toml",
    "station.toml",
    "sim.ready.json",
    "sim.log",
    "gateway.log",
    "central.log",
    "central-[0-9]*",
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


async def spawn(
    name: str, argv: list[str], directory: Path, env: dict[str, str] | None = None, log_name: str = ""
) -> Child:
    """Start a child with its output in ``directory/LOG_NAME.log`` (default: its name), in its own
    session; it gets SIGTERM when the demo dies."""
    log_path = directory / f"{log_name or name}.log"
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


def check_ports(http_ports: list[int], mqtt_port: int | None) -> None:
    """Refuse, in one line naming the option, a port another process holds."""
    for http_port in http_ports:
        if port_in_use(http_port):
            which = "" if len(http_ports) == 1 else f" (central {http_ports.index(http_port) + 1})"
            raise DemoError(
                f"HTTP port {http_port}{which} is in use by another process; choose another with --http-port"
            )
    if mqtt_port and port_in_use(mqtt_port):
        raise DemoError(
            f"MQTT port {mqtt_port} is in use by another process; choose another with --mqtt-port "
            "(or leave it out for a free one)"
        )


class ReadySocket:
    """An abstract unix datagram socket a child names as ``NOTIFY_SOCKET``: it says READY=1 there
    once it serves (the systemd notification protocol). Close it once the child is ready: the child
    keeps sending watchdog pings, and a socket nobody reads fills up and blocks its sender."""

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
    """Why a child is gone: its own one-line refusal (a port taken, a database in use) when it gave
    one, else its log."""
    tail = (
        child.log_path.read_text(errors="replace").strip().splitlines()[-1:]
        if child.log_path.exists()
        else []
    )
    if tail and tail[0].startswith("cannot listen on "):
        return f"{child.name}: {tail[0]}; choose another port with --http-port"
    if tail and child.process.returncode == 2 and not tail[0].startswith(("{", " ", "Traceback")):
        return f"{child.name} refused to start: {tail[0]} (see {child.log_path})"
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
    url: str, child: Child, station: str, piles: set[str], timeout_s: float, token: str
) -> None:
    """Poll the central's pile list of ``station`` until every pile can take cars (seen online with
    its meter)."""

    async def working() -> bool | None:
        query = urllib.parse.urlencode({"station": station})
        body = await get_json(f"{url}/api/charging/piles/status/?{query}", token)
        data = body.get("data", {}) if isinstance(body, dict) else {}
        ok = {
            p["pile_id"]
            for key in ("fast_piles", "slow_piles")
            for p in data.get(key, [])
            if p["status"] == "normal"
        }
        return True if piles <= ok else None

    await wait_for(child, timeout_s, f"every pile of {station} working at the central", working)


async def wait_for_piles_online(
    url: str, child: Child, piles: set[str], timeout_s: float, token: str
) -> None:
    """Poll the gateway's status until it has read every pile once (commands need that)."""

    async def all_online() -> bool | None:
        status = await get_json(url, token)
        states = {k: v["state"] for k, v in status["piles"].items()} if status else {}
        return True if all(states.get(p) in ("online", "faulted") for p in piles) else None

    await wait_for(child, timeout_s, f"every pile online at {url}", all_online)


@dataclass
class DemoStation:
    """One station of the demo: its code, the directory of its simulator's and gateway's files
    (the data directory itself when the demo runs one station), and those two processes."""

    code: str
    directory: Path
    piles: dict[str, Any] = field(default_factory=dict)
    sim: Child | None = None
    gateway: Child | None = None

    @property
    def gateway_config(self) -> Path:
        return self.directory / "gateway.toml"


def demo_stations(data_dir: Path, count: int) -> list[DemoStation]:
    """``demo`` alone (as it always was), else ``station1`` ... ``stationM`` in ``data_dir/stations``."""
    if count == 1:
        return [DemoStation(STATION, data_dir)]
    codes = [f"station{n}" for n in range(1, count + 1)]
    return [DemoStation(code, data_dir / "stations" / code) for code in codes]


def gateway_toml(
    station: DemoStation, mqtt_port: int, control_port: int, data_dir: Path, poll_period_s: float
) -> str:
    """A gateway config for a station's simulated piles (one TCP bus per pile), with its broker login."""
    user = gateway_user(station.code, GATEWAY)
    lines = [
        "[gateway]",
        f'id = "{GATEWAY}"',
        f'station = "{station.code}"',
        f'data_dir = "{station.directory / "gateway"}"',
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
    for pile_id, ep in sorted(station.piles.items()):
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
    """Latest telemetry per port, fed by an MQTT subscription, rendered as one compact line per port
    (one station), or one line per station (several: ports charging, power, kWh this session).

    The kWh shown is the current (or last) session's: the meter since the port began charging, not
    the pile's cumulative meter.
    """

    ports: dict[str, dict[str, Any]] = field(default_factory=dict)  # "station/pile/port"
    piles: dict[str, str] = field(default_factory=dict)  # "station/pile"
    session_start_wh: dict[str, int] = field(default_factory=dict)  # meter when the port began charging
    messages: int = 0
    per_station: bool = False

    def on_message(self, topic: str, payload: bytes) -> None:
        parts = topic.split("/")
        try:
            data = json.loads(payload)
        except ValueError:
            return
        if len(parts) < 5 or parts[3] != "pile":
            return
        if parts[-1] == "telemetry" and len(parts) >= 7:
            key = f"{parts[2]}/{parts[4]}/{parts[6]}"
            previous = self.ports.get(key, {})
            if data.get("state") == "charging" and previous.get("state") != "charging":
                self.session_start_wh[key] = int(data.get("energy_Wh", 0))
            self.ports[key] = data
            self.messages += 1
        elif parts[-1] == "status":
            self.piles[f"{parts[2]}/{parts[4]}"] = data.get("state", "?")

    def _session_wh(self, key: str) -> int:
        t = self.ports[key]
        return int(t.get("energy_Wh", 0) - self.session_start_wh.get(key, t.get("energy_Wh", 0)))

    def _label(self, key: str) -> str:
        state = self.piles.get(key.rsplit("/", 1)[0], "?")
        return str(self.ports[key].get("state", "?")) if state == "online" else state

    def render(self) -> str:
        head = time.strftime("%H:%M:%S ") + f"msgs {self.messages}\n  "
        if self.per_station:
            return head + "\n  ".join(self._station_line(code) for code in self._stations())
        cells = []
        for key in sorted(self.ports):
            t = self.ports[key]
            cells.append(
                f"{key.split('/', 1)[1]} {self._label(key):<9} {t.get('power_W', 0) / 1000:5.1f}kW "
                f"{self._session_wh(key) / 1000:6.2f}kWh this session {t.get('temperature_C', 0):4.1f}°C"
            )
        return head + "\n  ".join(cells)

    def _stations(self) -> list[str]:
        return sorted({key.split("/", 1)[0] for key in self.ports}, key=lambda c: (len(c), c))

    def _station_line(self, code: str) -> str:
        keys = sorted(k for k in self.ports if k.split("/", 1)[0] == code)
        charging = [k for k in keys if self._label(k) == "charging"]
        power_kw = sum(self.ports[k].get("power_W", 0) for k in keys) / 1000
        session_kwh = sum(self._session_wh(k) for k in charging) / 1000
        others = sorted({self._label(k) for k in keys} - {"charging", "available"})
        return (
            f"{code:<10} {len(charging)}/{len(keys)} charging {power_kw:6.1f}kW "
            f"{session_kwh:7.2f}kWh this session" + (f" ({', '.join(others)})" if others else "")
        )


def subscribe_live_view(view: LiveView, port: int, password: str, stations: list[str]) -> Any:
    """A paho client (own thread) that feeds ``view`` from the stations' topics (read-only user)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"demo-view-{os.getpid()}")
    client.username_pw_set(VIEW_USER, password)
    client.on_connect = lambda c, *_: c.subscribe([(f"pilegate/v1/{code}/#", 0) for code in stations])
    client.on_message = lambda _c, _u, msg: view.on_message(msg.topic, bytes(msg.payload))
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def driver_password(data_dir: Path) -> tuple[str, bool]:
    """The password of the demo's driver accounts, made at the first run and kept for the next;
    whether it is new (made now)."""
    path = data_dir / "secrets" / "drivers.password"
    new = not path.exists()
    if new:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(9) + "\n")
    return path.read_text().strip(), new


async def your_driver(url: str, password: str, central: Child) -> str:
    """The token of the newcomer's own driver account (registered at the first run)."""

    async def token() -> str | None:
        async with aiohttp.ClientSession() as session:
            return await sign_in(session, url, DRIVER, password)

    return await wait_for(central, 30, f"login of {DRIVER}", token)


async def start_traffic(
    urls: list[str], password: str, station: DemoStation, number: int, rate_per_min: float, named: bool
) -> None:
    """Simulated drivers of the ``number``-th station (from 0) filling its ports, then acting at
    ``rate_per_min``: fast cars queue (up to ``FAST_QUEUE`` waiting), and one slow port stays free
    for an operator's order. ``named``: their requests name the station (else the default one)."""
    ports = {"fast": 0, "slow": 0}
    for ep in station.piles.values():
        ports["fast" if ep["kind"] == "fast" else "slow"] += int(ep.get("ports", 1))
    caps = {"fast": ports["fast"] + FAST_QUEUE, "slow": max(0, ports["slow"] - 1)}
    first = number * SIMULATED_DRIVERS + 1
    cars = [f"demo-car-{n}" for n in range(first, first + SIMULATED_DRIVERS)]
    code = station.code if named else None
    await DriverTraffic(urls, cars, password, rate_per_min, caps, station=code).run(ports)


def password_file(data_dir: Path, user: str) -> Path:
    """Where the demo keeps a broker user's password."""
    return (data_dir / "secrets" / f"{user}.password").resolve()


def secrets_dir(data_dir: Path) -> Path:
    """The demo's secrets directory (mode 0700)."""
    path = data_dir / "secrets"
    path.mkdir(mode=0o700, exist_ok=True)
    path.chmod(0o700)
    return path


def broker_access(data_dir: Path, stations: list[DemoStation], centrals: int) -> FleetAccess:
    """New random broker passwords for the demo's users (each central instance, each station's
    gateway, the view, the ingest), each written to its 0600 password file; each gateway may
    publish for its station's piles."""
    secrets_dir(data_dir)
    central_users = [central_user(n) for n in range(1, centrals + 1)]
    gateways = [gateway_user(s.code, GATEWAY) for s in stations]
    passwords = {
        user: secrets.token_urlsafe(24) for user in [*central_users, *gateways, VIEW_USER, INGEST_USER]
    }
    for user, password in passwords.items():
        path = password_file(data_dir, user)
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(password + "\n")
    return FleetAccess(
        stations={s.code: {GATEWAY: sorted(s.piles)} for s in stations},
        central_users=central_users,
        passwords=passwords,
        readers=[VIEW_USER, INGEST_USER],
    )


def central_name(number: int) -> str:
    """The ``number``-th central instance's name (its log, config and data dir): ``central``,
    ``central-2``, ..."""
    return "central" if number == 1 else f"central-{number}"


def central_user(number: int) -> str:
    """The ``number``-th central instance's broker user (Mosquitto makes it the client id, so two
    instances never share one)."""
    return CENTRAL_USER if number == 1 else f"{CENTRAL_USER}-{number}"


@dataclass
class Central:
    """One central instance of the demo; ``child`` is its current process."""

    number: int
    config: Path
    port: int
    child: Child | None = None
    failures: int = 0  # starts in a row that died before they served

    @property
    def name(self) -> str:
        return central_name(self.number)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class Centrals:
    """The demo's central instances: started, watched, and started again ``RESTART_DELAY_S`` after
    one dies, as systemd's ``Restart=always`` does (``systemd/pilegate-central.service``)."""

    def __init__(self, data_dir: Path, configs: list[Path], http_port: int) -> None:
        self.data_dir = data_dir
        self.instances = [Central(n, path, http_port + n - 1) for n, path in enumerate(configs, start=1)]
        self.restarts: dict[int, asyncio.Task[None]] = {}

    @property
    def urls(self) -> list[str]:
        return [c.url for c in self.instances]

    async def start(self, central: Central) -> None:
        """Start ``central`` and return once it says it serves (READY=1 from its own pid)."""
        ready = ReadySocket()
        try:
            argv = [sys.executable, "-m", "pilegate.cli", "central", "--config", str(central.config)]
            central.child = await spawn(
                central.name,
                [*argv, "--port", str(central.port)],
                self.data_dir,
                env={"NOTIFY_SOCKET": ready.name},
            )
            await ready.wait_ready(central.child, 60)  # our central serves the port, not another process
        finally:
            ready.close()

    def watch(self) -> None:
        """Schedule the restart of every central that died; raise :class:`DemoError` when one keeps
        failing to come back."""
        for number, task in list(self.restarts.items()):
            if task.done():
                del self.restarts[number]
                task.result()  # a DemoError of the restart ends the demo
        for central in self.instances:
            child = central.child
            if child is None or child.process.returncode is None or central.number in self.restarts:
                continue
            self.restarts[central.number] = asyncio.get_running_loop().create_task(
                self._restart(central, child), name=f"restart {central.name}"
            )

    async def _restart(self, central: Central, dead: Child) -> None:
        code = dead.process.returncode or 0
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with {code}"
        others = [c.url + "/" for c in self.instances if c is not central and alive(c.child)]
        meanwhile = f"; {' '.join(others)} serve{'s' if len(others) == 1 else ''} meanwhile" if others else ""
        say(
            f"{central.name} (pid {dead.process.pid}) {how}; restarting it in {RESTART_DELAY_S:g} s, "
            f"as systemd's Restart= would{meanwhile}"
        )
        await asyncio.sleep(RESTART_DELAY_S)
        try:
            await self.start(central)
        except DemoError as exc:
            central.failures += 1
            if central.failures >= RESTART_ATTEMPTS:
                raise DemoError(
                    f"{central.name} failed to come back {central.failures} times: {exc}"
                ) from None
            say(f"{central.name} did not come back: {exc}")
            return
        central.failures = 0
        assert central.child is not None
        say(f"{central.name} is back (pid {central.child.process.pid}), serving {central.url}/")

    async def stop(self) -> None:
        for task in self.restarts.values():
            task.cancel()
        for task in self.restarts.values():
            with contextlib.suppress(asyncio.CancelledError, DemoError):
                await task
        self.restarts.clear()
        await asyncio.gather(*(c.child.stop() for c in self.instances if c.child is not None))


def alive(child: Child | None) -> bool:
    return child is not None and child.process.returncode is None


def say(line: str) -> None:
    """One line of the demo's own output, at once."""
    click.echo(line)
    sys.stdout.flush()


async def run_demo(opts: dict[str, Any]) -> None:
    data_dir: Path = opts["data_dir"]
    if opts["fresh"]:
        clear_data_dir(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    check_ports([opts["http_port"] + n for n in range(opts["centrals"])], opts["mqtt_port"])
    if opts["database"]:
        await asyncio.to_thread(check_database, opts["database"])
    children: list[Child] = []  # the simulators, then the gateways
    centrals: Centrals | None = None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    mqtt_port = opts["mqtt_port"] or free_port()
    broker: BrokerHandle | None = None
    view_client = None
    traffic: list[asyncio.Task[None]] = []
    stations = demo_stations(data_dir, opts["stations"])
    try:
        params = opts["params"] or _default_params(data_dir)
        for station in stations:
            station.directory.mkdir(parents=True, exist_ok=True)
            station.sim = await start_sim(station, params, opts["time_scale"], len(stations) > 1)
            children.append(station.sim)
        for station in stations:
            assert station.sim is not None
            ready_file = station.directory / "sim.ready.json"
            station.piles = (await wait_for_file(ready_file, station.sim, 30))["piles"]
        access = broker_access(data_dir, stations, opts["centrals"])
        # started from this (the main) thread, so that it dies with the demo
        broker = start_broker(
            mqtt_port, data_dir / "broker", prefer=opts["broker"], access=access, die_with_parent=True
        )
        control = {s.code: free_port() for s in stations}
        for station in stations:
            station.gateway = await start_gateway(station, mqtt_port, control[station.code], data_dir, opts)
            children.append(station.gateway)
        for station in stations:
            assert station.gateway is not None
            status = f"http://127.0.0.1:{control[station.code]}/status"
            token = await wait_for_token(
                load_config(station.gateway_config).control_token_file, station.gateway, 30
            )
            await wait_for_http(status, station.gateway, 30, token)
            await wait_for_piles_online(status, station.gateway, set(station.piles), 30, token)
        configs = []
        for number in range(1, opts["centrals"] + 1):
            path = data_dir / f"{central_name(number)}.toml"
            path.write_text(central_toml(mqtt_port, data_dir, opts, number, [s.code for s in stations]))
            configs.append(path)
        password = opts["admin_password"] or secrets.token_urlsafe(12)
        drivers, new = driver_password(data_dir)
        cars = [f"demo-car-{n}" for n in range(1, SIMULATED_DRIVERS * len(stations) + 1)]
        await create_accounts(configs[0], password, drivers, [DRIVER, *cars], reset=new)
        centrals = Centrals(data_dir, configs, opts["http_port"])
        for central in centrals.instances:
            await centrals.start(central)
        first = centrals.instances[0]
        assert first.child is not None
        token = await your_driver(first.url, drivers, first.child)
        for station in stations:
            await wait_for_piles_working(first.url, first.child, station.code, set(station.piles), 60, token)
        view = LiveView(per_station=len(stations) > 1)
        codes = [s.code for s in stations]
        view_client = subscribe_live_view(view, mqtt_port, access.passwords[VIEW_USER], codes)
        print_ready(
            opts, centrals.urls, password, drivers, getattr(broker, "name", "broker"), mqtt_port, stations
        )
        for n, station in enumerate(stations):
            run = start_traffic(centrals.urls, drivers, station, n, opts["traffic"], len(stations) > 1)
            traffic.append(loop.create_task(run, name=f"traffic {station.code}"))
        await _live(view, stop, children, centrals, opts["view_interval_s"])
    finally:
        for task in traffic:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if view_client is not None:
            view_client.loop_stop()
            view_client.disconnect()
        if centrals is not None:
            await centrals.stop()
        for child in reversed(children):
            await child.stop()
        if broker is not None:
            broker.stop()
        click.echo("demo stopped")


async def start_sim(station: DemoStation, params: Path, time_scale: float, named: bool) -> Child:
    """The simulated piles of ``station`` (``named``: its code in the child's name)."""
    ready_file = station.directory / "sim.ready.json"
    ready_file.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "pilegate.cli", "sim", "--ready-file", str(ready_file)]
    argv += ["--time-scale", str(time_scale), "--station", str(params)]
    return await spawn(f"{station.code} sim" if named else "sim", argv, station.directory, log_name="sim")


async def start_gateway(
    station: DemoStation, mqtt_port: int, control_port: int, data_dir: Path, opts: dict[str, Any]
) -> Child:
    """The gateway polling ``station``'s piles, with its generated config."""
    path = station.gateway_config
    path.write_text(gateway_toml(station, mqtt_port, control_port, data_dir, opts["poll_period_s"]))
    name = "gateway" if opts["stations"] == 1 else f"{station.code} gateway"
    argv = [sys.executable, "-m", "pilegate.cli", "gateway", "--config", str(path)]
    return await spawn(name, argv, station.directory, log_name="gateway")


def shown_database(url: str) -> str:
    """A database URL as printed: its password, if any, hidden."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def check_database(url: str) -> None:
    """Refuse in one line a database no server answers for."""
    import psycopg  # only when the demo runs on PostgreSQL

    try:
        psycopg.connect(url, connect_timeout=5, autocommit=True).close()
    except psycopg.Error as exc:
        reason = " ".join(line.strip() for line in str(exc).splitlines()) or type(exc).__name__
        raise DemoError(f"cannot reach the database {shown_database(url)}: {reason}") from None


def print_ready(
    opts: dict[str, Any],
    urls: list[str],
    admin_password: str,
    driver_password: str,
    broker_name: str,
    mqtt_port: int,
    stations: list[DemoStation],
) -> None:
    """The READY block: where to look, how to log in, where everything is."""
    data_dir = opts["data_dir"]
    url = urls[0]
    pilectl = Path(sys.executable).parent / "pilectl"
    scale = opts["time_scale"]
    traffic = f"{opts['traffic']:g} driver actions a minute" if opts["traffic"] else "no simulated drivers"
    several = len(stations) > 1
    piles = ", ".join(sorted(stations[0].piles))
    lines = [f"READY {url}/", f"  dashboard    {url}/   (open it in a browser)"]
    if len(urls) > 1:
        lines.append(
            f"  centrals     {'  '.join(u + '/' for u in urls)}   ({len(urls)} instances sharing one "
            f"database: any serves every station; one that dies is restarted after {RESTART_DELAY_S:g} s)"
        )
    if opts["database"]:
        lines.append(f"  database     {shown_database(opts['database'])}")
    lines += [
        f"  operator     admin / {admin_password}   (user API username, operator API openId)",
        f"  driver       {DRIVER} / {driver_password}   (yours; the simulated drivers demo-car-N share it)",
        f"  driver API   {url}/api/charging/...   OpenAPI {url}/api/openapi.json",
        f"  broker       mqtt://127.0.0.1:{mqtt_port} ({broker_name}; no anonymous clients; users' "
        f"passwords in {data_dir / 'secrets'})",
    ]
    if several:
        lines.append(
            f"  stations     {', '.join(s.code for s in stations)}   (each its own piles and gateway; "
            'a request\'s "station" or ?station=CODE names one)'
        )
        traffic += " per station"
    lines.append(
        f"  piles        {piles}{' at each station' if several else ''} (time scale x{scale:g}: an hour of "
        f"station time takes {60 / scale:.3g} min; {traffic})"
    )
    config = stations[0].gateway_config
    shown = str(config).replace(f"/{stations[0].code}/", "/CODE/") if several else str(config)
    lines += [
        f"  gateway      {_shown(pilectl)} status --config {shown}",
        f"  data         {data_dir} (configs, *.log, databases, secrets; --fresh starts over)",
    ]
    say("\n".join(lines))


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it is below it (``.venv/bin/pilectl``)."""
    with contextlib.suppress(ValueError):
        return str(path.relative_to(Path.cwd()))
    return str(path)


def clear_data_dir(data_dir: Path) -> None:
    """Remove what an earlier demo wrote in ``data_dir`` (and nothing else)."""
    for pattern in DEMO_ENTRIES:
        for path in data_dir.glob(pattern):
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)


async def _live(
    view: LiveView, stop: asyncio.Event, children: list[Child], centrals: Centrals, interval_s: float
) -> None:
    """Render the view every ``interval_s`` (0: never) until stopped; restart a central that died;
    end the demo when another child died."""
    tick_s = min(interval_s, 0.25) if interval_s > 0 else 0.25
    shown_at = time.monotonic()
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), tick_s)
        dead = [c for c in children if c.process.returncode is not None]
        if dead:
            raise DemoError(
                f"{dead[0].name} exited with {dead[0].process.returncode}; see {dead[0].log_path}"
            )
        centrals.watch()
        if interval_s > 0 and not stop.is_set() and time.monotonic() - shown_at >= interval_s:
            shown_at = time.monotonic()
            say(view.render())


def central_toml(mqtt_port: int, data_dir: Path, opts: dict[str, Any], number: int, codes: list[str]) -> str:
    """The ``number``-th central instance's config: every station (the first the default one),
    its own data dir, broker user and client id; the database in its data dir, or ``--database``."""
    params = Path(opts["params"] or _default_params(data_dir)).resolve()
    user = central_user(number)
    suffix = "" if number == 1 else f"-{number}"
    lines = [
        "[central]",
        f'station = "{codes[0]}"',
        f'station_name = "pilegate demo {"station" if len(codes) == 1 else codes[0]}"',
        f'data_dir = "{data_dir / central_name(number)}"',
        f'instance = "demo-central-{number}"',  # its name among the instances sharing the database
        *([f"database = {json.dumps(opts['database'])}"] if opts["database"] else []),
        f"time_scale = {opts['time_scale']}",
        'log_format = "json"',
        "",
        "[mqtt]",
        f'url = "mqtt://127.0.0.1:{mqtt_port}"',
        f'client_id = "pilegate-central-demo{suffix}"',
        f'username = "{user}"',
        f'password_file = "{password_file(data_dir, user)}"',
        "",
        "[ingest]",
        f'username = "{INGEST_USER}"',
        f'password_file = "{password_file(data_dir, INGEST_USER)}"',
        "",
        "[station]",
        f'params_file = "{params}"',
        "",
    ]
    for code in codes[1:]:
        lines += [f"[stations.{code}]", f'name = "pilegate demo {code}"', f'params_file = "{params}"', ""]
    return "\n".join(lines)


async def create_accounts(
    config: Path, admin_password: str, drivers_password: str, drivers: list[str], reset: bool
) -> None:
    """The operator account ``admin`` with ``admin_password`` (created, or its password reset) and
    the driver accounts ``drivers`` not there yet (``reset``: those there too get
    ``drivers_password``, a new one: a new data directory on a database an earlier one used),
    written to the central's database as ``pilegate create-user`` does: registering dozens of
    drivers through the API from one address would meet the central's registration limit."""
    from central.adapters.schema import migrations  # only the demo's start needs the central's code
    from central.adapters.storage import Store
    from central.adapters.users import create_or_update_user, create_user, find_login
    from central.config import load_config as load_central_config
    from central.domain.levels import PermissionLevel

    def write(db: Any) -> None:
        create_or_update_user(db, "admin", admin_password, level=PermissionLevel.SUPER_ADMIN, update=True)
        now = datetime.now(UTC)
        for username in drivers:
            if find_login(db, username) is None:
                email = f"{username}@example.invalid"
                create_user(db, username, drivers_password, email=email, phone=DRIVER_PHONE, now=now)
            elif reset:
                create_or_update_user(db, username, drivers_password, update=True, now=now)

    store = Store(load_central_config(config).database_url, [migrations])
    try:
        await store.open()
        await store.write(write)
    except Exception as exc:
        raise DemoError(f"could not create the demo's accounts: {exc}") from exc
    finally:
        await store.close()


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
    help="port of the central service's REST APIs (with --centrals N: the first; the others follow)",
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
    help="configs, logs, databases and secrets; running again on it continues the stations",
)
@click.option(
    "--fresh",
    is_flag=True,
    help="start over: remove what an earlier demo left in the data dir (never empties a --database)",
)
@click.option(
    "--params",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="station parameters TOML (pile counts and powers), for every station",
)
@click.option(
    "--stations",
    type=click.IntRange(1, 50),
    default=1,
    show_default=True,
    help="stations, each with its own simulated piles and gateway: demo alone, else station1..M",
)
@click.option(
    "--database",
    default=None,
    metavar="postgresql://...",
    help="keep the central's data in this PostgreSQL database (default: SQLite in the data dir)",
)
@click.option(
    "--centrals",
    type=click.IntRange(1, 9),
    default=1,
    show_default=True,
    help="central instances sharing --database (more than 1 needs PostgreSQL)",
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
    help="simulated driver actions a minute per station (arrive, change, cancel) after filling every "
    "port; 0: none",
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
    """Run whole simulated stations on this machine until Ctrl-C.

    Example:

        pilegate demo --time-scale 120 --traffic 10
        pilegate demo --stations 2 --database postgresql://pilegate@127.0.0.1/pilegate --centrals 2
    """
    broker = opts["broker"]
    opts["broker"] = "mosquitto" if broker in ("auto", "mosquitto") else "embedded"
    # absolute: the generated configs name paths relative to their own directory otherwise
    opts["data_dir"] = opts["data_dir"].resolve()
    if opts["centrals"] > 1 and not opts["database"]:
        raise click.UsageError(
            f"--centrals {opts['centrals']} needs --database postgresql://...: several central "
            "instances share one PostgreSQL database (SQLite serves one central)"
        )
    if opts["database"] and not opts["database"].startswith(("postgresql://", "postgres://")):
        raise click.BadParameter(
            f"expected a postgresql://user@host:port/db URL, got {opts['database']!r} "
            "(without --database the demo keeps SQLite in its data directory)",
            param_hint="'--database'",
        )
    if broker == "mosquitto" and not _has_mosquitto():
        raise click.ClickException("mosquitto is not on PATH (use --broker embedded)")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_demo(opts))


def _has_mosquitto() -> bool:
    return shutil.which("mosquitto") is not None or Path("/usr/sbin/mosquitto").exists()
