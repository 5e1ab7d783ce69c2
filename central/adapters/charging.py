"""The rows the driver queue writes and reads: scheduler state, live sessions, requests, bills, the
orders of driver segments, station parameters and the clock anchor. Functions of a database
connection, ``Db`` (they run inside :class:`central.adapters.storage.Store` jobs); :class:`ChargingRows`
implements the application's ``ChargingRepository``.

Instants are stored as the station clock gives them (ISO 8601); exact amounts as fraction strings,
with REAL copies where the schema has ``*_num`` columns.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from fractions import Fraction
from typing import Any

from central.adapters.database import Db, IntegrityError
from central.adapters.schema import ONE_ACTIVE_REQUEST
from central.application.clock import ClockAnchor, ClockRun, StationClock
from central.application.ports import ActiveRequest, PileRecord, SessionOrder
from central.application.sessions import LiveSession
from central.domain.billing import ABNORMAL_REASONS, Bill, DetailRecord
from central.domain.errors import DuplicateRequestError
from central.domain.metering import MeterSession
from central.domain.model import Mode
from central.domain.orders import OrderStatus
from central.domain.pricing import BillingMode

FAST_PILE_TYPE = 1  # piles.pile_type of a fast pile
CLOCK_RUNS_KEPT = 50  # earlier runs of the station clock kept for mapping old gateway timestamps


def iso(at: datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


def session_order_no(at: datetime, order_id: str) -> str:
    """A driver segment's order number: station timestamp + 6 id characters."""
    return at.strftime("%Y%m%d%H%M%S") + order_id[:6].upper()


def _param(db: Db, station: str, key: str) -> Any:
    """The JSON value of a station's ``params`` row, or None."""
    rows = list(db.query("SELECT value FROM params WHERE station = ? AND key = ?", [station, key]))
    return json.loads(rows[0]["value"]) if rows else None


def _save_param(db: Db, station: str, key: str, value: Any, at: str | None = None) -> None:
    db.execute(
        "INSERT INTO params (station, key, value, updated_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (station, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        [station, key, json.dumps(value), at],
    )


def clock_anchor(db: Db, now_s: float, scale: float, *, station: str) -> StationClock:
    """The station clock of a start at wall time ``now_s`` running at ``scale``; its anchor saved.

    At scale 1 the station clock is the wall clock. At another scale, after a stop the station's time
    continues from where it stopped, at the new scale: neither the time the station was stopped nor a
    scale changed between runs makes it jump. After a crash at an unchanged scale the clock has run
    on (every gateway timestamp of the meantime, buffered by the gateway, assumes so); after a crash
    with a changed scale it continues from the last :func:`clock_seen`. The first start begins at
    wall time. Earlier runs are kept (the last ``CLOCK_RUNS_KEPT``) so that gateway timestamps of
    before this start keep their station times.
    """
    saved = _param(db, station, "clock_anchor")
    anchor, earlier = ClockAnchor(now_s, now_s), []
    if saved is not None:
        # an anchor saved by an older version has neither scale nor last-seen instant: it runs on
        seen_s, saved_scale = saved.get("seen_wall_s", now_s), saved.get("scale", scale)
        earlier = [ClockRun(*run) for run in saved.get("earlier", [])][-(CLOCK_RUNS_KEPT - 1) :]
        if saved_scale == scale and (scale == 1 or not saved.get("stopped")):
            anchor = ClockAnchor(saved["wall_s"], saved["station_s"])  # the same run goes on
        else:
            last = ClockRun(saved["wall_s"], saved["station_s"], saved_scale, seen_s)
            earlier.append(last)
            anchor = ClockAnchor(now_s, now_s if scale == 1 else last.station_at(seen_s))
    value = {
        "wall_s": anchor.wall_s,
        "station_s": anchor.station_s,
        "scale": scale,
        "seen_wall_s": now_s,
        "stopped": False,
        "earlier": [[r.wall_s, r.station_s, r.scale, r.until_wall_s] for r in earlier],
    }
    _save_param(db, station, "clock_anchor", value)
    return StationClock(scale, anchor, earlier=earlier)


