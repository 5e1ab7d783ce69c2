"""Which unit ids answer on a bus, and which shipped register map's identity fits each one.

Pure: nothing here opens a line. The caller passes a function that reads registers (through the
gateway's bus owner, or a client on a line no gateway owns) with a function code, and a clock;
:func:`scan` probes a unit-id range within a total deadline and reports each unit as it goes.

A unit *answers* when any read gets a reply, even a Modbus exception; it is *silent* when its first
read times out, or when a TCP gateway replies that the target did not respond (0x0A, 0x0B).

A map's identity is every block of its ``[identity]`` table, read with the block's function code in
runs without holes of at most the map's ``max_read`` (a family such as KEBA's refuses longer reads).
A map with a ``[match]`` rule *fits* when the rule accepts the decoded identity (``confirmed``); a
map without one fits when the identity is plausible (printable text, some text at all, a port count
the map supports, not blank memory) and is reported unconfirmed, and only when no rule confirmed
another map. A family whose identity answers on a station unit (``identity_unit``, e.g. Alfen's
unit 200) is reported twice: the station unit as the family's ``station``, and each unit that
answers the family's polled registers as a pile of the family whose identity was read on the
station unit. :func:`probe_unit` is the one function that knows what a map's identity looks like.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from drivers.errors import DriverError
from drivers.plan import MODBUS_MAX_READ, ReadRequest, compile_read_plan, read_cap
from drivers.specs import SerialTransport, TcpTransport, Transport
from drivers.timing import READ_REQUEST_BYTES, bits_per_char, read_response_bytes, t35_s, transaction_time_s
from protocols.maploader import matches as match_rule_fits
from protocols.registers import MAPS, Block, CodecError, RegisterMap, decode
from protocols.regmodel import BIT_FUNCTIONS

Read = Callable[[int, int, int], Awaitable[list[int]]]  # (address, count, function) -> one unit's words
UnitRead = Callable[[int, int, int, int], Awaitable[list[int]]]  # (unit, address, count, function)
Progress = Callable[["UnitReport", int], Awaitable[None]]  # a unit's report, units probed so far
Role = Literal["pile", "station"]

ABSENT_EXCEPTION_CODES = frozenset({0x0A, 0x0B})  # a TCP gateway saying nobody answered behind it
UNIT_IDS = range(1, 248)  # Modbus RTU addresses (a serial line, or RTU frames through a converter)
TCP_UNIT_IDS = range(1, 256)  # Modbus TCP unit ids: many TCP devices answer only on 255 (KEBA)
TCP_TIMEOUT_S = 0.3  # default wait for a unit behind a TCP host
SERIAL_MARGIN_S = 0.1  # default wait for a unit on a serial line, beyond the identity read's line time
NO_FIT = "no shipped map's identity fits"


class LineError(Exception):
    """The line or host cannot be used at all (it cannot be opened); the scan stops."""


def shipped_maps() -> Mapping[str, RegisterMap]:
    """The register maps pilegate ships, by name: what a scan tries on every unit."""
    return MAPS


def unit_ids(transport: Transport) -> range:
    """The unit ids a scan may probe on ``transport``: 1..255 on a TCP host, 1..247 on an RTU line."""
    return TCP_UNIT_IDS if isinstance(transport, TcpTransport) else UNIT_IDS


@dataclass(frozen=True)
class IdentityRead:
    """One read of an identity block: ``count`` words from ``address``, ``offset`` into the block."""

    block: Block
    address: int
    count: int
    offset: int


def identity_reads(regmap: RegisterMap, block: Block) -> list[IdentityRead]:
    """``block``'s fields in runs without holes, each run at most the map's largest read."""
    cap = read_cap(regmap, block.function, MODBUS_MAX_READ)
    runs: list[list[int]] = []  # [first offset, end offset]
    for f in sorted(block.fields, key=lambda f: f.offset):
        end = f.offset + f.width
        if runs and runs[-1][1] == f.offset and end - runs[-1][0] <= cap:
            runs[-1][1] = end
        else:
            runs.append([f.offset, end])
    return [IdentityRead(block, block.base + first, end - first, first) for first, end in runs]


def _socket_read(regmap: RegisterMap) -> ReadRequest:
    """The first read a gateway polls a one-port pile of ``regmap`` with."""
    return compile_read_plan(regmap, 1).requests[0]


def _reply_registers(count: int, function: int) -> int:
    """A reply's data in registers' worth of bytes: bits come eight to a byte."""
    return -(-count // 16) if function in BIT_FUNCTIONS else count


def _probe_counts(regmap: RegisterMap) -> list[int]:
    """The reply sizes (in registers) of the reads a scan may make for ``regmap``."""
    reads = [(r.count, b.function) for b in regmap.identity_blocks for r in identity_reads(regmap, b)]
    if regmap.identity_unit:
        request = _socket_read(regmap)
        reads.append((request.count, request.function))
    return [_reply_registers(count, function) for count, function in reads]


def min_timeout_s(transport: Transport, maps: Mapping[str, RegisterMap]) -> float:
    """The line time of the largest probe read: a shorter timeout makes every unit look silent."""
    counts = [c for m in maps.values() for c in _probe_counts(m)]
    if not isinstance(transport, SerialTransport) or not counts:
        return 0.0
    bits = bits_per_char(transport.bytesize, transport.parity, transport.stopbits)
    gap_s = t35_s(transport.baudrate, bits)
    return transaction_time_s(
        READ_REQUEST_BYTES, read_response_bytes(max(counts)), transport.baudrate, bits, gap_s
    )


def default_timeout_s(transport: Transport, maps: Mapping[str, RegisterMap]) -> float:
    """How long a scan waits for each unit unless told: short, but enough for the line's speed."""
    if not isinstance(transport, SerialTransport):  # a TCP host, or an RS-485 converter on TCP
        return TCP_TIMEOUT_S
    return round(min_timeout_s(transport, maps) + SERIAL_MARGIN_S, 3)


