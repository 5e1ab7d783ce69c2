"""MQTT brokers for tests and the demo, and the ACL file of a production Mosquitto.

* :class:`MosquittoBroker` runs ``mosquitto -c <conf>`` as a child process with a config it writes
  into its data dir (listener on 127.0.0.1, persistence off unless asked, optional password and
  ACL files). :class:`EmbeddedBroker` runs an amqtt broker (QoS 1, retained messages, last will)
  as ``python -m pilegate.broker --port N``, for ``pilegate demo`` when mosquitto is not on PATH.
* Both are **synchronous** handles (:class:`BrokerHandle`): ``start()`` returns once the port
  accepts connections, ``stop()`` terminates (SIGTERM), ``kill()`` is SIGKILL for tests, and
  ``start()`` again reuses the SAME port. They are also context managers (``with broker: ...``).
  ``start()`` blocks for the few milliseconds the broker needs; call it from a thread
  (``asyncio.to_thread``) if the caller's loop must not pause.
* :func:`render_acl` writes the Mosquitto ACL for a station: gateway users may publish only their
  own gateway status and their piles' status/telemetry/event/cmd-result topics and subscribe only
  to their piles' cmd topics; the central user reads everything and publishes only cmd topics.
* :func:`start_broker` with a :class:`StationAccess` runs either broker as production runs
  Mosquitto: no anonymous clients, a password per user (hashed into the broker's own password
  file), the station's ACL and, on Mosquitto, the user name as the client id. A
  :class:`FleetAccess` does the same for several stations and several central instances (each
  central its own user, so each its own client id): :func:`render_fleet_acl`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import getpass
import json
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Protocol, Self

import structlog

from protocols import topics

log = structlog.get_logger(__name__)

HOST = "127.0.0.1"
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
_POLL_S = 0.02
_REPO_ROOT = Path(__file__).resolve().parents[1]


class BrokerError(Exception):
    """A broker could not be started or stopped."""


class BrokerStartError(BrokerError):
    """The broker process exited or did not accept connections in time."""


class AclError(ValueError):
    """An ACL input (station, gateway, pile or user name) cannot be written safely."""


_PORTS = random.SystemRandom()  # not the global generator: tests reseed that one
_LISTEN_PORTS_FROM = 20_000


def _ephemeral_low() -> int:
    """The lowest port the kernel hands out for outgoing connections and port-0 binds."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def free_port(host: str = HOST) -> int:
    """A TCP port that was free a moment ago on ``host``, for a server started next.

    Picked at random below the kernel's ephemeral range, where no outgoing connection takes a
    source port and no port-0 bind lands, so that in the moment between this check and the
    server's bind only another such pick could take it. Port 0's choice when that range is too
    small or full."""
    low = _ephemeral_low()
    for _ in range(50 if low - _LISTEN_PORTS_FROM > 1000 else 0):
        port = _PORTS.randrange(_LISTEN_PORTS_FROM, low)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_accepts(port: int, host: str = HOST, timeout_s: float = 0.2) -> bool:
    """Whether a TCP connect to host:port succeeds now."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGTERM when its parent dies, even by SIGKILL.

    Linux only (``prctl(PR_SET_PDEATHSIG)``); None elsewhere. The signal follows the *thread* that
    started the child: start such children from a thread that lives as long as the parent (the
    main thread or the event loop's), never from a short-lived worker thread.
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here, not in the forked child
    parent = os.getpid()

    def preexec() -> None:
        if prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:  # the parent died before the request took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


class BrokerHandle(Protocol):
    """What :func:`start_broker` returns: a started broker on 127.0.0.1:port."""

    host: str
    port: int

    @property
    def running(self) -> bool: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def kill(self) -> None: ...


class _ProcessBroker:
    """A broker run as a child process; config and output (``broker.log``) live in ``data_dir``
    (a new temporary directory if None). ``port`` None means a free port, chosen once.
    ``die_with_parent``: the broker gets SIGTERM when this process dies (see :func:`die_with_parent`)."""

    name = "broker"

    def __init__(
        self, port: int | None, data_dir: str | Path | None, *, die_with_parent: bool = False
    ) -> None:
        self.die_with_parent = die_with_parent
        self.host = HOST
        self.port = port if port is not None else free_port()
        self.data_dir = Path(data_dir) if data_dir is not None else Path(tempfile.mkdtemp(prefix="pilegate-"))
        self.log_path = self.data_dir / "broker.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = log.bind(broker=self.name, port=self.port)

    def _argv(self) -> list[str]:
        raise NotImplementedError

    def _prepare(self) -> None:
        """Write whatever files the process needs."""

    def _env(self) -> dict[str, str] | None:
        return None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.running and self._proc is not None else None

    def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Start the process and return once the port accepts connections."""
        if self.running:
            raise BrokerError(f"{self.name} on port {self.port} is already running")
        if port_accepts(self.port, self.host):  # else the wait below would take it for this broker
            raise BrokerStartError(f"port {self.port} is in use by another process")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._prepare()
        with self.log_path.open("ab") as out:
            self._proc = subprocess.Popen(
                self._argv(),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self._env(),
                preexec_fn=die_with_parent() if self.die_with_parent else None,
            )
        self._wait_ready(timeout_s)
        self._log.info("broker started", pid=self._proc.pid)

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not port_accepts(self.port, self.host):
            proc = self._proc
            if proc is None or proc.poll() is not None:
                raise BrokerStartError(f"{self.name} exited during start-up: {self.log_tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise BrokerStartError(
                    f"{self.name} not accepting on port {self.port} after {timeout_s} s: {self.log_tail()}"
                )
            time.sleep(_POLL_S)

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of the broker's output (for error messages)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return " | ".join(text.strip().splitlines()[-lines:])

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM and wait (SIGKILL after ``timeout_s``); a stopped broker is left alone."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self._log.warning("broker ignored SIGTERM; killing", pid=proc.pid)
            proc.kill()
            proc.wait()
        self._log.info("broker stopped", pid=proc.pid)

    def kill(self) -> None:
        """SIGKILL: the broker vanishes without closing connections cleanly or saving state."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        self._log.info("broker killed", pid=proc.pid)

    def __enter__(self) -> Self:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class MosquittoBroker(_ProcessBroker):
    """``mosquitto -c <data_dir>/mosquitto.conf`` listening on 127.0.0.1:port.

    ``persistence=True`` keeps sessions, queued QoS 1 messages and retained messages across a
    ``stop()``/``start()`` (saved on SIGTERM, not on ``kill()``). Without a ``password_file``
    anonymous clients are allowed. ``username_as_client_id`` makes the broker use each client's
    user name as its client id, as the production config does.
    """

    name = "mosquitto"

    def __init__(
        self,
        port: int | None = None,
        data_dir: str | Path | None = None,
        *,
        password_file: str | Path | None = None,
        acl_file: str | Path | None = None,
        persistence: bool = False,
        username_as_client_id: bool = False,
        executable: str | None = None,
        die_with_parent: bool = False,
    ) -> None:
        super().__init__(port, data_dir, die_with_parent=die_with_parent)
        self.password_file = Path(password_file) if password_file else None
        self.acl_file = Path(acl_file) if acl_file else None
        self.persistence = persistence
        self.username_as_client_id = username_as_client_id
        self.executable = executable or find_mosquitto()
        if self.executable is None:
            raise BrokerError("mosquitto not found on PATH or in /usr/sbin")
        self.conf_path = self.data_dir / "mosquitto.conf"

    def _argv(self) -> list[str]:
        assert self.executable is not None
        return [self.executable, "-c", str(self.conf_path)]

    def _prepare(self) -> None:
        self.conf_path.write_text(self.render_conf())

    def render_conf(self) -> str:
        """The mosquitto.conf this broker runs with."""
        lines = [
            "# written by pilegate.broker.MosquittoBroker",
            f"user {getpass.getuser()}",
            f"listener {self.port} {self.host}",
            *(["use_username_as_clientid true"] if self.username_as_client_id else []),  # after listener
            f"allow_anonymous {'false' if self.password_file else 'true'}",
            f"persistence {'true' if self.persistence else 'false'}",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "max_queued_messages 0",  # tests subscribe slowly; never drop what they queue
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        ]
        if self.persistence:
            lines.append(f"persistence_location {self.data_dir.resolve()}/")
        if self.password_file:
            lines.append(f"password_file {self.password_file.resolve()}")
        if self.acl_file:
            lines.append(f"acl_file {self.acl_file.resolve()}")
        return "\n".join(lines) + "\n"


def find_mosquitto() -> str | None:
    """Path of the mosquitto executable (PATH, then /usr/sbin), or None."""
    return shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")


def add_mosquitto_user(password_file: str | Path, username: str, password: str) -> None:
    """Create or update ``username`` in a Mosquitto password file (``mosquitto_passwd -b``)."""
    tool = shutil.which("mosquitto_passwd") or shutil.which("mosquitto_passwd", path="/usr/sbin")
    if tool is None:
        raise BrokerError("mosquitto_passwd not found on PATH")
    path = Path(password_file)
    argv = [tool, "-b", str(path), username, password]
    if not path.exists():
        argv.insert(1, "-c")
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BrokerError(f"mosquitto_passwd failed for {username!r}: {result.stderr.strip()}")


class EmbeddedBroker(_ProcessBroker):
    """An amqtt broker in a child process (``python -m pilegate.broker --config <data_dir>/amqtt.json``).

    No persistence; supports QoS 0/1, retained messages and the last will. Anonymous unless given
    a ``password_file`` (amqtt's format, see :func:`write_amqtt_passwords`) and then an ``acl``
    (:func:`amqtt_acl`). Needs the ``demo`` extra (amqtt).
    """

    name = "amqtt"

    def __init__(
        self,
        port: int | None = None,
        data_dir: str | Path | None = None,
        *,
        password_file: str | Path | None = None,
        acl: Mapping[str, Mapping[str, list[str]]] | None = None,
        die_with_parent: bool = False,
    ) -> None:
        super().__init__(port, data_dir, die_with_parent=die_with_parent)
        self.password_file = Path(password_file).resolve() if password_file else None
        self.acl = acl
        self.conf_path = self.data_dir / "amqtt.json"

    def _prepare(self) -> None:
        config = amqtt_config(self.host, self.port, self.password_file, self.acl)
        self.conf_path.write_text(json.dumps(config, indent=2))

    def _argv(self) -> list[str]:
        return [sys.executable, "-m", "pilegate.broker", "--config", str(self.conf_path)]

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_REPO_ROOT), env.get("PYTHONPATH")]))
        return env


@dataclass(frozen=True)
class StationAccess:
    """The users of one station's broker, their passwords and what the ACL lets each do.

    ``gateways`` maps gateway id -> its pile ids (each gateway's user is :func:`gateway_user`);
    ``readers`` are users that may only read the station's topics (a dashboard, the demo's view);
    ``passwords`` holds the password of every one of those users and of ``central_user``.
    """

    station: str
    central_user: str
    gateways: Mapping[str, Sequence[str]]
    passwords: Mapping[str, str]
    readers: Sequence[str] = ()

    def users(self) -> list[str]:
        return [self.central_user, *(gateway_user(self.station, g) for g in self.gateways), *self.readers]

    def fleet(self) -> FleetAccess:
        """The same users as a :class:`FleetAccess` of one station and one central."""
        return FleetAccess(
            stations={self.station: self.gateways},
            central_users=[self.central_user],
            passwords=self.passwords,
            readers=self.readers,
        )


@dataclass(frozen=True)
class FleetAccess:
    """The users of a broker that serves several stations and several central instances.

    ``stations`` maps station code -> its gateways (gateway id -> pile ids; a gateway's user is
    :func:`gateway_user` of its station, so two stations may both have a ``gw1`` and an ``F1``);
    ``central_users`` are the central instances' users, each of which may read every station and
    command every pile (which instance owns a station changes at run time); ``readers`` may only
    read, every station's topics; ``passwords`` holds every user's password.
    """

    stations: Mapping[str, Mapping[str, Sequence[str]]]
    central_users: Sequence[str]
    passwords: Mapping[str, str]
    readers: Sequence[str] = ()

    def users(self) -> list[str]:
        gateways = [gateway_user(s, g) for s, gws in self.stations.items() for g in gws]
        return [*self.central_users, *gateways, *self.readers]


def start_broker(
    port: int,
    data_dir: str | Path,
    prefer: Literal["mosquitto", "embedded"] = "mosquitto",
    *,
    access: StationAccess | FleetAccess | None = None,
    die_with_parent: bool = False,
) -> BrokerHandle:
    """A started broker on 127.0.0.1:port: Mosquitto if preferred and installed, else amqtt.

    With ``access`` it refuses anonymous clients and wrong passwords and enforces the stations'
    ACL (per-user on both brokers; see :func:`amqtt_acl` for how amqtt's differs).
    """
    data = Path(data_dir)
    data.mkdir(parents=True, exist_ok=True)
    fleet = access.fleet() if isinstance(access, StationAccess) else access
    broker: MosquittoBroker | EmbeddedBroker
    if prefer == "mosquitto" and find_mosquitto() is not None:
        if fleet is None:
            broker = MosquittoBroker(port, data, die_with_parent=die_with_parent)
        else:
            write_mosquitto_passwords(data / "passwd", _passwords(fleet))
            (data / "acl").write_text(render_fleet_acl(fleet.stations, fleet.central_users, fleet.readers))
            broker = MosquittoBroker(
                port,
                data,
                password_file=data / "passwd",
                acl_file=data / "acl",
                username_as_client_id=True,
                die_with_parent=die_with_parent,
            )
    elif fleet is None:
        broker = EmbeddedBroker(port, data, die_with_parent=die_with_parent)
    else:
        write_amqtt_passwords(data / "passwd", _passwords(fleet))
        acl = amqtt_fleet_acl(fleet.stations, fleet.central_users, fleet.readers)
        broker = EmbeddedBroker(
            port, data, password_file=data / "passwd", acl=acl, die_with_parent=die_with_parent
        )
    broker.start()
    return broker


def _passwords(access: FleetAccess) -> dict[str, str]:
    missing = [u for u in access.users() if not access.passwords.get(u)]
    if missing:
        raise BrokerError(f"no password for broker users {missing}")
    return {user: access.passwords[user] for user in access.users()}


def _private_file(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by this user only (mode 0600 from the first byte)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def write_mosquitto_passwords(path: Path, passwords: Mapping[str, str]) -> None:
    """A Mosquitto password file (mode 0600) of salted hashes, made by ``mosquitto_passwd -U``.

    The plain passwords go through a 0600 file, never through a command line others could read.
    """
    tool = shutil.which("mosquitto_passwd") or shutil.which("mosquitto_passwd", path="/usr/sbin")
    if tool is None:
        raise BrokerError("mosquitto_passwd not found on PATH")
    _private_file(path, "".join(f"{user}:{password}\n" for user, password in passwords.items()))
    result = subprocess.run([tool, "-U", str(path)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        path.unlink(missing_ok=True)
        raise BrokerError(f"mosquitto_passwd -U failed: {result.stderr.strip()}")


def write_amqtt_passwords(path: Path, passwords: Mapping[str, str]) -> None:
    """amqtt's password file (mode 0600): ``user:argon2-hash`` lines."""
    from pwdlib import PasswordHash  # optional dependency (the demo extra, with amqtt)
    from pwdlib.hashers.argon2 import Argon2Hasher

    hasher = PasswordHash((Argon2Hasher(),))
    _private_file(path, "".join(f"{user}:{hasher.hash(pw)}\n" for user, pw in passwords.items()))


# -- the embedded broker process ----------------------------------------------------------------


def amqtt_config(
    host: str,
    port: int,
    password_file: Path | None = None,
    acl: Mapping[str, Mapping[str, list[str]]] | None = None,
) -> dict[str, Any]:
    """amqtt broker config: one TCP listener, no $SYS chatter; anonymous clients unless a
    ``password_file`` is given (then only its users with their passwords), topics per ``acl``."""
    plugins: dict[str, Any]
    if password_file is None:
        plugins = {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}}
    else:
        plugins = {"amqtt.plugins.authentication.FileAuthPlugin": {"password_file": str(password_file)}}
    if acl is not None:
        plugins["amqtt.plugins.topic_checking.TopicAccessControlListPlugin"] = dict(acl)
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        "timeout_disconnect_delay": 0,
        "plugins": plugins,
    }


