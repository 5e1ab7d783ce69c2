"""Scan logic without a line: which units answer and which map's identity fits, over register lists."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable

import pytest

from drivers.errors import DriverError
from drivers.specs import SerialTransport, TcpTransport
from gateway.scan import (
    LineError,
    default_timeout_s,
    identify,
    min_timeout_s,
    probe_unit,
    scan,
    shipped_maps,
)
from protocols.registers import SIM_V1, encode

IDENTITY = {
    "vendor": "pilegate",
    "model": "SIM-AC",
    "serial": "T7",
    "firmware": "1.0",
    "num_ports": 2,
    "rated_power_W": 7000,
    "max_current_A": 32.0,
    "kind": 0,
}
MAPS = {SIM_V1.name: SIM_V1}


class Line:
    """Units behind a line: each unit is its register words, or the DriverError it answers with.
    Units not listed are silent. Every read is recorded; a read advances the clock by ``read_s``."""

    def __init__(self, units: dict[int, list[int] | DriverError], read_s: float = 0.0) -> None:
        self.units, self.read_s = units, read_s
        self.now_s = 0.0
        self.reads: list[tuple[int, int, int]] = []

    def clock(self) -> float:
        return self.now_s

    async def read(self, unit: int, address: int, count: int) -> list[int]:
        self.reads.append((unit, address, count))
        self.now_s += self.read_s
        answer = self.units.get(unit, DriverError("timeout", f"unit {unit}", "no reply within 0.1 s"))
        if isinstance(answer, DriverError):
            raise answer
        if address + count > len(answer):
            raise exception(unit, 0x02)
        return answer[address : address + count]


def exception(unit: int, code: int) -> DriverError:
    return DriverError("exception_response", f"unit {unit}", f"code {code:#04x}", exception_code=code)


def sim_words(**changes: object) -> list[int]:
    return encode(SIM_V1, SIM_V1.identity, {**IDENTITY, **changes})


def for_unit(line: Line, unit: int) -> Callable[[int, int], Awaitable[list[int]]]:
    async def read(address: int, count: int) -> list[int]:
        return await line.read(unit, address, count)

    return read


async def test_a_sim_pile_identity_fits_its_map_and_decodes():
    line = Line({3: sim_words()})
    (match,) = await identify(for_unit(line, 3), MAPS)
    assert match.map == "pilegate-sim-v1"
    assert (match.identity["vendor"], match.identity["serial"], match.identity["num_ports"]) == (
        "pilegate",
        "T7",
        2,
    )


@pytest.mark.parametrize(
    ("words", "why"),
    [
        ([0] * SIM_V1.identity.size, "blank registers"),
        ([0xFFFF] * SIM_V1.identity.size, "erased memory"),
        (sim_words(num_ports=0), "no ports"),
        (sim_words(num_ports=9), "more ports than the map has"),
        (sim_words(vendor="", model="", serial="", firmware=""), "no text at all"),
        ([0x0102] * SIM_V1.identity.size, "control characters as text"),
    ],
)
async def test_an_implausible_identity_fits_no_map(words, why):
    assert await identify(for_unit(Line({1: words}), 1), MAPS) == [], why


async def test_an_exception_reply_rules_the_map_out_but_a_timeout_is_raised():
    assert await identify(for_unit(Line({1: [1, 2, 3]}), 1), MAPS) == []  # short: ILLEGAL_DATA_ADDRESS
    with pytest.raises(DriverError, match="no reply"):
        await identify(for_unit(Line({}), 1), MAPS)


async def test_maps_sharing_an_identity_block_read_it_once():
    twin = dataclasses.replace(SIM_V1, name="twin")
    line = Line({1: sim_words()})
    report = await probe_unit(line.read, 1, {"pilegate-sim-v1": SIM_V1, "twin": twin})
    assert [m.map for m in report.matches] == ["pilegate-sim-v1", "twin"]
    assert line.reads == [(1, 0, SIM_V1.identity.size)]


async def test_silent_units_and_tcp_gateway_replies_are_absent():
    line = Line({2: exception(2, 0x0B), 3: exception(3, 0x0A)})
    for unit in (1, 2, 3):
        report = await probe_unit(line.read, unit, MAPS)
        assert not report.answered and report.matches == (), unit


async def test_a_unit_that_refuses_the_identity_read_answers_with_the_reason():
    report = await probe_unit(Line({4: exception(4, 0x02)}).read, 4, MAPS)
    assert report.answered and report.matches == ()
    assert "0x02" in report.note


async def test_a_unit_whose_identity_fits_nothing_says_so():
    report = await probe_unit(Line({5: [0] * 40}).read, 5, MAPS)
    assert report.answered and report.note == "no shipped map's identity fits"


async def test_a_lost_line_is_a_line_error():
    line = Line({1: DriverError("connection", "unit 1", "cannot open /dev/ttyUSB9")})
    with pytest.raises(LineError, match="ttyUSB9"):
        await probe_unit(line.read, 1, MAPS)


async def test_scan_reports_answering_units_and_progress_in_order():
    line = Line({2: sim_words(serial="A"), 5: exception(5, 0x02), 7: sim_words(serial="B")})
    seen: list[tuple[int, int]] = []

    async def progress(report, probed):
        seen.append((report.unit, probed))

    report = await scan(line.read, range(1, 9), MAPS, deadline_s=10, progress=progress, clock=line.clock)
    assert [u.unit for u in report.found] == [2, 5, 7]
    assert [u.matches[0].identity["serial"] for u in report.found if u.matches] == ["A", "B"]
    assert seen == [(u, u) for u in range(1, 9)]
    assert report.complete and report.probed == 8 and report.stopped == ""


async def test_scan_stops_at_its_deadline_and_says_where():
    line = Line({}, read_s=1.0)
    report = await scan(line.read, range(1, 248), MAPS, deadline_s=3, clock=line.clock)
    assert report.probed == 3 and not report.complete
    assert report.stopped == "deadline of 3 s reached before unit 4"


async def test_scan_stops_when_asked_and_when_the_line_fails():
    stopped = await scan(Line({}).read, range(1, 10), MAPS, deadline_s=10, stop=lambda: True)
    assert stopped.probed == 0 and stopped.stopped == "stopped before unit 1"
    line = Line({3: DriverError("connection", "unit 3", "port closed")})
    failed = await scan(line.read, range(1, 10), MAPS, deadline_s=10)
    assert failed.probed == 2 and failed.stopped == "line failed at unit 3: port closed"


def test_default_timeout_covers_the_identity_read_on_a_slow_line():
    slow = SerialTransport("/dev/ttyUSB0", baudrate=9600)
    # 8-byte request + 71-byte reply of 33 registers, 10 bits each, plus 3.5 characters before each
    assert min_timeout_s(slow, MAPS) == pytest.approx((8 + 71 + 7) * 10 / 9600)
    assert default_timeout_s(slow, MAPS) == pytest.approx(min_timeout_s(slow, MAPS) + 0.1, abs=0.001)
    assert default_timeout_s(TcpTransport("10.0.0.5", 502), MAPS) == 0.3
    assert set(shipped_maps()) >= {"pilegate-sim-v1"}
