"""The stations one central runs: a registry of per-station runtimes that start and stop one at a time.

A :class:`StationRuntime` is everything that runs one station (its code is the MQTT ``{station}``):
the charging service with its scheduler, parameters and clock, the operator orders, the ingest
that turns the station's MQTT messages into rows and live input, the dashboard's live hub, and a
``close`` that stops all of it. The composition root (:mod:`central.app`) knows how to build one
and hands :class:`Stations` that builder; the registry then starts and stops runtimes by code while
the application runs (an operator creating, disabling or deleting a station; later, whichever
instance holds a station's lease).

The web layer finds a request's station through :meth:`Stations.resolve`: ``?station=CODE`` (or a
code the handler read from the body), else the default station (``[central] station``). A code no
station has is 404; a known station that does not run on this instance is 503.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import structlog
from aiohttp import web

from central.adapters.ingest import Ingest
from central.application.charging import ChargingService
from central.application.orders import OperatorOrders
from central.web.errors import RESOURCE_NOT_FOUND, ApiError
from central.web.live import LiveHub

log = structlog.get_logger(__name__)

STATION_NOT_RUNNING = "STATION_NOT_RUNNING"
STATION_QUERY = "station"


async def _nothing() -> None:
    return None


@dataclass
class StationRuntime:
    """One running station: its parts, and how to stop them (``close``)."""

    code: str
    service: ChargingService
    orders: OperatorOrders
    ingest: Ingest | None = None
    hub: LiveHub | None = None
    close: Callable[[], Awaitable[None]] = field(default=_nothing, repr=False)


class UnknownStation(ApiError):
    """No station has this code."""

    def __init__(self, code: str) -> None:
        super().__init__(404, RESOURCE_NOT_FOUND, f"充电站 {code!r} 不存在 (no station has code {code!r})")


class StationNotRunning(ApiError):
    """The station exists but does not run on this instance."""

    def __init__(self, code: str) -> None:
        super().__init__(503, STATION_NOT_RUNNING, f"station {code} is not running on this instance")


Builder = Callable[[str], Awaitable[StationRuntime]]


class Stations:
    """The registry of the stations this central runs; see the module docstring.

    ``known`` are the codes that name a station (configured, or recorded with a code); ``running``
    the runtimes started here. :meth:`start` and :meth:`stop` are safe to call concurrently: one
    lock per code orders them.
    """

    def __init__(self, default: str, build: Builder | None = None, known: Iterable[str] = ()) -> None:
        self.default = default
        self._build = build
        self.known: set[str] = {default, *known}
        self.running: dict[str, StationRuntime] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def _lock(self, code: str) -> asyncio.Lock:
        return self._locks.setdefault(code, asyncio.Lock())

    def add(self, runtime: StationRuntime) -> None:
        """A runtime built elsewhere (tests, or a composition root that builds before serving)."""
        self.known.add(runtime.code)
        self.running[runtime.code] = runtime

    async def start(self, code: str) -> StationRuntime:
        """Run the station ``code`` here (at once; the running runtime if it runs already)."""
        async with self._lock(code):
            running = self.running.get(code)
            if running is not None:
                return running
            if self._build is None:
                raise StationNotRunning(code)
            runtime = await self._build(code)
            self.known.add(code)
            self.running[code] = runtime
            log.info("station started", station=code)
            return runtime

    async def stop(self, code: str) -> bool:
        """Stop the station ``code`` here; False if it did not run."""
        async with self._lock(code):
            runtime = self.running.pop(code, None)
            if runtime is None:
                return False
            await runtime.close()
            log.info("station stopped", station=code)
            return True

    async def stop_all(self) -> None:
        """Stop every running station (the application stops), the last started first."""
        for code in reversed(list(self.running)):
            await self.stop(code)

    def forget(self, code: str) -> None:
        """The station ``code`` no longer exists (deleted)."""
        if code != self.default:
            self.known.discard(code)

    def get(self, code: str) -> StationRuntime:
        """The runtime of ``code``: :class:`UnknownStation` (404) or :class:`StationNotRunning` (503)."""
        runtime = self.running.get(code)
        if runtime is not None:
            return runtime
        if code not in self.known:
            raise UnknownStation(code)
        raise StationNotRunning(code)

    def resolve(self, request: web.Request, code: str | None = None) -> StationRuntime:
        """The station a request is about: ``code`` (e.g. a body's ``station``), else its
        ``?station=``, else the default station."""
        return self.get(code or request.query.get(STATION_QUERY) or self.default)

    def runtimes(self) -> list[StationRuntime]:
        return list(self.running.values())
