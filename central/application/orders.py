"""Operator orders (spec/admin-api.md section 4): a charge an operator (or a user for themself)
starts on one chosen port, outside the driver queue, its bill by billing mode, and its payment.

Starting takes the port's charging point out of the driver queue (``service.reserve_port``; a pile
the scheduler does not know has no queue to leave), starts the port through the one command path
(``service.send_command``, tagged with the order id) and follows the port's meter through
``service.port_watchers`` with the driver sessions' rules (:class:`central.application.charging.LiveSession`):
the base is the idle reading before the start, the 32-bit meter is unwrapped, a sample is kept
every ``SAMPLE_SPACING_S`` station seconds. A start the pile refuses or that never takes (a final
command outcome other than ``done``) makes the order 异常 (4) and frees the port.

Ending (complete, cancel, or the port stopping by itself) stops the port, waits a bounded time for
its stopped reading, and prices the meter difference from the order's start to the stop:

* billing mode 1 (电量+电量服务费): amount = the time-of-use charging fee (Σ kWh in each tariff
  period × that period's rate, as driver bills), service fee = kWh × service rate;
* billing mode 2 (电量+时间服务费): amount as mode 1, service fee = hours × service rate × pile kW;
* billing mode 0 (按时间): amount = hours × normal rate × pile kW, no service fee.

An order whose port never reported charging is priced from what the caller states (kWh, seconds),
else as nothing delivered over the elapsed time. Figures are exact Fractions stored as fraction
strings with REAL copies (the schema's rule). Paying by balance debits the user's integer cents and
marks the order paid in ONE transaction, each statement guarded by its own condition, so an order
is paid at most once and a balance never goes below zero. Nothing here knows HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
import weakref
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import sqlite_utils
import structlog
from sqlite_utils import Migrations

from central.application.charging import SAMPLE_SPACING_S, LiveSession
from central.domain.errors import DomainError, PileStateError, UnknownPileError
from central.domain.tariff import (
    ConstantPower,
    EnergyProfile,
    MeterSamples,
    Period,
    PeriodUsage,
    ProfileError,
    Tariff,
)
from central.domain.units import exact, hours_between, round_display
from protocols.payloads import Telemetry

if TYPE_CHECKING:
    from central.application.charging import ChargingService

log = structlog.get_logger(__name__)

TO_PAY, CHARGING, COMPLETED, CANCELLED, ABNORMAL = 0, 1, 2, 3, 4
BY_TIME, ENERGY_AND_ENERGY_FEE, ENERGY_AND_TIME_FEE = 0, 1, 2
WECHAT, ALIPAY, BALANCE = 1, 2, 3
UNPAID, PAID = 0, 1
STOP_WAIT_S = 5.0  # real seconds to wait for a stopped port's final meter reading
ORDER_NOTICE_TYPE = 2  # 订单通知 (operator API); the user API sees kind below
ORDER_NOTICE_KIND = "order"  # notifications.kind of type 2, as the accounts API writes it
TRANSITIONS: Mapping[int, frozenset[int]] = {
    CHARGING: frozenset({ABNORMAL}),  # complete / cancel have their own routes
    TO_PAY: frozenset({COMPLETED, CANCELLED, ABNORMAL}),
    ABNORMAL: frozenset({TO_PAY, COMPLETED, CANCELLED}),
    COMPLETED: frozenset(),
    CANCELLED: frozenset(),
}
STATUS_TEXT = {
    TO_PAY: "待支付",
    CHARGING: "充电中",
    COMPLETED: "已完成",
    CANCELLED: "已取消",
    ABNORMAL: "异常",
}

ORDER_MIGRATIONS = Migrations("pilegate-operator-orders")


@ORDER_MIGRATIONS(name="0001_order_indexes")
def order_indexes(db: sqlite_utils.Database) -> None:
    """Indexes for the operator API's order pages: newest first by start time, per filter."""
    for statement in (
        "CREATE INDEX IF NOT EXISTS orders_start ON orders(start_time)",
        "CREATE INDEX IF NOT EXISTS orders_user_start ON orders(user_id, start_time)",
        "CREATE INDEX IF NOT EXISTS orders_pile_start ON orders(pile_id, start_time)",
        "CREATE INDEX IF NOT EXISTS orders_status_start ON orders(status, start_time)",
        "CREATE INDEX IF NOT EXISTS orders_pile_no_start ON orders(pile_no, start_time)",
        "CREATE INDEX IF NOT EXISTS piles_station ON piles(station_id)",
    ):
        db.execute(statement)


