"""Read plan: which holding-register reads one poll cycle of a pile needs, and how to decode them.

A cycle reads, for every port, the telemetry block and the read-back block. Neighbouring ranges are
merged into as few read requests as possible, reading through holes of at most ``max_gap``
registers and never asking for more than ``max_registers`` in one request (125 is the Modbus limit
for function 3; some devices accept fewer). The plan is compiled once per device and reused every
cycle, so decoding a cycle is slicing the responses at precomputed offsets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from protocols.registers import Block, CodecError, RegisterMap, decode

MODBUS_MAX_READ = 125  # registers per read-holding-registers request (function 3)


class PlanError(ValueError):
    """A read plan cannot be built from these arguments."""


@dataclass(frozen=True)
class ReadRequest:
    """One read-holding-registers request: ``count`` registers from ``address``."""

    address: int
    count: int


@dataclass(frozen=True)
class BlockSlot:
    """Where one port's block sits in the responses: ``offset`` words into response ``request``."""

    port: int
    block: Block
    request: int
    offset: int
    address: int
    end: int  # offset + block size, precomputed: Block.size is recomputed on every access


@dataclass(frozen=True)
class ReadPlan:
    """The requests of one poll cycle of one device, and where each polled block lands."""

    regmap: RegisterMap
    ports: int
    max_registers: int
    max_gap: int
    requests: tuple[ReadRequest, ...]
    slots: tuple[BlockSlot, ...]

    def decode(self, responses: Sequence[Sequence[int]]) -> dict[int, dict[str, object]]:
        """Port -> telemetry and read-back values, from one response per request, in order."""
        self._check(responses)
        out: dict[int, dict[str, object]] = {port: {} for port in range(1, self.ports + 1)}
        for slot in self.slots:
            words = responses[slot.request][slot.offset : slot.end]
            out[slot.port].update(decode(self.regmap, slot.block, words))
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
        """Registers read by ``request`` (0-based) that belong to no polled block."""
        used = sum(s.block.size for s in self.slots if s.request == request)
        return self.requests[request].count - used


@dataclass(frozen=True)
class _Range:
    start: int
    end: int  # exclusive
    port: int
    block: Block


def _validate(regmap: RegisterMap, ports: int, max_registers: int, max_gap: int) -> None:
    problems = []
    if not 1 <= ports <= regmap.max_ports:
        problems.append(f"ports={ports} outside 1..{regmap.max_ports} of map {regmap.name}")
    if not 1 <= max_registers <= MODBUS_MAX_READ:
        problems.append(f"max_registers={max_registers} outside 1..{MODBUS_MAX_READ}")
    if max_gap < 0:
        problems.append(f"max_gap={max_gap} is negative")
    for block in (regmap.telemetry, regmap.readback):
        if block.size > max_registers:
            problems.append(
                f"block {block.name} has {block.size} registers, more than max_registers={max_registers}"
            )
    clash = {f.name for f in regmap.telemetry.fields} & {f.name for f in regmap.readback.fields}
    if clash:
        problems.append(f"telemetry and readback share field names {sorted(clash)}")
    if problems:
        raise PlanError("; ".join(problems))


def _polled_ranges(regmap: RegisterMap, ports: int) -> list[_Range]:
    ranges = []
    for port in range(1, ports + 1):
        for block in (regmap.telemetry, regmap.readback):
            start = regmap.port_address(port, block)
            ranges.append(_Range(start, start + block.size, port, block))
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


def compile_read_plan(
    regmap: RegisterMap, ports: int, *, max_registers: int = 125, max_gap: int = 16
) -> ReadPlan:
    """The fewest read requests that cover every port's telemetry and read-back block."""
    _validate(regmap, ports, max_registers, max_gap)
    requests: list[ReadRequest] = []
    slots: list[BlockSlot] = []
    for index, group in enumerate(_group(_polled_ranges(regmap, ports), max_registers, max_gap)):
        start = group[0].start
        requests.append(ReadRequest(start, max(r.end for r in group) - start))
        slots.extend(
            BlockSlot(r.port, r.block, index, r.start - start, r.start, r.end - start) for r in group
        )
    return ReadPlan(regmap, ports, max_registers, max_gap, tuple(requests), tuple(slots))


def format_plan(plan: ReadPlan) -> str:
    """A table of the plan for technicians: one row per request, blocks it covers, gap waste."""
    total = sum(r.count for r in plan.requests)
    wasted = sum(plan.wasted(i) for i in range(len(plan.requests)))
    lines = [
        f"read plan for map {plan.regmap.name}, {plan.ports} port(s), "
        f"max_registers={plan.max_registers}, max_gap={plan.max_gap}: "
        f"{len(plan.requests)} request(s) per cycle, {total} registers, {wasted} wasted in gaps",
        f"{'#':>3}  {'start':>5}  {'count':>5}  {'wasted':>6}  blocks (port.block@address+size)",
    ]
    for i, req in enumerate(plan.requests):
        blocks = " ".join(
            f"p{s.port}.{s.block.name}@{s.address}+{s.block.size}" for s in plan.slots if s.request == i
        )
        lines.append(f"{i + 1:>3}  {req.address:>5}  {req.count:>5}  {plan.wasted(i):>6}  {blocks}")
    return "\n".join(lines)
