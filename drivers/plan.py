"""Read plan: which reads one poll cycle of a pile needs, and how to decode them into canonical values.

A cycle reads, for every port, the map's polled registers (``telemetry`` and ``readback``).
Contiguous registers of one block form a run; runs are merged into as few read requests as
possible per function code (never across codes: holding registers, input registers, coils and
discrete inputs are separate reads), reading through holes of at most ``max_gap`` registers and
never asking for more than the smaller of the device's ``max_registers`` and the map's ``max_read``
(125 is the Modbus limit for registers; bit reads take 16 bits per register of that cap, at most
2000). The plan is compiled once per device: decoding a cycle is one ``struct`` unpack per request,
then the state and fault tables and any derived readings (power from V x I).
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import cast

from protocols.canonical import converter, deriver
from protocols.codec import Unpacker, compile_unpacker
from protocols.regmodel import (
    BIT_FUNCTIONS,
    POLLED_SECTIONS,
    Block,
    CodecError,
    Field,
    RegisterMap,
)

MODBUS_MAX_READ = 125  # registers per read-holding/input-registers request (functions 3 and 4)
MODBUS_MAX_BITS = 2000  # bits per read-coils/discrete-inputs request (functions 1 and 2)

Convert = Callable[[object], object]
Target = tuple[int, str, float, Convert | None]  # port, field name, scale, converter


class PlanError(ValueError):
    """A read plan cannot be built from these arguments."""


@dataclass(frozen=True)
class ReadRequest:
    """One read request: ``count`` registers (or bits) from ``address`` with ``function``."""

    address: int
    count: int
    function: int = 3


@dataclass(frozen=True)
class RunSlot:
    """Where one port's run of contiguous registers sits: ``offset`` words into response ``request``."""

    port: int
    block: Block
    fields: tuple[Field, ...]
    request: int
    offset: int
    address: int
    size: int


@dataclass(frozen=True)
class ReadPlan:
    """The requests of one poll cycle of one device, and how each response is decoded."""

    regmap: RegisterMap
    ports: int
    max_registers: int
    max_gap: int
    requests: tuple[ReadRequest, ...]
    slots: tuple[RunSlot, ...]
    unpackers: tuple[Unpacker, ...]
    derive: Callable[[MutableMapping[str, object]], None] | None

    def decode(self, responses: Sequence[Sequence[int]]) -> dict[int, dict[str, object]]:
        """Port -> canonical telemetry and read-back values, from one response per request, in order."""
        self._check(responses)
        out: dict[int, dict[str, object]] = {port: {} for port in range(1, self.ports + 1)}
        for unpacker, words in zip(self.unpackers, responses, strict=True):
            for target, raw in unpacker.raw(words):
                port, name, scale, convert = cast(Target, target)
                value = raw if scale == 1.0 else round(raw * scale, 6)  # type: ignore[operator]
                out[port][name] = value if convert is None else convert(value)
        if self.derive is not None:
            for values in out.values():
                self.derive(values)
        return out

    def _check(self, responses: Sequence[Sequence[int]]) -> None:
        if len(responses) != len(self.requests):
            raise CodecError(f"plan has {len(self.requests)} requests, got {len(responses)} replies")
        for i, (req, words) in enumerate(zip(self.requests, responses, strict=True)):
            if len(words) != req.count:
                raise CodecError(
                    f"request {i + 1} read {req.count} registers at {req.address}, reply has {len(words)}"
                )

    def wasted(self, request: int) -> int:
        """Registers read by ``request`` (0-based) that belong to no polled register."""
        used = sum(s.size for s in self.slots if s.request == request)
        return self.requests[request].count - used


@dataclass(frozen=True)
class _Range:
    start: int
    end: int  # exclusive
    port: int
    block: Block
    fields: tuple[Field, ...]


def read_cap(regmap: RegisterMap, function: int, max_registers: int) -> int:
    """The largest read of ``function`` for a device capped at ``max_registers`` registers."""
    registers = min(max_registers, regmap.max_read)
    return min(MODBUS_MAX_BITS, 16 * registers) if function in BIT_FUNCTIONS else registers


def _polled(regmap: RegisterMap) -> tuple[Block, ...]:
    return tuple(b for b in regmap.port_blocks if b.kind in POLLED_SECTIONS)


def _validate(regmap: RegisterMap, ports: int, max_registers: int, max_gap: int) -> None:
    problems = []
    if not 1 <= ports <= regmap.max_ports:
        problems.append(f"ports={ports} outside 1..{regmap.max_ports} of map {regmap.name}")
    if not 1 <= max_registers <= MODBUS_MAX_READ:
        problems.append(f"max_registers={max_registers} outside 1..{MODBUS_MAX_READ}")
    if max_gap < 0:
        problems.append(f"max_gap={max_gap} is negative")
    for block in _polled(regmap):
        cap = read_cap(regmap, block.function, max_registers)
        for f in block.fields:
            if f.width > cap:
                problems.append(f"{block.name}.{f.name} has {f.width} registers, more than a read of {cap}")
    if problems:
        raise PlanError("; ".join(problems))