def read_clock(db: Db, *, station: str) -> StationClock:
    """The station clock its owner runs, read without saving anything (a read view's clock): the
    saved anchor and scale, else the wall clock."""
    saved = _param(db, station, "clock_anchor")
    if saved is None:
        return StationClock()
    earlier = [ClockRun(*run) for run in saved.get("earlier", [])]
    anchor = ClockAnchor(saved["wall_s"], saved["station_s"])
    return StationClock(saved.get("scale", 1.0), anchor, earlier=earlier)


def clock_seen(db: Db, wall_s: float, *, station: str, stopped: bool = False) -> None:
    """The station clock ran until wall time ``wall_s``; ``stopped``: the service stops there."""
    saved = _param(db, station, "clock_anchor")
    if saved is not None:
        _save_param(db, station, "clock_anchor", {**saved, "seen_wall_s": wall_s, "stopped": stopped})


def stored_params(db: Db, *, station: str) -> dict[str, Any] | None:
    """The station parameters an operator saved (they win over the configuration file)."""
    saved = _param(db, station, "station")
    return dict(saved) if saved is not None else None


def stored_detail(detail_json: str | None) -> DetailRecord | None:
    """The detail record a billed driver segment keeps in ``orders.detail``, typed (None if the
    segment was never billed)."""
    return DetailRecord.from_dict(json.loads(detail_json)) if detail_json else None


def session_row(session: LiveSession) -> dict[str, Any]:
    """The ``live_sessions`` row of a session (the meter state rides in the ``samples`` JSON)."""
    m = session.meter
    state = {
        "target_kwh": str(session.target_kwh),
        "stopping": session.stopping,
        "ending": session.ending,
        "port_stopped": session.port_stopped,
        "start_held": session.start_held,
        "last_raw_wh": m.last_raw_wh,
        "wraps": m.wraps,
        "point": session.point_id,
    }
    return {
        "car": session.car,
        "pile_no": session.pile_no,
        "port": session.port,
        "order_id": session.order_id,
        "command_id": session.command_id,
        "started_ms": m.started_ms,
        "start_meter_wh": m.base_wh,
        "last_ms": m.samples[-1][0] if m.samples else None,
        "last_meter_wh": m.samples[-1][1] if m.samples else None,
        "samples": json.dumps({"samples": m.samples, **state}),
    }


def session_from_row(row: Mapping[str, Any]) -> LiveSession:
    """Inverse of :func:`session_row`."""
    extra = json.loads(row["samples"])
    meter = MeterSession(
        started_ms=row["started_ms"],
        base_wh=row["start_meter_wh"],
        samples=[(int(t), int(e)) for t, e in extra["samples"]],
        last_raw_wh=extra["last_raw_wh"],
        wraps=extra["wraps"],
    )
    return LiveSession(
        car=row["car"],
        point_id=extra["point"],
        pile_no=row["pile_no"],
        port=row["port"],
        target_kwh=Fraction(extra["target_kwh"]),
        order_id=row["order_id"],
        meter=meter,
        command_id=row["command_id"],
        stopping=extra["stopping"],
        ending=extra.get("ending"),
        port_stopped=extra.get("port_stopped", False),
        start_held=extra.get("start_held", False),
    )


