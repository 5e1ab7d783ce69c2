"""A simulated pile as a register device: port physics behind any register map.

Pure (no sockets, no clock): the Modbus server hands this class the device's live register list of
one table (function code 3 holding, 4 input, 1 coils, 2 discrete inputs) on every request. Reads
first bring the addressed ports to ``now_s`` and re-render their telemetry, read-back and sim
registers through the map's encoder (:mod:`firmware_sim.render`; only ports whose physics changed
are re-encoded). Writes to control registers follow the map's command recipe:

- ``sequenced`` (pilegate-sim-v1): a write of the command register runs the command with the
  control block's parameters and leaves the command register at 0; the read-back acknowledges it;
- ``current`` (wallboxes): the current-limit register (A) and the optional enable register or coil
  are the pile's charging offer; the values stay as written, and the port charges while enabled
  with at least the family's minimum current (:meth:`~firmware_sim.physics.PortPhysics.offer`).

Faults are injected through :meth:`SimPile.inject` (the control API), or by writing a map's
simulator-only ``sim_fault`` register (pilegate-sim-v1).
"""

from __future__ import annotations

from collections.abc import Iterator, MutableSequence, Sequence
from dataclasses import dataclass, field

import structlog

from protocols.canonical import FAULT_NAMES, fault_converter, state_converter
from protocols.codec import decode
from protocols.registers import get_map
from protocols.regmodel import (
    Block,
    Command,
    CommandStatus,
    CurrentRecipe,
    FaultCode,
    Field,
    PortState,
    RegisterMap,
    SequencedRecipe,
    SimFault,
)

from .config import SimPileSpec
from .physics import PortParams, PortPhysics
from .render import MapEncoder

log = structlog.get_logger(__name__)

KIND_CODES = {"trickle": 0, "fast": 1}
SIM_FAULT = "sim_fault"
WRITABLE_SECTIONS = ("control", "sim")
BIT_TABLES = (1, 2)
# Modbus function code of a request -> the table it addresses (1 coils, 2 discrete, 3 holding, 4 input)
TABLE_OF_FUNCTION = {1: 1, 5: 1, 15: 1, 2: 2, 3: 3, 6: 3, 16: 3, 22: 3, 23: 3, 4: 4}
OPS = {"start": Command.START, "stop": Command.STOP, "limit": Command.SET_LIMIT}
STATUS_OUTCOMES = {
    CommandStatus.OK: ("ok",),
    CommandStatus.REJECTED_STATE: ("rejected_state", "rejected"),
    CommandStatus.REJECTED_FAULT: ("rejected_fault", "rejected"),
    CommandStatus.REJECTED_PARAM: ("rejected_param", "rejected"),
}
_SIM_FAULT_KINDS = {SimFault.CLEAR: "clear", SimFault.SILENT: "silent"}
INJECTABLE = ("clear", "silent", *(name for name in FAULT_NAMES if name != "none"))


class WriteRejectedError(Exception):
    """A register write the pile refuses; the server answers ILLEGAL_VALUE."""


class ReadOnlyError(WriteRejectedError):
    """A write to registers or coils the pile does not let anyone write; ILLEGAL_ADDRESS."""


class UnknownFaultError(ValueError):
    """A fault kind the simulator cannot inject."""


@dataclass(frozen=True)
class Segment:
    """A run of registers (or bits) the device serves, with their initial values."""

    address: int
    count: int
    writable: bool
    values: tuple[int, ...] = field(default=(), compare=False)


def _int(value: object) -> int:
    """A decoded integer field (decode returns ``object``)."""
    if not isinstance(value, int):
        raise TypeError(f"expected an integer register value, got {value!r}")
    return value


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected a numeric register value, got {value!r}")
    return float(value)


def _runs(flags: Sequence[bool]) -> Iterator[tuple[int, int, bool]]:
    """(start, count, flag) of each run of equal flags."""
    start = 0
    for i in range(1, len(flags) + 1):
        if i == len(flags) or flags[i] != flags[start]:
            yield start, i - start, flags[start]
            start = i


