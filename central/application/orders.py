"""Operator orders: a charge an operator (or a user for themself) starts on one chosen port, outside
the driver queue, its bill by billing mode, and its payment rules.

Starting takes the port's charging point out of the driver queue (``reserve_port``; a pile the
scheduler does not know has no queue to leave), starts the port through the one command path
(``send_command``, tagged with the order id) and follows the port's meter (``watch_port``) with the
one meter-session rule of :mod:`central.domain.metering`, as driver sessions do: the base is the
idle reading before the start, the 32-bit meter is unwrapped, a sample is kept every
``SAMPLE_SPACING_S`` station seconds. A start the pile refuses or that never takes (a final command
outcome other than ``done``) makes the order 异常 (4) and frees the port.

A driver's own order (:meth:`OperatorOrders.create_for_driver`) is billed by the drivers' mode,
may take only a port the queue leaves free, and is capped at the energy the driver's balance (less
their unpaid bills) pays for: the cap goes to the pile as its ``energy_Wh`` target. One own order
charges at a time per driver, so one balance is never spent twice.

Ending (complete, cancel, or the port stopping by itself) stops the port, waits a bounded time for
its stopped reading, and prices the meter difference from the order's start to the stop by billing
mode (:func:`central.domain.pricing.price_order`). An order whose port never reported charging is
priced from what the caller states (kWh, seconds), else as nothing delivered over the elapsed time.
Every write goes through the unit of work; nothing here knows SQL or HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Coroutine, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from fractions import Fraction
from typing import Any

import structlog

from central.application import notices
from central.application.charging import ChargingService
from central.application.clock import StationClock
from central.application.ports import DriverBudget, OrderEnding, OrderTarget, UnitOfWork
from central.application.sessions import OrderSession, segment_samples
from central.domain.errors import DomainError, PileStateError, UnknownPileError
from central.domain.metering import MeterSession, Step, implausible_text
from central.domain.orders import STATUS_TEXT, TRANSITIONS, OrderStatus, PaymentStatus
from central.domain.pricing import DRIVER_BILLING_MODE, OrderFigures, energy_cap_wh, price_order
from central.domain.tariff import ConstantPower, EnergyProfile, ProfileError, Tariff
from central.domain.units import exact, round_display
from protocols.payloads import Telemetry

log = structlog.get_logger(__name__)

STOP_WAIT_S = 5.0  # real seconds to wait for a stopped port's final meter reading


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
    """The user's balance is below the order's total (or pays for no energy at all)."""


class TransactionReused(OrderError):
    """The provider transaction id already paid another order."""


def cents(amount: Fraction) -> int:
    """Money in whole cents, rounded half up (what a balance payment debits)."""
    return int(round_display(amount, 2).scaleb(2))


def payable_problem(row: Mapping[str, Any]) -> str | None:
    """Why an order cannot be paid now, or None.

    Payable: unpaid and 待支付 (0) or 已完成 (2) — driver sessions are 已完成 when billed — or 异常
    (4) with something to pay (a session a fault ended is billed for what it delivered).
    """
    status, paid = int(row["status"]), int(row["payment_status"])
    if paid == PaymentStatus.PAID:
        return "订单已支付"
    if paid != PaymentStatus.UNPAID:
        return "订单已退款"
    if status == OrderStatus.CHARGING:
        return "订单仍在充电中，请先完成订单"
    if status == OrderStatus.CANCELLED:
        return "订单已取消"
    if status == OrderStatus.ABNORMAL and Fraction(row["total_amount"]) <= 0:
        return "异常订单没有需要支付的金额"
    return None


def final_status(how: str, figures: OrderFigures) -> OrderStatus:
    """How an ended order stands: 异常 after a fault or failed start, 已取消 if a cancel delivered
    nothing, else 待支付."""
    if how in ("fault", "start_failed", "abnormal"):
        return OrderStatus.ABNORMAL
    if how == "cancel" and figures.kwh == 0:
        return OrderStatus.CANCELLED
    return OrderStatus.TO_PAY


class OperatorOrders:
    """Starts, follows and ends operator orders beside one :class:`ChargingService`."""

    def __init__(
        self,
        service: ChargingService,
        uow: UnitOfWork,
        clock: StationClock,
        *,
        stop_wait_s: float = STOP_WAIT_S,
    ) -> None:
        self.service, self.uow, self.clock = service, uow, clock
        self.stop_wait_s = stop_wait_s
        self.sessions: dict[str, OrderSession] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._port_locks: dict[tuple[str, int], asyncio.Lock] = {}
        self._driver_locks: dict[int, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        service.live.watch_outcomes(self._on_outcome)

    def now(self) -> datetime:
        return self.service.now()

    async def start(self) -> None:
        """Resume the sessions of orders that were charging when the process stopped."""
        sessions = await self.uow.read(lambda repos: repos.orders.active_orders())
        for session in sessions:
            self._attach(session)
        if sessions:
            log.info("operator orders restored", orders=len(sessions))

    def delivered_kwh(self, order_id: str) -> Fraction | None:
        """kWh the port delivered so far for a charging order this process follows."""
        session = self.sessions.get(order_id)
        return Fraction(session.delivered_wh, 1000) if session is not None else None

    # ---- start ---------------------------------------------------------------------------------

    async def create(self, target: OrderTarget) -> str:
        """Reserve the port, write the order (status 1), follow the meter, send ``start``."""
        service = self.service
        if service.live.pile_health(target.pile_no) != "online":
            raise PortBusy(f"充电桩 {target.pile_no} 不在线")
        lock = self._port_locks.setdefault((target.pile_no, target.port), asyncio.Lock())
        async with lock:
            if any(s.key == (target.pile_no, target.port) for s in self.sessions.values()):
                raise PortBusy(f"端口 {target.pile_no}-{target.port} 正在执行其他订单")
            await self._reserve(target)
            now, order_id = self.now(), uuid.uuid4().hex
            try:
                opened = await self.uow.write(lambda repos: repos.orders.open_order(target, order_id, now))
                if not opened:
                    raise PortBusy(f"端口 {target.pile_no}-{target.port} 正在使用或已停用")
            except BaseException:
                await self._release(target.pile_no, target.port)
                raise
            meter = MeterSession.from_idle(service.live.last_meter(target.pile_no, target.port))
            session = OrderSession(order_id, target.user_id, target.pile_no, target.port, now, meter)
            self._attach(session)
            self._spawn(self._persist(session))
        try:
            params = {"energy_Wh": target.energy_wh} if target.energy_wh else {}
            await service.send_command(target.pile_no, target.port, "start", params, tag=order_id)
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

    async def create_for_driver(self, target: OrderTarget, requested_wh: int | None = None) -> str:
        """A driver's own order: billed by the drivers' mode, capped at what their available balance
        pays for (and at ``requested_wh``); refused while another own order of theirs charges."""
        async with self._driver_locks.setdefault(target.user_id, asyncio.Lock()):
            budget = await self.uow.read(lambda repos: repos.orders.driver_budget(target.user_id))
            cap = self.driver_cap(budget, requested_wh)
            return await self.create(replace(target, billing_mode=DRIVER_BILLING_MODE, energy_wh=cap))

    def driver_cap(self, budget: DriverBudget, requested_wh: int | None) -> int:
        """The Wh target of a driver's own order (OrderConflict when they may not start one)."""
        if budget.charging_own_order:
            raise OrderConflict("你已有一个充电中的订单，请先结束它")
        tariff = Tariff.from_params(self.service.params)
        cap = energy_cap_wh(Fraction(budget.available_cents, 100), tariff)
        if cap < 1:
            available = round_display(Fraction(budget.available_cents, 100), 2)
            raise InsufficientBalance(
                f"余额不足：可用余额 (余额减未支付订单) 为 {available} 元，请先充值或支付"
            )
        return cap if requested_wh is None else min(cap, requested_wh)

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
        self.service.live.watch_port(session.pile_no, session.port, session.watcher)

    # ---- meter and command outcomes ------------------------------------------------------------

    def _on_reading(self, session: OrderSession, reading: Telemetry) -> None:
        """The driver sessions' meter rule, for one order's port."""
        update = session.meter.observe(
            reading.ts,
            reading.energy_Wh,
            reading.state == "charging",
            self.service.live.spacing_ms(),
            self.service.live.max_wh_per_ms(session.pile_no, session.port),
        )
        if update.step is Step.IMPLAUSIBLE:
            self.service.live.count_anomaly(
                "implausible_readings",
                f"{session.pile_no}-{session.port}",
                implausible_text(reading.energy_Wh, session.meter.last_raw_wh),
            )
            log.warning(
                "implausible order meter reading rejected", order=session.order_id, wh=reading.energy_Wh
            )
            return
        if update.reset is not None:
            self.service.live.count_anomaly(
                "meter_resets", f"{session.pile_no}-{session.port}", update.reset.text()
            )
            log.warning(
                "order meter went backwards: new baseline", order=session.order_id, reset=str(update.reset)
            )
        if update.step in (Step.STALE, Step.IDLE):
            return
        if update.step is Step.STARTED or update.kept:
            self._spawn(self._persist(session))
        if reading.state != "charging":
            session.port_stopped = True
            session.stopped.set()
            if not session.stopping:  # the port ended by itself: full, unplugged, or faulted
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
        """An operator's status change; only :data:`central.domain.orders.TRANSITIONS` are legal."""
        row = await self._order(order_id)
        current = int(row["status"])
        if status not in TRANSITIONS.get(current, frozenset()):
            raise OrderConflict(
                f"订单状态不能从 {current} ({STATUS_TEXT.get(current)}) 改为 "
                f"{status} ({STATUS_TEXT.get(status)})"
            )
        if current == OrderStatus.CHARGING:
            await self._end(order_id, "abnormal")
            return
        if status == OrderStatus.CANCELLED and row["payment_status"] == PaymentStatus.PAID:
            raise OrderConflict("已支付的订单不能取消")
        at = self.now()
        if not await self.uow.write(lambda repos: repos.orders.set_status(order_id, current, status, at)):
            raise OrderConflict(f"订单 {order_id} 的状态已被修改")

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
            if int(row["status"]) != OrderStatus.CHARGING:
                raise OrderConflict(f"订单状态为 {STATUS_TEXT.get(int(row['status']))}，不在充电中")
            session = self.sessions.get(order_id)
            if session is not None and stop:
                await self._stop_port(session)
            tariff = Tariff.from_params(self.service.params)
            figures = self._figures(row, session, tariff, electricity_kwh, duration_s)
            status = final_status(how, figures)
            if status == OrderStatus.CANCELLED:
                figures = figures.nothing()
            power = exact(row["power_rate"] or 0)
            end_wh = session.meter.last_wh if session else None
            detail = figures.detail(int(row["billing_mode"]), power, tariff)
            now = self.now()
            notice = notices.order_ended(row, status, figures, now)
            ending = OrderEnding(order_id, status, figures, detail, end_wh, now, notice)
            if not await self.uow.write(lambda repos: repos.orders.end_order(ending)):
                raise OrderConflict(f"订单 {order_id} 已结束")
            await self._detach(row, session)
            self._locks.pop(order_id, None)
        log.info("operator order ended", order=order_id, how=how, status=status, kwh=str(figures.kwh))
        return status

    async def _stop_port(self, session: OrderSession) -> None:
        if session.port_stopped:
            return
        session.stopping = True
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
            m, at_ms = session.meter, self.clock.at_ms
            stop = max(at_ms(m.samples[-1][0]), start) if session.port_stopped and m.samples else now
            profile: EnergyProfile | None
            try:
                profile = segment_samples(m, session.start, at_ms)
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
            if session.watcher is not None:
                self.service.live.unwatch_port(session.pile_no, session.port, session.watcher)
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
        row = await self.uow.read(lambda repos: repos.orders.order(order_id))
        if row is None:
            raise OrderNotFound(f"订单 {order_id} 不存在")
        return row

    async def _persist(self, session: OrderSession) -> None:
        snapshot = session.snapshot()
        await self.uow.write(lambda repos: repos.orders.save_meter(snapshot))

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
