"""The simulator serving a map other than pilegate-sim-v1, driven by a fake clock (no I/O).

The map is ``tests/data/test-wallbox-current.toml``: a fictional wallbox family (input registers,
a coil and a discrete input, explicit port bases, IEC 61851 text states, a fault bit field, three
phases, the ``current`` command recipe). A :class:`Tables` object stands in for pymodbus' four
live register lists, and every read goes through the map's own codec and the gateway's canonical
converters, so the tests see what a gateway would.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from firmware_sim.config import SimConfigError, SimPileSpec, parse_sim_config
from firmware_sim.device import ReadOnlyError, SimPile, UnknownFaultError, WriteRejectedError
from firmware_sim.render import MapEncoder, MapNotServableError
from protocols.canonical import fault_converter, state_converter
from protocols.maploader import parse_map
from protocols.registers import FaultCode, PortState, SimFault, decode, load_map

DATA = Path(__file__).resolve().parents[1] / "data"
MAP_PATH = DATA / "test-wallbox-current.toml"
WALLBOX = load_map(MAP_PATH)
CURRENT = WALLBOX.field_address(1, "charge_current_A")  # holding register, 0.1 A
ENABLE = WALLBOX.field_address(1, "charging_enabled")  # coil
HOUR_S = 3600.0


class Tables:
    """The four Modbus tables of one pile, as pymodbus keeps them (bits packed 16 per word)."""

    def __init__(self, pile: SimPile) -> None:
        self.pile = pile
        self.words = {table: [0] * 4096 for table in (1, 2, 3, 4)}
        for table in (1, 2, 3, 4):
            for segment in pile.segments(table):
                for i, value in enumerate(segment.values):
                    self._store(table, segment.address + i, value)

    def _store(self, table: int, address: int, value: int) -> None:
        words = self.words[table]
        if table in (1, 2):
            mask = 1 << address % 16
            words[address // 16] = words[address // 16] | mask if value else words[address // 16] & ~mask
        else:
            words[address] = value

    def read(self, table: int, address: int, count: int, now_s: float) -> list[int]:
        self.pile.render(self.words[table], 0, address, count, now_s, table)
        if table in (1, 2):
            return [self.words[table][a // 16] >> a % 16 & 1 for a in range(address, address + count)]
        return self.words[table][address : address + count]

    def write(self, table: int, address: int, values: list[int], now_s: float) -> None:
        self.pile.apply_write(self.words[table], 0, address, values, now_s, table)
        for i, value in enumerate(values):  # what pymodbus does after the action
            self._store(table, address + i, value)


def wallbox(rated_power_W: int = 22_000, ports: int = 1) -> tuple[SimPile, Tables]:
    pile = SimPile(SimPileSpec("W1", "trickle", rated_power_W, ports=ports, map=str(MAP_PATH)))
    return pile, Tables(pile)


def telemetry(tables: Tables, now_s: float, port: int = 1) -> dict[str, Any]:
    """The port's telemetry as the gateway sees it: decoded, state and fault made canonical."""
    block = WALLBOX.telemetry
    words = tables.read(4, WALLBOX.port_address(port, block), block.size, now_s)
    values: dict[str, Any] = decode(WALLBOX, block, words)
    values["canonical_state"] = PortState(code(state_converter(block.field("state"))(values["state"])))
    values["canonical_fault"] = FaultCode(code(fault_converter(block.field("fault"))(values["fault"])))
    return values


def code(value: object) -> int:
    assert isinstance(value, int), value
    return value


def offer(tables: Tables, current_A: float | None, enabled: bool | None, now_s: float, port: int = 1) -> None:
    """Write what the gateway's current recipe writes: the enable coil, then the current."""
    if enabled is not None:
        tables.write(1, WALLBOX.field_address(port, "charging_enabled"), [int(enabled)], now_s)
    if current_A is not None:
        tables.write(3, WALLBOX.field_address(port, "charge_current_A"), [round(current_A * 10)], now_s)


