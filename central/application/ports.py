"""What the application needs from storage and from the piles, as Protocols the adapters implement
(the composition root wires the real ones). Nothing here knows SQL, MQTT or HTTP.

A change is written through a :class:`UnitOfWork`: ``await uow.write(fn)`` runs ``fn(repos)`` in ONE
transaction with transaction-scoped :class:`Repositories`; a raise rolls all of it back.
``await uow.read(fn)`` runs ``fn(repos)`` on a read connection.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from typing import Any, Literal, Protocol, TypeVar

from central.application.sessions import LiveSession, OrderSession
from central.domain.billing import Bill, DetailRecord
from central.domain.model import Mode
from central.domain.orders import OrderStatus
from central.domain.pricing import OrderFigures

T = TypeVar("T")
Op = Literal["start", "stop", "limit"]


class CommandPort(Protocol):
    """Commands to piles (ids, expiry, retries; final outcomes are reported separately)."""

    async def send(
        self,
        pile_no: str,
        port: int,
        op: Op,
        params: Mapping[str, int],
        *,
        car: str | None = None,
        expires_in_s: float = 30.0,
    ) -> str: ...


# --- values crossing the storage boundary ---------------------------------------------------------


@dataclass(frozen=True)
class Notice:
    """A notification for a user (type 2 = 订单通知 in the operator API; ``kind`` for the user API)."""

    user_id: int
    kind: str
    title: str
    content: str
    related_id: str | None
    at: datetime
    type: int = 2


@dataclass(frozen=True)
class ActiveRequest:
    """A driver request still waiting or charging, as stored."""

    car: str
    user_id: int
    battery_capacity: float | None
    created_at: datetime


@dataclass(frozen=True)
class PileRecord:
    """A recorded pile: its mode, port capacity, rated power and the ports it has."""

    mode: Mode
    ports: int  # its capacity (totalPorts): point ids of a pile with room for more than one are ``-n``
    power_kw: Fraction
    port_nos: tuple[int, ...] = ()  # the ports it has (port rows), within its capacity


@dataclass(frozen=True)
class SessionOrder:
    """The order row a driver's charging segment opens when it is dispatched."""

    order_id: str
    user_id: int | None
    car: str
    pile_no: str
    port: int
    at: datetime


@dataclass(frozen=True)
class OrderTarget:
    """A validated order request: who, which port (its pile's number and power) and how to bill."""

    user_id: int
    pile_id: str
    pile_no: str
    port_id: str
    port: int
    power_kw: Fraction
    billing_mode: int
    energy_wh: int | None = None  # the pile's target (it stops there by itself); None: no target


@dataclass(frozen=True)
class DriverBudget:
    """What a driver's own order may spend: the balance less every unpaid bill, and whether an own
    order of theirs is already charging."""

    balance_cents: int
    unpaid_cents: int
    charging_own_order: bool

    @property
    def available_cents(self) -> int:
        return self.balance_cents - self.unpaid_cents


@dataclass(frozen=True)
class OrderEnding:
    """Everything ONE transaction writes when an operator order ends."""

    order_id: str
    status: OrderStatus
    figures: OrderFigures
    detail: dict[str, Any]
    end_wh: int | None
    at: datetime
    notice: Notice


@dataclass(frozen=True)
class PileTotals:
    """One finished order (driver segment or operator order), for the per-pile report."""

    pile_no: str
    seconds: int
    kwh: Fraction
    charge_fee: Fraction
    service_fee: Fraction


# --- repositories -------------------------------------------------------------------------------


class ChargingRepository(Protocol):
    """The rows of the driver queue: scheduler state, live sessions, requests, bills, orders."""

    def scheduler_state(self) -> dict[str, Any] | None: ...
    def save_scheduler_state(self, state: Mapping[str, Any], at: datetime) -> None: ...
    def live_sessions(self) -> list[LiveSession]: ...
    def save_live_session(self, session: LiveSession) -> None: ...
    def delete_live_session(self, car: str) -> None: ...
    def active_requests(self) -> list[ActiveRequest]: ...
    def usernames(self, user_id: int | None = None) -> dict[int, str]: ...
    def add_request(
        self,
        car: str,
        user_id: int,
        queue_number: str,
        mode: str,
        kwh: Fraction,
        battery_capacity: float | None,
        at: datetime,
    ) -> None: ...
    def change_request(self, car: str, queue_number: str, mode: str, kwh: Fraction, at: datetime) -> None: ...
    def request_charging(self, car: str, at: datetime) -> None: ...
    def finish_request(
        self, car: str, user_id: int | None, bill: Bill, status: str, at: datetime
    ) -> None: ...
    def open_session_order(self, order: SessionOrder) -> None: ...
    def session_order_started(self, order_id: str, base_wh: int | None, at: datetime) -> None: ...
    def finish_session_order(self, order: SessionOrder, detail: DetailRecord, end_wh: int | None) -> None: ...
    def cancel_session_order(self, order_id: str, at: datetime) -> None: ...
    def save_params(self, mapping: Mapping[str, Any], at: datetime) -> None: ...
    def pile_record(self, pile_no: str) -> PileRecord | None: ...


class OrderRepository(Protocol):
    """The rows of operator orders."""

    def order(self, order_id: str) -> dict[str, Any] | None: ...
    def active_orders(self) -> list[OrderSession]: ...
    def open_order(self, target: OrderTarget, order_id: str, at: datetime) -> bool: ...
    def save_meter(self, session: OrderSession) -> None: ...
    def end_order(self, ending: OrderEnding) -> bool: ...
    def set_status(self, order_id: str, current: int, status: int, at: datetime) -> bool: ...
    def driver_budget(self, user_id: int) -> DriverBudget: ...


class NoticeRepository(Protocol):
    def add(self, notice: Notice) -> None: ...


class ReportRepository(Protocol):
    def pile_totals(self, start: datetime, end: datetime) -> list[PileTotals]: ...


class Repositories(Protocol):
    """The repositories of one transaction (or one read)."""

    @property
    def charging(self) -> ChargingRepository: ...
    @property
    def orders(self) -> OrderRepository: ...
    @property
    def notices(self) -> NoticeRepository: ...
    @property
    def reports(self) -> ReportRepository: ...


class UnitOfWork(Protocol):
    """Runs a write in one transaction, or a read, over :class:`Repositories`."""

    async def write(self, fn: Callable[[Repositories], T]) -> T: ...
    async def read(self, fn: Callable[[Repositories], T]) -> T: ...
