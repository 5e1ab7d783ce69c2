"""The telemetry ingest as a process of its own: ``pilegate ingest --config central.toml``.

It stores what the piles' telemetry says (the ``telemetry`` rows and the live fields of ports and
piles) through its own store, with its own writer thread, on the same database as the central,
and shares nothing else with it. The central (``[ingest] mode = "process"``) starts
it as a supervised child (:class:`IngestChild`: restarted when it dies) and keeps only the live
path (charging sessions, statuses, events, command results); under systemd it can run as its own
unit instead (``mode = "external"``, ``systemd/pilegate-ingest.service``).

It stores the telemetry of every station on the broker (``pilegate/v1/+/...``): one
:class:`~central.adapters.ingest.Ingest` per station, made when the station's first message comes,
all on one MQTT client. They share its acknowledgements (:class:`SharedAcks`): a message is
acknowledged once every station's ingest has stored what it received before it.

Nothing is lost or stored twice across a crash: its MQTT client has its own client id and a
persistent session, acknowledges a message only once the batch holding it committed
(``manual_ack``), and on start seeds its de-duplication from the last rows stored, so the
messages the broker sends again are dropped if they were stored already.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from pathlib import Path
from typing import Any

import click
import structlog

from central.adapters import postgres, telemetry
from central.adapters.database import POSTGRESQL, parse_database_url
from central.adapters.fleet_schema import FLEET_MIGRATIONS
from central.adapters.ingest import Ingest
from central.adapters.mqtt import CentralMqtt, MqttSettings
from central.adapters.schema import ORDER_MIGRATIONS, migrations
from central.adapters.storage import DatabaseLock, Store
from central.config import CentralConfig, load_config
from pilegate.broker import die_with_parent
from pilegate.logs import configure_logging
from pilegate.sdnotify import Notifier
from pilegate.settings import ConfigError
from protocols import topics
from protocols.payloads import CommandResult, PileEvent, Telemetry

log = structlog.get_logger(__name__)

SEED_ROWS = 50_000  # more than the broker's in-flight window plus a batch: what may come again
FLUSH_ROWS = 1_000  # unacknowledged messages that start a write before the interval
FLUSH_INTERVAL_S = 0.02  # how long a message waits at most for its write (and its PUBACK)
INGEST_LOCK_KEY = 0x70696C65_696E6774  # "pileingt": the advisory lock of "one ingest per database"
RESTART_MIN_S, RESTART_MAX_S = 0.5, 10.0
STABLE_RUN_S = 30.0  # a child that ran this long restarts after the shortest pause again
STOP_TIMEOUT_S = 10.0


class IngestLocked(Exception):
    """Another ingest process stores this database's telemetry already."""


class NoListener:
    """The ingest process tells nobody: the central's own MQTT client feeds its live path."""

    def on_telemetry(self, pile_no: str, port: int, reading: Telemetry) -> None:
        return None

    def on_pile_state(self, pile_no: str, state: str) -> None:
        return None

    def on_command_result(self, pile_no: str, port: int, result: CommandResult) -> None:
        return None

    def on_pile_event(self, pile_no: str, event: PileEvent) -> None:
        return None


def ingest_subscriptions(station: str = "+") -> list[str]:
    """What the ingest needs: telemetry, and the statuses that say whether a pile's data is live
    (of one station, or of every station: ``+``)."""
    root = f"{topics.ROOT}/{topics.VERSION}/{station}"
    return [f"{root}/pile/+/port/+/telemetry", f"{root}/pile/+/status", f"{root}/gw/+/status"]


def ingest_mqtt_settings(config: CentralConfig) -> MqttSettings:
    """The central's broker settings with the ingest's own identity and manual acknowledgements."""
    m, i = config.mqtt, config.ingest
    return MqttSettings(
        host=m.host,
        port=m.port,
        username=i.username or m.username,
        password=i.password if i.username else m.password,
        client_id=i.client_id or f"{m.client_id}-ingest",
        tls=m.tls,
        keepalive_s=m.keepalive_s,
        manual_ack=True,
    )


class IngestLock:
    """ "One ingest per database": a ``flock`` on ``<database>.ingest.lock`` beside a SQLite file, a
    session-level advisory lock of its own key on PostgreSQL. The central's lock is another one."""

    def __init__(self, database: str) -> None:
        self.url = parse_database_url(database)
        self._lock: Any = (
            postgres.AdvisoryLock(self.url.target, INGEST_LOCK_KEY)
            if self.url.dialect == POSTGRESQL
            else DatabaseLock(self.url.path.with_name(self.url.path.name + ".ingest"))
        )

    def acquire(self) -> None:
        try:
            self._lock.acquire()
        except Exception as exc:
            raise IngestLocked(
                f"database {self.url} has an ingest process already ({exc}); one ingest per database"
            ) from None

    def release(self) -> None:
        self._lock.release()