# ------------------------------------------------------------------------------------ layout


def test_each_table_serves_the_map_registers_and_only_the_control_ones_are_writable():
    pile, _tables = wallbox(ports=2)
    layout = {t: [(s.address, s.count, s.writable) for s in pile.segments(t)] for t in (1, 2, 3, 4)}
    assert layout == {
        1: [(1010, 1, True), (2010, 1, True)],  # the enable coil of each port
        2: [(1005, 1, False), (2005, 1, False)],  # the "enabled" discrete input
        3: [(1100, 1, True), (2100, 1, True)],  # the current limit
        4: [(0, 21, False), (1000, 21, False), (2000, 21, False)],  # identity, ports' readings
    }


def test_identity_satisfies_the_map_match_rule():
    _pile, tables = wallbox()
    identity = decode(WALLBOX, WALLBOX.identity, tables.read(4, 0, WALLBOX.identity.size, 0.0))
    assert identity == {"vendor": "TESTCO", "model": "TW-11", "serial": "W1", "num_ports": 1}


def test_idle_port_reads_state_a_on_three_live_phases():
    _pile, tables = wallbox()
    values = telemetry(tables, now_s=1.0)
    assert (values["state"], values["canonical_state"]) == ("A", PortState.AVAILABLE)
    assert [values[f"voltage_L{p}_V"] for p in (1, 2, 3)] == [230.0, 230.0, 230.0]
    assert (values["fault"], values["energy_Wh"], values["power_W"]) == (0, 0, 0)


def test_writes_to_an_unserved_coil_are_refused():
    _pile, tables = wallbox()
    with pytest.raises(ReadOnlyError, match="1011"):
        tables.write(1, ENABLE + 1, [1], 0.0)


# ------------------------------------------------------------------------------------ current recipe


def test_enable_and_current_start_a_session_at_that_current_on_every_phase():
    _pile, tables = wallbox()
    offer(tables, 16, True, now_s=0.0)
    values = telemetry(tables, now_s=60.0)
    assert (values["state"], values["canonical_state"]) == ("C2", PortState.CHARGING)
    assert [values[f"current_L{p}_A"] for p in (1, 2, 3)] == [16.0, 16.0, 16.0]
    volts = values["voltage_L1_V"]
    assert 222 < volts < 230  # the line sags under load
    assert values["power_W"] == pytest.approx(3 * 16 * volts, abs=3)
    readback = decode(WALLBOX, WALLBOX.blocks_of("readback")[1], tables.read(4, 1020, 1, 60.0))
    assert readback == {"active_current_A": 16.0}
    assert tables.read(2, 1005, 1, 60.0) == [1]  # the "enabled" discrete input


def test_current_alone_does_not_charge_while_the_enable_coil_is_off():
    _pile, tables = wallbox()
    offer(tables, 16, None, now_s=0.0)
    assert telemetry(tables, now_s=60.0)["canonical_state"] == PortState.AVAILABLE
    offer(tables, None, True, now_s=60.0)
    assert telemetry(tables, now_s=120.0)["canonical_state"] == PortState.CHARGING


def test_power_is_capped_by_the_pile_rating():
    _pile, tables = wallbox(rated_power_W=11_000)
    offer(tables, 32, True, now_s=0.0)
    values = telemetry(tables, now_s=60.0)
    assert values["power_W"] == 11_000
    assert values["current_L1_A"] == pytest.approx(11_000 / (3 * 222), abs=0.002)  # full sag: 222 V


def test_energy_grows_with_the_current():
    energies = []
    for current_A in (8, 16):
        _pile, tables = wallbox()
        offer(tables, current_A, True, now_s=0.0)
        energies.append(telemetry(tables, now_s=HOUR_S)["energy_Wh"])
    assert energies[0] == pytest.approx(3 * 8 * 228.5, rel=0.02)  # ~ 3 phases x 8 A x V for 1 h
    assert energies[1] / energies[0] == pytest.approx(2.0, rel=0.02)