@dataclass(frozen=True)
class Match:
    """A map whose identity fits what the unit returned, and the identity it decodes to.

    ``confirmed``: the map's ``[match]`` rule accepts the identity (False: the map has no rule and
    the identity is only plausible). ``role``: ``station`` for the unit that answers only a
    family's identity; ``identity_unit``: where a pile's identity was read, when not on itself.
    """

    map: str
    identity: dict[str, object]
    confirmed: bool = True
    role: Role = "pile"
    identity_unit: int | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "map": self.map,
            "identity": self.identity,
            "confirmed": self.confirmed,
            "role": self.role,
            "identity_unit": self.identity_unit,
        }


@dataclass(frozen=True)
class UnitReport:
    """One probed unit: whether it answered, which maps fit, and why none did (``note``)."""

    unit: int
    answered: bool
    matches: tuple[Match, ...] = ()
    note: str = ""

    def as_dict(self) -> dict[str, object]:
        return {
            "unit": self.unit,
            "answered": self.answered,
            "matches": [m.as_dict() for m in self.matches],
            "note": self.note,
        }


@dataclass
class ScanReport:
    """A whole scan: the units that answered, how far it got and whether the deadline cut it short."""

    first: int
    last: int
    probed: int = 0
    elapsed_s: float = 0.0
    complete: bool = False
    stopped: str = ""  # why it stopped before ``last``
    found: list[UnitReport] = field(default_factory=list)

    def as_dict(self, piles: Mapping[int, str] | None = None) -> dict[str, object]:
        """JSON-able; ``piles`` names the configured pile of a unit id (``"pile"``, else null)."""
        piles = piles or {}
        return {
            "first": self.first,
            "last": self.last,
            "probed": self.probed,
            "elapsed_s": round(self.elapsed_s, 3),
            "complete": self.complete,
            "stopped": self.stopped,
            "found": [{**u.as_dict(), "pile": piles.get(u.unit)} for u in self.found],
        }


