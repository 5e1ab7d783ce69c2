"""The edge gateway daemon: the one composition root that wires buses, pollers, outbox and uplink.

Start-up: open the outbox, start a bus owner per bus, read pile identities, start a poller per bus,
the publisher's flush task, the MQTT uplink and the local control API. SIGTERM/SIGINT: stop polling,
mark piles and the gateway ``offline`` (retained), flush the outbox and disconnect cleanly so the
broker does not fire the last will.
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
from aiohttp import web

from drivers.bus import Bus
from drivers.specs import BusSpec, DeviceSpec, RtuTcpTransport, SerialTransport, TcpTransport, Transport
from gateway.commands import CommandExecutor
from gateway.config import BusConfig, ConfigError, GatewayConfig, load_config, pile_map
from gateway.control import ControlApi
from gateway.control_token import TokenFileError, load_or_create_token
from gateway.feed import Feed, FeedPublisher
from gateway.outbox import Outbox, OutboxLimits, OutMessage
from gateway.poller import Poller
from gateway.runtime import GatewayRuntime
from gateway.uplink import Uplink, UplinkConfig
from pilegate import __version__
from pilegate.logs import configure_logging
from pilegate.metrics import Sample
from pilegate.sdnotify import Notifier
from pilegate.tasks import cancel_and_wait
from protocols import topics
from protocols.payloads import GatewayStatus

log = structlog.get_logger(__name__)
WEB_SHUTDOWN_S = 2.0  # a control API request still running at stop gets this long (tails end at once)


def bus_spec(config: GatewayConfig, bus: BusConfig) -> BusSpec:
    """The driver's view of one configured bus and its piles."""
    transport: Transport
    if bus.transport == "tcp":
        transport = TcpTransport(host=bus.host or "", port=bus.port or 502)
    elif bus.transport == "rtu-tcp":
        transport = RtuTcpTransport(host=bus.host or "", port=bus.port or 502)
    else:
        transport = SerialTransport(
            device=bus.device or "",
            baudrate=bus.baudrate,
            bytesize=bus.bytesize,
            parity=bus.parity,
            stopbits=bus.stopbits,
        )
    devices = tuple(
        DeviceSpec(
            pile_id=p.id,
            unit=p.unit,
            regmap=pile_map(p),
            ports=p.ports,
            timeout_s=bus.timeout_s,
            retries=bus.retries,
            max_registers=p.max_registers,
            max_gap=p.max_gap,
        )
        for p in config.piles_on(bus.name)
    )
    return BusSpec(
        name=bus.name,
        transport=transport,
        devices=devices,
        fail_after_cycles=bus.fail_after_cycles,
        backoff_max_s=bus.backoff_max_s,
        turnaround_s=bus.turnaround_s,
    )


