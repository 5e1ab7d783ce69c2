"""The central service's one composition root: ``create_app(config)`` builds everything.

Background parts live in the application's cleanup context (started before ``yield``, stopped
after): the store and the one broker connection, shared by every station, and per station
(:func:`build_station`) its unit of work, charging service, operator orders, MQTT ingest and
command sender, and the dashboard's live hub (it sees the port readings on their way from the
ingest to the service). The stations' registry (:class:`central.web.station_runtime.Stations`)
starts and stops one station's runtime at any time while the app runs; the web layer gets it and
the store under the typed keys of :mod:`central.web.keys`.

Which stations run here is the leases' call (``central/adapters/lease.py``): the station set
(configured, or recorded with a code and status 1) goes to :func:`station_leases`, whose
``on_acquired`` starts a station's runtime and then serves its forwarded calls, and whose ``on_lost``
stops serving them (draining unless the lease failed) and then stops the runtime. On SQLite one
central owns every station (the "one central per database" lock, taken by ``pilegate central``);
on PostgreSQL several centrals share the stations, and a station another instance owns is a read
view here whose changes go to its owner (:func:`build_view`, ``central/web/station_actions.py``).

Nothing is built at import time. ``pilegate central`` runs it; ``pilegate create-user`` adds
accounts to its database.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import click
import structlog
from aiohttp import web

from central.adapters import stations as stations_repo
from central.adapters.charging import clock_anchor, clock_seen, read_clock, stored_params
from central.adapters.commands import CommandSender
from central.adapters.database import POSTGRESQL, MigrationRefused, parse_database_url
from central.adapters.fleet_schema import FLEET_MIGRATIONS, station_version
from central.adapters.ingest import Ingest
from central.adapters.lease import Instance, Leases, station_leases
from central.adapters.mqtt import CentralMqtt, MqttSettings
from central.adapters.retention import run_retention
from central.adapters.schema import ORDER_MIGRATIONS, migrations
from central.adapters.station_calls import StationCalls, station_calls
from central.adapters.stations import FAST, TRICKLE, ensure_station, registered_piles
from central.adapters.storage import DatabaseLocked, DatabaseUnreachable, Store, database_lock
from central.adapters.unit_of_work import SqliteUnitOfWork
from central.adapters.users import create_or_update_user
from central.application.auth import AuthError, AuthSettings
from central.application.charging import ChargingService
from central.application.orders import OperatorOrders
from central.application.ports import Op
from central.application.views import RequestView
from central.config import DEFAULT_CLIENT_ID, CentralConfig, load_config
from central.domain.levels import PermissionLevel
from central.domain.params import StationParams, params_from_mapping
from central.ingest_main import IngestChild
from central.web import add_user_api
from central.web.dashboard import add_dashboard
from central.web.keys import AUTH, PAYMENTS, STATIONS, STORE
from central.web.live import LiveHub, ObservedListener
from central.web.middleware import require_metrics_reader
from central.web.platform import add_operator_platform_api
from central.web.station_actions import ForwardStats, RemoteActions, call_handler
from central.web.station_runtime import StationRuntime, Stations
from pilegate.logs import configure_logging
from pilegate.metrics import Sample, render_metrics
from pilegate.sdnotify import Notifier
from pilegate.settings import ConfigError

log = structlog.get_logger(__name__)
# a broker connection down this long (not a reconnect's moment) makes this instance hand its
# stations to a central instance that has one (PostgreSQL; docs/fleet.md)
BROKER_LOST_HAND_OVER_S = 10.0
CLOCK_SEEN_PERIOD_S = 5.0  # wall seconds between saves of how far the station clock ran


def _param_piles(params: StationParams) -> list[tuple[str, int, float]]:
    """The piles the station parameters describe: ``(pile_no, pile_type, power_kw)``."""
    piles = [(f"F{i}", FAST, float(params.fast_power_kw)) for i in range(1, params.fast_pile_num + 1)]
    piles += [(f"T{i}", TRICKLE, float(params.slow_power_kw)) for i in range(1, params.trickle_pile_num + 1)]
    return piles


def _mqtt_settings(config: CentralConfig) -> MqttSettings:
    """The broker settings; on PostgreSQL the default client id names the instance, so that several
    centrals on one broker do not take each other's connection (a broker with
    ``use_username_as_clientid`` needs a broker user per central instead: docs/fleet.md)."""
    m = config.mqtt
    client_id = m.client_id
    if client_id == DEFAULT_CLIENT_ID and parse_database_url(config.database_url).dialect == POSTGRESQL:
        client_id = f"{DEFAULT_CLIENT_ID}-{config.instance_name}"[:64]
    return MqttSettings(
        host=m.host,
        port=m.port,
        username=m.username,
        password=m.password,
        client_id=client_id,
        tls=m.tls,
        keepalive_s=m.keepalive_s,
    )


async def _save_clock(store: Store, station: str) -> None:
    """Record every few seconds how far the station clock ran, so that a start after a crash
    continues close to where the station's time stopped."""
    while True:
        await asyncio.sleep(CLOCK_SEEN_PERIOD_S)
        await store.write(lambda db: clock_seen(db, time.time(), station=station))