def identity_problems(regmap: RegisterMap, words: Sequence[int], values: Mapping[str, object]) -> list[str]:
    """Why ``values`` (decoded from the read ``words``) is not a plausible identity of ``regmap``'s
    family; [] if it is. For maps without a ``[match]`` rule."""
    problems = []
    if all(w == 0 for w in words) or all(w == 0xFFFF for w in words):
        problems.append("identity registers are blank")
    fields = [f for b in regmap.identity_blocks for f in b.fields]
    texts = {f.name: values.get(f.name) for f in fields if f.type == "str"}
    for name, text in texts.items():
        if not isinstance(text, str) or not text.isprintable() or not text.isascii():
            problems.append(f"{name} is not printable ASCII: {text!r}")
    if texts and not any(texts.values()):
        problems.append("every text field is empty")
    ports = values.get("num_ports")
    if "num_ports" in values and not (isinstance(ports, int) and 1 <= ports <= regmap.max_ports):
        problems.append(f"num_ports {ports!r} outside 1..{regmap.max_ports}")
    return problems


def verdict(regmap: RegisterMap, words: Sequence[int], values: Mapping[str, object]) -> bool | None:
    """True: the map's match rule accepts the identity; False: no rule, but plausible; None: no fit."""
    if regmap.match:
        return True if match_rule_fits(regmap, values) else None
    return None if identity_problems(regmap, words, values) else False


async def read_identity(read: Read, regmap: RegisterMap) -> tuple[dict[str, object], list[int]]:
    """The decoded identity of the unit behind ``read`` and the words read for it.

    Raises DriverError (a Modbus exception, a timeout, a lost line) or CodecError as they come."""
    values: dict[str, object] = {}
    read_words: list[int] = []
    for block in regmap.identity_blocks:
        words = [0] * block.size
        for r in identity_reads(regmap, block):
            got = await read(r.address, r.count, block.function)
            words[r.offset : r.offset + r.count] = got
            read_words += got
        values.update(decode(regmap, block, words))
    return values, read_words


async def identify(read: Read, name: str, regmap: RegisterMap) -> Match | None:
    """``regmap``'s match for the unit behind ``read``, or None when its identity does not fit.

    A Modbus exception or an undecodable reply rules the map out; any other failure of ``read``
    (a timeout, a lost line, a TCP gateway saying nobody is there) is raised.
    """
    try:
        values, words = await read_identity(read, regmap)
    except DriverError as exc:
        if exc.kind not in ("exception_response", "decode") or _silent(exc):
            raise
        return None
    except CodecError:
        return None
    confirmed = verdict(regmap, words, values)
    return None if confirmed is None else Match(name, values, confirmed)


def _silent(exc: DriverError) -> bool:
    return exc.kind == "timeout" or exc.exception_code in ABSENT_EXCEPTION_CODES


class ProbeReads:
    """A scan's reads, each span asked of the line once (a station unit's identity is read once
    for all the units that may be its piles); remembers whether the probed unit answered."""

    def __init__(self, read: UnitRead) -> None:
        self._read = read
        self._seen: dict[tuple[int, int, int, int], list[int] | DriverError] = {}
        self.unit = 0
        self.answered = False
        self.last_error: DriverError | None = None

    def probing(self, unit: int) -> None:
        self.unit, self.answered, self.last_error = unit, False, None

    def of(self, unit: int) -> Read:
        async def read(address: int, count: int, function: int) -> list[int]:
            return await self(unit, address, count, function)

        return read

    async def __call__(self, unit: int, address: int, count: int, function: int) -> list[int]:
        key = (unit, address, count, function)
        if key not in self._seen:
            try:
                self._seen[key] = await self._read(unit, address, count, function)
            except DriverError as exc:
                self._seen[key] = exc
        outcome = self._seen[key]
        if isinstance(outcome, DriverError):
            if unit == self.unit:
                self.answered = self.answered or not _silent(outcome)
                self.last_error = outcome
            raise outcome
        self.answered = self.answered or unit == self.unit
        return outcome


