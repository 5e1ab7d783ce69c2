"""Charging physics of one simulated port: a pure state machine driven by simulated time.

Nothing here reads a clock or does I/O: every call takes ``now_s`` (simulated seconds), so tests
drive it with a fake clock. The model:

- START/STOP/SET_LIMIT commands with the acknowledgement rules of the sequenced recipe (the
  pilegate-sim-v1 control block), or a wallbox's current offer (:meth:`PortPhysics.offer`: an
  enable flag and a current limit in A; below the family's minimum the port pauses);
- power ramps linearly from 0 to the session's goal (rated power or the limit) in ``ramp_s``,
  energy is integrated exactly over each step, and a session with a target stops itself exactly
  on the target (never a tick later, never overshooting);
- plausible electricals: AC trickle at the nominal voltage minus a load drop (230 V -> 222 V) on 1
  to 3 phases, DC fast at 400-750 V rising with the delivered energy, current = P / (V x phases);
  the temperature follows the current with a first-order lag towards
  ``ambient + k * I**2``;
- faults stop the session and hold the port FAULTED until cleared.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from protocols.registers import Command, CommandStatus, FaultCode, PortState

AC_NOMINAL_V = 230.0
AC_DROP_AT_RATED_V = 8.0  # line drop at full load: 230 V idle -> 222 V at rated power
DC_MIN_V = 400.0
DC_MAX_V = 750.0
DC_SWING_WH = 100_000.0  # delivered energy over which the DC voltage climbs from min to max
OVER_TEMPERATURE_C = 85.0  # temperature shown when an over-temperature fault is injected
SETTLED_C = 0.05  # below this distance from equilibrium an idle port needs no ticking
START_STATES = frozenset({PortState.AVAILABLE, PortState.PLUGGED, PortState.FINISHED})


@dataclass(frozen=True)
class PortParams:
    """Constants of one port. Temperatures in °C, times in simulated seconds."""

    kind: Literal["fast", "trickle"]
    rated_power_W: int
    ramp_s: float = 5.0
    ambient_C: float = 25.0
    rise_at_rated_C: float = 25.0  # steady-state temperature rise at rated current
    thermal_tau_s: float = 120.0
    initial_energy_Wh: float = 0.0
    phases: int = 1  # AC phases the port charges on (DC: 1)
    nominal_V: float = AC_NOMINAL_V  # AC line-to-neutral voltage at no load

    @property
    def rated_current_A(self) -> float:
        """Current per phase at rated power and the lowest voltage of the kind (the worst case)."""
        if self.kind == "trickle":
            return self.rated_power_W / ((self.nominal_V - AC_DROP_AT_RATED_V) * self.phases)
        return self.rated_power_W / DC_MIN_V


class PortPhysics:
    """One port's state. Read the attributes freely; change it only through the methods."""

    def __init__(self, params: PortParams, now_s: float = 0.0) -> None:
        self.params = params
        self.state = PortState.AVAILABLE
        self.fault = FaultCode.NONE
        self.meter_Wh = float(params.initial_energy_Wh)  # cumulative, never wrapped here
        self.session_Wh = 0.0
        self.power_W = 0.0
        self.temperature_C = params.ambient_C
        self.target_Wh = 0  # 0 = no target
        self.limit_W = 0  # 0 = rated power
        self.ack_seq = 0
        self.ack_status = CommandStatus.NONE
        self.active_target_Wh = 0
        self.active_limit_W = 0
        self.vehicle_connected = False
        self.enabled = True  # current style: the enable register or coil
        self.current_limit_A: float | None = None  # current style: the offered current; None = W
        self.version = 0  # bumped on every change, so register views re-render only when needed
        self._session_start_Wh = self.meter_Wh
        self._t_s = now_s
        self._heat_k = params.rise_at_rated_C / max(params.rated_current_A, 1e-9) ** 2

    # ----------------------------------------------------------------------------- electricals

    @property
    def voltage_V(self) -> float:
        if self.params.kind == "trickle":
            load = self.power_W / self.params.rated_power_W
            return self.params.nominal_V - AC_DROP_AT_RATED_V * load
        if self.state != PortState.CHARGING:
            return 0.0  # DC output is off with the contactor open
        climb = min(1.0, self.session_Wh / DC_SWING_WH)
        return DC_MIN_V + (DC_MAX_V - DC_MIN_V) * climb

    @property
    def phases(self) -> int:
        return self.params.phases if self.params.kind == "trickle" else 1

    @property
    def current_A(self) -> float:
        """Current per phase."""
        volts = self.voltage_V
        return self.power_W / (volts * self.phases) if volts > 0 else 0.0

    def power_at_current_W(self, current_A: float) -> float:
        """The power ``current_A`` per phase gives, with the voltage it sags to at that power.

        AC: P = I x phases x (V0 - drop x P / rated), solved for P; DC: P = I x V now.
        """
        if self.params.kind == "trickle":
            i_total = current_A * self.phases
            sag = 1 + AC_DROP_AT_RATED_V * i_total / self.params.rated_power_W
            return i_total * self.params.nominal_V / sag
        climb = min(1.0, self.session_Wh / DC_SWING_WH)
        return current_A * (DC_MIN_V + (DC_MAX_V - DC_MIN_V) * climb)

    @property
    def goal_power_W(self) -> float:
        """The power the ramp heads for: rated, or the session limit (W or A) if lower."""
        if self.state != PortState.CHARGING:
            return 0.0
        rated = float(self.params.rated_power_W)
        if self.current_limit_A is not None:
            return min(rated, self.power_at_current_W(self.current_limit_A))
        return min(rated, self.limit_W) if self.limit_W else rated

    @property
    def busy(self) -> bool:
        """True while time still changes something (charging, or cooling down)."""
        if self.state == PortState.CHARGING:
            return True
        return abs(self.temperature_C - self.params.ambient_C) > SETTLED_C

    # ----------------------------------------------------------------------------- time

    def advance(self, now_s: float) -> None:
        """Bring the port to simulated time ``now_s`` (a no-op for times already passed)."""
        dt_s = now_s - self._t_s
        if dt_s <= 0:
            return
        self._t_s = now_s
        if not self.busy:
            return
        energy_Wh = self._charge(dt_s) if self.state == PortState.CHARGING else 0.0
        average_W = energy_Wh * 3600.0 / dt_s
        volts = self.voltage_V or DC_MIN_V
        self._heat(dt_s, average_W / (volts * self.phases))
        self.version += 1

    def _ramp_energy_Ws(self, dt_s: float, goal_W: float) -> tuple[float, float]:
        """Energy over ``dt_s`` while the power moves linearly towards ``goal_W``, and the end power."""
        start_W = self.power_W
        rate_W_per_s = self.params.rated_power_W / self.params.ramp_s if self.params.ramp_s else math.inf
        ramp_s = abs(goal_W - start_W) / rate_W_per_s
        if dt_s < ramp_s:
            end_W = start_W + math.copysign(rate_W_per_s * dt_s, goal_W - start_W)
            return (start_W + end_W) / 2 * dt_s, end_W
        return (start_W + goal_W) / 2 * ramp_s + goal_W * (dt_s - ramp_s), goal_W

    def _charge(self, dt_s: float) -> float:
        energy_Ws, end_W = self._ramp_energy_Ws(dt_s, self.goal_power_W)
        energy_Wh = energy_Ws / 3600.0
        if self.target_Wh and self.session_Wh + energy_Wh >= self.target_Wh:
            energy_Wh = self.target_Wh - self.session_Wh
            self.session_Wh = float(self.target_Wh)
            self.meter_Wh = self._session_start_Wh + self.target_Wh
            self._end_session(PortState.FINISHED)
            return energy_Wh
        self.power_W = end_W
        self.session_Wh += energy_Wh
        self.meter_Wh += energy_Wh
        return energy_Wh

    def _heat(self, dt_s: float, current_A: float) -> None:
        equilibrium_C = self.params.ambient_C + self._heat_k * current_A**2
        decay = math.exp(-dt_s / self.params.thermal_tau_s)
        self.temperature_C = equilibrium_C + (self.temperature_C - equilibrium_C) * decay

    def _end_session(self, state: PortState) -> None:
        self.state = state
        self.power_W = 0.0
        self.version += 1

    # ----------------------------------------------------------------------------- commands

    def command(self, command: int, seq: int, target_Wh: int, limit_W: int, now_s: float) -> CommandStatus:
        """Process a control-block command at ``now_s`` and acknowledge it with ``seq``."""
        self.advance(now_s)
        status = self._dispatch(command, target_Wh, limit_W)
        self.ack_seq = seq
        self.ack_status = status
        self.version += 1
        return status

    def _dispatch(self, command: int, target_Wh: int, limit_W: int) -> CommandStatus:
        if command == Command.START:
            return self._start(target_Wh, limit_W)
        if command == Command.STOP:
            if self.state == PortState.CHARGING:
                self._end_session(PortState.FINISHED)
            return CommandStatus.OK
        if command == Command.SET_LIMIT:
            return self._set_limit(limit_W)
        return CommandStatus.REJECTED_PARAM  # unknown command code

    def _start(self, target_Wh: int, limit_W: int) -> CommandStatus:
        if self.state == PortState.FAULTED:
            return CommandStatus.REJECTED_FAULT
        if self.state not in START_STATES:
            return CommandStatus.REJECTED_STATE
        if not 0 <= limit_W <= self.params.rated_power_W or target_Wh < 0:
            return CommandStatus.REJECTED_PARAM
        self._begin_session(target_Wh, limit_W)
        return CommandStatus.OK

    def _begin_session(self, target_Wh: int, limit_W: int) -> None:
        self.state = PortState.CHARGING
        self.vehicle_connected = True
        self.target_Wh, self.limit_W = target_Wh, limit_W
        self.session_Wh = 0.0
        self._session_start_Wh = self.meter_Wh
        self.active_target_Wh = target_Wh
        self.active_limit_W = limit_W or self.params.rated_power_W

    def _set_limit(self, limit_W: int) -> CommandStatus:
        if not 0 <= limit_W <= self.params.rated_power_W:
            return CommandStatus.REJECTED_PARAM
        self.limit_W = limit_W
        self.active_limit_W = limit_W or self.params.rated_power_W
        return CommandStatus.OK

    # ----------------------------------------------------------------------------- current style

    def offer(self, enabled: bool, limit_A: float, min_A: float, now_s: float) -> None:
        """A wallbox's charging offer changed: charge while enabled with ``limit_A >= min_A``.

        An offer starts a session from an idle state (a vehicle is assumed plugged in, as with
        START); withdrawing it ends the session: FINISHED when disabled or set to 0 A, PLUGGED
        (paused) for a current between 0 and the minimum. A faulted port only stores the offer.
        """
        self.advance(now_s)
        self.enabled, self.current_limit_A = enabled, limit_A
        offering = enabled and limit_A >= min_A
        if offering and self.state in START_STATES:
            self._begin_session(0, 0)
        elif not offering and self.state == PortState.CHARGING:
            paused = enabled and limit_A > 0
            self._end_session(PortState.PLUGGED if paused else PortState.FINISHED)
        self.active_limit_W = round(min(self.params.rated_power_W, self.power_at_current_W(limit_A)))
        self.version += 1

    # ----------------------------------------------------------------------------- faults

    def inject_fault(self, fault: FaultCode, now_s: float) -> None:
        """Raise ``fault`` at ``now_s``: any session stops and the port is FAULTED until cleared."""
        if fault == FaultCode.NONE:
            self.clear_fault(now_s)
            return
        self.advance(now_s)
        self._end_session(PortState.FAULTED)
        self.fault = fault
        if fault == FaultCode.OVER_TEMPERATURE:
            self.temperature_C = max(self.temperature_C, OVER_TEMPERATURE_C)

    def clear_fault(self, now_s: float) -> None:
        """Clear the fault: back to PLUGGED if a vehicle is connected, else AVAILABLE."""
        self.advance(now_s)
        if self.state != PortState.FAULTED:
            return
        self.fault = FaultCode.NONE
        self.state = PortState.PLUGGED if self.vehicle_connected else PortState.AVAILABLE
        self.version += 1
