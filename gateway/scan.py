"""Which unit ids answer on a bus, and which shipped register map's identity block fits each one.

Pure: nothing here opens a line. The caller passes a function that reads holding registers (through
the gateway's bus owner, or a client on a line no gateway owns) and a clock; :func:`scan` probes a
unit-id range within a total deadline and reports each unit as it goes.

A unit *answers* when any read gets a reply, even a Modbus exception; it is *silent* when the first
read times out, or when a TCP gateway replies that the target did not respond (0x0A, 0x0B). A map
*fits* when its identity block can be read and decodes to plausible values (printable text, some
text at all, a port count the map supports, not blank memory). :func:`identify` is the one function
that knows what a map's identity looks like.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from drivers.errors import DriverError
from drivers.specs import SerialTransport, Transport
from drivers.timing import READ_REQUEST_BYTES, bits_per_char, read_response_bytes, t35_s, transaction_time_s
from protocols.registers import MAPS, CodecError, RegisterMap, decode

Read = Callable[[int, int], Awaitable[list[int]]]  # (address, count) -> registers of one unit
UnitRead = Callable[[int, int, int], Awaitable[list[int]]]  # (unit, address, count) -> registers
Progress = Callable[["UnitReport", int], Awaitable[None]]  # a unit's report, units probed so far

ABSENT_EXCEPTION_CODES = frozenset({0x0A, 0x0B})  # a TCP gateway saying nobody answered behind it
UNIT_IDS = range(1, 248)
TCP_TIMEOUT_S = 0.3  # default wait for a unit behind a TCP host
SERIAL_MARGIN_S = 0.1  # default wait for a unit on a serial line, beyond the identity read's line time


class LineError(Exception):
    """The line or host cannot be used at all (it cannot be opened); the scan stops."""


def shipped_maps() -> Mapping[str, RegisterMap]:
    """The register maps pilegate ships, by name: what a scan tries on every unit."""
    return MAPS


def min_timeout_s(transport: Transport, maps: Mapping[str, RegisterMap]) -> float:
    """The line time of the largest identity read: a shorter timeout makes every unit look silent."""
    if not isinstance(transport, SerialTransport) or not maps:
        return 0.0
    bits = bits_per_char(transport.bytesize, transport.parity, transport.stopbits)
    largest = max(m.identity.size for m in maps.values())
    gap_s = t35_s(transport.baudrate, bits)
    return transaction_time_s(
        READ_REQUEST_BYTES, read_response_bytes(largest), transport.baudrate, bits, gap_s
    )


def default_timeout_s(transport: Transport, maps: Mapping[str, RegisterMap]) -> float:
    """How long a scan waits for each unit unless told: short, but enough for the line's speed."""
    if not isinstance(transport, SerialTransport):  # a TCP host, or an RS-485 converter on TCP
        return TCP_TIMEOUT_S
    return round(min_timeout_s(transport, maps) + SERIAL_MARGIN_S, 3)


@dataclass(frozen=True)
class Match:
    """A map whose identity block fits what the unit returned, and the identity it decodes to."""

    map: str
    identity: dict[str, object]


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
            "matches": [{"map": m.map, "identity": m.identity} for m in self.matches],
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


def identity_problems(regmap: RegisterMap, words: list[int], values: Mapping[str, object]) -> list[str]:
    """Why ``values`` (decoded from ``words``) is not an identity of ``regmap``'s family; [] if it is."""
    problems = []
    if all(w == 0 for w in words) or all(w == 0xFFFF for w in words):
        problems.append("identity registers are blank")
    texts = {f.name: values.get(f.name) for f in regmap.identity.fields if f.type == "str"}
    for name, text in texts.items():
        if not isinstance(text, str) or not text.isprintable() or not text.isascii():
            problems.append(f"{name} is not printable ASCII: {text!r}")
    if texts and not any(texts.values()):
        problems.append("every text field is empty")
    ports = values.get("num_ports")
    if "num_ports" in values and not (isinstance(ports, int) and 1 <= ports <= regmap.max_ports):
        problems.append(f"num_ports {ports!r} outside 1..{regmap.max_ports}")
    return problems


async def identify(read: Read, maps: Mapping[str, RegisterMap]) -> list[Match]:
    """The maps whose identity block fits the unit behind ``read``, in ``maps`` order.

    A Modbus exception or an undecodable reply rules that map out; any other failure of ``read``
    (a timeout, a lost line) is raised: the unit did not answer, which is not a misfit.
    """
    matches = []
    for name, regmap in maps.items():
        block = regmap.identity
        try:
            words = await read(block.base, block.size)
            values = decode(regmap, block, words)
        except DriverError as exc:
            if exc.kind not in ("exception_response", "decode") or _silent(exc):
                raise
            continue
        except CodecError:
            continue
        if not identity_problems(regmap, words, values):
            matches.append(Match(name, values))
    return matches


def _silent(exc: DriverError) -> bool:
    return exc.kind == "timeout" or exc.exception_code in ABSENT_EXCEPTION_CODES


class _Remembering:
    """A unit's reads, each span asked of the line once; remembers whether anything answered."""

    def __init__(self, read: UnitRead, unit: int) -> None:
        self._read, self._unit = read, unit
        self._seen: dict[tuple[int, int], list[int] | DriverError] = {}
        self.answered = False
        self.last_error: DriverError | None = None

    async def __call__(self, address: int, count: int) -> list[int]:
        key = (address, count)
        if key not in self._seen:
            try:
                self._seen[key] = await self._read(self._unit, address, count)
            except DriverError as exc:
                self._seen[key] = exc
        outcome = self._seen[key]
        if isinstance(outcome, DriverError):
            self.answered = self.answered or not _silent(outcome)
            self.last_error = outcome
            raise outcome
        self.answered = True
        return outcome


async def probe_unit(read: UnitRead, unit: int, maps: Mapping[str, RegisterMap]) -> UnitReport:
    """Whether ``unit`` answers and which of ``maps`` fit it; :class:`LineError` if the line is gone."""
    reads = _Remembering(read, unit)
    try:
        matches = await identify(reads, maps)
    except DriverError as exc:
        if exc.kind == "connection":
            raise LineError(exc.message) from exc
        if not reads.answered:
            return UnitReport(unit, False, note=exc.message)
        matches = []
    note = ""
    if reads.answered and not matches:
        last = reads.last_error
        note = last.message if last else "no shipped map's identity fits"
    return UnitReport(unit, reads.answered, tuple(matches), note)


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
    started = clock()
    for unit in units:
        if stop():
            report.stopped = f"stopped before unit {unit}"
            break
        if clock() - started >= deadline_s:
            report.stopped = f"deadline of {deadline_s:g} s reached before unit {unit}"
            break
        try:
            unit_report = await probe_unit(read, unit, maps)
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
