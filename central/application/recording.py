"""What each scheduler event becomes: rows, notifications and pile commands.

The charging service hands every event of a change to :func:`record_events` together with the
working copy of its state (:class:`Recording`); the handlers write through ``changes`` so that the
rows commit in the change's one transaction and the commands go out only after that commit. The
table :data:`EVENT_HANDLERS` names the handler of each event type; every event type is there or in
:data:`IGNORED_EVENTS`, so a new or renamed event cannot be dropped silently.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog

from central.application import notices, views
from central.application.ports import SessionOrder
from central.application.sessions import LiveSession
from central.application.unit_of_work import Changes
from central.application.views import API_MODES, RequestView
from central.domain.billing import Bill
from central.domain.events import (
    CarCalled,
    CarReturned,
    ChargingStarted,
    Event,
    PointStatusChanged,
    QueueChanged,
    RequestCancelled,
    RequestChanged,
    RequestCompleted,
    RequestQueued,
    SegmentEnded,
)
from central.domain.metering import MeterSession
from central.domain.model import Mode

log = structlog.get_logger(__name__)


def point_port(point_id: str) -> tuple[str, int]:
    """(pile_no, port) of a charging point id (``F1`` is port 1 of F1, ``E5-2`` port 2 of E5)."""
    pile, _, port = point_id.partition("-")
    return pile, int(port) if port else 1


@dataclass(frozen=True)
class Recording:
    """The state a change's events update: the working copies of live sessions, bills, request
    times and finished views (swapped in only after the commit), and the per-car facts they read."""

    sessions: dict[str, LiveSession]
    bills: dict[str, Bill]
    created: dict[str, datetime]
    last_request: dict[int, RequestView]
    users: Mapping[str, int]  # car -> user id
    battery: Mapping[str, float | None]  # car -> battery capacity
    last_reading: Mapping[tuple[str, int], tuple[int, int]]  # (pile, port) -> wall ms, raw Wh
    dirty_sessions: set[str]  # cars whose live session must be saved (or deleted)


def record_events(events: Sequence[Event], state: Recording, changes: Changes) -> None:
    for event in events:
        handler = EVENT_HANDLERS.get(type(event))
        if handler is not None:
            handler(state, event, changes)
        elif type(event) not in IGNORED_EVENTS:
            log.error("scheduler event without a handler", event=type(event).__name__)


def on_request_queued(state: Recording, event: RequestQueued, changes: Changes) -> None:
    car = event.car
    state.created[car] = event.at
    user, battery = state.users[car], state.battery.get(car)
    mode = API_MODES[Mode(event.mode)]
    changes.write(
        lambda repos: repos.charging.add_request(
            car, user, event.queue_number, mode, event.kwh, battery, event.at
        )
    )


def on_request_changed(state: Recording, event: RequestChanged, changes: Changes) -> None:
    mode = API_MODES[Mode(event.mode)]
    changes.write(
        lambda repos: repos.charging.change_request(event.car, event.queue_number, mode, event.kwh, event.at)
    )


def on_car_called(state: Recording, event: CarCalled, changes: Changes) -> None:
    user = state.users.get(event.car)
    if user is not None:
        changes.notify(notices.car_called(user, event.car, event.point_id, event.position, event.at))


def on_car_returned(state: Recording, event: CarReturned, changes: Changes) -> None:
    user = state.users.get(event.car)
    if user is not None:
        if event.reason == "unavailable":
            changes.notify(notices.car_returned(user, event.car, event.point_id, event.at))
        else:
            changes.notify(notices.car_requeued(user, event.car, event.point_id, event.reason, event.at))


def on_charging_started(state: Recording, event: ChargingStarted, changes: Changes) -> None:
    """A live session with the port's idle meter as its baseline, its order, and a ``start`` with
    the car's remaining energy as the pile's own target."""
    pile_no, port = point_port(event.point_id)
    order = SessionOrder(uuid.uuid4().hex, state.users.get(event.car), event.car, pile_no, port, event.at)
    meter = MeterSession.from_idle(state.last_reading.get((pile_no, port)))  # the idle meter before
    state.sessions[event.car] = LiveSession(
        event.car, event.point_id, pile_no, port, event.target_kwh, order.order_id, meter
    )
    state.dirty_sessions.add(event.car)
    changes.write(lambda repos: repos.charging.open_session_order(order))
    changes.write(lambda repos: repos.charging.request_charging(event.car, event.at))
    energy_wh = math.ceil(event.target_kwh * 1000)
    changes.command(pile_no, port, "start", {"energy_Wh": energy_wh}, event.car)


def on_segment_ended(state: Recording, event: SegmentEnded, changes: Changes) -> None:
    session = state.sessions.pop(event.car, None)
    state.dirty_sessions.add(event.car)
    detail = event.detail
    pile_no, port = point_port(event.point_id)
    end_wh: int | None = None
    if session is not None:
        order_id, end_wh = session.order_id, session.meter.last_wh
        pile_no, port = session.pile_no, session.port
        if not (session.stopping or session.port_stopped):  # a closed segment never goes on charging
            changes.command(pile_no, port, "stop", {}, event.car)
    else:
        order_id = uuid.uuid4().hex
    user = state.users.get(event.car)
    order = SessionOrder(order_id, user, event.car, pile_no, port, event.at)
    changes.write(lambda repos: repos.charging.finish_session_order(order, detail, end_wh))
    if detail.reason == "fault" and user is not None:
        changes.notify(notices.pile_fault(user, event.car, event.point_id, detail.kwh, event.at))


def on_request_completed(state: Recording, event: RequestCompleted, changes: Changes) -> None:
    finish_request(state, event.car, event.bill, "completed", event.at, changes)


def on_request_cancelled(state: Recording, event: RequestCancelled, changes: Changes) -> None:
    finish_request(state, event.car, event.bill, "cancelled", event.at, changes)


def on_point_status_changed(state: Recording, event: PointStatusChanged, changes: Changes) -> None:
    log.info("point status", point=event.point_id, status=event.status)


def finish_request(
    state: Recording, car: str, bill: Bill, status: str, at: datetime, changes: Changes
) -> None:
    """The request's bill row and notification; the user's last request becomes its finished view."""
    user = state.users.get(car)
    state.bills[car] = bill
    close_open_segment(state, car, at, changes)
    changes.write(lambda repos: repos.charging.finish_request(car, user, bill, status, at))
    if user is not None:
        changes.notify(notices.request_finished(user, car, bill, status, at))
        created = state.created.pop(car, at)
        state.last_request[user] = views.finished_view(
            car, user, bill, status, state.battery.get(car), created
        )


def close_open_segment(state: Recording, car: str, at: datetime, changes: Changes) -> None:
    """A request that ended with a segment never billed (cancelled in the instant it was
    dispatched): its order is cancelled with nothing delivered and its port stopped."""
    session = state.sessions.pop(car, None)
    if session is None:
        return
    state.dirty_sessions.add(car)
    changes.write(lambda repos: repos.charging.cancel_session_order(session.order_id, at))
    if not (session.stopping or session.port_stopped):
        changes.command(session.pile_no, session.port, "stop", {}, car)


EventHandler = Callable[[Recording, Any, Changes], None]
EVENT_HANDLERS: Mapping[type[Event], EventHandler] = {
    RequestQueued: on_request_queued,
    RequestChanged: on_request_changed,
    CarCalled: on_car_called,
    CarReturned: on_car_returned,
    ChargingStarted: on_charging_started,
    SegmentEnded: on_segment_ended,
    RequestCompleted: on_request_completed,
    RequestCancelled: on_request_cancelled,
    PointStatusChanged: on_point_status_changed,
}
"""What each scheduler event becomes (rows, notifications, commands)."""
IGNORED_EVENTS: frozenset[type[Event]] = frozenset({QueueChanged})
"""Events the live service deliberately does nothing with (the user API polls queues)."""