def test_a_current_below_the_minimum_pauses_and_a_higher_one_resumes():
    _pile, tables = wallbox()
    offer(tables, 16, True, now_s=0.0)
    offer(tables, 5, None, now_s=600.0)
    paused = telemetry(tables, now_s=700.0)
    assert (paused["state"], paused["power_W"]) == ("B1", 0)
    offer(tables, 10, None, now_s=700.0)
    resumed = telemetry(tables, now_s=800.0)
    assert resumed["canonical_state"] == PortState.CHARGING
    assert resumed["energy_Wh"] > paused["energy_Wh"]


@pytest.mark.parametrize(("current_A", "enabled"), [(None, False), (0, None)])
def test_disable_or_zero_amperes_stops_the_session(current_A, enabled):
    _pile, tables = wallbox()
    offer(tables, 16, True, now_s=0.0)
    offer(tables, current_A, enabled, now_s=600.0)
    stopped = telemetry(tables, now_s=700.0)
    assert (stopped["state"], stopped["canonical_state"]) == ("C1", PortState.FINISHED)
    assert stopped["power_W"] == 0
    assert telemetry(tables, now_s=800.0)["energy_Wh"] == stopped["energy_Wh"]


def test_a_current_above_the_family_maximum_is_rejected_and_changes_nothing():
    pile, tables = wallbox()
    with pytest.raises(WriteRejectedError, match=r"33 A outside 0..32 A"):
        offer(tables, 33, None, now_s=0.0)
    assert pile.ports[0].current_limit_A == 0.0


def test_second_port_has_its_own_offer():
    _pile, tables = wallbox(ports=2)
    offer(tables, 16, True, now_s=0.0, port=2)
    assert telemetry(tables, now_s=60.0, port=2)["canonical_state"] == PortState.CHARGING
    assert telemetry(tables, now_s=60.0, port=1)["canonical_state"] == PortState.AVAILABLE


# ------------------------------------------------------------------------------------ faults


@pytest.mark.parametrize(
    ("kind", "bits", "canonical"),
    [
        ("residual_current", 0b1, FaultCode.RESIDUAL_CURRENT),
        ("over_temperature", 0b100, FaultCode.OVER_TEMPERATURE),
        ("meter_fault", 0b10000, FaultCode.INTERNAL),  # not in the family's bits: its "internal"
    ],
)
def test_injected_faults_show_in_the_family_bit_field(kind, bits, canonical):
    pile, tables = wallbox()
    offer(tables, 16, True, now_s=0.0)
    pile.inject(1, kind, now_s=60.0)
    values = telemetry(tables, now_s=61.0)
    assert (values["state"], values["fault"], values["canonical_fault"]) == ("E", bits, canonical)
    assert values["power_W"] == 0
    pile.inject(1, "clear", now_s=62.0)
    cleared = telemetry(tables, now_s=63.0)
    assert (cleared["state"], cleared["fault"]) == ("B1", 0)  # the car is still plugged in


def test_silent_and_unknown_fault_kinds():
    pile, _tables = wallbox()
    pile.inject(1, "silent", now_s=0.0)
    assert pile.silent
    pile.inject_fault(1, SimFault.CLEAR, now_s=1.0)
    assert not pile.silent
    with pytest.raises(UnknownFaultError, match="'melted' is not one of"):
        pile.inject(1, "melted", now_s=2.0)


# ------------------------------------------------------------------------------------ encoder


def test_encoder_shows_each_state_as_the_family_code_or_its_nearest():
    codes = MapEncoder(WALLBOX).state_codes
    assert codes == {
        PortState.AVAILABLE: "A",
        PortState.PLUGGED: "B1",
        PortState.CHARGING: "C2",
        PortState.FINISHED: "C1",
        PortState.FAULTED: "E",
        PortState.UNAVAILABLE: "E",  # no unavailable code: shown as faulted
    }