class _Dispatch:
    """The one MQTT client's messages, handed to the ingest of the station their topic names
    (``pilegate/v1/{station}/...``); a message of a station not running here is counted and dropped."""

    def __init__(self) -> None:
        self.ingests: dict[str, Ingest] = {}
        self.dropped = 0

    def __call__(self, topic: str, payload: bytes) -> None:
        parts = topic.split("/", 3)
        ingest = self.ingests.get(parts[2]) if len(parts) > 3 else None
        if ingest is None:
            self.dropped += 1
            return
        ingest.handle(topic, payload)


DISPATCH = web.AppKey("mqtt-dispatch", _Dispatch)


def station_filter(code: str) -> str:
    """The subscription of a station's runtime: its whole topic tree."""
    return f"pilegate/v1/{code}/#"


@dataclasses.dataclass
class _Fleet:
    """What the centrals sharing a database need of this one: its leases, its forwarded calls and
    their counters (on SQLite: every station owned here, every call applied here)."""

    leases: Leases | None = None
    calls: StationCalls | None = None
    forwarded: ForwardStats = dataclasses.field(default_factory=ForwardStats)
    lease_losses: int = 0  # stations stopped because the lease session failed
    hand_overs: int = 0  # stations released (fair share, left the set) or stopped on close
    fenced: int = 0  # commands refused because the station's lease was found lost

    def owns(self, code: str) -> bool:
        """Whether a command to ``code``'s piles may go out from here (a refusal is counted)."""
        if self.leases is None or self.leases.owns(code):
            return True
        self.fenced += 1
        return False


FLEET = web.AppKey("fleet", _Fleet)


@dataclasses.dataclass
class _Shared:
    """What every station's runtime shares: configuration, store, broker connection, the fleet."""

    config: CentralConfig
    store: Store
    mqtt: CentralMqtt
    dispatch: _Dispatch
    store_telemetry: bool
    fleet: _Fleet = dataclasses.field(default_factory=_Fleet)
    versioned: bool = False  # several centrals may share the database: writes move station versions


async def _station_params(shared: _Shared, code: str) -> StationParams:
    """Stored parameters (an operator saved them), else the configured ones, else the defaults."""
    stored = await shared.store.read(lambda db: stored_params(db, station=code))
    if stored:
        return params_from_mapping(stored)
    configured = shared.config.stations.get(code)
    return configured.params if configured is not None else params_from_mapping({})