@contextlib.asynccontextmanager
async def embedded_broker(config: dict[str, Any]) -> AsyncIterator[None]:
    """Run an amqtt broker with ``config`` (:func:`amqtt_config`) on the current loop for the block."""
    from amqtt.broker import Broker  # optional dependency (the demo extra)

    broker = Broker(config)
    await broker.start()
    try:
        yield
    finally:
        await broker.shutdown()


async def _serve_until_signal(config: dict[str, Any]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with embedded_broker(config):
        print(f"amqtt broker listening on {config['listeners']['default']['bind']}", flush=True)
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> None:
    """Run the embedded broker until SIGTERM/SIGINT.

    ``python -m pilegate.broker --port N`` (anonymous) or ``--config FILE`` (JSON of
    :func:`amqtt_config`, as :class:`EmbeddedBroker` writes it).
    """
    parser = argparse.ArgumentParser(
        prog="python -m pilegate.broker", description="Embedded amqtt MQTT broker for pilegate demo."
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--port", type=int, help="listen on this port, anonymous clients allowed")
    source.add_argument("--config", type=Path, help="amqtt config (JSON) with listener, users and ACL")
    parser.add_argument("--host", default=HOST)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    config = json.loads(args.config.read_text()) if args.config else amqtt_config(args.host, args.port)
    asyncio.run(_serve_until_signal(config))


# -- ACLs ---------------------------------------------------------------------------------------


def gateway_user(station: str, gateway: str) -> str:
    """Broker user name of a gateway (as in config/gateway.example.toml): gw-{station}-{gateway}."""
    return f"gw-{topics.check_id('station', station)}-{topics.check_id('gateway', gateway)}"


def render_acl(
    station: str,
    gateways: Mapping[str, Sequence[str]],
    central_user: str,
    readers: Sequence[str] = (),
    ingest_user: str | None = None,
) -> str:
    """The Mosquitto ACL file for one station.

    ``gateways`` maps gateway id -> the ids of its piles; each gateway's user is
    :func:`gateway_user`. ``readers`` may only read the station's topics; ``ingest_user`` (the
    central's ``pilegate ingest`` process) only telemetry, statuses and events, of every station
    (it stores them all: docs/stations.md). Several stations or central instances:
    :func:`render_fleet_acl`. Raises AclError naming any id that cannot appear in a topic.
    """
    return render_fleet_acl({station: gateways}, [central_user], readers, ingest_user)


def render_fleet_acl(
    stations: Mapping[str, Mapping[str, Sequence[str]]],
    central_users: Sequence[str],
    readers: Sequence[str] = (),
    ingest_user: str | None = None,
) -> str:
    """The Mosquitto ACL file for several stations (code -> gateway id -> pile ids) served by
    several central instances, each user in one block: every central user reads everything and
    publishes every station's commands (a station's owner changes at run time), each gateway
    (:func:`gateway_user` of its station) only its piles' topics, each reader every station's
    topics. For one station and one central it is :func:`render_acl`'s file. Raises AclError
    naming any id that cannot appear in a topic.
    """
    try:
        _check_fleet_input(stations, central_users, readers)
    except topics.TopicError as exc:
        raise AclError(str(exc)) from None
    root = f"{topics.ROOT}/{topics.VERSION}"
    out = [
        f"# Mosquitto ACL for pilegate station{'s' if len(stations) > 1 else ''} {', '.join(stations)}",
        f"# generated by pilegate.broker.{'render_fleet_acl' if len(stations) > 1 else 'render_acl'}; "
        "regenerate when piles move between gateways.",
        "# No anonymous access: nothing is granted before the first 'user' line.",
    ]
    for central_user in central_users:
        out += ["", f"user {central_user}", f"topic read {root}/#", f"topic write {root}/+/pile/+/port/+/cmd"]
    for station, gateways in stations.items():
        for gateway, piles in gateways.items():
            out += [
                "",
                f"user {gateway_user(station, gateway)}",
                f"topic write {topics.gw_status(station, gateway)}",
            ]
            for pile in piles:
                base = f"{root}/{station}/pile/{pile}"
                out += [
                    f"topic write {base}/status",
                    f"topic write {base}/event",
                    f"topic write {base}/port/+/telemetry",
                    f"topic write {base}/port/+/cmd/result",
                    f"topic read {base}/port/+/cmd",
                ]
    if ingest_user is not None:
        topics.check_id("ingest user", ingest_user)
        out += ["", f"user {ingest_user}"] + [  # it stores every station's telemetry
            f"topic read {root}/+/{leaf}"
            for leaf in ("pile/+/port/+/telemetry", "pile/+/status", "pile/+/event", "gw/+/status")
        ]
    for reader in readers:
        out += ["", f"user {reader}", *(f"topic read {root}/{station}/#" for station in stations)]
    return "\n".join(out) + "\n"


def amqtt_acl(
    station: str, gateways: Mapping[str, Sequence[str]], central_user: str, readers: Sequence[str] = ()
) -> dict[str, dict[str, list[str]]]:
    """The amqtt form of :func:`render_acl`: ``publish_acl`` and ``acl`` (subscribe) per user.

    amqtt checks a subscription's filter, not each topic delivered through it, and a gateway
    subscribes to its station's ``pile/+/port/+/cmd``; so there a gateway user may receive the cmd
    topics of every pile of its station (Mosquitto limits it to its own piles). Publishing is
    limited exactly as with Mosquitto.
    """
    return amqtt_fleet_acl({station: gateways}, [central_user], readers)


def amqtt_fleet_acl(
    stations: Mapping[str, Mapping[str, Sequence[str]]],
    central_users: Sequence[str],
    readers: Sequence[str] = (),
) -> dict[str, dict[str, list[str]]]:
    """The amqtt form of :func:`render_fleet_acl` (with :func:`amqtt_acl`'s difference)."""
    try:
        _check_fleet_input(stations, central_users, readers)
    except topics.TopicError as exc:
        raise AclError(str(exc)) from None
    root = f"{topics.ROOT}/{topics.VERSION}"
    publish = {user: [f"{root}/+/pile/+/port/+/cmd"] for user in central_users}
    subscribe = {user: [f"{root}/#"] for user in central_users}
    for station, gateways in stations.items():
        for gateway, piles in gateways.items():
            user = gateway_user(station, gateway)
            publish[user] = [topics.gw_status(station, gateway)]
            for pile in piles:
                base = f"{root}/{station}/pile/{pile}"
                publish[user] += [
                    f"{base}/status",
                    f"{base}/event",
                    f"{base}/port/+/telemetry",
                    f"{base}/port/+/cmd/result",
                ]
            subscribe[user] = [f"{root}/{station}/pile/+/port/+/cmd"]
    for reader in readers:
        publish[reader] = []
        subscribe[reader] = [f"{root}/{station}/#" for station in stations]
    return {"publish_acl": publish, "acl": subscribe}


def _check_fleet_input(
    stations: Mapping[str, Mapping[str, Sequence[str]]], central_users: Sequence[str], readers: Sequence[str]
) -> None:
    if not stations or not central_users:
        raise AclError("an ACL needs at least one station and one central user")
    for station, gateways in stations.items():
        for central_user in central_users:
            _check_acl_input(station, gateways, central_user, readers)
    users = [*central_users, *(gateway_user(s, g) for s, gws in stations.items() for g in gws), *readers]
    repeated = sorted({user for user in users if users.count(user) > 1})
    if repeated:
        raise AclError(f"broker users named twice: {', '.join(repeated)}")


def _check_acl_input(
    station: str, gateways: Mapping[str, Sequence[str]], central_user: str, readers: Sequence[str]
) -> None:
    topics.check_id("station", station)
    topics.check_id("central user", central_user)
    for reader in readers:
        topics.check_id("reader", reader)
    owner: dict[str, str] = {}
    for gateway, piles in gateways.items():
        topics.check_id("gateway", gateway)
        for pile in piles:
            topics.check_id(f"pile of gateway {gateway}", pile)
            if owner.setdefault(pile, gateway) != gateway:
                raise AclError(f"pile {pile!r} listed under gateways {owner[pile]!r} and {gateway!r}")


if __name__ == "__main__":
    main()
