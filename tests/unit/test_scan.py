"""Scan logic without a line: which units answer and which map's identity fits, over register lists."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from drivers.errors import DriverError
from drivers.plan import compile_read_plan
from drivers.specs import RtuTcpTransport, SerialTransport, TcpTransport
from gateway.scan import (
    LineError,
    default_timeout_s,
    identify,
    min_timeout_s,
    probe_unit,
    scan,
    shipped_maps,
    unit_ids,
)
from protocols.registers import SIM_V1, RegisterMap, encode, get_map, load_map

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
NO_RULE = dataclasses.replace(SIM_V1, match=())  # judged by plausibility alone


Image = dict[int, dict[int, int]]  # function code -> address -> word (or 0/1 bit)


class Line:
    """Units behind a line: each unit is its register images by function code, or the DriverError
    it answers with. Units not listed are silent; a read of an address a unit lacks gets exception
    0x02. Every read is recorded; a read advances the clock by ``read_s``."""

    def __init__(self, units: dict[int, Image | list[int] | DriverError], read_s: float = 0.0) -> None:
        self.units = {u: holding(a) if isinstance(a, list) else a for u, a in units.items()}
        self.read_s = read_s
        self.now_s = 0.0
        self.reads: list[tuple[int, int, int, int]] = []

    def clock(self) -> float:
        return self.now_s

    async def read(self, unit: int, address: int, count: int, function: int = 3) -> list[int]:
        self.reads.append((unit, address, count, function))
        self.now_s += self.read_s
        answer = self.units.get(unit, DriverError("timeout", f"unit {unit}", "no reply within 0.1 s"))
        if isinstance(answer, DriverError):
            raise answer
        table = answer.get(function, {})
        if any(a not in table for a in range(address, address + count)):
            raise exception(unit, 0x02)
        return [table[a] for a in range(address, address + count)]


def holding(words: list[int], base: int = 0) -> Image:
    return {3: {base + i: w for i, w in enumerate(words)}}


def image(regmap: RegisterMap, values: dict[str, object]) -> Image:
    """The identity blocks of ``regmap`` holding ``values``, each in its function's table."""
    out: Image = {}
    for block in regmap.identity_blocks:
        words = encode(
            regmap, block, {k: v for k, v in values.items() if k in {f.name for f in block.fields}}
        )
        out.setdefault(block.function, {}).update({block.base + i: w for i, w in enumerate(words)})
    return out


def exception(unit: int, code: int) -> DriverError:
    return DriverError("exception_response", f"unit {unit}", f"code {code:#04x}", exception_code=code)


def sim_words(**changes: object) -> list[int]:
    return encode(SIM_V1, SIM_V1.identity, {**IDENTITY, **changes})


def for_unit(line: Line, unit: int) -> Callable[[int, int, int], Awaitable[list[int]]]:
    async def read(address: int, count: int, function: int) -> list[int]:
        return await line.read(unit, address, count, function)

    return read


async def test_a_sim_pile_identity_fits_its_map_and_decodes():
    line = Line({3: sim_words()})
    match = await identify(for_unit(line, 3), SIM_V1.name, SIM_V1)
    assert match is not None and match.map == "pilegate-sim-v1" and match.confirmed
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
    assert await identify(for_unit(Line({1: words}), 1), SIM_V1.name, NO_RULE) is None, why


async def test_an_exception_reply_rules_the_map_out_but_a_timeout_is_raised():
    short = Line({1: [1, 2, 3]})  # ILLEGAL_DATA_ADDRESS
    assert await identify(for_unit(short, 1), SIM_V1.name, SIM_V1) is None
    with pytest.raises(DriverError, match="no reply"):
        await identify(for_unit(Line({}), 1), SIM_V1.name, SIM_V1)


async def test_maps_sharing_an_identity_block_read_it_once():
    twin = dataclasses.replace(SIM_V1, name="twin")
    line = Line({1: sim_words()})
    report = await probe_unit(line.read, 1, {"pilegate-sim-v1": SIM_V1, "twin": twin})
    assert [m.map for m in report.matches] == ["pilegate-sim-v1", "twin"]
    assert line.reads == [(1, 0, SIM_V1.identity.size, 3)]


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


# ------------------------------------------------------------------ the maps' own rules and layouts

KEBA = get_map("keba-p30")
ALFEN = get_map("alfen-ng9xx")
WALLBOX = load_map(Path(__file__).parents[1] / "data" / "test-wallbox-current.toml")


