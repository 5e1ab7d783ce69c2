"""The stations one central runs: a registry of per-station runtimes that start and stop one at a time.

A :class:`StationRuntime` is everything that runs one station (its code is the MQTT ``{station}``):
the charging service with its scheduler, parameters and clock, the operator orders, the ingest
that turns the station's MQTT messages into rows and live input, the dashboard's live hub, and a
``close`` that stops all of it. The composition root (:mod:`central.app`) knows how to build one
and hands :class:`Stations` that builder; the registry then starts and stops runtimes by code while
the application runs (an operator creating, disabling or deleting a station; later, whichever
instance holds a station's lease).

The web layer finds a request's station through :meth:`Stations.find`: ``?station=CODE`` (or a
code the handler read from the body), else the default station (``[central] station``). A code no
station has is 404. A station that runs on this instance is its runtime. Several centrals on one
PostgreSQL database own a station each (``central/adapters/lease.py``): a station that should run
(``wanted``) but is owned by another instance is a read view here, a runtime restored from the
database that sends nothing and runs nothing (``viewer`` builds it, again whenever the station's
version moved: ``central/adapters/fleet_schema.py: station_versions``), whose ``actions`` forward
every change to the owner. Any other known station is 503.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import structlog
from aiohttp import web

from central.adapters.ingest import Ingest
from central.application import orders as core
from central.application.charging import ChargingService
from central.application.orders import OperatorOrders
from central.application.ports import OrderTarget
from central.application.views import CompletionView, RequestView
from central.web.errors import RESOURCE_NOT_FOUND, VALIDATION_ERROR, ApiError, conflict
from central.web.live import LiveHub

if TYPE_CHECKING:
    from central.adapters.lease import Leases

log = structlog.get_logger(__name__)

STATION_NOT_RUNNING = "STATION_NOT_RUNNING"
STATION_QUERY = "station"


async def _nothing() -> None:
    return None


@dataclass
class StationRuntime:
    """One running station: its parts, and how to stop them (``close``). A read view of a station
    another instance owns (``remote``) has no ingest and no hub, and its ``actions`` forward."""

    code: str
    service: ChargingService
    orders: OperatorOrders
    ingest: Ingest | None = None
    hub: LiveHub | None = None
    close: Callable[[], Awaitable[None]] = field(default=_nothing, repr=False)
    remote: bool = False
    forward: StationActions | None = field(default=None, repr=False)

    @property
    def actions(self) -> StationActions:
        """What the web layer changes on the station: applied here, or forwarded to its owner."""
        return self.forward if self.forward is not None else LocalActions(self)


class UnknownStation(ApiError):
    """No station has this code."""

    def __init__(self, code: str) -> None:
        super().__init__(404, RESOURCE_NOT_FOUND, f"充电站 {code!r} 不存在 (no station has code {code!r})")


class StationNotRunning(ApiError):
    """The station exists but does not run on this instance."""

    def __init__(self, code: str) -> None:
        super().__init__(503, STATION_NOT_RUNNING, f"station {code} is not running on this instance")


Builder = Callable[[str], Awaitable[StationRuntime]]
Version = Callable[[str], Awaitable[int]]


class Stations:
    """The registry of the stations this central runs; see the module docstring.

    ``known`` are the codes that name a station (configured, or recorded with a code); ``running``
    the runtimes started here; ``wanted`` the stations that should run somewhere (the lease set;
    kept up to date by the composition root). :meth:`start` and :meth:`stop` are safe to call
    concurrently: one lock per code orders them. ``viewer`` and ``version`` (several centrals)
    build a read view of a station owned elsewhere and read its version.
    """

    def __init__(
        self,
        default: str,
        build: Builder | None = None,
        known: Iterable[str] = (),
        *,
        viewer: Builder | None = None,
        version: Version | None = None,
    ) -> None:
        self.default = default
        self._build = build
        self._viewer, self._version = viewer, version
        self.known: set[str] = {default, *known}
        self.wanted: set[str] = set()
        self.running: dict[str, StationRuntime] = {}
        self.views: dict[str, tuple[int, StationRuntime]] = {}  # code -> (version, read view)
        self.view_loads = 0
        self.leases: Leases | None = None  # set by the composition root: who runs which station
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
            self.views.pop(code, None)
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

    async def follow(self, code: str, run: bool) -> None:
        """The station ``code`` should now run (``run``) or not: the stored station set changed.
        With leases the set is followed at once (here: a station that left it stops before this
        returns; one that joined starts here if its lease is free, and a station left is waited
        for until no instance holds it); without (a registry of tests) it starts or stops here."""
        if self.leases is None:
            if run:
                await self.start(code)
            else:
                await self.stop(code)
            return
        await self.leases.refresh()
        if not run and not await self.leases.wait_released(code):
            log.warning("station still held by another instance", station=code)

    def forget(self, code: str) -> None:
        """The station ``code`` no longer exists (deleted)."""
        if code != self.default:
            self.known.discard(code)
            self.wanted.discard(code)
            self.views.pop(code, None)

    def get(self, code: str) -> StationRuntime:
        """The runtime of ``code``: :class:`UnknownStation` (404) or :class:`StationNotRunning` (503)."""
        runtime = self.running.get(code)
        if runtime is not None:
            return runtime
        if code not in self.known:
            raise UnknownStation(code)
        raise StationNotRunning(code)

    def resolve(self, request: web.Request, code: str | None = None) -> StationRuntime:
        """The station a request is about if it runs here: ``code`` (e.g. a body's ``station``),
        else its ``?station=``, else the default station (see :meth:`get`)."""
        return self.get(code or request.query.get(STATION_QUERY) or self.default)

    async def find(self, code: str) -> StationRuntime:
        """The runtime of ``code`` when it runs here, else a current read view of it when another
        instance runs it (several centrals); 404 for an unknown code, 503 for a station that runs
        nowhere."""
        runtime = self.running.get(code)
        if runtime is not None:
            return runtime
        if code not in self.known:
            raise UnknownStation(code)
        if self._viewer is None or self._version is None or code not in self.wanted:
            raise StationNotRunning(code)
        version = await self._version(code)
        cached = self.views.get(code)
        if cached is not None and cached[0] >= version:
            return cached[1]
        async with self._lock(f"view:{code}"):
            cached = self.views.get(code)
            if cached is not None and cached[0] >= version:
                return cached[1]
            view = await self._viewer(code)
            if cached is not None:  # finished requests are not in the database's queue: keep them
                view.service.last_request = {**cached[1].service.last_request, **view.service.last_request}
            self.views[code] = (version, view)
            self.view_loads += 1
            return view

    async def find_for(self, request: web.Request, code: str | None = None) -> StationRuntime:
        """:meth:`find` of the station a request is about (as :meth:`resolve` names it)."""
        return await self.find(code or request.query.get(STATION_QUERY) or self.default)

    def viewed(self, code: str) -> StationRuntime | None:
        """The last read view of ``code`` loaded here, if any (no database read)."""
        cached = self.views.get(code)
        return cached[1] if cached is not None else None

    def runtimes(self) -> list[StationRuntime]:
        return list(self.running.values())


# --- the changes the web layer makes (central/web/station_actions.py forwards them) ---------------

T = TypeVar("T")
PILE_VERBS = ("on", "off", "fault", "recover")


async def acting(action: Awaitable[T]) -> T:
    """Run an order operation, mapping its refusals to 404 / 409 (400 naming a reused transactionId)."""
    try:
        return await action
    except core.TransactionReused as exc:
        field, message = "transactionId", str(exc)  # as the platform names a field
        raise ApiError(400, VALIDATION_ERROR, f"{field}: {message}", {field: [message]}) from None
    except core.OrderNotFound as exc:
        raise ApiError(404, RESOURCE_NOT_FOUND, str(exc)) from None
    except core.OrderConflict as exc:
        raise conflict(str(exc)) from None


class StationActions(Protocol):
    """The changes of one station the web layer makes (see the module docstring)."""

    async def submit(
        self, user_id: int, mode: str, kwh: float, battery_capacity: float | None
    ) -> RequestView: ...
    async def change(
        self, user_id: int, request_id: str, *, mode: str | None, kwh: float | None
    ) -> RequestView: ...
    async def cancel(self, user_id: int, request_id: str) -> RequestView: ...
    async def complete(self, user_id: int) -> CompletionView: ...
    async def update_parameters(self, changes: Mapping[str, Any]) -> dict[str, Any]: ...
    async def pile(self, pile_no: str, verb: str) -> None: ...
    async def create_order(self, target: OrderTarget, *, staff: bool, energy_wh: int | None) -> str: ...
    async def complete_order(
        self, order_id: str, *, electricity_kwh: Fraction | None, duration_s: int | None
    ) -> None: ...
    async def cancel_order(self, order_id: str) -> None: ...
    async def set_order_status(self, order_id: str, status: int) -> None: ...
    async def pile_ports_changed(self, pile_no: str) -> None: ...
    async def pile_unregistered(self, pile_no: str) -> None: ...
    async def pile_gateway(self, pile_no: str, gateway: str) -> None: ...


class LocalActions:
    """The actions on a runtime of this instance."""

    def __init__(self, runtime: StationRuntime) -> None:
        self.runtime = runtime
        self.service, self.orders = runtime.service, runtime.orders

    async def submit(
        self, user_id: int, mode: str, kwh: float, battery_capacity: float | None
    ) -> RequestView:
        return await self.service.submit(user_id, mode, kwh, battery_capacity)

    async def change(
        self, user_id: int, request_id: str, *, mode: str | None, kwh: float | None
    ) -> RequestView:
        return await self.service.change(user_id, request_id, mode=mode, kwh=kwh)

    async def cancel(self, user_id: int, request_id: str) -> RequestView:
        return await self.service.cancel(user_id, request_id)

    async def complete(self, user_id: int) -> CompletionView:
        return await self.service.complete(user_id)

    async def update_parameters(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        return await self.service.update_parameters(changes)

    async def pile(self, pile_no: str, verb: str) -> None:
        if verb in ("on", "off"):
            await self.service.set_pile_in_service(pile_no, verb == "on")
        elif verb in ("fault", "recover"):
            await self.service.declare_fault(pile_no, verb == "fault")
        else:
            raise ValueError(f"pile verb must be one of {', '.join(PILE_VERBS)}, got {verb!r}")

    async def create_order(self, target: OrderTarget, *, staff: bool, energy_wh: int | None) -> str:
        if staff:
            return await acting(self.orders.create(dataclasses.replace(target, energy_wh=energy_wh)))
        return await acting(self.orders.create_for_driver(target, energy_wh))

    async def complete_order(
        self, order_id: str, *, electricity_kwh: Fraction | None, duration_s: int | None
    ) -> None:
        await acting(self.orders.complete(order_id, electricity_kwh=electricity_kwh, duration_s=duration_s))

    async def cancel_order(self, order_id: str) -> None:
        await acting(self.orders.cancel(order_id))

    async def set_order_status(self, order_id: str, status: int) -> None:
        await acting(self.orders.set_status(order_id, status))

    async def pile_ports_changed(self, pile_no: str) -> None:
        await self.service.live.pile_ports_changed(pile_no)

    async def pile_unregistered(self, pile_no: str) -> None:
        await self.service.live.unregister_pile(pile_no)

    async def pile_gateway(self, pile_no: str, gateway: str) -> None:
        if self.runtime.ingest is not None:  # the operator's binding wins over any claim
            self.runtime.ingest.bind(pile_no, gateway)
