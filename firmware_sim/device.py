"""A simulated pile as a register device: port physics behind the SIM_V1 register map.

Pure (no sockets, no clock): the Modbus server hands this class the device's live register list on
every request. Reads first bring the addressed ports to ``now_s`` and re-render their telemetry,
read-back and sim registers (only ports whose physics changed are re-encoded); writes to a control
block run the command and leave the command register at 0; writes to ``sim_fault`` inject faults.
"""

from __future__ import annotations

from collections.abc import MutableSequence
from dataclasses import dataclass

import structlog

from protocols.registers import (
    SIM_V1,
    Block,
    FaultCode,
    PortState,
    SimFault,
    decode,
    encode,
)

from .config import SimPileSpec
from .physics import PortParams, PortPhysics

log = structlog.get_logger(__name__)

REGMAP = SIM_V1
assert REGMAP.sim is not None  # SIM_V1 always has the simulator block
SIM_BLOCK: Block = REGMAP.sim
KIND_CODES = {"trickle": 0, "fast": 1}
_CONTROL = REGMAP.control
_COMMAND_OFFSET = _CONTROL.field("command").offset
_HEARTBEAT_OFFSET = REGMAP.telemetry.field("heartbeat").offset


class WriteRejectedError(Exception):
    """A register write the pile refuses; the server answers ILLEGAL_VALUE."""


@dataclass(frozen=True)
class Segment:
    """A run of registers the device serves; writes to a read-only segment are refused."""

    address: int
    count: int
    writable: bool


def _int(value: object) -> int:
    """A decoded integer field (decode returns ``object``)."""
    if not isinstance(value, int):
        raise TypeError(f"expected an integer register value, got {value!r}")
    return value


def _span(block: Block) -> tuple[int, int]:
    return block.base, block.base + block.size


