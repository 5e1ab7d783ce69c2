"""Live segments on real ports: a driver's charging segment (:class:`LiveSession`) and an operator
order's charge (:class:`OrderSession`). Both follow the port's meter with the one meter-session rule
of :mod:`central.domain.metering`; what they add is how the segment is commanded and ended."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from fractions import Fraction

from central.domain.metering import MeterSession
from central.domain.tariff import MeterSamples
from protocols.payloads import Telemetry


@dataclass
class LiveSession:
    """A car's charging segment on a real port: commands sent, meter samples seen."""

    car: str
    point_id: str
    pile_no: str
    port: int
    target_kwh: Fraction
    order_id: str
    meter: MeterSession = field(default_factory=MeterSession)
    command_id: str | None = None
    stopping: bool = False  # a stop command was sent
    ending: str | None = None  # "complete" or "cancel": how the segment ends once the port stops
    port_stopped: bool = False  # the port reported it no longer charges
    start_held: bool = False  # the start waits until the port reports it stopped its last charge
    released_ms: int | None = None  # wall ms of the reading that sent the held start (not stored)

    @property
    def delivered_wh(self) -> int:
        return self.meter.delivered_wh

    def snapshot(self) -> LiveSession:
        """A copy to store while the live one keeps taking readings."""
        return replace(self, meter=self.meter.copy())


@dataclass
class OrderSession:
    """An operator order charging on a port: its meter, and a signal for the stopped reading."""

    order_id: str
    user_id: int
    pile_no: str
    port: int
    start: datetime
    meter: MeterSession
    stopping: bool = False  # a stop command was sent
    port_stopped: bool = False  # the port reported it no longer charges
    stopped: asyncio.Event = field(default_factory=asyncio.Event)
    watcher: Callable[[Telemetry], None] | None = None

    @property
    def key(self) -> tuple[str, int]:
        return self.pile_no, self.port

    @property
    def live(self) -> bool:
        """The port reported charging (or its meter moved) since the order started."""
        return self.meter.started

    @property
    def delivered_wh(self) -> int:
        return self.meter.delivered_wh

    def snapshot(self) -> OrderSession:
        """A copy to store while the live one keeps taking readings."""
        return replace(self, meter=self.meter.copy())


def segment_samples(
    meter: MeterSession, start: datetime, at_ms: Callable[[int], datetime]
) -> MeterSamples | None:
    """The meter's samples in station time from ``start``, or None before the first sample.

    The pile cannot deliver before it was dispatched, so a reading taken at or before ``start``
    (the idle baseline) stands at ``start``: none of the meter's difference is lost.
    """
    if meter.base_wh is None or not meter.samples:
        return None
    points = [(start, Fraction(0))]
    for ms, wh in meter.samples:
        at = at_ms(ms)
        if at > start:
            points.append((at, Fraction(wh - meter.base_wh)))
        else:
            points[0] = (start, Fraction(wh - meter.base_wh))
    return MeterSamples(points)