class ChargingRows:
    """The application's ``ChargingRepository`` over one connection (one transaction when writing),
    for one station (its code): every row it reads or writes is that station's."""

    def __init__(self, db: Db, station: str) -> None:
        self.db, self.station = db, station

    def scheduler_state(self) -> dict[str, Any] | None:
        rows = list(self.db.query("SELECT state FROM scheduler_state WHERE station = ?", [self.station]))
        return dict(json.loads(rows[0]["state"])) if rows else None

    def save_scheduler_state(self, state: Mapping[str, Any], at: datetime) -> None:
        self.db.table("scheduler_state").upsert(
            {"station": self.station, "state": json.dumps(state), "updated_at": iso(at)}, pk="station"
        )

    def live_sessions(self) -> list[LiveSession]:
        rows = self.db.query("SELECT * FROM live_sessions WHERE station = ?", [self.station])
        return [session_from_row(row) for row in rows]

    def save_live_session(self, session: LiveSession) -> None:
        self.db.table("live_sessions").upsert({**session_row(session), "station": self.station}, pk="car")

    def delete_live_session(self, car: str) -> None:
        self.db.execute("DELETE FROM live_sessions WHERE car = ?", [car])

    def active_requests(self) -> list[ActiveRequest]:
        return [
            ActiveRequest(
                r["id"], r["user_id"], r["battery_capacity"], datetime.fromisoformat(r["created_at"])
            )
            for r in self.db.query(
                "SELECT id, user_id, battery_capacity, created_at "
                "FROM charging_requests "
                "WHERE station = ? AND current_status IN ('waiting', 'charging')",
                [self.station],
            )
        ]

    def usernames(self, user_id: int | None = None) -> dict[int, str]:
        if user_id is None:
            rows = self.db.query("SELECT id, username FROM users")
        else:
            rows = self.db.query("SELECT id, username FROM users WHERE id = ?", [user_id])
        return {r["id"]: r["username"] for r in rows}

    def add_request(
        self,
        car: str,
        user_id: int,
        queue_number: str,
        mode: str,
        kwh: Fraction,
        battery_capacity: float | None,
        at: datetime,
    ) -> None:
        try:
            self.db.table("charging_requests").insert(
                {
                    "id": car,
                    "station": self.station,
                    "user_id": user_id,
                    "queue_number": queue_number,
                    "charging_mode": mode,
                    "requested_amount": str(kwh),
                    "battery_capacity": battery_capacity,
                    "current_status": "waiting",
                    "created_at": iso(at),
                    "updated_at": iso(at),
                }
            )
        except IntegrityError as exc:
            if exc.unique and _names_one_active(str(exc)):
                raise DuplicateRequestError(
                    "you already have an active charging request (at another station)"
                ) from None
            raise

    def change_request(self, car: str, queue_number: str, mode: str, kwh: Fraction, at: datetime) -> None:
        self.db.execute(
            "UPDATE charging_requests SET queue_number = ?, charging_mode = ?, "
            "requested_amount = ?, updated_at = ? WHERE id = ?",
            [queue_number, mode, str(kwh), iso(at), car],
        )

    def request_charging(self, car: str, at: datetime) -> None:
        self.db.execute(
            "UPDATE charging_requests SET current_status = 'charging', updated_at = ? WHERE id = ?",
            [iso(at), car],
        )

    def finish_request(self, car: str, user_id: int | None, bill: Bill, status: str, at: datetime) -> None:
        """The request's bill, its final status, and the bill id on its orders."""
        self.db.table("bills").insert(
            {
                "id": car,
                "station": self.station,
                "request_id": car,
                "user_id": user_id,
                "generated_time": iso(at),
                "electricity": str(bill.kwh),
                "total_amount": str(bill.total),
                "duration": int(sum((d.stop - d.start).total_seconds() for d in bill.details)),
            }
        )
        self.db.execute(
            "UPDATE charging_requests SET current_status = ?, bill_id = ?, "
            "finished_at = ?, updated_at = ? WHERE id = ?",
            [status, car, iso(at), iso(at), car],
        )
        self.db.execute("UPDATE orders SET bill_id = ? WHERE request_id = ?", [car, car])

    def open_session_order(self, order: SessionOrder) -> None:
        """The order of a dispatched segment (charging); the port points at it."""
        row: dict[str, Any] = {
            "id": order.order_id,
            "station": self.station,
            "order_no": session_order_no(order.at, order.order_id),
            "user_id": order.user_id,
            "request_id": order.car,
            "pile_no": order.pile_no,
            "port_no": str(order.port),
            "status": OrderStatus.CHARGING,
            "billing_mode": BillingMode.ENERGY_AND_ENERGY_FEE,
            "start_time": iso(order.at),
            "create_time": iso(order.at),
            "update_time": iso(order.at),
        }
        piles = list(
            self.db.query(
                "SELECT id FROM piles WHERE station = ? AND pile_no = ?", [self.station, order.pile_no]
            )
        )
        if piles:
            row["pile_id"] = piles[0]["id"]
            ports = list(
                self.db.query(
                    "SELECT id FROM ports WHERE pile_id = ? AND port_no = ?", [piles[0]["id"], row["port_no"]]
                )
            )
            if ports:
                row["port_id"] = ports[0]["id"]
                self.db.execute(
                    "UPDATE ports SET current_order_id = ? WHERE id = ?", [order.order_id, ports[0]["id"]]
                )
        self.db.table("orders").insert(row)

    def session_order_started(self, order_id: str, base_wh: int | None, at: datetime) -> None:
        self.db.execute(
            "UPDATE orders SET status = ?, start_meter_wh = ?, update_time = ? WHERE id = ?",
            [OrderStatus.CHARGING, base_wh, iso(at), order_id],
        )

    def finish_session_order(self, order: SessionOrder, detail: DetailRecord, end_wh: int | None) -> None:
        """A billed segment: its order gets the figures (created if it was never opened), the port
        is freed and its totals grow."""
        kwh, charge, service = detail.kwh, detail.charge_fee, detail.service_fee
        row = {
            "status": OrderStatus.ABNORMAL if detail.reason in ABNORMAL_REASONS else OrderStatus.COMPLETED,
            "start_time": iso(detail.start),
            "end_time": iso(detail.stop),
            "duration": int((detail.stop - detail.start).total_seconds()),
            "electricity": str(kwh),
            "electricity_num": float(kwh),
            "amount": str(charge),
            "amount_num": float(charge),
            "service_fee": str(service),
            "service_fee_num": float(service),
            "total_amount": str(charge + service),
            "total_amount_num": float(charge + service),
            "detail": json.dumps(detail.to_dict()),
            "end_meter_wh": end_wh,
            "generated_time": iso(order.at),
            "update_time": iso(order.at),
        }
        if self.db.table("orders").count_where("id = ?", [order.order_id]):
            self.db.table("orders").update(order.order_id, row)
        else:
            self.db.table("orders").insert(
                {
                    "id": order.order_id,
                    "station": self.station,
                    "order_no": session_order_no(order.at, order.order_id),
                    "user_id": order.user_id,
                    "request_id": order.car,
                    "pile_no": order.pile_no,
                    "port_no": str(order.port),
                    "billing_mode": BillingMode.ENERGY_AND_ENERGY_FEE,
                    "create_time": iso(order.at),
                    **row,
                }
            )
        self.db.execute(
            "UPDATE ports SET current_order_id = NULL, last_order_id = ?, "
            "total_charging_times = total_charging_times + 1, "
            "total_charging_duration = total_charging_duration + ?, "
            "total_power_consumption = total_power_consumption + ? "
            "WHERE current_order_id = ?",
            [order.order_id, row["duration"], float(kwh), order.order_id],
        )

    def cancel_session_order(self, order_id: str, at: datetime) -> None:
        """A segment cancelled before it was billed: nothing delivered, the port freed."""
        self.db.execute(
            "UPDATE orders SET status = ?, end_time = ?, update_time = ? WHERE id = ? AND status = ?",
            [OrderStatus.CANCELLED, iso(at), iso(at), order_id, OrderStatus.CHARGING],
        )
        self.db.execute(
            "UPDATE ports SET current_order_id = NULL, last_order_id = ? WHERE current_order_id = ?",
            [order_id, order_id],
        )

    def save_params(self, mapping: Mapping[str, Any], at: datetime) -> None:
        _save_param(self.db, self.station, "station", dict(mapping), iso(at))

    def pile_record(self, pile_no: str) -> PileRecord | None:
        rows = list(
            self.db.query(
                "SELECT id, pile_type, power_rate, total_ports FROM piles WHERE station = ? AND pile_no = ?",
                [self.station, pile_no],
            )
        )
        if not rows:
            return None
        row = rows[0]
        capacity = int(row["total_ports"])
        numbers = {
            str(port["port_no"]).strip()
            for port in self.db.query("SELECT port_no FROM ports WHERE pile_id = ?", [row["id"]])
        }
        port_nos = tuple(n for n in range(1, capacity + 1) if str(n) in numbers)
        mode = Mode.FAST if row["pile_type"] == FAST_PILE_TYPE else Mode.TRICKLE
        return PileRecord(mode, capacity, Fraction(str(row["power_rate"])), port_nos)


def _names_one_active(message: str) -> bool:
    """Whether a unique violation is the one-active-request-per-driver index's: PostgreSQL names
    the index, SQLite the column (the only unique constraint on ``user_id`` there is that index)."""
    return ONE_ACTIVE_REQUEST in message or "charging_requests.user_id" in message