async def build_station(shared: _Shared, code: str) -> StationRuntime:
    """Build and start the runtime of station ``code``: its records, clock, service, operator orders,
    command sender, ingest and live hub; then subscribe to its topics. Its ``close`` undoes it all."""
    config, store, mqtt = shared.config, shared.store, shared.mqtt
    params = await _station_params(shared, code)
    configured = config.stations.get(code)
    clock = await store.write(lambda db: clock_anchor(db, time.time(), config.time_scale, station=code))
    await store.write(
        lambda db: ensure_station(
            db,
            code=code,
            name=configured.name if configured is not None else code,
            piles=_param_piles(params),
            now=clock.now().isoformat(),
        )
    )
    sender = CommandSender(mqtt, store, code, owns=lambda: shared.fleet.owns(code))
    uow = SqliteUnitOfWork(store, code, versioned=shared.versioned)
    service = ChargingService(uow, params, clock, sender, station=code)
    orders = OperatorOrders(service, uow, clock)
    sender.on_outcome = lambda o: service.live.on_command_outcome(
        o.pile_no, o.op, o.car, o.status, o.reason, o.command_id
    )
    hub = LiveHub(service, store)
    ingest = Ingest(
        store,
        code,
        ObservedListener(service.live, hub),
        commands=sender,
        store_telemetry=shared.store_telemetry,
    )
    await service.start()
    await orders.start()  # resume operator orders that were charging
    await ingest.start()
    await sender.start()
    await hub.start()
    shared.dispatch.ingests[code] = ingest
    mqtt.subscribe(station_filter(code))
    clock_saver = asyncio.get_running_loop().create_task(_save_clock(store, code), name=f"clock-seen:{code}")

    async def close() -> None:
        mqtt.unsubscribe(station_filter(code))
        shared.dispatch.ingests.pop(code, None)
        clock_saver.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await clock_saver
        await hub.stop()
        await sender.stop()
        await ingest.stop()
        await orders.close()
        await service.close()
        # the next start continues from here
        await store.write(lambda db: clock_seen(db, time.time(), station=code, stopped=True))

    return StationRuntime(code, service, orders, ingest, hub, close)


class _NoCommands:
    """A read view's command port: it never commands a pile (only the station's owner does)."""

    def __init__(self, code: str) -> None:
        self.code = code

    async def send(
        self,
        pile_no: str,
        port: int,
        op: Op,
        params: Mapping[str, int],
        *,
        car: str | None = None,
        expires_in_s: float = 30.0,
    ) -> str:
        raise RuntimeError(f"station {self.code} is owned by another instance; a read view sends nothing")


def _pile_health(pile: Mapping[str, Any]) -> str:
    """A read view's idea of a pile's health: what the owner (and the ingest) last stored."""
    if pile["status"] == 3:
        return "faulted"
    return "online" if pile["online_status"] == 1 else "offline"


async def build_view(shared: _Shared, code: str) -> StationRuntime:
    """A read view of station ``code``, which another instance owns: restored from the database
    exactly as a takeover restores it (queue, live sessions, requests, parameters, clock; pile
    health as stored), never started, sending nothing; its ``actions`` forward to the owner."""
    store = shared.store
    params = await _station_params(shared, code)
    clock = await store.read(lambda db: read_clock(db, station=code))
    uow = SqliteUnitOfWork(store, code)
    service = ChargingService(uow, params, clock, _NoCommands(code), station=code)
    await service.restore()
    piles = await store.read(lambda db: registered_piles(db, station=code))
    service.live.health.update({pile["pile_no"]: _pile_health(pile) for pile in piles})
    orders = OperatorOrders(service, uow, clock)
    await orders.start()  # follows nothing: no telemetry reaches a read view
    fleet = shared.fleet
    assert fleet.calls is not None, "a read view needs the forwarded calls"

    def remember(view: RequestView) -> None:
        service.last_request[view.user_id] = view

    forward = RemoteActions(code, fleet.calls, remember, fleet.forwarded)
    return StationRuntime(code, service, orders, remote=True, forward=forward)


async def _boot_stations(config: CentralConfig, store: Store) -> tuple[list[str], set[str]]:
    """(the codes to run at start, every known code): the configured stations and those recorded
    with a code, except the ones an operator disabled (status other than 1)."""
    recorded = {row["code"]: row for row in await store.read(stations_repo.coded_stations)}
    run = [code for code in config.stations if code not in recorded or recorded[code]["status"] == 1]
    run += [code for code, row in recorded.items() if code not in config.stations and row["status"] == 1]
    return run, {*config.stations, *recorded}