def raw_map() -> dict[str, Any]:
    return {
        "map": {"name": "tiny", "document": "none"},
        "telemetry": {
            "energy_Wh": {"address": 0, "type": "u32"},
            "state": {
                "address": 2,
                "values": {"0": "available", "1": "charging", "2": "faulted", "3": "plugged"},
            },
            "fault": {"address": 3, "values": {"0": "none", "7": "overcurrent"}},
        },
    }


def test_encoder_refuses_a_family_without_a_code_for_a_state_the_physics_needs():
    raw = raw_map()
    raw["telemetry"]["state"]["values"] = {"0": "available", "2": "faulted"}
    with pytest.raises(MapNotServableError, match="no code for plugged, charging, finished"):
        MapEncoder(parse_map(raw))


def test_encoder_shows_a_fault_the_family_does_not_name_as_an_unlisted_code():
    encoder = MapEncoder(parse_map(raw_map()))
    assert encoder.fault_code(FaultCode.OVERCURRENT) == 7
    assert encoder.fault_code(FaultCode.NONE) == 0
    assert encoder.fault_code(FaultCode.METER_FAULT) == 1  # unlisted: the gateway reads "other"


def test_encoder_floors_and_wraps_a_scaled_meter():
    raw = raw_map()
    raw["telemetry"]["energy_Wh"] = {"address": 0, "type": "u16", "scale": 100, "unit": "Wh"}
    regmap = parse_map(raw)
    encoder = MapEncoder(regmap)
    f = regmap.telemetry.field("energy_Wh")
    assert encoder.encode_field(f, 1299.9) == [12]  # 0.1 kWh steps, never rounded up
    assert encoder.encode_field(f, 100 * 65_536 + 250) == [2]  # wraps like a 16-bit counter


# ------------------------------------------------------------------------------------ config


def test_config_map_path_is_relative_to_the_config_file(tmp_path):
    raw = {"piles": [{"id": "W1", "kind": "trickle", "rated_power_W": 22_000,
                      "map": "test-wallbox-current.toml"}]}  # fmt: skip
    config = parse_sim_config(raw, DATA)
    assert config.piles[0].map == str(MAP_PATH)
    with pytest.raises(SimConfigError, match=r"pile 'W1': map .*nowhere\.toml: cannot read"):
        parse_sim_config(raw | {"piles": [raw["piles"][0] | {"map": "nowhere.toml"}]}, tmp_path)


def test_config_names_an_unknown_map_and_too_many_ports():
    pile = {"id": "W1", "kind": "trickle", "rated_power_W": 22_000}
    raw = {"piles": [pile | {"map": "acme-9000"}, pile | {"id": "W2", "map": str(MAP_PATH), "ports": 3}]}
    with pytest.raises(SimConfigError) as info:
        parse_sim_config(copy.deepcopy(raw))
    problems = info.value.problems
    assert any(p.startswith("pile 'W1': map acme-9000: unknown register map 'acme-9000'") for p in problems)
    assert any(p.startswith("pile 'W2': ports 3 outside 1..2") for p in problems)


def test_a_family_without_a_fault_state_shows_a_faulted_port_as_stopped_with_its_fault_bits():
    raw = raw_map()
    raw["telemetry"]["state"]["values"] = {"0": "available", "1": "plugged", "4": "charging", "5": "finished"}
    raw["telemetry"]["fault"] = {"address": 3, "bits": {"1": "residual_current"}}
    encoder = MapEncoder(parse_map(raw))
    assert encoder.state_code(PortState.FAULTED) == 5
    assert encoder.fault_code(FaultCode.RESIDUAL_CURRENT) == 0b10
    raw["telemetry"] = {k: v for k, v in raw_map()["telemetry"].items() if k != "fault"}
    raw["telemetry"]["state"]["values"] = {"0": "available", "1": "plugged", "4": "charging"}
    with pytest.raises(MapNotServableError, match="no code for faulted"):
        MapEncoder(parse_map(raw))


