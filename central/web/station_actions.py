"""Every change the web layer makes to a station, in one shape wherever the station runs.

A handler changes a station through ``runtime.actions`` (``StationActions``) and never asks where
the station runs. On the instance that owns the station (``central/adapters/lease.py``) the actions
are ``central/web/station_runtime.py: LocalActions``: its charging service and operator orders, as
before. On another instance of the fleet the runtime is a read view and its actions are
:class:`RemoteActions`: each method becomes a call of one ``kind`` with a JSON payload
(``central/adapters/station_calls.py``), applied once by the owner through :func:`call_handler`
(which runs the same ``LocalActions`` method on its runtime) and answered with a JSON result that
:class:`RemoteActions` turns back into the same value. An error comes back as the same answer: a
domain error as its own class, an API error (``acting``'s order refusals, a bad parameter, a
station stopped meanwhile) with its status, code, message and details
(``central/web/errors.py: api_error_for`` maps
:class:`~central.adapters.station_calls.StationCallFailed` back).

The kinds (payload -> result): ``submit`` (user_id, mode, kwh, battery_capacity -> request view),
``change`` (user_id, request_id, mode, kwh -> request view), ``cancel`` (user_id, request_id ->
request view), ``complete`` (user_id -> completion view), ``parameters`` (changes -> parameters),
``pile`` (pile_no, verb on|off|fault|recover), ``order_create`` (target, staff, energy_wh ->
order id), ``order_complete`` (order_id, electricity_kwh, duration_s), ``order_cancel``
(order_id), ``order_status`` (order_id, status), ``pile_ports_changed`` and ``pile_unregistered``
(pile_no), ``pile_gateway`` (pile_no, gateway).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from typing import Any

from central.adapters.station_calls import StationCalls, StationCallTimeout
from central.application.ports import OrderTarget
from central.application.views import CompletionView, RequestView
from central.domain.errors import DomainError
from central.web.errors import (
    ApiError,
    api_error_for,
    validation_error,
)
from central.web.station_runtime import LocalActions, StationNotRunning, Stations


@dataclass
class ForwardStats:
    """Forwarded calls, for ``/metrics``: ``sent`` by this instance to an owner (``failed``: the
    owner answered an error or the call could not be forwarded; ``timeouts``: no answer in time),
    ``applied`` here as the owner of a call another instance forwarded."""

    sent: int = 0
    failed: int = 0
    timeouts: int = 0
    applied: int = 0


# --- the JSON forms -------------------------------------------------------------------------------


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value is not None else None


def view_json(view: RequestView) -> dict[str, Any]:
    """A request view as JSON (times as ISO 8601 with their offset: nothing is lost)."""
    data = dataclasses.asdict(view)
    data["start_time"], data["created_at"] = _time(view.start_time), _time(view.created_at)
    return data


def view_from_json(data: Mapping[str, Any]) -> RequestView:
    created = _parse_time(data["created_at"])
    assert created is not None
    return RequestView(**{**data, "start_time": _parse_time(data["start_time"]), "created_at": created})


def target_json(target: OrderTarget) -> dict[str, Any]:
    return {**dataclasses.asdict(target), "power_kw": str(target.power_kw)}


def target_from_json(data: Mapping[str, Any]) -> OrderTarget:
    return OrderTarget(**{**data, "power_kw": Fraction(data["power_kw"])})


def _fraction(value: str | None) -> Fraction | None:
    return Fraction(value) if value is not None else None


Apply = Callable[[LocalActions, Mapping[str, Any]], Awaitable[Any]]


async def _submit(a: LocalActions, p: Mapping[str, Any]) -> Any:
    return view_json(await a.submit(p["user_id"], p["mode"], p["kwh"], p["battery_capacity"]))


async def _change(a: LocalActions, p: Mapping[str, Any]) -> Any:
    return view_json(await a.change(p["user_id"], p["request_id"], mode=p["mode"], kwh=p["kwh"]))


async def _cancel(a: LocalActions, p: Mapping[str, Any]) -> Any:
    return view_json(await a.cancel(p["user_id"], p["request_id"]))


async def _complete(a: LocalActions, p: Mapping[str, Any]) -> Any:
    return dataclasses.asdict(await a.complete(p["user_id"]))


async def _order_create(a: LocalActions, p: Mapping[str, Any]) -> Any:
    return await a.create_order(target_from_json(p["target"]), staff=p["staff"], energy_wh=p["energy_wh"])


async def _order_complete(a: LocalActions, p: Mapping[str, Any]) -> Any:
    kwh = _fraction(p["electricity_kwh"])
    await a.complete_order(p["order_id"], electricity_kwh=kwh, duration_s=p["duration_s"])


KINDS: dict[str, Apply] = {
    "submit": _submit,
    "change": _change,
    "cancel": _cancel,
    "complete": _complete,
    "parameters": lambda a, p: a.update_parameters(p["changes"]),
    "pile": lambda a, p: a.pile(p["pile_no"], p["verb"]),
    "order_create": _order_create,
    "order_complete": _order_complete,
    "order_cancel": lambda a, p: a.cancel_order(p["order_id"]),
    "order_status": lambda a, p: a.set_order_status(p["order_id"], p["status"]),
    "pile_ports_changed": lambda a, p: a.pile_ports_changed(p["pile_no"]),
    "pile_unregistered": lambda a, p: a.pile_unregistered(p["pile_no"]),
    "pile_gateway": lambda a, p: a.pile_gateway(p["pile_no"], p["gateway"]),
}


def call_handler(stations: Stations, stats: ForwardStats) -> Callable[[str, str, Any], Awaitable[Any]]:
    """The owner's side of a forwarded call: the kind's :class:`LocalActions` method on the
    station's runtime here; any error that is neither a domain nor an API error becomes the API
    error this instance would have answered (so the caller answers the same)."""

    async def handle(station: str, kind: str, payload: Any) -> Any:
        runtime = stations.running.get(station)
        if runtime is None:
            raise StationNotRunning(station)
        apply = KINDS.get(kind)
        if apply is None:
            raise validation_error({"kind": f"unknown station call {kind!r}"})
        stats.applied += 1
        try:
            return await apply(LocalActions(runtime), payload)
        except (DomainError, ApiError):
            raise
        except Exception as exc:
            raise api_error_for(exc) from exc

    return handle


class RemoteActions:
    """The actions on a station another instance owns: each one forwarded to it and answered."""

    def __init__(
        self,
        code: str,
        calls: StationCalls,
        remember: Callable[[RequestView], None],
        stats: ForwardStats | None = None,
    ) -> None:
        self.code, self.calls, self._remember = code, calls, remember
        self.stats = stats or ForwardStats()

    async def _call(self, kind: str, payload: Mapping[str, Any]) -> Any:
        self.stats.sent += 1
        try:
            return await self.calls.call(self.code, kind, dict(payload))
        except StationCallTimeout:
            self.stats.timeouts += 1
            raise
        except Exception:
            self.stats.failed += 1
            raise

    async def submit(
        self, user_id: int, mode: str, kwh: float, battery_capacity: float | None
    ) -> RequestView:
        payload = {"user_id": user_id, "mode": mode, "kwh": kwh, "battery_capacity": battery_capacity}
        return view_from_json(await self._call("submit", payload))

    async def change(
        self, user_id: int, request_id: str, *, mode: str | None, kwh: float | None
    ) -> RequestView:
        payload = {"user_id": user_id, "request_id": request_id, "mode": mode, "kwh": kwh}
        return view_from_json(await self._call("change", payload))

    async def cancel(self, user_id: int, request_id: str) -> RequestView:
        view = view_from_json(await self._call("cancel", {"user_id": user_id, "request_id": request_id}))
        self._remember(view)  # a finished request is not in the queue the read view restores
        return view

    async def complete(self, user_id: int) -> CompletionView:
        return CompletionView(**await self._call("complete", {"user_id": user_id}))

    async def update_parameters(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        return dict(await self._call("parameters", {"changes": dict(changes)}))

    async def pile(self, pile_no: str, verb: str) -> None:
        await self._call("pile", {"pile_no": pile_no, "verb": verb})

    async def create_order(self, target: OrderTarget, *, staff: bool, energy_wh: int | None) -> str:
        payload = {"target": target_json(target), "staff": staff, "energy_wh": energy_wh}
        return str(await self._call("order_create", payload))

    async def complete_order(
        self, order_id: str, *, electricity_kwh: Fraction | None, duration_s: int | None
    ) -> None:
        kwh = str(electricity_kwh) if electricity_kwh is not None else None
        await self._call(
            "order_complete", {"order_id": order_id, "electricity_kwh": kwh, "duration_s": duration_s}
        )

    async def cancel_order(self, order_id: str) -> None:
        await self._call("order_cancel", {"order_id": order_id})

    async def set_order_status(self, order_id: str, status: int) -> None:
        await self._call("order_status", {"order_id": order_id, "status": status})

    async def pile_ports_changed(self, pile_no: str) -> None:
        await self._call("pile_ports_changed", {"pile_no": pile_no})

    async def pile_unregistered(self, pile_no: str) -> None:
        await self._call("pile_unregistered", {"pile_no": pile_no})

    async def pile_gateway(self, pile_no: str, gateway: str) -> None:
        await self._call("pile_gateway", {"pile_no": pile_no, "gateway": gateway})