_COUNT_TRIGGERS = (
    "CREATE TABLE order_counts (status INTEGER PRIMARY KEY, n INTEGER NOT NULL)",
    "INSERT INTO order_counts (status, n) SELECT status, COUNT(*) FROM orders GROUP BY status",
    "CREATE TRIGGER order_counts_insert AFTER INSERT ON orders BEGIN "
    "INSERT INTO order_counts (status, n) VALUES (NEW.status, 1) "
    "ON CONFLICT (status) DO UPDATE SET n = n + 1; END",
    "CREATE TRIGGER order_counts_delete AFTER DELETE ON orders BEGIN "
    "UPDATE order_counts SET n = n - 1 WHERE status = OLD.status; END",
    "CREATE TRIGGER order_counts_status AFTER UPDATE OF status ON orders "
    "WHEN OLD.status IS NOT NEW.status BEGIN "
    "UPDATE order_counts SET n = n - 1 WHERE status = OLD.status; "
    "INSERT INTO order_counts (status, n) VALUES (NEW.status, 1) "
    "ON CONFLICT (status) DO UPDATE SET n = n + 1; END",
)


@ORDER_MIGRATIONS(name="0002_order_counts")
def order_counts(db: sqlite_utils.Database) -> None:
    """Orders per status, kept by triggers: the unfiltered (or status-only) page count is O(1)."""
    for statement in _COUNT_TRIGGERS:
        db.execute(statement)


class OrderError(Exception):
    """Base of every refusal of an order operation."""


class OrderNotFound(OrderError):
    """No order with that id."""


class OrderConflict(OrderError):
    """The order, its port or the balance is not in a state that allows the operation."""


class PortBusy(OrderConflict):
    """The port is charging, reserved, faulted or offline."""


class AlreadyPaid(OrderConflict):
    """The order was paid already (or refunded)."""


class InsufficientBalance(OrderConflict):
    """The user's balance is below the order's total."""


def iso(at: datetime) -> str:
    """An instant as the schema stores it: ISO 8601 UTC."""
    return at.astimezone(UTC).isoformat()


def cents(amount: Fraction) -> int:
    """Money in whole cents, rounded half up (what a balance payment debits)."""
    return int(round_display(amount, 2).scaleb(2))


def order_no(at: datetime, order_id: str) -> str:
    """The order number in the driver sessions' form: UTC timestamp + 6 id characters."""
    return at.astimezone(UTC).strftime("%Y%m%d%H%M%S") + order_id[:6].upper()


# --- pricing ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OrderFigures:
    """What one order charged: energy, fees, and the period split the amount came from."""

    start: datetime
    stop: datetime
    kwh: Fraction
    amount: Fraction
    service_fee: Fraction
    periods: Mapping[Period, PeriodUsage]

    @property
    def total(self) -> Fraction:
        return self.amount + self.service_fee

    @property
    def seconds(self) -> int:
        return int((self.stop - self.start).total_seconds())

    def nothing(self) -> OrderFigures:
        """The same interval with nothing delivered and nothing to pay (a cancelled order)."""
        return OrderFigures(self.start, self.stop, Fraction(0), Fraction(0), Fraction(0), {})

    def row(self) -> dict[str, Any]:
        """The orders-row columns of these figures (exact strings + REAL copies)."""
        out: dict[str, Any] = {
            "start_time": iso(self.start),
            "end_time": iso(self.stop),
            "duration": self.seconds,
        }
        for column, value in (
            ("electricity", self.kwh),
            ("amount", self.amount),
            ("service_fee", self.service_fee),
            ("total_amount", self.total),
        ):
            out[column], out[f"{column}_num"] = str(value), float(value)
        return out

    def detail(self, billing_mode: int, power_kw: Fraction, tariff: Tariff) -> dict[str, Any]:
        """The audit record kept in ``orders.detail`` (exact values as strings)."""
        return {
            "billing_mode": billing_mode,
            "power_kw": str(power_kw),
            "rates": {p.value: str(r) for p, r in tariff.rates.items()},
            "service_rate": str(tariff.service_rate),
            "periods": {
                p.value: [str(u.kwh), str(u.hours), str(u.kwh * tariff.rates[p])]
                for p, u in self.periods.items()
            },
            "amount": str(self.amount),
            "service_fee": str(self.service_fee),
        }