async def test_a_plausible_identity_that_the_match_rule_refuses_fits_no_map():
    line = Line({1: sim_words(vendor="acme", model="X-1")})  # printable, ports in range: plausible
    report = await probe_unit(line.read, 1, MAPS)
    assert report.answered and report.matches == () and report.note == "no shipped map's identity fits"
    assert (await probe_unit(line.read, 1, {"plain": NO_RULE})).matches[0].confirmed is False


async def test_a_confirmed_map_outranks_one_that_is_only_plausible():
    line = Line({1: sim_words()})
    alone = await probe_unit(line.read, 1, {"plain": NO_RULE})
    assert [(m.map, m.confirmed) for m in alone.matches] == [("plain", False)]
    both = await probe_unit(line.read, 1, {"plain": NO_RULE, SIM_V1.name: SIM_V1})
    assert [(m.map, m.confirmed) for m in both.matches] == [(SIM_V1.name, True)]


async def test_a_family_with_a_small_largest_read_is_read_field_by_field():
    line = Line({255: image(KEBA, {"serial": 20512345, "product": 311201, "firmware": 0x030A1000})})
    report = await probe_unit(line.read, 255, {KEBA.name: KEBA})
    (match,) = report.matches
    assert (match.map, match.confirmed, match.identity["product"]) == ("keba-p30", True, 311201)
    assert line.reads == [(255, 1014, 2, 3), (255, 1016, 2, 3), (255, 1018, 2, 3)]  # max_read = 2
    other = Line({255: image(KEBA, {"serial": 1, "product": 4211201, "firmware": 1})})  # a P40
    assert (await probe_unit(other.read, 255, {KEBA.name: KEBA})).matches == ()


async def test_identity_in_input_registers_is_read_with_function_4():
    values = {"vendor": "TESTCO", "model": "TW-22", "serial": "W9", "num_ports": 2}
    line = Line({7: image(WALLBOX, values)})
    (match,) = (await probe_unit(line.read, 7, {WALLBOX.name: WALLBOX})).matches
    assert match.identity["serial"] == "W9"
    assert {function for *_, function in line.reads} == {4}
    assert (await probe_unit(Line({7: holding(sim_words())}).read, 7, {WALLBOX.name: WALLBOX})).matches == ()


def alfen_station(socket_units: tuple[int, ...]) -> dict[int, Image | list[int] | DriverError]:
    """Alfen's station registers on unit 200, its sockets' polled registers on their own units."""
    station = image(ALFEN, {"model": "ALF_1000", "vendor": "Alfen NV", "serial": "ACE0001"})
    request = compile_read_plan(ALFEN, 1).requests[0]
    socket: Image = {request.function: {request.address + i: 0 for i in range(request.count)}}
    return {200: station, **dict.fromkeys(socket_units, socket)}


async def test_a_family_with_identity_on_a_station_unit_shows_the_station_and_its_sockets():
    line = Line(alfen_station((1, 2)))
    report = await scan(line.read, range(1, 256), {ALFEN.name: ALFEN, SIM_V1.name: SIM_V1}, deadline_s=60)
    by_unit = {u.unit: u.matches for u in report.found}
    assert sorted(by_unit) == [1, 2, 200]
    for unit in (1, 2):
        (socket,) = by_unit[unit]
        assert (socket.map, socket.role, socket.identity_unit, socket.confirmed) == (
            "alfen-ng9xx",
            "pile",
            200,
            True,
        )
        assert socket.identity["serial"] == "ACE0001"
    (station,) = by_unit[200]
    assert (station.role, station.identity_unit, station.identity["vendor"]) == ("station", None, "Alfen NV")
    station_reads = [r for r in line.reads if r[0] == 200]
    assert len(station_reads) == len(set(station_reads))  # read once for both sockets


async def test_a_unit_is_no_socket_of_a_station_family_unless_the_station_answers_its_identity():
    units = alfen_station((1,))
    del units[200]
    report = await probe_unit(Line(units).read, 1, {ALFEN.name: ALFEN})
    assert report.answered and report.matches == ()
    silent = await probe_unit(Line(alfen_station(())).read, 3, {ALFEN.name: ALFEN})
    assert not silent.answered  # the station answering is not unit 3 answering


def test_tcp_hosts_have_unit_ids_up_to_255_and_rtu_lines_up_to_247():
    assert unit_ids(TcpTransport("10.0.0.5", 502)) == range(1, 256)
    assert unit_ids(SerialTransport("/dev/ttyUSB0")) == range(1, 248)
    assert unit_ids(RtuTcpTransport("10.0.0.6", 4001)) == range(1, 248)
