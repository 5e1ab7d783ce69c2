"""Pure edge logic: turn successive port readings into events, and poll outcomes into pile states.

Nothing here does I/O; the runtime feeds readings in and publishes what comes out, so the rules are
unit-tested without a bus or a broker.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from protocols.payloads import PileState
from protocols.registers import FaultCode, PortState

FAULT_NAMES = {int(f): f.name.lower() for f in FaultCode}
STATE_NAMES = {int(s): s.name.lower() for s in PortState}
_IDLE = {PortState.AVAILABLE, PortState.UNAVAILABLE}


def fault_name(code: object) -> str:
    """Lower-case name of a fault code register value; unknown codes keep their number."""
    return FAULT_NAMES.get(int(code), f"code_{code}") if isinstance(code, int) else "none"


def state_name(code: object) -> str:
    """Lower-case name of a port state register value."""
    return STATE_NAMES.get(int(code), "unavailable") if isinstance(code, int) else "unavailable"


@dataclass(frozen=True, slots=True)
class PortEvent:
    """An event detected on one port, ready to be published."""

    type: str
    port: int
    fault: str = "none"
    energy_Wh: int | None = None


@dataclass
class PortTracker:
    """Remembers a port's last state and fault code and reports what changed."""

    port: int
    state: int | None = None
    fault: int | None = None

    def update(self, values: Mapping[str, object]) -> list[PortEvent]:
        state, fault = values.get("state"), values.get("fault")
        energy = values.get("energy_Wh")
        energy_Wh = energy if isinstance(energy, int) else None
        events: list[PortEvent] = []
        if isinstance(fault, int) and fault != (self.fault or 0):
            if fault:
                events.append(PortEvent("fault_raised", self.port, fault_name(fault), energy_Wh))
            else:
                events.append(PortEvent("fault_cleared", self.port, fault_name(self.fault), energy_Wh))
        if isinstance(state, int) and self.state is not None and state != self.state:
            events.extend(self._state_events(self.state, state, energy_Wh))
        self.state = state if isinstance(state, int) else self.state
        self.fault = fault if isinstance(fault, int) else self.fault
        return events

    def _state_events(self, old: int, new: int, energy_Wh: int | None) -> list[PortEvent]:
        events: list[PortEvent] = []
        if old == PortState.CHARGING:
            events.append(PortEvent("session_stopped", self.port, energy_Wh=energy_Wh))
        if old in _IDLE and new not in _IDLE:
            events.append(PortEvent("plugged", self.port, energy_Wh=energy_Wh))
        if new == PortState.CHARGING:
            events.append(PortEvent("session_started", self.port, energy_Wh=energy_Wh))
        if new == PortState.AVAILABLE and old not in _IDLE:
            events.append(PortEvent("unplugged", self.port, energy_Wh=energy_Wh))
        return events


@dataclass
class SessionMeter:
    """A cumulative meter from a family's session energy register (``energy_kind = "session"``),
    which restarts at 0 every session: each drop adds the last session's energy to a base. The base
    lives as long as the gateway process; after a restart the published meter starts again from
    the pile's current session value (the central counts that as one meter reset)."""

    base_Wh: int = 0
    last_Wh: int | None = None

    def cumulative(self, session_Wh: int) -> int:
        if self.last_Wh is not None and session_Wh < self.last_Wh:
            self.base_Wh += self.last_Wh
        self.last_Wh = session_Wh
        return self.base_Wh + session_Wh


@dataclass
class PileTracker:
    """A pile's published state: online, faulted (any port reports a fault), comm_fault or offline."""

    pile_id: str
    ports: int
    state: PileState | None = None
    port_trackers: dict[int, PortTracker] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.port_trackers = {p: PortTracker(p) for p in range(1, self.ports + 1)}

    def on_reading(
        self, ports: Mapping[int, Mapping[str, object]]
    ) -> tuple[list[PortEvent], PileState | None]:
        """Events of a successful poll, and the new pile state if it changed."""
        events: list[PortEvent] = []
        faulted = False
        for port, values in ports.items():
            tracker = self.port_trackers.get(port)
            if tracker is not None:
                events.extend(tracker.update(values))
            faulted = faulted or bool(values.get("fault"))
        return events, self._move("faulted" if faulted else "online")

    def on_comm_fault(self) -> PileState | None:
        """The bus gave up on this pile: the new state if it changed."""
        return self._move("comm_fault")

    def on_stop(self) -> PileState | None:
        return self._move("offline")

    def _move(self, new: PileState) -> PileState | None:
        if new == self.state:
            return None
        self.state = new
        return new