async def _own_identity(reads: ProbeReads, unit: int, name: str, regmap: RegisterMap) -> Match | None:
    """The map's match from the unit's own identity registers (a station unit's included)."""
    match = await identify(reads.of(unit), name, regmap)
    if match is not None and regmap.identity_unit == unit:
        return Match(name, match.identity, match.confirmed, "station")
    return match


async def _identity_elsewhere(reads: ProbeReads, unit: int, name: str, regmap: RegisterMap) -> Match | None:
    """The map's match for a unit whose family answers identity on a station unit: ``unit``
    answers the first read a gateway would poll it with, and the station's identity fits.
    A silent ``unit`` is raised (the station answering does not make it answer)."""
    request = _socket_read(regmap)
    try:
        await reads(unit, request.address, request.count, request.function)
    except DriverError as exc:
        if exc.kind == "connection" or not reads.answered:
            raise
        return None
    try:
        match = await identify(reads.of(regmap.identity_unit), name, regmap)
    except DriverError as exc:
        if exc.kind == "connection":
            raise
        return None
    return (
        None if match is None else Match(name, match.identity, match.confirmed, "pile", regmap.identity_unit)
    )


async def probe_unit(read: UnitRead | ProbeReads, unit: int, maps: Mapping[str, RegisterMap]) -> UnitReport:
    """Whether ``unit`` answers and which of ``maps`` fit it; :class:`LineError` if the line is gone.

    The unit's first read decides whether it is there; once it answered, a map whose reads time
    out is just not its family. A confirmed match outranks maps that are only plausible."""
    reads = read if isinstance(read, ProbeReads) else ProbeReads(read)
    reads.probing(unit)
    own = {n: m for n, m in maps.items() if m.identity_blocks and m.identity_unit in (0, unit)}
    elsewhere = {n: m for n, m in maps.items() if m.identity_blocks and m.identity_unit not in (0, unit)}
    found: list[Match | None] = []
    try:
        for name, regmap in own.items():
            try:
                found.append(await _own_identity(reads, unit, name, regmap))
            except DriverError as exc:
                if exc.kind == "connection" or not reads.answered:
                    raise
        if reads.answered or not own:
            found += [await _identity_elsewhere(reads, unit, n, m) for n, m in elsewhere.items()]
    except DriverError as exc:
        if exc.kind == "connection":
            raise LineError(exc.message) from exc
        return UnitReport(unit, False, note=exc.message)
    return _report(reads, unit, [m for m in found if m is not None])


def _report(reads: ProbeReads, unit: int, found: list[Match]) -> UnitReport:
    if any(m.confirmed for m in found):
        found = [m for m in found if m.confirmed]
    note = ""
    if reads.answered and not found:
        note = reads.last_error.message if reads.last_error else NO_FIT
    return UnitReport(unit, reads.answered, tuple(found), note)


async def scan(
    read: UnitRead,
    units: range,
    maps: Mapping[str, RegisterMap],
    *,
    deadline_s: float,
    progress: Progress | None = None,
    clock: Callable[[], float] = time.monotonic,
    stop: Callable[[], bool] = lambda: False,
) -> ScanReport:
    """Probe ``units`` in order until done, ``deadline_s`` has passed or ``stop()`` says so."""
    report = ScanReport(units.start, units.stop - 1)
    reads = ProbeReads(read)
    started = clock()
    for unit in units:
        if stop():
            report.stopped = f"stopped before unit {unit}"
            break
        if clock() - started >= deadline_s:
            report.stopped = f"deadline of {deadline_s:g} s reached before unit {unit}"
            break
        try:
            unit_report = await probe_unit(reads, unit, maps)
        except LineError as exc:
            report.stopped = f"line failed at unit {unit}: {exc}"
            break
        report.probed += 1
        if unit_report.answered:
            report.found.append(unit_report)
        if progress is not None:
            await progress(unit_report, report.probed)
    report.complete = report.probed == len(units)
    report.elapsed_s = clock() - started
    return report