def _runs(block: Block, cap: int) -> list[tuple[Field, ...]]:
    """The block's fields split where they leave a hole or would exceed ``cap``."""
    runs: list[list[Field]] = []
    for f in sorted(block.fields, key=lambda f: f.offset):
        run = runs[-1] if runs else None
        if run and run[-1].offset + run[-1].width == f.offset and f.offset + f.width - run[0].offset <= cap:
            run.append(f)
        else:
            runs.append([f])
    return [tuple(r) for r in runs]


def _polled_ranges(regmap: RegisterMap, ports: int, function: int, cap: int) -> list[_Range]:
    ranges = []
    for block in _polled(regmap):
        if block.function != function:
            continue
        runs = _runs(block, cap)
        for port in range(1, ports + 1):
            base = regmap.port_address(port, block)
            for run in runs:
                start = base + run[0].offset
                ranges.append(_Range(start, base + run[-1].offset + run[-1].width, port, block, run))
    return sorted(ranges, key=lambda r: (r.start, r.end))


def _group(ranges: list[_Range], max_registers: int, max_gap: int) -> list[list[_Range]]:
    """Greedy left-to-right merge; optimal in request count for sorted ranges."""
    groups: list[list[_Range]] = []
    start = end = 0
    for r in ranges:
        if groups and r.start - end <= max_gap and max(end, r.end) - start <= max_registers:
            groups[-1].append(r)
            end = max(end, r.end)
        else:
            groups.append([r])
            start, end = r.start, r.end
    return groups


def _unpacker(regmap: RegisterMap, request: ReadRequest, group: list[_Range]) -> Unpacker:
    members: list[tuple[int, Field, object]] = []
    for r in group:
        first = r.fields[0].offset
        for f in r.fields:
            target: Target = (r.port, f.name, f.scale, _convert(f))
            members.append((r.start - request.address + f.offset - first, f, target))
    return compile_unpacker(regmap, request.count, members, request.function in BIT_FUNCTIONS)


def _convert(f: Field) -> Convert | None:
    """Text and float32 clean-up, then the canonical conversion (state/fault tables, whole Wh)."""
    canonical = converter(f)
    if f.type == "str":
        return _text if canonical is None else lambda raw: canonical(_text(raw))
    if f.type == "float32":
        return _float32 if canonical is None else lambda raw: canonical(_float32(raw))
    return canonical


def _text(raw: object) -> object:
    return raw.rstrip(b"\x00 ").decode("ascii", errors="replace") if isinstance(raw, bytes) else raw


def _float32(raw: object) -> object:
    return float(f"{raw:.7g}") if isinstance(raw, float) else raw


def compile_read_plan(
    regmap: RegisterMap, ports: int, *, max_registers: int = 125, max_gap: int = 16
) -> ReadPlan:
    """The fewest read requests per function code that cover every port's polled registers."""
    _validate(regmap, ports, max_registers, max_gap)
    requests: list[ReadRequest] = []
    slots: list[RunSlot] = []
    unpackers: list[Unpacker] = []
    for function in sorted({b.function for b in _polled(regmap)}):
        cap = read_cap(regmap, function, max_registers)
        for group in _group(_polled_ranges(regmap, ports, function, cap), cap, max_gap):
            start = group[0].start
            request = ReadRequest(start, max(r.end for r in group) - start, function)
            index = len(requests)
            requests.append(request)
            unpackers.append(_unpacker(regmap, request, group))
            slots.extend(
                RunSlot(r.port, r.block, r.fields, index, r.start - start, r.start, r.end - r.start)
                for r in group
            )
    return ReadPlan(
        regmap,
        ports,
        max_registers,
        max_gap,
        tuple(requests),
        tuple(slots),
        tuple(unpackers),
        deriver(regmap),
    )


FUNCTION_LABELS = {1: "coils", 2: "discrete", 3: "holding", 4: "input"}


def format_plan(plan: ReadPlan) -> str:
    """A table of the plan for technicians: one row per request, runs it covers, gap waste."""
    total = sum(r.count for r in plan.requests)
    wasted = sum(plan.wasted(i) for i in range(len(plan.requests)))
    lines = [
        f"read plan for map {plan.regmap.name}, {plan.ports} port(s), "
        f"max_registers={plan.max_registers}, max_gap={plan.max_gap}: "
        f"{len(plan.requests)} request(s) per cycle, {total} registers, {wasted} wasted in gaps",
        f"{'#':>3}  {'start':>5}  {'count':>5}  {'wasted':>6}  {'fc':>8}  runs (port.block@address+size)",
    ]
    for i, req in enumerate(plan.requests):
        runs = " ".join(
            f"p{s.port}.{s.block.name}@{s.address}+{s.size}" for s in plan.slots if s.request == i
        )
        label = FUNCTION_LABELS[req.function]
        lines.append(f"{i + 1:>3}  {req.address:>5}  {req.count:>5}  {plan.wasted(i):>6}  {label:>8}  {runs}")
    return "\n".join(lines)