class SharedAcks:
    """Manual acknowledgements shared by the ingests of several stations on one MQTT client.

    The client acknowledges messages in the order it received them, up to a mark. Each station's
    ingest acknowledges a mark once it stored everything of its own received before it; the client
    then acknowledges up to the lowest mark every ingest has reached, so no message is
    acknowledged before the ingest it belongs to stored it. Every ingest flushes (and so reaches a
    new mark) at least every flush interval, stored rows or not.
    """

    def __init__(self, mqtt: CentralMqtt) -> None:
        self.mqtt = mqtt
        self.reached: dict[str, tuple[int, int]] = {}

    def member(self, station: str, received_before: tuple[int, int]) -> MemberAcks:
        """The acks of a new station's ingest, which has stored everything before ``received_before``."""
        self.reached[station] = received_before
        return MemberAcks(self, station)

    def reach(self, station: str, mark: tuple[int, int]) -> None:
        self.reached[station] = max(self.reached[station], mark)
        self.mqtt.ack(min(self.reached.values()))


class MemberAcks:
    """One station's view of :class:`SharedAcks` (its ingest's ``Acks``)."""

    def __init__(self, shared: SharedAcks, station: str) -> None:
        self.shared, self.station = shared, station

    @property
    def unacked(self) -> int:
        return self.shared.mqtt.unacked

    def mark(self) -> tuple[int, int]:
        return self.shared.mqtt.mark()

    def ack(self, mark: tuple[int, int]) -> None:
        self.shared.reach(self.station, mark)


class StationIngests:
    """The ingest of every station whose messages come, made on its first message."""

    def __init__(self, store: Store, mqtt: CentralMqtt) -> None:
        self.store, self.acks = store, SharedAcks(mqtt)
        self.ingests: dict[str, Ingest] = {}
        self.starting: list[asyncio.Task[None]] = []

    def add(self, station: str, received_before: tuple[int, int]) -> Ingest:
        ingest = self.ingests[station] = Ingest(
            self.store,
            station,
            NoListener(),
            store_status=False,
            acks=self.acks.member(station, received_before),
            flush_rows=FLUSH_ROWS,
            flush_interval_s=FLUSH_INTERVAL_S,
        )
        return ingest

    def handle(self, topic: str, payload: bytes) -> None:
        parts = topic.split("/", 3)
        station = parts[2] if len(parts) > 3 else ""
        ingest = self.ingests.get(station)
        if ingest is None:
            try:
                topics.check_id("station", station)
            except topics.TopicError:
                return  # not a station's topic: nothing to store
            generation, received = self.acks.mqtt.mark()
            ingest = self.add(station, (generation, received - 1))  # this message is its own
            self.starting.append(asyncio.get_running_loop().create_task(ingest.start()))
            log.info("ingest of a new station", station=station)
        ingest.handle(topic, payload)

    async def seed(self, rows: int) -> int:
        """Make the ingests of the stations among the last ``rows`` readings stored and feed each
        its de-duplication (a restarted process: the broker sends again what it had not
        acknowledged, some of which may be stored)."""
        seen = await self.store.read(lambda db: telemetry.last_readings(db, rows))
        for station in dict.fromkeys(row[0] for row in seen):
            self.add(station, (0, 0))
        for ingest in self.ingests.values():
            await ingest.start()
            await ingest.seed(rows)
        return len(seen)

    async def stop(self) -> None:
        for task in self.starting:
            await task
        for ingest in self.ingests.values():
            await ingest.stop()  # the last batch is written and acknowledged

    def counts(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for ingest in self.ingests.values():
            for key, value in ingest.counts.items():
                total[key] = total.get(key, 0) + value
        return total


async def run_ingest(config: CentralConfig, stop: asyncio.Event) -> StationIngests:
    """Store every station's telemetry until ``stop`` is set; the ingests (for their counts)."""
    if config.mqtt.username and not config.ingest.username:
        log.warning(
            "the ingest connects as the central's broker user: a broker that takes the user name as "
            "client id (config/mosquitto) makes the two take each other's connection; set [ingest] username"
        )
    store = Store(config.database_url, [migrations, ORDER_MIGRATIONS, FLEET_MIGRATIONS])
    await store.open()
    holder: dict[str, StationIngests] = {}
    mqtt = CentralMqtt(
        ingest_mqtt_settings(config),
        ingest_subscriptions(),
        lambda topic, payload: holder["ingests"].handle(topic, payload),
    )
    ingests = holder["ingests"] = StationIngests(store, mqtt)
    try:
        seeded = await ingests.seed(SEED_ROWS)
        await mqtt.start()
        log.info(
            "ingest started", stations=list(ingests.ingests), seeded=seeded, client_id=mqtt.settings.client_id
        )
        Notifier().ready("storing telemetry")
        await stop.wait()
    finally:
        await ingests.stop()
        await mqtt.stop()
        await store.close()
        log.info("ingest stopped", **{k: v for k, v in ingests.counts().items() if v})
    return ingests


async def _serve(config: CentralConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await run_ingest(config, stop)


@click.command("ingest")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="the central's TOML file (its database, broker and [ingest] table)",
)
@click.option(
    "--wait",
    is_flag=True,
    help="stand by while another ingest holds the database, and take over when it ends "
    "(several centrals on one PostgreSQL, each with an ingest child: one stores at a time)",
)
def ingest_command(config_path: str, wait: bool) -> None:
    """Store the station's telemetry in the central's database (a process of its own).

    `pilegate central` starts it by itself; run it alone when [ingest] mode = "external".

    Example:

        pilegate ingest --config /etc/pilegate/central.toml
    """
    try:
        config = load_config(Path(config_path))
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)
    configure_logging(config.log_level, config.log_format)
    lock = IngestLock(config.database_url)  # held until the process exits
    try:
        acquire_ingest_lock(lock, wait)
    except IngestLocked as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        return
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(config))


