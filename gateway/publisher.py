"""Stamps outgoing messages with session and sequence numbers and batches them into the outbox.

Telemetry is buffered and written in one outbox transaction per ``flush_interval_s``, so a thousand
piles cost ten transactions a second rather than a thousand. Events, status changes and command
results are flushed at once. ``seq`` counts per stream (one port's telemetry, one pile's events)
within a session and restarts at 1 when the session changes, so the central de-duplicates by
(stream, session, seq) and counts gaps per stream.

Telemetry is the hot path (one message per port per poll): its JSON is built straight from the
decoded values with msgspec (:func:`telemetry_payload`), the same document ``Telemetry.to_json``
writes, and each port's topic is formatted once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping

import msgspec
import structlog

from gateway.outbox import Outbox, OutMessage
from gateway.tracker import PortEvent, fault_name, state_name
from protocols import topics
from protocols.payloads import CommandResult, GatewayStatus, PileEvent, PileStatus, Telemetry

log = structlog.get_logger(__name__)

_encode_json = msgspec.json.Encoder().encode


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class Publisher:
    """The one path from the gateway's logic to the outbox."""

    def __init__(
        self,
        station: str,
        gateway_id: str,
        outbox: Outbox,
        notify: Callable[[], None],
        *,
        flush_interval_s: float = 0.1,
        clock_ms: Callable[[], int] = wall_ms,
    ) -> None:
        self.station, self.gateway_id = station, gateway_id
        self._outbox, self._notify = outbox, notify
        self._flush_interval_s = flush_interval_s
        self._clock_ms = clock_ms
        self._pending: list[OutMessage] = []
        self._urgent = asyncio.Event()
        self._seq: dict[str, int] = {}
        self._telemetry_topics: dict[tuple[str, int], str] = {}
        self.session = 0
        self.flushes = 0
        self.written = 0

    def set_session(self, session: int) -> None:
        """A new uplink session began: sequence numbers restart (unless it is the same one)."""
        if session == self.session:
            return
        self.session = session
        self._seq.clear()

    def _next_seq(self, stream: str) -> int:
        seq = self._seq.get(stream, 0) + 1
        self._seq[stream] = seq
        return seq

    def telemetry(self, pile: str, port: int, ts_ms: int, values: Mapping[str, object]) -> None:
        """Queue one port's reading (decoded register values) as a telemetry message."""
        topic = self._telemetry_topics.get((pile, port))
        if topic is None:
            topic = self._telemetry_topics[pile, port] = topics.telemetry(self.station, pile, port)
        payload = telemetry_payload(values, ts_ms, self.session, self._next_seq(topic))
        self._pending.append(OutMessage(topic, payload, 1, False, "telemetry", self._clock_ms()))

    def now_ms(self) -> int:
        return self._clock_ms()

    def event(self, pile: str, ts_ms: int, event: PortEvent) -> None:
        topic = topics.pile_event(self.station, pile)
        payload = PileEvent(
            ts_ms,
            self.session,
            self._next_seq(topic),
            event.type,  # type: ignore[arg-type]
            event.port,
            event.fault,
            event.energy_Wh,
        )
        self._push(OutMessage(topic, payload.to_json(), 1, False, "event", self._clock_ms()))

    def pile_status(self, pile: str, status: PileStatus) -> None:
        topic = topics.pile_status(self.station, pile)
        self._push(OutMessage(topic, status.to_json(), 1, True, "status", self._clock_ms()))

    def cmd_result(self, pile: str, port: int, result: CommandResult) -> None:
        topic = topics.cmd_result(self.station, pile, port)
        self._push(OutMessage(topic, result.to_json(), 1, False, "cmd_result", self._clock_ms()))

    def gateway_status(self, status: GatewayStatus) -> OutMessage:
        """The retained gateway status message (not queued: the uplink sends it itself)."""
        return OutMessage(
            topics.gw_status(self.station, self.gateway_id),
            status.to_json(),
            1,
            True,
            "status",
            self._clock_ms(),
        )

    def _push(self, message: OutMessage) -> None:
        self._pending.append(message)
        self._urgent.set()

    def flush(self) -> int:
        """Write everything pending to the outbox in one transaction; returns how many."""
        if not self._pending:
            return 0
        batch, self._pending = self._pending, []
        try:
            self._outbox.append_many(batch)
        except Exception:
            self._pending = batch + self._pending  # kept for the next attempt
            raise
        self.flushes += 1
        self.written += len(batch)
        self._notify()
        return len(batch)

    async def run(self) -> None:
        """Flush every ``flush_interval_s``, or at once when something urgent is queued."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._urgent.wait(), self._flush_interval_s)
            self._urgent.clear()
            try:
                self.flush()
            except Exception:  # a full disk must not kill the gateway; the batch is kept
                log.exception("outbox write failed")


def _num(values: Mapping[str, object], name: str) -> float:
    value = values.get(name, 0)
    return value if isinstance(value, int | float) else 0


def telemetry_payload(values: Mapping[str, object], ts_ms: int, session: int, seq: int) -> bytes:
    """The telemetry JSON of one port's reading: ``telemetry_from_values(...).to_json()``, faster."""
    limit, target = values.get("active_limit_W"), values.get("active_target_Wh")
    return _encode_json(
        {
            "ts": ts_ms,
            "session": session,
            "seq": seq,
            "state": state_name(values.get("state")),
            "voltage_V": _num(values, "voltage_V"),
            "current_A": _num(values, "current_A"),
            "power_W": _num(values, "power_W"),
            "energy_Wh": int(_num(values, "energy_Wh")),
            "temperature_C": _num(values, "temperature_C"),
            "fault": fault_name(values.get("fault")),
            "heartbeat": int(_num(values, "heartbeat")),
            "active_limit_W": limit if isinstance(limit, int) else None,
            "active_target_Wh": target if isinstance(target, int) else None,
        }
    )


def telemetry_from_values(values: Mapping[str, object], ts_ms: int, session: int, seq: int) -> Telemetry:
    """A telemetry payload from a port's decoded telemetry and read-back registers."""
    limit, target = values.get("active_limit_W"), values.get("active_target_Wh")
    return Telemetry(
        ts=ts_ms,
        session=session,
        seq=seq,
        state=state_name(values.get("state")),
        voltage_V=_num(values, "voltage_V"),
        current_A=_num(values, "current_A"),
        power_W=_num(values, "power_W"),
        energy_Wh=int(_num(values, "energy_Wh")),
        temperature_C=_num(values, "temperature_C"),
        fault=fault_name(values.get("fault")),
        heartbeat=int(_num(values, "heartbeat")),
        active_limit_W=limit if isinstance(limit, int) else None,
        active_target_Wh=target if isinstance(target, int) else None,
    )