def _lifecycle(
    config: CentralConfig, store_telemetry: bool
) -> Callable[[web.Application], AsyncIterator[None]]:
    """The app's cleanup context: open the store and the broker connection, hand the registry to
    the web layer by typed key, follow the leases (each station's runtime starts once owned here),
    and stop everything in reverse order."""

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        url = config.database_url
        several = parse_database_url(url).dialect == POSTGRESQL
        store = Store(url, [migrations, ORDER_MIGRATIONS, FLEET_MIGRATIONS])
        await store.open()
        dispatch = _Dispatch()
        mqtt = CentralMqtt(_mqtt_settings(config), [], dispatch)
        fleet = _Fleet()
        shared = _Shared(config, store, mqtt, dispatch, store_telemetry, fleet, versioned=several)
        _, known = await _boot_stations(config, store)

        async def version(code: str) -> int:
            return await store.read(lambda db: station_version(db, code))

        stations = Stations(
            config.station,
            lambda code: build_station(shared, code),
            known,
            viewer=(lambda code: build_view(shared, code)) if several else None,
            version=version if several else None,
        )
        app[STORE], app[STATIONS], app[DISPATCH], app[FLEET] = store, stations, dispatch, fleet
        leases = _leases(config, shared, stations)
        if several:  # a killed instance's session may still hold stations others run now
            mqtt.forget(station_filter(code) for code in {config.station, *known})
        await mqtt.start()
        try:
            await fleet_start(fleet, leases)
            if several:
                await leases.refresh(timeout_s=10.0)  # the first round: own what is free before serving
        except BaseException:
            await fleet_stop(fleet)
            await stations.stop_all()
            await mqtt.stop()
            await store.close()
            raise
        retention = asyncio.get_running_loop().create_task(
            run_retention(store, config.telemetry_retention_days), name="telemetry-retention"
        )
        log.info(
            "central started",
            stations=sorted(stations.running),
            instance=leases.instance.id,
            http_port=config.http_port,
        )
        try:
            yield
        finally:
            retention.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await retention
            await fleet_stop(fleet)  # every station: its calls unserved, then its runtime stopped
            await stations.stop_all()
            await mqtt.stop()
            await store.close()
            log.info("central stopped")

    return lifecycle


def _leases(config: CentralConfig, shared: _Shared, stations: Stations) -> Leases:
    """The leases and forwarded calls of this instance, wired to the registry (see the module
    docstring); the registry follows the station set they read."""
    fleet, store = shared.fleet, shared.store
    instance = Instance(config.instance_name, socket.gethostname(), os.getpid(), config.peer_url)
    calls = fleet.calls = station_calls(
        config.database_url, call_handler(stations, fleet.forwarded), instance_id=instance.id
    )

    async def station_set() -> list[str]:
        run, known = await _boot_stations(config, store)
        stations.known = {stations.default, *known}
        stations.wanted = set(run)
        return run

    async def on_acquired(code: str) -> None:
        await stations.start(code)
        await calls.serve(code)

    async def on_lost(code: str) -> None:
        fencing = leases.fencing
        if fencing:
            fleet.lease_losses += 1
        else:
            fleet.hand_overs += 1
        await calls.unserve(code, drain=not fencing)
        await stations.stop(code)

    def serving() -> bool:  # a central that cannot reach the broker hands its stations to one that can
        return shared.mqtt.down_for_s < BROKER_LOST_HAND_OVER_S

    leases = fleet.leases = stations.leases = station_leases(
        config.database_url, station_set, on_acquired, on_lost, instance=instance, serving=serving
    )
    return leases


async def fleet_start(fleet: _Fleet, leases: Leases) -> None:
    """Listen for forwarded calls, then compete for the stations (on SQLite: own every one now)."""
    assert fleet.calls is not None
    await fleet.calls.start()
    await leases.start()


async def fleet_stop(fleet: _Fleet) -> None:
    """Release every station (its calls unserved, its runtime stopped), then stop listening."""
    if fleet.leases is not None:
        await fleet.leases.close()
    if fleet.calls is not None:
        await fleet.calls.close()


