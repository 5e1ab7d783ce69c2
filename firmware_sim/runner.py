"""Runs a whole simulation: every pile's Modbus server, the physics tick and the control API.

This is the composition root of ``firmware_sim``: :func:`start_simulation` builds everything from a
:class:`~firmware_sim.config.SimConfig` and returns a :class:`Simulation`, whose ``endpoints`` tell
the gateway where each pile answers, and whose ``stop()`` stops every server, socat and task.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Literal

import structlog

from protocols.registers import SimFault

from .config import SimConfig, validate_sim_config
from .device import SimPile
from .server import SerialBusServer, SimServerError, TcpPileServer, start_serial_bus, start_tcp_pile

log = structlog.get_logger(__name__)

FDS_PER_TCP_PILE = 3  # listener, one gateway connection, slack


class SimLookupError(LookupError):
    """No such pile, or no such port on that pile, in this simulation."""


class SimClock:
    """Simulated seconds since start: real monotonic time times ``time_scale``."""

    def __init__(self, time_scale: float, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.time_scale = time_scale
        self._monotonic = monotonic
        self._start = monotonic()

    def now_s(self) -> float:
        return (self._monotonic() - self._start) * self.time_scale


@dataclass(frozen=True)
class PileEndpoint:
    """Where and how the gateway reaches one pile. For ``rtu``, ``device`` is the gateway-side pty."""

    transport: Literal["tcp", "rtu"]
    host: str | None
    port: int | None
    device: str | None
    unit: int
    kind: str
    rated_power_W: int
    ports: int
    bus: str | None = None  # rtu only, and the serial settings below
    baudrate: int | None = None
    parity: str | None = None
    stopbits: int | None = None
    bytesize: int | None = None
    map: str = "pilegate-sim-v1"  # the register map the pile speaks (name, or the file's path)

    def to_json(self) -> dict[str, object]:
        return asdict(self)


class Simulation:
    """A running simulation. Create it with :func:`start_simulation`."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.clock = SimClock(config.time_scale)
        self.piles: dict[str, SimPile] = {
            spec.id: SimPile(spec, ramp_s=config.ramp_s, ambient_C=config.ambient_C) for spec in config.piles
        }
        self.endpoints: dict[str, PileEndpoint] = {}
        self.control_port: int | None = None
        self._tcp: list[TcpPileServer] = []
        self._buses: list[SerialBusServer] = []
        self._tick_task: asyncio.Task[None] | None = None
        self._control_stop: Callable[[], Awaitable[None]] | None = None

    # ------------------------------------------------------------------------------ API

    def _pile(self, pile_id: str, port: int) -> SimPile:
        pile = self.piles.get(pile_id)
        if pile is None:
            raise SimLookupError(f"no pile {pile_id!r}; known: {sorted(self.piles)}")
        if not 1 <= port <= pile.spec.ports:
            raise SimLookupError(f"pile {pile_id!r} has no port {port} (ports 1..{pile.spec.ports})")
        return pile

    def inject_fault(self, pile_id: str, port: int, fault: SimFault) -> None:
        """Inject ``fault`` on a port; SILENT mutes the pile; CLEAR clears the port's fault and SILENT."""
        self._pile(pile_id, port).inject_fault(port, SimFault(fault), self.clock.now_s())

    def inject(self, pile_id: str, port: int, kind: str) -> None:
        """Inject a fault by name (any of :data:`~firmware_sim.device.INJECTABLE`), shown in the
        pile's map's own encoding; ``silent`` mutes the pile, ``clear`` clears fault and silence."""
        self._pile(pile_id, port).inject(port, kind, self.clock.now_s())

    def port_snapshot(self, pile_id: str, port: int) -> dict[str, object]:
        """The port's decoded register values now, plus ``state_name``, ``fault_name``, ``silent``."""
        return self._pile(pile_id, port).snapshot(port, self.clock.now_s())

    def ready_document(self) -> dict[str, object]:
        """The JSON the CLI prints once everything listens."""
        return {
            "ready": True,
            "piles": {pile_id: ep.to_json() for pile_id, ep in self.endpoints.items()},
            "control_port": self.control_port,
        }

    # ------------------------------------------------------------------------------ lifecycle

    async def _start_tcp(self) -> None:
        host = self.config.host
        for spec in self.config.piles:
            if spec.serial_bus is not None or spec.tcp_port is None:
                continue
            served = await start_tcp_pile(self.piles[spec.id], host, spec.tcp_port, self.clock.now_s)
            self._tcp.append(served)
            self.endpoints[spec.id] = PileEndpoint(
                "tcp", host, served.port, None, spec.unit, spec.kind, spec.rated_power_W, spec.ports,
                map=spec.map,
            )  # fmt: skip
        log.info("tcp piles listening", count=len(self._tcp), host=host)

    async def _start_buses(self) -> None:
        for bus_spec in self.config.serial_buses:
            piles = [self.piles[s.id] for s in self.config.piles if s.serial_bus == bus_spec.name]
            bus = await start_serial_bus(bus_spec, piles, self.clock.now_s)
            self._buses.append(bus)
            for pile in piles:
                spec = pile.spec
                self.endpoints[spec.id] = PileEndpoint(
                    "rtu", None, None, bus.gateway_path, spec.unit, spec.kind,
                    spec.rated_power_W, spec.ports, bus_spec.name, bus_spec.baudrate,
                    bus_spec.parity, bus_spec.stopbits, bus_spec.bytesize, spec.map,
                )  # fmt: skip

    async def _start_control(self) -> None:
        if self.config.control_port is None:
            return
        from .control import start_control_api

        runner, self.control_port = await start_control_api(self, self.config.control_port)
        self._control_stop = runner.cleanup

    async def start(self) -> None:
        """Start every server, then the tick; on failure stop whatever had started."""
        _raise_fd_limit(len(self.config.piles) * FDS_PER_TCP_PILE + 64)
        try:
            await self._start_tcp()
            await self._start_buses()
            await self._start_control()
        except BaseException:
            await self.stop()
            raise
        self._tick_task = asyncio.create_task(self._tick_forever(), name="sim-physics-tick")

    async def _tick_forever(self) -> None:
        piles = list(self.piles.values())
        while True:
            now_s = self.clock.now_s()
            for pile in piles:
                pile.tick(now_s)
            await asyncio.sleep(self.config.tick_s)

    async def stop(self) -> None:
        """Stop the tick, the control API, every server and every socat. Safe to call twice."""
        if self._tick_task is not None:
            self._tick_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tick_task
            self._tick_task = None
        if self._control_stop is not None:
            await self._control_stop()
            self._control_stop = None
        for served in self._tcp:
            await served.stop()
        for bus in self._buses:
            await bus.stop()
        self._tcp, self._buses = [], []
        log.info("simulation stopped")


def _raise_fd_limit(wanted: int) -> None:
    """Raise the soft open-file limit towards ``wanted`` (1000 piles need > 1024 descriptors)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new_soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))


async def start_simulation(config: SimConfig) -> Simulation:
    """Validate ``config``, start every pile's server (and socat lines) and return the simulation.

    Raises :class:`~firmware_sim.config.SimConfigError` for a bad config and
    :class:`~firmware_sim.server.SimServerError` when a server or serial line cannot start.
    """
    validate_sim_config(config)
    simulation = Simulation(config)
    await simulation.start()
    log.info("simulation ready", piles=len(simulation.endpoints), time_scale=config.time_scale)
    return simulation


__all__ = [
    "PileEndpoint",
    "SimClock",
    "SimLookupError",
    "SimServerError",
    "Simulation",
    "start_simulation",
]
