"""The scheduler's entities: charging modes, charging points (a pile port), and charging requests.

A "point" is what the queue rules (docs/rules.md) call a pile: a single-port pile is one point (id
``F1``), a pile with several ports offers each as its own point (``F1-1``, ``F1-2``) with the
pile's mode.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from fractions import Fraction
from typing import Any

from central.domain.billing import Bill, DetailRecord
from central.domain.params import StationParams
from central.domain.units import exact


class Mode(StrEnum):
    """Charging mode; the value is the queue-number prefix."""

    FAST = "F"
    TRICKLE = "T"

    @classmethod
    def parse(cls, value: str) -> Mode:
        """Accept F/T and the user API's words (fast, slow, trickle)."""
        words = {
            "F": cls.FAST,
            "FAST": cls.FAST,
            "T": cls.TRICKLE,
            "TRICKLE": cls.TRICKLE,
            "SLOW": cls.TRICKLE,
        }
        try:
            return words[str(value).strip().upper()]
        except KeyError:
            raise ValueError(f"unknown charging mode {value!r} (F/fast or T/slow)") from None

    @property
    def api_name(self) -> str:
        """The user API's word for the mode."""
        return "fast" if self is Mode.FAST else "slow"


class RequestState(StrEnum):
    """Where a request is."""

    WAITING = "waiting"  # waiting area, has a queue number, not yet called
    FAULT_QUEUE = "fault_queue"  # charging area, taken off a pile, to be re-placed first
    QUEUED = "queued"  # in a charging point's queue behind the charging car
    CHARGING = "charging"

    @property
    def api_status(self) -> str:
        """The user API's ``current_status`` (waiting | charging)."""
        return "charging" if self is RequestState.CHARGING else "waiting"


@dataclass(frozen=True)
class ChargingPoint:
    """One place a car charges: a pile port with the pile's mode and rated power."""

    point_id: str
    pile_id: str
    mode: Mode
    power_kw: Fraction


def points_from_params(params: StationParams) -> list[ChargingPoint]:
    """Single-port piles F1..Fn then T1..Tn, in pile-number order."""
    fast = [
        ChargingPoint(f"F{i}", f"F{i}", Mode.FAST, exact(params.fast_power_kw))
        for i in range(1, params.fast_pile_num + 1)
    ]
    slow = [
        ChargingPoint(f"T{i}", f"T{i}", Mode.TRICKLE, exact(params.slow_power_kw))
        for i in range(1, params.trickle_pile_num + 1)
    ]
    return fast + slow


def multi_port_points(piles: Iterable[tuple[str, Mode, int, Fraction]]) -> list[ChargingPoint]:
    """Points of piles given as (pile id, mode, ports, power_kw); ports > 1 get ``-n`` suffixes."""
    points: list[ChargingPoint] = []
    for pile_id, mode, ports, power_kw in piles:
        ids = [pile_id] if ports == 1 else [f"{pile_id}-{n}" for n in range(1, ports + 1)]
        points.extend(ChargingPoint(i, pile_id, mode, exact(power_kw)) for i in ids)
    return points


@dataclass
class PointState:
    """A charging point and its queue; ``queue[0]`` charges whenever the point is working."""

    point: ChargingPoint
    faulted: bool = False
    disabled: bool = False
    queue: list[str] = field(default_factory=list)

    @property
    def working(self) -> bool:
        """Neither faulted nor taken out of service."""
        return not (self.faulted or self.disabled)

    @property
    def status(self) -> str:
        """working | fault | offline."""
        return "fault" if self.faulted else "offline" if self.disabled else "working"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (used by the scheduler's ``to_dict``)."""
        p = self.point
        return {
            "id": p.point_id,
            "pile": p.pile_id,
            "mode": p.mode.value,
            "power_kw": str(p.power_kw),
            "faulted": self.faulted,
            "disabled": self.disabled,
            "queue": list(self.queue),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PointState:
        """Inverse of :meth:`to_dict`."""
        point = ChargingPoint(
            str(data["id"]), str(data["pile"]), Mode(data["mode"]), Fraction(data["power_kw"])
        )
        return cls(point, bool(data["faulted"]), bool(data["disabled"]), [str(c) for c in data["queue"]])


@dataclass
class Request:
    """One car's charging request, from queue number to completion.

    ``requested_kwh`` is the whole amount asked for; ``delivered_kwh`` counts closed segments.
    While charging, ``progress_kwh`` is the current segment's energy last known at
    ``progress_at`` (live meter readings; in replay it stays 0 at the segment start).
    """

    car: str
    mode: Mode
    number: int
    requested_kwh: Fraction
    created_at: datetime
    seq: int = 0  # order of entering the current waiting line
    state: RequestState = RequestState.WAITING
    point_id: str | None = None
    delivered_kwh: Fraction = Fraction(0)
    segment_start: datetime | None = None
    progress_kwh: Fraction = Fraction(0)
    progress_at: datetime | None = None
    details: list[DetailRecord] = field(default_factory=list)

    @property
    def queue_number(self) -> str:
        """F1, T3, ..."""
        return f"{self.mode.value}{self.number}"

    @property
    def remaining_kwh(self) -> Fraction:
        """What is still to charge, not counting the open segment."""
        if not self.delivered_kwh:
            return self.requested_kwh
        return self.requested_kwh - self.delivered_kwh

    def bill(self, status: str) -> Bill:
        """The request's bill so far."""
        return Bill(
            self.car, self.queue_number, self.mode.value, self.requested_kwh, status, tuple(self.details)
        )

    def to_dict(self) -> dict[str, Any]:
        """Exact, JSON-able form."""
        return {
            "car": self.car,
            "mode": self.mode.value,
            "number": self.number,
            "requested_kwh": str(self.requested_kwh),
            "created_at": self.created_at.isoformat(),
            "seq": self.seq,
            "state": self.state.value,
            "point": self.point_id,
            "delivered_kwh": str(self.delivered_kwh),
            "segment_start": _iso(self.segment_start),
            "progress_kwh": str(self.progress_kwh),
            "progress_at": _iso(self.progress_at),
            "details": [d.to_dict() for d in self.details],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Request:
        """Inverse of :meth:`to_dict`."""
        return cls(
            str(data["car"]),
            Mode(data["mode"]),
            int(data["number"]),
            Fraction(data["requested_kwh"]),
            datetime.fromisoformat(data["created_at"]),
            int(data["seq"]),
            RequestState(data["state"]),
            data["point"],
            Fraction(data["delivered_kwh"]),
            _from_iso(data["segment_start"]),
            Fraction(data["progress_kwh"]),
            _from_iso(data["progress_at"]),
            [DetailRecord.from_dict(d) for d in data["details"]],
        )


def by_number(requests: Sequence[Request]) -> list[Request]:
    """Requests sorted by queue number (numeric part; one mode at a time)."""
    return sorted(requests, key=lambda r: r.number)


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


def _from_iso(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)