def station_samples(runtime: StationRuntime) -> list[Sample]:
    """One station's metrics, labelled ``station="CODE"``."""
    label, service = {"station": runtime.code}, runtime.service
    samples: list[Sample] = []
    if runtime.ingest is not None:
        samples += [
            (f"pilegate_central_ingest_{key}", "gauge", label, value)
            for key, value in runtime.ingest.stats().items()
            if isinstance(value, int | float)
        ]
    samples += [
        ("pilegate_central_waiting_cars", "gauge", label, service.scheduler.waiting_count),
        ("pilegate_central_live_sessions", "gauge", label, len(service.sessions)),
    ]
    samples += [
        (f"pilegate_central_{key}_total", "counter", label, value)
        for key, value in service.live.meter_anomalies().items()
    ]
    return samples


def fleet_samples(fleet: _Fleet, stations: Stations) -> list[Sample]:
    """The fleet's metrics: stations owned here, forwarded calls, lease losses, read views."""
    owned = len(fleet.leases.owned) if fleet.leases is not None else len(stations.running)
    f = fleet.forwarded
    return [
        ("pilegate_central_stations_owned", "gauge", {}, owned),
        ("pilegate_central_forwarded_calls_sent_total", "counter", {}, f.sent),
        ("pilegate_central_forwarded_calls_applied_total", "counter", {}, f.applied),
        ("pilegate_central_forwarded_calls_failed_total", "counter", {}, f.failed),
        ("pilegate_central_forwarded_calls_timeouts_total", "counter", {}, f.timeouts),
        ("pilegate_central_lease_losses_total", "counter", {}, fleet.lease_losses),
        ("pilegate_central_lease_hand_overs_total", "counter", {}, fleet.hand_overs),
        ("pilegate_central_commands_fenced_total", "counter", {}, fleet.fenced),
        ("pilegate_central_read_view_loads_total", "counter", {}, stations.view_loads),
    ]


async def _metrics(request: web.Request) -> web.Response:
    stations = request.app[STATIONS]
    runtimes = stations.runtimes()
    samples: list[Sample] = [("pilegate_central_stations_running", "gauge", {}, len(runtimes))]
    dispatch = request.app.get(DISPATCH)
    if dispatch is not None:
        samples.append(("pilegate_central_messages_not_running_total", "counter", {}, dispatch.dropped))
    fleet = request.app.get(FLEET)
    if fleet is not None:
        samples += fleet_samples(fleet, stations)
    for runtime in runtimes:
        samples += station_samples(runtime)
    return web.Response(text=render_metrics(samples), content_type="text/plain")


def add_metrics_route(app: web.Application, config: CentralConfig) -> None:
    """``GET /metrics`` as ``[http] metrics`` says: behind a token (staff or the metrics token),
    open to whoever reaches the port, or not served at all."""
    if config.metrics == "off":
        return
    if config.metrics == "open":
        app.router.add_get("/metrics", _metrics)
        return

    async def guarded(request: web.Request) -> web.Response:
        await require_metrics_reader(request, config.metrics_token)
        return await _metrics(request)

    app.router.add_get("/metrics", guarded)


def create_app(config: CentralConfig, *, store_telemetry: bool = True) -> web.Application:
    """The whole central service as one aiohttp application. ``store_telemetry=False``: another
    process (``pilegate ingest``) stores the telemetry; this one keeps the live path."""
    app = web.Application(client_max_size=1024**2)
    app[AUTH] = AuthSettings(
        token_ttl=timedelta(seconds=config.token_ttl_s), trusted_proxies=config.trusted_proxies
    )
    app[PAYMENTS] = config.payments
    app.cleanup_ctx.append(_lifecycle(config, store_telemetry))
    add_user_api(app)
    add_operator_platform_api(app)
    add_metrics_route(app, config)
    add_dashboard(app)
    return app


def _load(config_path: str) -> CentralConfig:
    try:
        return load_config(Path(config_path))
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)