def price_order(
    billing_mode: int,
    start: datetime,
    stop: datetime,
    profile: EnergyProfile,
    tariff: Tariff,
    power_kw: Fraction,
) -> OrderFigures:
    """Price ``[start, stop]`` of ``profile`` by billing mode (see the module docstring)."""
    usage = tariff.split_by_period(start, stop, profile)
    kwh = sum((u.kwh for u in usage.values()), Fraction(0))
    hours = hours_between(start, stop)
    if billing_mode == BY_TIME:
        amount, service = hours * tariff.rates[Period.NORMAL] * power_kw, Fraction(0)
    elif billing_mode == ENERGY_AND_TIME_FEE:
        amount, service = tariff.charge_fee(usage), hours * tariff.service_rate * power_kw
    else:
        amount, service = tariff.charge_fee(usage), kwh * tariff.service_rate
    return OrderFigures(start, stop, kwh, amount, service, usage)


# --- the live session of one order ------------------------------------------------------------------


@dataclass
class OrderSession:
    """An operator order charging on a port: its meter, and a signal for the stopped reading."""

    order_id: str
    user_id: int
    pile_no: str
    port: int
    start: datetime
    meter: LiveSession
    stopped: asyncio.Event = field(default_factory=asyncio.Event)
    watcher: Callable[[Telemetry], None] | None = None

    @property
    def key(self) -> tuple[str, int]:
        return self.pile_no, self.port

    @property
    def live(self) -> bool:
        """The port reported charging (or its meter moved) since the order started."""
        return self.meter.started_ms is not None

    def state(self) -> dict[str, Any]:
        m = self.meter
        return {
            "base_wh": m.base_wh,
            "samples": m.samples,
            "started_ms": m.started_ms,
            "last_raw_wh": m.last_raw_wh,
            "wraps": m.wraps,
            "stopping": m.stopping,
            "port_stopped": m.port_stopped,
        }

    @classmethod
    def restored(cls, row: Mapping[str, Any]) -> OrderSession:
        """The session of an active order row (its ``detail`` holds the persisted meter state)."""
        state = (json.loads(row["detail"]) if row["detail"] else {}).get("live", {})
        port = int(row["port_no"])
        meter = LiveSession(
            row["id"],
            f"{row['pile_no']}-{port}",
            row["pile_no"],
            port,
            Fraction(0),
            row["id"],
            base_wh=state.get("base_wh"),
            started_ms=state.get("started_ms"),
            samples=[(int(t), int(e)) for t, e in state.get("samples", [])],
            stopping=bool(state.get("stopping")),
            port_stopped=bool(state.get("port_stopped")),
            last_raw_wh=state.get("last_raw_wh"),
            wraps=int(state.get("wraps", 0)),
        )
        return cls(
            row["id"],
            int(row["user_id"]),
            row["pile_no"],
            port,
            datetime.fromisoformat(row["start_time"]),
            meter,
        )

    def profile(self, at_ms: Callable[[int], datetime]) -> MeterSamples | None:
        """Meter samples in station time from the order's start (the idle base stands at it)."""
        m = self.meter
        if m.base_wh is None or not m.samples:
            return None
        points = [(self.start, Fraction(0))]
        for ms, wh in m.samples:
            at = at_ms(ms)
            if at > self.start:
                points.append((at, Fraction(wh - m.base_wh)))
            else:
                points[0] = (self.start, Fraction(wh - m.base_wh))
        return MeterSamples(points)


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


# --- the service-side manager ---------------------------------------------------------------------