class Gateway:
    """A running gateway; ``start()`` then ``stop()``."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        config.data_dir.mkdir(parents=True, exist_ok=True)
        limits = OutboxLimits(
            max_messages=config.outbox.max_messages,
            max_bytes=config.outbox.max_bytes,
            max_age_s=config.outbox.max_age_s,
        )
        self.outbox = Outbox(config.data_dir / "outbox.db", limits)
        self.buses = {b.name: Bus(bus_spec(config, b)) for b in config.buses}
        self.feed = Feed()  # what `pilectl tail` follows
        self.publisher = FeedPublisher(
            config.station,
            config.id,
            self.outbox,
            self._notify,
            flush_interval_s=config.outbox.flush_interval_s,
            feed=self.feed,
        )
        self.runtime = GatewayRuntime(config, self.buses, self.publisher)
        self.executor = CommandExecutor(self.runtime, self.publisher, timeout_s=config.command_timeout_s)
        self.uplink = Uplink(
            self._uplink_config(),
            self.outbox,
            will=self._will,
            on_connect=self._on_connect,
            on_message=self.executor.on_message,
            subscriptions=[(f"{topics.ROOT}/{topics.VERSION}/{config.station}/pile/+/port/+/cmd", 1)],
        )
        self.publisher.set_session(self.uplink.reserve_session())
        n = max(len(self.buses), 1)
        period = config.poll_period_s
        self.pollers = [
            Poller(bus, period, self.runtime.on_results, phase_s=period * i / n)
            for i, bus in enumerate(self.buses.values())
        ]
        self._tasks: list[asyncio.Task[None]] = []
        self._web: web.AppRunner | None = None
        self.started_at = time.time()

    def _uplink_config(self) -> UplinkConfig:
        m = self.config.mqtt
        return UplinkConfig(
            host=m.host,
            port=m.port,
            client_id=m.client_id,
            username=m.username,
            password=m.password,
            keepalive_s=m.keepalive_s,
            max_inflight=m.max_inflight,
            tls=m.tls,
        )

    def _notify(self) -> None:
        self.uplink.notify()

    def _will(self, session: int) -> OutMessage:
        return self.publisher.gateway_status(GatewayStatus("lost", session))

    def _on_connect(self, session: int) -> list[OutMessage]:
        self.publisher.set_session(session)
        birth = GatewayStatus(
            "online", session, self.publisher.now_ms(), __version__, tuple(self.runtime.piles)
        )
        now = self.publisher.now_ms()
        statuses = [
            OutMessage(
                topics.pile_status(self.config.station, p.id), p.status(now).to_json(), 1, True, "status", now
            )
            for p in self.runtime.piles.values()
            if p.state
        ]
        return [self.publisher.gateway_status(birth), *statuses]

    async def start(self) -> None:
        token = load_or_create_token(self.config.control_token_file)  # fail before touching anything
        for bus in self.buses.values():
            await bus.start()
        await self.runtime.read_identities(timeout_s=max(self.config.poll_period_s, 1.0))
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(p.run(), name=f"poll-{p.bus.spec.name}") for p in self.pollers]
        self._tasks.append(loop.create_task(self.publisher.run(), name="publisher"))
        await self.uplink.start()
        await self._start_control(token)
        log.info(
            "gateway started",
            gateway=self.config.id,
            station=self.config.station,
            buses=len(self.buses),
            piles=len(self.runtime.piles),
        )

    async def _start_control(self, token: str) -> None:
        api = ControlApi(
            self.runtime, self.executor, self.status, self.metrics, token, outbox=self.outbox, feed=self.feed
        )
        self._web = web.AppRunner(api.app(), access_log=None, shutdown_timeout=WEB_SHUTDOWN_S)
        await self._web.setup()
        host, _, port = self.config.control_listen.rpartition(":")
        site = web.TCPSite(self._web, host.strip("[]"), int(port))
        await site.start()
        self.control_port = self._web.addresses[0][1] if self._web.addresses else int(port)

    async def stop(self) -> None:
        """Clean stop: statuses offline (retained), outbox flushed, clean MQTT disconnect."""
        await cancel_and_wait(self._tasks, what="gateway")
        await self.executor.close()
        await self.runtime.close()
        self.runtime.stop_statuses()
        self.publisher.flush()
        final = self.publisher.gateway_status(
            GatewayStatus("offline", self.uplink.session or self.publisher.session, self.publisher.now_ms())
        )
        await self.uplink.stop([final])
        if self._web:
            await self._web.cleanup()
        for bus in self.buses.values():
            await bus.stop()
        self.outbox.close()
        log.info("gateway stopped", gateway=self.config.id)

    def status(self) -> dict[str, Any]:
        return {
            "gateway": {
                "id": self.config.id,
                "station": self.config.station,
                "version": __version__,
                "uptime_s": round(time.time() - self.started_at),
                "session": self.publisher.session,
            },
            "uplink": self.uplink.stats(),
            "outbox": self.outbox.stats(),
            "commands": self.executor.counts,
            "buses": {
                name: {**bus.snapshot(), "poller": poller.snapshot()}
                for (name, bus), poller in zip(self.buses.items(), self.pollers, strict=True)
            },
            "piles": self.runtime.snapshot(),
        }

    def metrics(self) -> list[Sample]:
        samples: list[Sample] = [
            ("pilegate_gateway_telemetry_total", "counter", {}, self.runtime.telemetry_count),
            ("pilegate_gateway_outbox_written_total", "counter", {}, self.publisher.written),
        ]
        for key, value in self.outbox.stats().items():
            samples.append((f"pilegate_gateway_outbox_{key}", "gauge", {}, float(value)))
        for key, uplink_value in self.uplink.stats().items():
            if isinstance(uplink_value, int | float):
                samples.append((f"pilegate_gateway_uplink_{key}", "gauge", {}, float(uplink_value)))
        bus_samples = [s for p in self.pollers for s in poller_samples(p.bus.spec.name, p.snapshot())]
        samples += sorted(bus_samples, key=lambda s: s[0])  # one group per metric name
        for pile in self.runtime.piles.values():
            health = pile.bus.health(pile.id)
            labels = {"pile": pile.id}
            samples.append(
                (
                    "pilegate_gateway_pile_online",
                    "gauge",
                    labels,
                    1.0 if pile.state in ("online", "faulted") else 0.0,
                )
            )
            samples.append(
                ("pilegate_gateway_pile_latency_seconds", "gauge", labels, health.last_latency_s or 0.0)
            )
        return samples


BUS_RATE_METRICS = (
    ("cycles_per_s", "pilegate_gateway_bus_cycles_per_second"),
    ("transactions_per_s", "pilegate_gateway_bus_transactions_per_second"),
    ("line_utilisation", "pilegate_gateway_bus_line_utilisation_ratio"),
)
PILE_RATE_METRICS = (
    ("readings_per_s", "pilegate_gateway_pile_readings_per_second"),
    ("last_reading_age_s", "pilegate_gateway_pile_reading_age_seconds"),
)


def poller_samples(bus: str, snap: dict[str, Any]) -> list[Sample]:
    """Metric samples of one bus's poller: counters, saturation and the achieved rates per bus and pile.
    A rate not known yet (fewer than two cycles, or no line speed) is left out rather than reported 0."""
    labels = {"bus": bus}
    samples: list[Sample] = [
        ("pilegate_gateway_poll_cycles_total", "counter", labels, snap["cycles"]),
        ("pilegate_gateway_poll_overruns_total", "counter", labels, snap["overruns"]),
        ("pilegate_gateway_bus_saturated", "gauge", labels, 1.0 if snap["saturated"] else 0.0),
    ]
    samples += [(name, "gauge", labels, snap[key]) for key, name in BUS_RATE_METRICS if snap[key] is not None]
    for pile, rates in snap["piles"].items():
        pile_labels = {"bus": bus, "pile": pile}
        samples += [
            (name, "gauge", pile_labels, rates[key])
            for key, name in PILE_RATE_METRICS
            if rates[key] is not None
        ]
    return samples


async def run_gateway(config: GatewayConfig) -> None:
    """Run until SIGTERM or SIGINT, then stop cleanly; under systemd, tell it when the gateway
    serves and feed its watchdog from this loop."""
    gateway = Gateway(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await gateway.start()
    notifier = Notifier()
    notifier.ready(f"polling {len(gateway.runtime.piles)} piles")
    watchdog = loop.create_task(notifier.feed_watchdog(), name="watchdog")
    try:
        await stop.wait()
    finally:
        log.info("stopping gateway")
        notifier.stopping()
        watchdog.cancel()
        await gateway.stop()


@click.command("gateway")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="gateway TOML file (see config/gateway.example.toml)",
)
def gateway_command(config_path: str) -> None:
    """Run the edge gateway: poll the piles over Modbus and publish to MQTT.

    Example:

        pilegate gateway --config /etc/pilegate/gateway.toml
    """
    try:
        config = load_config(Path(config_path))
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)
    configure_logging(config.log_level, config.log_format)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(run_gateway(config))
    except TokenFileError as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)