class SimPile:
    """Registers and physics of one pile. ``now_s`` arguments are simulated seconds."""

    def __init__(self, spec: SimPileSpec, *, ramp_s: float = 5.0, ambient_C: float = 25.0) -> None:
        self.spec = spec
        self.silent = False
        params = PortParams(
            kind=spec.kind,
            rated_power_W=spec.rated_power_W,
            ramp_s=ramp_s,
            ambient_C=ambient_C,
            initial_energy_Wh=spec.initial_energy_Wh,
        )
        self.ports = [PortPhysics(params) for _ in range(spec.ports)]
        self._rendered = [-1] * spec.ports  # physics version last encoded into the registers
        self._log = log.bind(pile=spec.id)

    # ------------------------------------------------------------------------------ layout

    def segments(self) -> list[Segment]:
        """The served address ranges; everything else answers ILLEGAL_ADDRESS."""
        result = [Segment(REGMAP.identity.base, REGMAP.identity.size, writable=False)]
        control_start, control_end = _span(_CONTROL)
        sim_start, sim_end = _span(SIM_BLOCK)
        for port in range(1, self.spec.ports + 1):
            base = REGMAP.port_address(port, REGMAP.telemetry)
            result += [
                Segment(base, control_start, writable=False),
                Segment(base + control_start, control_end - control_start, writable=True),
                Segment(base + control_end, sim_start - control_end, writable=False),
                Segment(base + sim_start, sim_end - sim_start, writable=True),
            ]
            # the rest of the port stride reads as zeros, as on real piles, so a read plan may
            # read straight through from one port's block into the next port's
            stride_end = REGMAP.port_stride - REGMAP.telemetry.base
            if port < self.spec.ports and sim_end < stride_end:
                result.append(Segment(base + sim_end, stride_end - sim_end, writable=False))
        return result

    def identity_registers(self) -> list[int]:
        spec = self.spec
        low_V = 222.0 if spec.kind == "trickle" else 400.0
        return encode(
            REGMAP,
            REGMAP.identity,
            {
                "vendor": "pilegate",
                "model": "SIM-DC" if spec.kind == "fast" else "SIM-AC",
                "serial": spec.id[:16],
                "firmware": "1.0.0",
                "num_ports": spec.ports,
                "rated_power_W": spec.rated_power_W,
                "max_current_A": round(spec.rated_power_W / low_V, 1),
                "kind": KIND_CODES[spec.kind],
            },
        )

    def _port_range(self, port: int) -> tuple[int, int]:
        base = REGMAP.port_address(port, REGMAP.telemetry)
        return base, base + REGMAP.port_stride

    def _ports_in(self, address: int, count: int) -> list[int]:
        end = address + count
        return [
            p
            for p in range(1, self.spec.ports + 1)
            if self._port_range(p)[0] < end and address < self._port_range(p)[1]
        ]

    # ------------------------------------------------------------------------------ time

    def advance_port(self, port: int, now_s: float) -> None:
        """Bring ``port`` to ``now_s``, logging state changes the physics made on its own."""
        physics = self.ports[port - 1]
        before = physics.state
        physics.advance(now_s)
        if physics.state != before:
            self._log.info(
                "port state changed", port=port, state=physics.state.name, energy_Wh=physics.meter_Wh
            )

    def tick(self, now_s: float) -> None:
        """Advance the ports that time still changes; idle ports cost one attribute check."""
        for port, physics in enumerate(self.ports, start=1):
            if physics.busy:
                self.advance_port(port, now_s)

    # ------------------------------------------------------------------------------ registers

    def port_values(self, port: int) -> dict[str, dict[str, object]]:
        """Engineering values of ``port``'s telemetry, read-back and sim blocks."""
        p = self.ports[port - 1]
        sim_fault = SimFault.SILENT if self.silent else SimFault(int(p.fault))
        return {
            "telemetry": {
                "state": int(p.state),
                "voltage_V": round(p.voltage_V, 1),
                "current_A": round(p.current_A, 2),
                "power_W": round(p.power_W),
                "energy_Wh": int(p.meter_Wh) % 2**32,
                "temperature_C": round(p.temperature_C, 1),
                "fault": int(p.fault),
                "heartbeat": 0,
            },
            "readback": {
                "ack_seq": p.ack_seq,
                "ack_status": int(p.ack_status),
                "active_target_Wh": p.active_target_Wh,
                "active_limit_W": p.active_limit_W,
            },
            "sim": {"sim_fault": int(sim_fault)},
        }

    def _render_port(self, registers: MutableSequence[int], start: int, port: int) -> None:
        values = self.port_values(port)
        for block in (REGMAP.telemetry, REGMAP.readback, SIM_BLOCK):
            words = encode(REGMAP, block, values[block.name])
            at = REGMAP.port_address(port, block) - start
            registers[at : at + len(words)] = words

    def render(
        self, registers: MutableSequence[int], start: int, address: int, count: int, now_s: float
    ) -> None:
        """Refresh the registers of every port that ``address``/``count`` touches."""
        heartbeat = int(now_s) & 0xFFFF
        for port in self._ports_in(address, count):
            self.advance_port(port, now_s)
            physics = self.ports[port - 1]
            if self._rendered[port - 1] != physics.version:
                self._render_port(registers, start, port)
                self._rendered[port - 1] = physics.version
            at = REGMAP.port_address(port, REGMAP.telemetry) + _HEARTBEAT_OFFSET - start
            registers[at] = heartbeat

    def invalidate(self) -> None:
        """Force a full re-render on the next read (after faults injected from outside)."""
        self._rendered = [-1] * self.spec.ports

    # ------------------------------------------------------------------------------ writes

    def apply_write(
        self,
        registers: MutableSequence[int],
        start: int,
        address: int,
        values: MutableSequence[int],
        now_s: float,
    ) -> None:
        """Act on a write before it is stored. ``values`` may be edited (command reset to 0)."""
        for port in self._ports_in(address, len(values)):
            self._write_sim_fault(port, address, values, now_s)
            self._write_control(registers, start, port, address, values, now_s)

    def _write_sim_fault(self, port: int, address: int, values: MutableSequence[int], now_s: float) -> None:
        at = REGMAP.port_address(port, SIM_BLOCK) - address
        if not 0 <= at < len(values):
            return
        try:
            fault = SimFault(values[at])
        except ValueError:
            raise WriteRejectedError(f"sim_fault {values[at]} is not a SimFault value") from None
        self.inject_fault(port, fault, now_s)
        values[at] = int(SimFault.SILENT if self.silent else self.ports[port - 1].fault)

    def _write_control(
        self,
        registers: MutableSequence[int],
        start: int,
        port: int,
        address: int,
        values: MutableSequence[int],
        now_s: float,
    ) -> None:
        base = REGMAP.port_address(port, _CONTROL)
        command_at = base + _COMMAND_OFFSET - address
        if not 0 <= command_at < len(values) or values[command_at] == 0:
            return  # parameters only, or command NONE: just stored
        words = list(registers[base - start : base - start + _CONTROL.size])
        for i in range(_CONTROL.size):
            if 0 <= base + i - address < len(values):
                words[i] = values[base + i - address]
        self._run_command(port, decode(REGMAP, _CONTROL, words), now_s)
        values[command_at] = 0

    def _run_command(self, port: int, control: dict[str, object], now_s: float) -> None:
        physics = self.ports[port - 1]
        command, seq = _int(control["command"]), _int(control["command_seq"])
        target_Wh, limit_W = _int(control["target_energy_Wh"]), _int(control["power_limit_W"])
        status = physics.command(command, seq, target_Wh, limit_W, now_s)
        self._log.info(
            "command",
            port=port,
            command=command,
            seq=seq,
            target_Wh=target_Wh,
            limit_W=limit_W,
            status=status.name,
            state=physics.state.name,
        )

    # ------------------------------------------------------------------------------ faults

    def inject_fault(self, port: int, fault: SimFault, now_s: float) -> None:
        """Inject ``fault`` on ``port``; SILENT mutes the whole pile, CLEAR clears port and SILENT."""
        physics = self.ports[port - 1]
        if fault == SimFault.SILENT:
            self.silent = True
        elif fault == SimFault.CLEAR:
            self.silent = False
            physics.clear_fault(now_s)
        else:
            physics.inject_fault(FaultCode(int(fault)), now_s)
        self.invalidate()
        self._log.warning("fault injected", port=port, fault=fault.name, state=physics.state.name)

    def snapshot(self, port: int, now_s: float) -> dict[str, object]:
        """Decoded register values of ``port`` at ``now_s``, plus ``silent``."""
        self.advance_port(port, now_s)
        values = self.port_values(port)
        result: dict[str, object] = {}
        for block in (REGMAP.telemetry, REGMAP.readback, SIM_BLOCK):
            result |= decode(REGMAP, block, encode(REGMAP, block, values[block.name]))
        result["heartbeat"] = int(now_s) & 0xFFFF
        result["state_name"] = PortState(_int(result["state"])).name
        result["fault_name"] = FaultCode(_int(result["fault"])).name
        result["silent"] = self.silent
        return result