class OperatorOrders:
    """Starts, follows and ends operator orders over one :class:`ChargingService`."""

    def __init__(self, service: ChargingService, *, stop_wait_s: float = STOP_WAIT_S) -> None:
        self._service = weakref.ref(service)
        self.store = service.store
        self.stop_wait_s = stop_wait_s
        self.sessions: dict[str, OrderSession] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._port_locks: dict[tuple[str, int], asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._restored = False
        self._restore_lock = asyncio.Lock()
        service.outcome_watchers.append(self._on_outcome)

    @property
    def service(self) -> ChargingService:
        service = self._service()
        if service is None:
            raise RuntimeError("the charging service is gone")
        return service

    def now(self) -> datetime:
        return self.service.now()

    async def ready(self) -> OperatorOrders:
        """Restore the sessions of orders that were charging when the process stopped (once)."""
        if not self._restored:
            async with self._restore_lock:
                if not self._restored:
                    rows = await self.store.read(_active_orders)
                    for row in rows:
                        self._attach(OrderSession.restored(row))
                    self._restored = True
                    if rows:
                        log.info("operator orders restored", orders=len(rows))
        return self

    def delivered_kwh(self, order_id: str) -> Fraction | None:
        """kWh the port delivered so far for a charging order this process follows."""
        session = self.sessions.get(order_id)
        return Fraction(session.meter.delivered_wh, 1000) if session is not None else None

    # ---- start ---------------------------------------------------------------------------------

    async def create(self, target: OrderTarget) -> str:
        """Reserve the port, write the order (status 1), follow the meter, send ``start``."""
        service = self.service
        if service.health.get(target.pile_no) != "online":
            raise PortBusy(f"充电桩 {target.pile_no} 不在线")
        lock = self._port_locks.setdefault((target.pile_no, target.port), asyncio.Lock())
        async with lock:
            if any(s.key == (target.pile_no, target.port) for s in self.sessions.values()):
                raise PortBusy(f"端口 {target.pile_no}-{target.port} 正在执行其他订单")
            await self._reserve(target)
            now, order_id = self.now(), uuid.uuid4().hex
            try:
                await self.store.write(lambda db: _insert_order(db, target, order_id, now))
            except BaseException:
                await self._release(target.pile_no, target.port)
                raise
            session = OrderSession(
                order_id,
                target.user_id,
                target.pile_no,
                target.port,
                now,
                _meter(
                    order_id, target.pile_no, target.port, service.last_meter(target.pile_no, target.port)
                ),
            )
            self._attach(session)
            self._spawn(self._persist(session))
        try:
            await service.send_command(target.pile_no, target.port, "start", {}, tag=order_id)
        except Exception as exc:  # not sendable at all: the order ends as abnormal at once
            log.warning("order start not sent", order=order_id, pile=target.pile_no, error=str(exc))
            await self._end(order_id, "start_failed", stop=False)
        log.info(
            "operator order started",
            order=order_id,
            pile=target.pile_no,
            port=target.port,
            user=target.user_id,
            billing_mode=target.billing_mode,
        )
        return order_id

    async def _reserve(self, target: OrderTarget) -> None:
        """Take the port's charging point out of the driver queue (if it is one)."""
        try:
            await self.service.reserve_port(target.pile_no, target.port)
        except UnknownPileError:
            pass  # not a charging point of the queue: no driver can be sent there
        except PileStateError as exc:
            raise PortBusy(f"端口 {target.pile_no}-{target.port} 不可用: {exc}") from exc

    def _attach(self, session: OrderSession) -> None:
        session.watcher = lambda reading: self._on_reading(session, reading)
        self.sessions[session.order_id] = session
        self.service.port_watchers[session.key] = session.watcher

    # ---- meter and command outcomes ------------------------------------------------------------

    def _on_reading(self, session: OrderSession, reading: Telemetry) -> None:
        """The driver sessions' meter rules, for one order's port."""
        m = session.meter
        if m.samples and reading.ts <= m.samples[-1][0]:
            return  # a replayed reading older than what the order has seen
        wh = m.unwrap(reading.energy_Wh)
        if m.started_ms is None:
            moved = m.base_wh is not None and wh > m.base_wh
            if reading.state != "charging" and not moved:
                m.samples, m.base_wh = [(reading.ts, wh)], wh  # the idle meter before the start
                return
            m.started_ms = reading.ts
            if m.base_wh is None:
                m.samples, m.base_wh = [(reading.ts, wh)], wh
            self._spawn(self._persist(session))
        kept = len(m.samples)
        m.add_sample(reading.ts, wh, SAMPLE_SPACING_S * 1000 / self.service.clock.scale)
        if len(m.samples) > kept:
            self._spawn(self._persist(session))
        if reading.state != "charging":
            m.port_stopped = True
            session.stopped.set()
            if not m.stopping:  # the port ended by itself: full, unplugged, or faulted
                how = "fault" if reading.state == "faulted" else "complete"
                self._spawn(self._end_quietly(session.order_id, how))

    def _on_outcome(self, pile_no: str, op: str, tag: str | None, status: str, reason: str | None) -> None:
        session = self.sessions.get(tag or "")
        if session is None or op != "start" or status == "done":
            return
        log.warning("order start failed", order=session.order_id, pile=pile_no, status=status, reason=reason)
        self._spawn(self._end_quietly(session.order_id, "start_failed"))

    # ---- end -----------------------------------------------------------------------------------

    async def complete(
        self, order_id: str, *, electricity_kwh: Fraction | None = None, duration_s: int | None = None
    ) -> int:
        """Stop and bill; the stated kWh / seconds count only if the port never charged."""
        return await self._end(order_id, "complete", electricity_kwh, duration_s)

    async def cancel(self, order_id: str) -> int:
        """Stop and bill; 已取消 (3) only if nothing was delivered, else 待支付 (0)."""
        return await self._end(order_id, "cancel")

    async def set_status(self, order_id: str, status: int) -> None:
        """An operator's status change; only :data:`TRANSITIONS` are legal."""
        row = await self._order(order_id)
        current = int(row["status"])
        if status not in TRANSITIONS.get(current, frozenset()):
            raise OrderConflict(
                f"订单状态不能从 {current} ({STATUS_TEXT.get(current)}) 改为 "
                f"{status} ({STATUS_TEXT.get(status)})"
            )
        if current == CHARGING:
            await self._end(order_id, "abnormal")
            return
        if status == CANCELLED and row["payment_status"] == PAID:
            raise OrderConflict("已支付的订单不能取消")
        at = iso(self.now())
        await self.store.write(lambda db: _set_status(db, order_id, current, status, at))

    async def _end_quietly(self, order_id: str, how: str) -> None:
        with contextlib.suppress(OrderError):
            await self._end(order_id, how, stop=False)

    async def _end(
        self,
        order_id: str,
        how: str,
        electricity_kwh: Fraction | None = None,
        duration_s: int | None = None,
        *,
        stop: bool = True,
    ) -> int:
        """End a charging order: stop its port, price it, write it, free the port. The status."""
        async with self._locks.setdefault(order_id, asyncio.Lock()):
            row = await self._order(order_id)
            if row["request_id"] is not None:
                raise OrderConflict("司机端的充电会话由充电服务结束 (driver API)")
            if int(row["status"]) != CHARGING:
                raise OrderConflict(f"订单状态为 {STATUS_TEXT.get(int(row['status']))}，不在充电中")
            session = self.sessions.get(order_id)
            if session is not None and stop:
                await self._stop_port(session)
            tariff = Tariff.from_params(self.service.params)
            figures = self._figures(row, session, tariff, electricity_kwh, duration_s)
            status = _final_status(how, figures)
            if status == CANCELLED:
                figures = figures.nothing()
            power = exact(row["power_rate"] or 0)
            end_wh = session.meter.samples[-1][1] if session and session.meter.samples else None
            detail = figures.detail(int(row["billing_mode"]), power, tariff)
            notice = _order_notice(row, status, figures, self.now())
            ended = _Ending(order_id, status, figures, detail, end_wh, iso(self.now()), notice)
            await self.store.write(ended.write)
            await self._detach(row, session)
            self._locks.pop(order_id, None)
        log.info("operator order ended", order=order_id, how=how, status=status, kwh=str(figures.kwh))
        return status

    async def _stop_port(self, session: OrderSession) -> None:
        m = session.meter
        if m.port_stopped:
            return
        m.stopping = True
        try:
            await self.service.send_command(session.pile_no, session.port, "stop", {}, tag=session.order_id)
        except Exception as exc:
            log.warning("order stop not sent", order=session.order_id, error=str(exc))
            return
        if session.live:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(session.stopped.wait(), self.stop_wait_s)

    def _figures(
        self,
        row: Mapping[str, Any],
        session: OrderSession | None,
        tariff: Tariff,
        electricity_kwh: Fraction | None,
        duration_s: int | None,
    ) -> OrderFigures:
        start = datetime.fromisoformat(row["start_time"])
        mode, power = int(row["billing_mode"]), exact(row["power_rate"] or 0)
        now = max(self.now(), start)
        if session is not None and session.live:
            m, at_ms = session.meter, self.service.clock.at_ms
            stop = max(at_ms(m.samples[-1][0]), start) if m.port_stopped and m.samples else now
            profile: EnergyProfile | None
            try:
                profile = session.profile(at_ms)
            except ProfileError as exc:  # a meter that ran backwards: keep the net difference
                log.warning("order meter inconsistent", order=session.order_id, error=str(exc))
                profile = ConstantPower(start, stop, max(Fraction(m.delivered_wh, 1000), Fraction(0)))
            return price_order(
                mode, start, stop, profile or ConstantPower(start, stop, Fraction(0)), tariff, power
            )
        seconds = duration_s if duration_s is not None else int((now - start).total_seconds())
        stop = start + timedelta(seconds=seconds)
        kwh = electricity_kwh if electricity_kwh is not None else Fraction(0)
        return price_order(mode, start, stop, ConstantPower(start, stop, kwh), tariff, power)

    async def _detach(self, row: Mapping[str, Any], session: OrderSession | None) -> None:
        if session is not None:
            self.sessions.pop(session.order_id, None)
            if self.service.port_watchers.get(session.key) is session.watcher:
                del self.service.port_watchers[session.key]
        if row["pile_no"] and row["port_no"] and str(row["port_no"]).isdigit():
            await self._release(row["pile_no"], int(row["port_no"]))

    async def _release(self, pile_no: str, port: int) -> None:
        """Give the port's charging point back to the driver queue (if it is one)."""
        try:
            await self.service.release_port(pile_no, port)
        except UnknownPileError:
            pass  # not a charging point of the queue: nothing was reserved
        except DomainError as exc:
            log.warning("port not released", pile=pile_no, port=port, error=str(exc))

    # ---- helpers -------------------------------------------------------------------------------

    async def _order(self, order_id: str) -> dict[str, Any]:
        row = await self.store.read(lambda db: _order_row(db, order_id))
        if row is None:
            raise OrderNotFound(f"订单 {order_id} 不存在")
        return row

    async def _persist(self, session: OrderSession) -> None:
        detail, order_id = json.dumps({"live": session.state()}), session.order_id
        await self.store.write(
            lambda db: db.execute(
                "UPDATE orders SET detail = ?, start_meter_wh = ? WHERE id = ? AND status = 1",
                [detail, session.meter.base_wh, order_id],
            )
        )

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(self._guard(coro))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _guard(self, coro: Coroutine[Any, Any, None]) -> None:
        try:
            await coro
        except Exception:
            log.exception("operator order update failed")

    async def close(self) -> None:
        """Wait for pending bookkeeping writes (tests and shutdown)."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


def _meter(order_id: str, pile_no: str, port: int, last: tuple[int, int] | None) -> LiveSession:
    meter = LiveSession(order_id, f"{pile_no}-{port}", pile_no, port, Fraction(0), order_id)
    if last is not None:  # the idle meter just before the start is the base
        wh = meter.unwrap(last[1])
        meter.samples, meter.base_wh = [(last[0], wh)], wh
    return meter


def _final_status(how: str, figures: OrderFigures) -> int:
    if how in ("fault", "start_failed", "abnormal"):
        return ABNORMAL
    if how == "cancel" and figures.kwh == 0:
        return CANCELLED
    return TO_PAY


_REGISTRY: weakref.WeakKeyDictionary[ChargingService, OperatorOrders] = weakref.WeakKeyDictionary()


async def operator_orders(service: ChargingService) -> OperatorOrders:
    """The one :class:`OperatorOrders` of ``service`` (created, and restored, on first use)."""
    orders = _REGISTRY.get(service)
    if orders is None:
        orders = _REGISTRY[service] = OperatorOrders(service)
    return await orders.ready()


# --- database functions (run inside store.read / store.write) -------------------------------------


FREE_PORT = (  # a port's pointer to an order no longer charging is stale: the port is free
    "(current_order_id IS NULL OR current_order_id NOT IN (SELECT id FROM orders WHERE status = 1))"
)
_ORDER_ROW = "SELECT o.*, p.power_rate FROM orders o LEFT JOIN piles p ON p.id = o.pile_id WHERE o.id = ?"


def _order_row(db: sqlite_utils.Database, order_id: str) -> dict[str, Any] | None:
    rows = list(db.query(_ORDER_ROW, [order_id]))
    return rows[0] if rows else None


def _active_orders(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    return list(
        db.query(
            "SELECT * FROM orders WHERE status = 1 AND request_id IS NULL "
            "AND pile_no IS NOT NULL AND port_no IS NOT NULL"
        )
    )


def _insert_order(db: sqlite_utils.Database, target: OrderTarget, order_id: str, now: datetime) -> None:
    taken = db.execute(
        "UPDATE ports SET current_order_id = ?, update_time = ? "  # noqa: S608 - a constant clause
        f"WHERE id = ? AND is_disabled = 0 AND {FREE_PORT}",
        [order_id, iso(now), target.port_id],
    ).rowcount
    if taken != 1:
        raise PortBusy(f"端口 {target.pile_no}-{target.port} 正在使用或已停用")
    db.table("orders").insert(
        {
            "id": order_id,
            "order_no": order_no(now, order_id),
            "user_id": target.user_id,
            "pile_id": target.pile_id,
            "port_id": target.port_id,
            "pile_no": target.pile_no,
            "port_no": str(target.port),
            "status": CHARGING,
            "billing_mode": target.billing_mode,
            "start_time": iso(now),
            "create_time": iso(now),
            "update_time": iso(now),
        }
    )


@dataclass(frozen=True)
class _Ending:
    """The one transaction that ends an order: the order row, its port, the notification."""

    order_id: str
    status: int
    figures: OrderFigures
    detail: dict[str, Any]
    end_wh: int | None
    at: str
    notice: dict[str, Any]

    def write(self, db: sqlite_utils.Database) -> None:
        row = {
            **self.figures.row(),
            "status": self.status,
            "detail": json.dumps(self.detail),
            "end_meter_wh": self.end_wh,
            "generated_time": self.at,
            "update_time": self.at,
        }
        columns = ", ".join(f"{name} = :{name}" for name in row)
        changed = db.execute(
            f"UPDATE orders SET {columns} WHERE id = :id AND status = 1",  # noqa: S608
            {**row, "id": self.order_id},
        ).rowcount
        if changed != 1:
            raise OrderConflict(f"订单 {self.order_id} 已结束")
        charged = 1 if self.figures.kwh > 0 else 0
        db.execute(
            "UPDATE ports SET current_order_id = NULL, last_order_id = ?, update_time = ?, "
            "total_charging_times = total_charging_times + ?, "
            "total_charging_duration = total_charging_duration + ?, "
            "total_power_consumption = total_power_consumption + ? "
            "WHERE current_order_id = ?",
            [
                self.order_id,
                self.at,
                charged,
                self.figures.seconds * charged,
                float(self.figures.kwh),
                self.order_id,
            ],
        )
        db.table("notifications").insert(self.notice)


def _order_notice(row: Mapping[str, Any], status: int, figures: OrderFigures, at: datetime) -> dict[str, Any]:
    total = round_display(figures.total, 2)
    kwh = round_display(figures.kwh, 3)
    text = {
        TO_PAY: f"订单 {row['order_no']} 充电已结束：{kwh} kWh，应付 {total} 元",
        CANCELLED: f"订单 {row['order_no']} 已取消，未产生费用",
        ABNORMAL: f"订单 {row['order_no']} 异常结束：{kwh} kWh，费用 {total} 元",
    }[status]
    return {
        "user_id": row["user_id"],
        "kind": ORDER_NOTICE_KIND,
        "type": ORDER_NOTICE_TYPE,
        "title": "订单通知",
        "content": text,
        "related_id": row["id"],
        "is_read": 0,
        "create_time": iso(at),
    }


def _set_status(db: sqlite_utils.Database, order_id: str, current: int, status: int, at: str) -> None:
    changed = db.execute(
        "UPDATE orders SET status = ?, update_time = ? WHERE id = ? AND status = ?",
        [status, at, order_id, current],
    ).rowcount
    if changed != 1:
        raise OrderConflict(f"订单 {order_id} 的状态已被修改")


# --- payment --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Payment:
    """A payment request: method 1 微信, 2 支付宝, 3 余额; a transaction id for 1 and 2."""

    order_id: str
    method: int
    transaction_id: str | None
    at: datetime


def payable_problem(row: Mapping[str, Any]) -> str | None:
    """Why an order cannot be paid now, or None.

    Payable: unpaid and 待支付 (0) or 已完成 (2) — driver sessions are 已完成 when billed — or 异常
    (4) with something to pay (a session a fault ended is billed for what it delivered).
    """
    status, paid = int(row["status"]), int(row["payment_status"])
    if paid == PAID:
        return "订单已支付"
    if paid != UNPAID:
        return "订单已退款"
    if status == CHARGING:
        return "订单仍在充电中，请先完成订单"
    if status == CANCELLED:
        return "订单已取消"
    if status == ABNORMAL and Fraction(row["total_amount"]) <= 0:
        return "异常订单没有需要支付的金额"
    return None


def pay_order(db: sqlite_utils.Database, payment: Payment) -> int:
    """Mark the order paid (and debit the balance for method 3) in this one transaction.

    Returns the cents paid. Raises OrderNotFound, AlreadyPaid, OrderConflict, InsufficientBalance;
    any raise rolls the whole transaction back (the store's rule).
    """
    row = _order_row(db, payment.order_id)
    if row is None:
        raise OrderNotFound(f"订单 {payment.order_id} 不存在")
    problem = payable_problem(row)
    if problem is not None:
        raise (AlreadyPaid if row["payment_status"] != UNPAID else OrderConflict)(problem)
    amount, at = cents(Fraction(row["total_amount"])), iso(payment.at)
    changed = db.execute(
        "UPDATE orders SET payment_status = 1, payment_time = ?, payment_method = ?, transaction_id = ?, "
        "status = CASE WHEN status = 0 THEN 2 ELSE status END, update_time = ? "
        "WHERE id = ? AND payment_status = 0",
        [at, payment.method, payment.transaction_id, at, payment.order_id],
    ).rowcount
    if changed != 1:
        raise AlreadyPaid("订单已支付")
    if payment.method == BALANCE:
        debited = db.execute(
            "UPDATE users SET balance_cents = balance_cents - ?, update_time = ? "
            "WHERE id = ? AND balance_cents >= ?",
            [amount, at, row["user_id"], amount],
        ).rowcount
        if debited != 1:
            raise InsufficientBalance(f"余额不足：需要 {round_display(Fraction(amount, 100))} 元")
    method = {WECHAT: "微信", ALIPAY: "支付宝", BALANCE: "余额"}[payment.method]
    db.table("notifications").insert(
        {
            "user_id": row["user_id"],
            "kind": ORDER_NOTICE_KIND,
            "type": ORDER_NOTICE_TYPE,
            "title": "订单通知",
            "related_id": row["id"],
            "is_read": 0,
            "create_time": at,
            "content": f"订单 {row['order_no']} 已通过{method}支付 {round_display(Fraction(amount, 100))} 元",
        }
    )
    return amount
