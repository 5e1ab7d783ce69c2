"""The central service's one composition root: ``create_app(config)`` builds everything.

Background parts live in the application's cleanup context (started before ``yield``, stopped
after): the store and its unit of work, the charging service, operator orders, the MQTT ingest and
command sender, and the dashboard's live hub (it sees the port readings on their way from the
ingest to the service); the web layer gets them under the typed keys of :mod:`central.web.keys`.
Nothing is built at import time. ``pilegate central`` runs it; ``pilegate create-user`` adds
accounts to its database.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path

import click
import structlog
from aiohttp import web

from central.adapters.charging import clock_anchor, clock_seen, stored_params
from central.adapters.commands import CommandSender
from central.adapters.ingest import Ingest
from central.adapters.mqtt import CentralMqtt, MqttSettings
from central.adapters.retention import run_retention
from central.adapters.schema import ORDER_MIGRATIONS, migrations
from central.adapters.stations import FAST, TRICKLE, ensure_station
from central.adapters.storage import DatabaseLocked, DatabaseUnreachable, Store, database_lock
from central.adapters.unit_of_work import SqliteUnitOfWork
from central.adapters.users import create_or_update_user
from central.application.auth import AuthError, AuthSettings
from central.application.charging import ChargingService
from central.application.orders import OperatorOrders
from central.config import CentralConfig, load_config
from central.domain.levels import PermissionLevel
from central.domain.params import StationParams, params_from_mapping
from central.ingest_main import IngestChild
from central.web import add_user_api
from central.web.dashboard import add_dashboard
from central.web.keys import AUTH, INGEST, LIVE, ORDERS, PAYMENTS, SERVICE, STORE
from central.web.live import LiveHub, ObservedListener
from central.web.middleware import require_metrics_reader
from central.web.platform import add_operator_platform_api
from pilegate.logs import configure_logging
from pilegate.metrics import Sample, render_metrics
from pilegate.sdnotify import Notifier
from pilegate.settings import ConfigError

log = structlog.get_logger(__name__)
CLOCK_SEEN_PERIOD_S = 5.0  # wall seconds between saves of how far the station clock ran


def _param_piles(params: StationParams) -> list[tuple[str, int, float]]:
    """The piles the station parameters describe: ``(pile_no, pile_type, power_kw)``."""
    piles = [(f"F{i}", FAST, float(params.fast_power_kw)) for i in range(1, params.fast_pile_num + 1)]
    piles += [(f"T{i}", TRICKLE, float(params.slow_power_kw)) for i in range(1, params.trickle_pile_num + 1)]
    return piles


def _mqtt_settings(config: CentralConfig) -> MqttSettings:
    m = config.mqtt
    return MqttSettings(
        host=m.host,
        port=m.port,
        username=m.username,
        password=m.password,
        client_id=m.client_id,
        tls=m.tls,
        keepalive_s=m.keepalive_s,
    )


async def _save_clock(store: Store) -> None:
    """Record every few seconds how far the station clock ran, so that a start after a crash
    continues close to where the station's time stopped."""
    while True:
        await asyncio.sleep(CLOCK_SEEN_PERIOD_S)
        await store.write(lambda db: clock_seen(db, time.time()))


def _lifecycle(
    config: CentralConfig, store_telemetry: bool
) -> Callable[[web.Application], AsyncIterator[None]]:
    """The app's cleanup context: build and start every part, hand them to the web layer by typed
    keys, and stop them in reverse order on shutdown."""

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        store = Store(config.database_url, [migrations, ORDER_MIGRATIONS])
        await store.open()
        stored = await store.read(stored_params)
        params = params_from_mapping(stored) if stored else config.params
        clock = await store.write(lambda db: clock_anchor(db, time.time(), config.time_scale))
        await store.write(
            lambda db: ensure_station(
                db,
                code=config.station,
                name=config.station_name,
                piles=_param_piles(params),
                now=clock.now().isoformat(),
            )
        )
        holder: dict[str, Ingest] = {}
        mqtt = CentralMqtt(
            _mqtt_settings(config),
            [f"pilegate/v1/{config.station}/#"],
            lambda topic, payload: holder["ingest"].handle(topic, payload),
        )
        sender = CommandSender(mqtt, store, config.station)
        uow = SqliteUnitOfWork(store)
        service = ChargingService(uow, params, clock, sender, station=config.station)
        orders = OperatorOrders(service, uow, clock)
        sender.on_outcome = lambda o: service.live.on_command_outcome(
            o.pile_no, o.op, o.car, o.status, o.reason, o.command_id
        )
        hub = LiveHub(service, store)
        listener = ObservedListener(service.live, hub)
        ingest = holder["ingest"] = Ingest(
            store, config.station, listener, commands=sender, store_telemetry=store_telemetry
        )
        app[STORE], app[SERVICE], app[ORDERS], app[INGEST], app[LIVE] = store, service, orders, ingest, hub
        await service.start()
        await orders.start()  # resume operator orders that were charging
        await ingest.start()
        await sender.start()
        await mqtt.start()
        await hub.start()
        retention = asyncio.get_running_loop().create_task(
            run_retention(store, config.telemetry_retention_days), name="telemetry-retention"
        )
        clock_saver = asyncio.get_running_loop().create_task(_save_clock(store), name="clock-seen")
        log.info("central started", station=config.station, http_port=config.http_port)
        try:
            yield
        finally:
            for task in (retention, clock_saver):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await hub.stop()
            await mqtt.stop()
            await sender.stop()
            await ingest.stop()
            await orders.close()
            await service.close()
            await store.write(lambda db: clock_seen(db, time.time(), stopped=True))  # continued from here
            await store.close()
            log.info("central stopped")

    return lifecycle


async def _metrics(request: web.Request) -> web.Response:
    service: ChargingService = request.app[SERVICE]
    samples: list[Sample] = [
        (f"pilegate_central_ingest_{key}", "gauge", {}, value)
        for key, value in request.app[INGEST].stats().items()
        if isinstance(value, int | float)
    ]
    samples += [
        ("pilegate_central_waiting_cars", "gauge", {}, service.scheduler.waiting_count),
        ("pilegate_central_live_sessions", "gauge", {}, len(service.sessions)),
    ]
    samples += [
        (f"pilegate_central_{key}_total", "counter", {}, value)
        for key, value in service.live.meter_anomalies().items()
    ]
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
        asyncio.run(serve(config, child))


async def serve(config: CentralConfig, ingest_child: IngestChild | None = None) -> None:
    """Serve the central service until SIGTERM or SIGINT. Under systemd it says READY once the
    REST port listens and feeds the watchdog from this event loop (a stuck loop stops the pings).
    Telemetry is stored here with ``[ingest] mode = "inline"``, else by ``pilegate ingest``: the
    ``ingest_child`` this starts once the database is migrated, or a unit of its own."""
    app = create_app(config, store_telemetry=config.ingest.mode == "inline")
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=10)
    await runner.setup()
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
        store = Store(config.database_url, [migrations])
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