STANDBY_RETRY_S = 1.0  # how often a standing-by ingest tries the lock (the takeover delay)


def acquire_ingest_lock(lock: IngestLock, wait: bool, retry_s: float = STANDBY_RETRY_S) -> None:
    """Take the one-ingest lock; with ``wait``, try again every ``retry_s`` until it is free.

    Before the lock, an ingest has not connected to the broker: every ingest of a database uses
    the same client id, so the one that takes over resumes the persistent session of the one
    that ended, and the broker hands it what was published meanwhile."""
    said = False
    while True:
        try:
            lock.acquire()
            if said:
                log.info("ingest taking over: the database's lock is free")
            return
        except IngestLocked as exc:
            if not wait:
                raise
            if not said:
                log.info("ingest standing by: another ingest stores this database", reason=str(exc))
                said = True
        time.sleep(retry_s)


class IngestChild:
    """``pilegate ingest`` as a child of the central: started, restarted when it dies (after a
    pause that doubles while it keeps dying), stopped with SIGTERM. It dies with the central."""

    def __init__(self, config_path: str) -> None:
        # --wait: beside other centrals' ingest children on one PostgreSQL, it stands by until the
        # one that stores ends, instead of dying and being restarted over and over
        self.argv = [sys.executable, "-m", "pilegate.cli", "ingest", "--config", config_path, "--wait"]
        self.restarts = 0
        self.pid: int | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        self._stopping = False
        self._task = asyncio.get_running_loop().create_task(self._supervise(), name="ingest-child")

    async def _spawn(self) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            *self.argv, stdin=asyncio.subprocess.DEVNULL, preexec_fn=die_with_parent()
        )
        self._proc, self.pid = proc, proc.pid
        log.info("ingest child started", pid=proc.pid)
        return proc

    async def _supervise(self) -> None:
        failures = 0
        while not self._stopping:
            started = time.monotonic()
            code = await (await self._spawn()).wait()
            if self._stopping:
                return
            failures = 1 if time.monotonic() - started > STABLE_RUN_S else failures + 1
            pause_s = min(RESTART_MAX_S, RESTART_MIN_S * 2 ** (failures - 1))
            log.warning("ingest child exited; restarting", code=code, pause_s=pause_s)
            self.restarts += 1
            await asyncio.sleep(pause_s)

    async def stop(self) -> None:
        """SIGTERM the child (it writes its last batch), SIGKILL it if it takes too long."""
        self._stopping = True
        proc, task = self._proc, self._task
        if proc is not None and proc.returncode is None:
            proc.terminate()
            try:
                async with asyncio.timeout(STOP_TIMEOUT_S):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