def _overlaps(address: int, count: int, start: int, width: int) -> bool:
    return start < address + count and address < start + width


# ---------------------------------------------------------------------------------------------
# words and bits in the live table pymodbus hands over


def _get(registers: Sequence[int], start: int, address: int, bits: bool) -> int:
    if bits:
        return registers[address // 16 - start] >> (address % 16) & 1
    return registers[address - start]


def _put(registers: MutableSequence[int], start: int, address: int, words: Sequence[int], bits: bool) -> None:
    if not bits:
        registers[address - start : address - start + len(words)] = words
        return
    for i, bit in enumerate(words):
        at, mask = (address + i) // 16 - start, 1 << ((address + i) % 16)
        registers[at] = registers[at] | mask if bit else registers[at] & ~mask


class SimPile:
    """Registers and physics of one pile. ``now_s`` arguments are simulated seconds."""

    def __init__(
        self,
        spec: SimPileSpec,
        *,
        ramp_s: float = 5.0,
        ambient_C: float = 25.0,
        regmap: RegisterMap | None = None,
    ) -> None:
        self.spec = spec
        self.regmap = regmap if regmap is not None else get_map(spec.map)
        self.encoder = MapEncoder(self.regmap)
        self.recipe = self.regmap.recipe
        self.silent = False
        params = PortParams(
            kind=spec.kind,
            rated_power_W=spec.rated_power_W,
            ramp_s=ramp_s,
            ambient_C=ambient_C,
            initial_energy_Wh=spec.initial_energy_Wh,
            phases=self.regmap.phases,
            nominal_V=self.regmap.nominal_voltage_V,
        )
        self.ports = [PortPhysics(params) for _ in range(spec.ports)]
        if isinstance(self.recipe, CurrentRecipe):
            for physics in self.ports:
                physics.current_limit_A = 0.0
                physics.enabled = self.recipe.enable is None
        self.tables = sorted({b.function for b in (*self.regmap.identity_blocks, *self.regmap.port_blocks)})
        self._rendered: dict[tuple[int, int], int] = {}  # (table, port) -> physics version encoded
        self._heartbeat = self._telemetry_field("heartbeat")
        self._sim_fault = self.regmap.fields_by_name.get(SIM_FAULT)
        self._status_codes = self._ack_codes()
        self._writable_coils: set[int] | None = None
        self._spans: dict[int, list[tuple[int, int]]] = {}
        self._fixed: dict[str, dict[str, object]] = {}
        for name, value in spec.registers:
            self._fixed.setdefault(self.regmap.fields_by_name[name][0].kind, {})[name] = value
        self._log = log.bind(pile=spec.id, map=self.regmap.name)

    def _telemetry_field(self, name: str) -> tuple[Block, Field] | None:
        found = self.regmap.fields_by_name.get(name)
        return found if found is not None and found[0].kind == "telemetry" else None

    def _ack_codes(self) -> dict[CommandStatus, int]:
        """The read-back status code for each outcome (a refusal the family does not tell apart
        shows as its generic ``rejected`` code, else as its first refusal code)."""
        if not isinstance(self.recipe, SequencedRecipe):
            return {}
        by_outcome: dict[str, int] = {}
        for code, outcome in self.recipe.statuses:
            by_outcome.setdefault(outcome, code)
        refusals = [code for code, outcome in self.recipe.statuses if outcome != "ok"]
        codes: dict[CommandStatus, int] = {CommandStatus.NONE: 0}
        for status, outcomes in STATUS_OUTCOMES.items():
            found = [by_outcome[o] for o in outcomes if o in by_outcome]
            codes[status] = found[0] if found else (refusals[0] if refusals else 0)
        return codes

    # ------------------------------------------------------------------------------ layout

    def _port_blocks(self, table: int) -> list[Block]:
        return [b for b in self.regmap.port_blocks if b.function == table]

    def _port_extent(self, table: int) -> tuple[int, int] | None:
        """(first, end) offsets from a port's base of the port's registers in ``table``."""
        blocks = self._port_blocks(table)
        if not blocks:
            return None
        return min(b.base for b in blocks), max(b.base + b.size for b in blocks)

    def _writable_offsets(self, table: int) -> set[int]:
        return {
            b.base + f.offset + i
            for b in self._port_blocks(table)
            if b.kind in WRITABLE_SECTIONS
            for f in b.fields
            for i in range(f.width)
        }

    def segments(self, table: int = 3) -> list[Segment]:
        """The served ranges of ``table``; everything else answers ILLEGAL_ADDRESS."""
        image = self.initial_image(table)
        result = [
            Segment(b.base, b.size, False, tuple(image.get(b.base + i, 0) for i in range(b.size)))
            for b in self.regmap.identity_blocks
            if b.function == table
        ]
        extent = self._port_extent(table)
        if extent is None:
            return result
        low, high = extent
        writable = self._writable_offsets(table)
        for port in range(1, self.spec.ports + 1):
            base = self.regmap.port_bases[port - 1]
            flags = [low + i in writable for i in range(high - low)]
            for at, count, rw in _runs(flags):
                first = base + low + at
                result.append(Segment(first, count, rw, tuple(image.get(first + i, 0) for i in range(count))))
            # the rest of a port stride reads as zeros, as on real piles, so a read plan may read
            # straight through from one port's registers into the next port's
            pad = self.regmap.port_stride - (high - low)
            if self.regmap.port_stride and port < self.spec.ports and pad > 0:
                result.append(Segment(base + high, pad, False, (0,) * pad))
        return result

    def serves(self, table: int, address: int) -> bool:
        """Whether ``address`` of ``table`` is one the pile serves."""
        spans = self._spans.get(table)
        if spans is None:
            spans = self._spans[table] = [(s.address, s.address + s.count) for s in self.segments(table)]
        return any(first <= address < end for first, end in spans)

    def initial_image(self, table: int) -> dict[int, int]:
        """Non-zero start values of ``table``: the identity, and a current recipe's offer."""
        image: dict[int, int] = {}
        for block, words in self.encoder.identity(self.identity_values()):
            if block.function == table:
                image.update((block.base + i, w) for i, w in enumerate(words))
        if isinstance(self.recipe, CurrentRecipe) and self.recipe.enable is not None:
            block, f = self.regmap.fields_by_name[self.recipe.enable]
            if block.function == table:
                words = self.encoder.encode_field(f, self.recipe.enable_off)
                for port in range(1, self.spec.ports + 1):
                    at = self.regmap.port_address(port, block) + f.offset
                    image.update((at + i, w) for i, w in enumerate(words))
        return image

    def identity_values(self) -> dict[str, object]:
        """What the pile says it is, by the identity names pilegate's maps use."""
        spec = self.spec
        low_V = 222.0 if spec.kind == "trickle" else 400.0
        return {
            "vendor": "pilegate",
            "model": "SIM-DC" if spec.kind == "fast" else "SIM-AC",
            "serial": spec.id[:16],
            "firmware": "1.0.0",
            "num_ports": spec.ports,
            "rated_power_W": spec.rated_power_W,
            "max_current_A": round(spec.rated_power_W / low_V / self.ports[0].phases, 1),
            "kind": KIND_CODES[spec.kind],
        }

    def identity_registers(self) -> list[int]:
        """The words of the map's (single) identity block."""
        return self.encoder.identity(self.identity_values())[0][1]

    def _port_range(self, table: int, port: int) -> tuple[int, int]:
        low, high = self._port_extent(table) or (0, 0)
        first = self.regmap.port_bases[port - 1] + low
        return first, first + max(high - low, self.regmap.port_stride)

    def _ports_in(self, table: int, address: int, count: int) -> list[int]:
        end = address + count
        ranges = [self._port_range(table, p) for p in range(1, self.spec.ports + 1)]
        return [p for p, (first, last) in enumerate(ranges, start=1) if first < end and address < last]

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
        """Canonical values of ``port`` by section; the encoder turns them into the map's codes."""
        p = self.ports[port - 1]
        values = {"telemetry": self._telemetry(p), "readback": self._readback(p), "sim": self._sim(p)}
        for section, fixed in self._fixed.items():
            values[section].update(fixed)
        return values

    def _telemetry(self, p: PortPhysics) -> dict[str, object]:
        values: dict[str, object] = {
            "state": int(p.state),
            "voltage_V": round(p.voltage_V, 1),
            "current_A": round(p.current_A, 2),
            "power_W": round(p.power_W),
            "energy_Wh": p.meter_Wh,
            "temperature_C": round(p.temperature_C, 1),
            "fault": int(p.fault),
            "heartbeat": 0,
        }
        for phase in (1, 2, 3):
            live = phase <= p.phases
            values[f"voltage_L{phase}_V"] = round(p.voltage_V, 1) if live else 0.0
            values[f"current_L{phase}_A"] = round(p.current_A, 3) if live else 0.0
        return values

    def _readback(self, p: PortPhysics) -> dict[str, object]:
        values: dict[str, object] = {
            "active_target_Wh": p.active_target_Wh,
            "active_limit_W": p.active_limit_W,
        }
        recipe = self.recipe
        if isinstance(recipe, SequencedRecipe):
            values[recipe.ack_sequence] = p.ack_seq
            values[recipe.ack_status] = self._status_codes[p.ack_status]
        elif isinstance(recipe, CurrentRecipe):
            limit_A = p.current_limit_A or 0.0
            values["active_current_A"] = limit_A
            values["enabled"] = int(p.enabled)
            values[recipe.confirm] = limit_A
        return values

    def _sim(self, p: PortPhysics) -> dict[str, object]:
        shown = SimFault.SILENT if self.silent else int(p.fault) if p.fault <= SimFault.CONTACTOR_FAULT else 0
        return {SIM_FAULT: int(shown)}

    def _render_port(self, table: int, registers: MutableSequence[int], start: int, port: int) -> None:
        values = self.port_values(port)
        bits = table in BIT_TABLES
        for rendered in self.encoder.blocks:
            block = rendered.block
            if block.function != table:
                continue
            words = self.encoder.encode_block(rendered, values[block.kind])
            at = self.regmap.port_address(port, block)
            for first, end in rendered.runs:
                _put(registers, start, at + first, words[first:end], bits)

    def render(
        self,
        registers: MutableSequence[int],
        start: int,
        address: int,
        count: int,
        now_s: float,
        table: int = 3,
    ) -> None:
        """Refresh the registers of ``table`` of every port that ``address``/``count`` touches."""
        for port in self._ports_in(table, address, count):
            self.advance_port(port, now_s)
            physics = self.ports[port - 1]
            if self._rendered.get((table, port)) != physics.version:
                self._render_port(table, registers, start, port)
                self._rendered[(table, port)] = physics.version
            if self._heartbeat is not None and self._heartbeat[0].function == table:
                block, f = self._heartbeat
                words = self.encoder.encode_field(f, int(now_s) & 0xFFFF)
                at = self.regmap.port_address(port, block) + f.offset
                _put(registers, start, at, words, table in BIT_TABLES)

    def invalidate(self) -> None:
        """Force a full re-render on the next read (after faults injected from outside)."""
        self._rendered.clear()

    # ------------------------------------------------------------------------------ writes

    def apply_write(
        self,
        registers: MutableSequence[int],
        start: int,
        address: int,
        values: MutableSequence[int],
        now_s: float,
        table: int = 3,
    ) -> None:
        """Act on a write before it is stored. ``values`` may be edited (command reset to 0)."""
        if table in BIT_TABLES:
            self._check_writable_bits(address, len(values))
        for port in self._ports_in(table, address, len(values)):
            self._write_sim_fault(table, port, address, values, now_s)
            if isinstance(self.recipe, SequencedRecipe):
                self._write_sequenced(registers, start, port, address, values, now_s, self.recipe)
            elif isinstance(self.recipe, CurrentRecipe):
                self._write_current(table, registers, start, port, address, values, now_s, self.recipe)

    def _check_writable_bits(self, address: int, count: int) -> None:
        if self._writable_coils is None:
            segments = self.segments(1)
            self._writable_coils = {s.address + i for s in segments if s.writable for i in range(s.count)}
        refused = [a for a in range(address, address + count) if a not in self._writable_coils]
        if refused:
            raise ReadOnlyError(f"coils {refused[0]}.. are not writable")

    def _write_sim_fault(
        self, table: int, port: int, address: int, values: MutableSequence[int], now_s: float
    ) -> None:
        if self._sim_fault is None or self._sim_fault[0].function != table:
            return
        block, f = self._sim_fault
        at = self.regmap.port_address(port, block) + f.offset - address
        if not 0 <= at < len(values):
            return
        try:
            fault = SimFault(values[at])
        except ValueError:
            raise WriteRejectedError(f"sim_fault {values[at]} is not a SimFault value") from None
        self.inject_fault(port, fault, now_s)
        values[at] = int(_int(self._sim(self.ports[port - 1])[SIM_FAULT]))

    def _merged_block(
        self,
        registers: Sequence[int],
        start: int,
        port: int,
        block: Block,
        address: int,
        values: Sequence[int],
    ) -> list[int]:
        """``block``'s words for ``port`` as they will be after the write of ``values``."""
        base = self.regmap.port_address(port, block)
        bits = block.function in BIT_TABLES
        words = [_get(registers, start, base + i, bits) for i in range(block.size)]
        for i in range(block.size):
            if 0 <= base + i - address < len(values):
                words[i] = int(values[base + i - address])
        return words

    def _write_sequenced(
        self,
        registers: MutableSequence[int],
        start: int,
        port: int,
        address: int,
        values: MutableSequence[int],
        now_s: float,
        recipe: SequencedRecipe,
    ) -> None:
        block, f = self.regmap.fields_by_name[recipe.command]
        command_at = self.regmap.port_address(port, block) + f.offset - address
        if not 0 <= command_at < len(values) or values[command_at] == 0:
            return  # parameters only, or command NONE: just stored
        words = self._merged_block(registers, start, port, block, address, values)
        control = decode(self.regmap, block, words)
        self._run_command(port, control, now_s, recipe)
        values[command_at] = 0

    def _run_command(
        self, port: int, control: dict[str, object], now_s: float, recipe: SequencedRecipe
    ) -> None:
        physics = self.ports[port - 1]
        code, seq = _int(control[recipe.command]), _int(control[recipe.sequence])
        target_Wh, limit_W = _int(control[recipe.target_energy]), _int(control[recipe.power_limit])
        command = next((int(OPS[op]) for op, c in recipe.codes if c == code), -1)
        status = physics.command(command, seq, target_Wh, limit_W, now_s)
        self._log.info(
            "command",
            port=port,
            command=code,
            seq=seq,
            target_Wh=target_Wh,
            limit_W=limit_W,
            status=status.name,
            state=physics.state.name,
        )

    def _write_current(
        self,
        table: int,
        registers: MutableSequence[int],
        start: int,
        port: int,
        address: int,
        values: MutableSequence[int],
        now_s: float,
        recipe: CurrentRecipe,
    ) -> None:
        physics = self.ports[port - 1]
        enabled, limit_A = physics.enabled, physics.current_limit_A or 0.0
        touched = False
        for name in (recipe.current, recipe.enable):
            if name is None or self.regmap.fields_by_name[name][0].function != table:
                continue
            block, f = self.regmap.fields_by_name[name]
            if not _overlaps(address, len(values), self.regmap.port_address(port, block) + f.offset, f.width):
                continue
            words = self._merged_block(registers, start, port, block, address, values)
            value = decode(self.regmap, block, words)[name]
            touched = True
            if name == recipe.current:
                limit_A = self._checked_current(_number(value), recipe)
            else:
                enabled = self._checked_enable(_int(value), recipe)
        if touched:
            physics.offer(enabled, limit_A, recipe.min_current_A, now_s)
            self._log.info("offer", port=port, enabled=enabled, current_A=limit_A, state=physics.state.name)

    @staticmethod
    def _checked_current(current_A: float, recipe: CurrentRecipe) -> float:
        if not 0 <= current_A <= recipe.max_current_A + 1e-9:
            raise WriteRejectedError(f"current limit {current_A:g} A outside 0..{recipe.max_current_A:g} A")
        return current_A

    @staticmethod
    def _checked_enable(value: int, recipe: CurrentRecipe) -> bool:
        if value not in (recipe.enable_on, recipe.enable_off):
            raise WriteRejectedError(
                f"enable value {value} is neither {recipe.enable_on} (on) nor {recipe.enable_off} (off)"
            )
        return value == recipe.enable_on

    # ------------------------------------------------------------------------------ faults

    def inject_fault(self, port: int, fault: SimFault, now_s: float) -> None:
        """Inject ``fault`` on ``port``; SILENT mutes the whole pile, CLEAR clears port and SILENT."""
        kind = _SIM_FAULT_KINDS.get(fault) or FaultCode(int(fault)).name.lower()
        self.inject(port, kind, now_s)

    def inject(self, port: int, kind: str, now_s: float) -> None:
        """Inject a fault by name (``over_temperature``, ``residual_current``, ... see INJECTABLE),
        ``silent`` (the whole pile stops answering) or ``clear`` (port fault and silence)."""
        if kind not in INJECTABLE:
            raise UnknownFaultError(f"fault kind {kind!r} is not one of {', '.join(INJECTABLE)}")
        physics = self.ports[port - 1]
        if kind == "silent":
            self.silent = True
        elif kind == "clear":
            self.silent = False
            physics.clear_fault(now_s)
        else:
            physics.inject_fault(FaultCode(FAULT_NAMES[kind]), now_s)
        self.invalidate()
        self._log.warning("fault injected", port=port, fault=kind, state=physics.state.name)

    def snapshot(self, port: int, now_s: float) -> dict[str, object]:
        """Decoded register values of ``port`` at ``now_s`` (the family's codes), plus the
        canonical ``state_name`` and ``fault_name``, and ``silent``."""
        self.advance_port(port, now_s)
        values = self.port_values(port)
        result: dict[str, object] = {}
        for rendered in self.encoder.blocks:
            words = self.encoder.encode_block(rendered, values[rendered.block.kind])
            result |= decode(self.regmap, rendered.block, words)
        if self._heartbeat is not None:
            result["heartbeat"] = int(now_s) & 0xFFFF
        result |= self._canonical_names(result, self.ports[port - 1])
        result["silent"] = self.silent
        return result

    def _canonical_names(self, decoded: dict[str, object], physics: PortPhysics) -> dict[str, object]:
        state_field = self._telemetry_field("state")
        fault_field = self._telemetry_field("fault")
        state = state_converter(state_field[1])(decoded["state"]) if state_field else int(physics.state)
        fault = fault_converter(fault_field[1])(decoded["fault"]) if fault_field else int(physics.fault)
        out: dict[str, object] = {
            "state_name": PortState(_int(state)).name,
            "fault_name": FaultCode(_int(fault)).name,
        }
        if isinstance(self.recipe, CurrentRecipe):
            out["enabled"] = physics.enabled
            out["current_limit_A"] = physics.current_limit_A
        return out


__all__ = ["INJECTABLE", "Segment", "SimPile", "UnknownFaultError", "WriteRejectedError"]