def test_fixed_registers_from_the_pile_config_are_served_as_given():
    raw = {"piles": [{"id": "W1", "kind": "trickle", "rated_power_W": 22_000, "map": str(MAP_PATH),
                      "registers": {"temperature_C": 41.5}}]}  # fmt: skip
    pile = SimPile(parse_sim_config(raw).piles[0])
    assert telemetry(Tables(pile), now_s=1.0)["temperature_C"] == 41.5
    raw["piles"][0]["registers"] = {"state": 1, "charge_current_A": 6, "nothing": 1, "active_current_A": [1]}
    with pytest.raises(SimConfigError) as info:
        parse_sim_config(raw)
    assert [p.split(":")[1].strip() for p in info.value.problems] == [
        "registers.state", "registers.charge_current_A", "registers.nothing", "registers.active_current_A",
    ]  # fmt: skip


def test_blocks_that_interleave_write_only_their_own_registers():
    # read-back and control registers amid the telemetry, as some vendors lay them out
    raw = raw_map()
    raw["telemetry"]["voltage_V"] = {"address": 10, "type": "u16", "scale": 0.1, "unit": "V"}
    raw["readback"] = {"active_current_A": {"address": 5, "type": "u16", "scale": 0.1}}
    raw["control"] = {"limit_A": {"address": 7, "type": "u16", "scale": 0.1}}
    raw["command"] = {
        "style": "current",
        "current": "limit_A",
        "max_current_A": 32,
        "confirm": "active_current_A",
    }
    regmap = parse_map(raw)
    pile = SimPile(SimPileSpec("W1", "trickle", 22_000), regmap=regmap)
    tables = Tables(pile)
    tables.write(3, 7, [160], now_s=0.0)
    words = tables.read(3, 0, 11, now_s=60.0)
    telemetry = decode(regmap, regmap.telemetry, words)
    assert (telemetry["state"], telemetry["voltage_V"]) == (1, 228.7)  # charging 16 A on 1 phase: sag
    assert words[5] == 160 and words[7] == 160  # read-back rendered, the written limit kept


def test_a_sequenced_family_with_its_own_codes_is_acknowledged_in_them():
    raw = raw_map()
    raw["control"] = {
        "cmd": {"address": 20}, "seq": {"address": 21},
        "target_Wh": {"address": 22, "type": "u32"}, "limit_W": {"address": 24, "type": "u32"},
    }  # fmt: skip
    raw["readback"] = {"ack": {"address": 30}, "status": {"address": 31}}
    raw["command"] = {
        "style": "sequenced", "command": "cmd", "sequence": "seq", "target_energy": "target_Wh",
        "power_limit": "limit_W", "ack_sequence": "ack", "ack_status": "status",
        "codes": {"start": 10, "stop": 20, "limit": 30}, "statuses": {"7": "ok", "9": "rejected"},
    }  # fmt: skip
    regmap = parse_map(raw)
    tables = Tables(SimPile(SimPileSpec("P1", "fast", 30_000), regmap=regmap))
    tables.write(3, 20, [10, 5, 0, 1000, 0, 0], now_s=0.0)  # start, seq 5, 1000 Wh, rated power
    assert tables.read(3, 20, 1, now_s=1.0) == [0]  # the pile resets its command register
    assert tables.read(3, 30, 2, now_s=1.0) == [5, 7]
    assert decode(regmap, regmap.telemetry, tables.read(3, 0, 4, now_s=60.0))["state"] == 1  # charging
    tables.write(3, 20, [10, 6], now_s=61.0)  # start again while charging
    assert tables.read(3, 30, 2, now_s=62.0) == [6, 9]  # refused: the family's generic "rejected"
    tables.write(3, 20, [99, 7], now_s=63.0)  # a code the family does not define
    assert tables.read(3, 30, 2, now_s=64.0) == [7, 9]