@click.command("central")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="central TOML file (see config/central.example.toml)",
)
@click.option("--port", type=int, default=None, help="override http.port")
def central_command(config_path: str, port: int | None) -> None:
    """Run the central service: MQTT ingest, charging queue, billing and the REST APIs.

    Example:

        pilegate central --config /etc/pilegate/central.toml
    """
    config = _load(config_path)
    if port is not None:
        config = dataclasses.replace(config, http_port=port)
    configure_logging(config.log_level, config.log_format)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    if parse_database_url(config.database_url).dialect != POSTGRESQL:  # several centrals share a PostgreSQL
        lock = database_lock(config.database_url)  # held until the process exits, whatever way it exits
        try:
            lock.acquire()
        except (DatabaseLocked, DatabaseUnreachable) as exc:
            click.echo(str(exc), err=True)
            sys.exit(2)
    # the SQLite writer thread runs Python between statements; hand the GIL back to the event
    # loop sooner than the default 5 ms so REST latency stays low while telemetry is stored
    sys.setswitchinterval(0.0005)
    child = IngestChild(str(Path(config_path).resolve())) if config.ingest.mode == "process" else None
    with contextlib.suppress(KeyboardInterrupt):
        try:
            asyncio.run(serve(config, child))
        except MigrationRefused as exc:
            click.echo(f"cannot upgrade database {config.database_url}: {exc}", err=True)
            sys.exit(2)


def freeze_startup_heap() -> None:
    """Leave what start-up built out of the cyclic garbage collector's full collections.

    A full (generation 2) collection walks every tracked object and stops the event loop while it
    does. In a central that has started most of them are the modules', classes' and functions',
    which live until exit: about 74,000 of the 86,000 a central of ten stations tracks, whose walk
    took 15-70 ms every few seconds under telemetry load on a busy 2-core machine, a REST
    request's whole budget (bench/fleet_bench.py). Collected once, then frozen (:func:`gc.freeze`),
    they are never walked again (the walk of the rest took 3-6 ms there); what the stations
    allocate later is collected as before."""
    gc.collect()
    gc.freeze()


async def serve(config: CentralConfig, ingest_child: IngestChild | None = None) -> None:
    """Serve the central service until SIGTERM or SIGINT. Under systemd it says READY once the
    REST port listens and feeds the watchdog from this event loop (a stuck loop stops the pings).
    Telemetry is stored here with ``[ingest] mode = "inline"``, else by ``pilegate ingest``: the
    ``ingest_child`` this starts once the database is migrated, or a unit of its own."""
    app = create_app(config, store_telemetry=config.ingest.mode == "inline")
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=10)
    await runner.setup()
    freeze_startup_heap()
    if ingest_child is not None:
        await ingest_child.start()
    try:
        try:
            await web.TCPSite(runner, config.http_host, config.http_port).start()
        except OSError as exc:
            click.echo(f"cannot listen on {config.http_host}:{config.http_port}: {exc.strerror}", err=True)
            sys.exit(2)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        notifier = Notifier()
        notifier.ready(f"serving on {config.http_host}:{config.http_port}")
        watchdog = loop.create_task(notifier.feed_watchdog(), name="watchdog")
        await stop.wait()
        notifier.stopping()
        watchdog.cancel()
    finally:
        if ingest_child is not None:
            await ingest_child.stop()
        await runner.cleanup()


@click.command("create-user")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="central TOML file (its database gets the user)",
)
@click.option("--username", default="admin", show_default=True)
@click.option(
    "--password",
    prompt=True,
    hide_input=True,
    confirmation_prompt=True,
    envvar="PILEGATE_PASSWORD",
    help="or set PILEGATE_PASSWORD",
)
@click.option("--admin", is_flag=True, help="make the user a super administrator (level 4)")
@click.option("--update", is_flag=True, help="set the password if the user exists already")
def create_user_command(config_path: str, username: str, password: str, admin: bool, update: bool) -> None:
    """Create an account in the central database (the first operator of a new install).

    Example:

        pilegate create-user --config /etc/pilegate/central.toml --username admin --admin
    """
    config = _load(config_path)

    level = PermissionLevel.SUPER_ADMIN if admin else PermissionLevel.USER

    async def run() -> str:
        store = Store(config.database_url, [migrations, ORDER_MIGRATIONS, FLEET_MIGRATIONS])
        await store.open()
        try:
            return await store.write(
                lambda db: create_or_update_user(db, username, password, level=level, update=update)
            )
        finally:
            await store.close()

    try:
        outcome = asyncio.run(run())
    except AuthError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{outcome} user {username}{' (super administrator)' if admin else ''}")
