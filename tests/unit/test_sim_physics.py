"""Simulator physics, register view and config validation, driven by a fake clock (no I/O)."""

from __future__ import annotations

import pytest

from firmware_sim.config import (
    SimConfig,
    SimConfigError,
    SimPileSpec,
    SimSerialBusSpec,
    parse_sim_config,
    station_sim_config,
    validate_sim_config,
)
from firmware_sim.device import SimPile, WriteRejectedError
from firmware_sim.physics import OVER_TEMPERATURE_C, PortParams, PortPhysics
from protocols.registers import (
    SIM_V1,
    Command,
    CommandStatus,
    FaultCode,
    PortState,
    SimFault,
    decode,
    encode,
)

FAST = PortParams(kind="fast", rated_power_W=30_000, ramp_s=5.0)
TRICKLE = PortParams(kind="trickle", rated_power_W=7_000, ramp_s=5.0)


def started(params: PortParams = FAST, target_Wh: int = 0, limit_W: int = 0) -> PortPhysics:
    port = PortPhysics(params)
    assert port.command(Command.START, 1, target_Wh, limit_W, now_s=0.0) == CommandStatus.OK
    return port


def state_of(port: PortPhysics) -> PortState:
    return port.state  # a call, so mypy does not narrow the attribute between asserts


def faulted(fault: FaultCode = FaultCode.CONTACTOR_FAULT) -> PortPhysics:
    port = started()
    port.inject_fault(fault, now_s=10.0)
    return port


# ------------------------------------------------------------------------------------ ramp, energy


def test_power_ramps_linearly_to_rated_over_ramp_time():
    port = started()
    port.advance(2.5)
    assert port.power_W == pytest.approx(15_000)
    port.advance(5.0)
    assert port.power_W == pytest.approx(30_000)
    port.advance(60.0)
    assert port.power_W == pytest.approx(30_000)


def test_energy_integrates_ramp_then_constant_power_exactly():
    port = started()
    port.advance(3605.0)  # 5 s ramp (average 15 kW) + 3600 s at 30 kW
    expected_Wh = (15_000 * 5 + 30_000 * 3600) / 3600
    assert port.meter_Wh == pytest.approx(expected_Wh)
    assert port.session_Wh == pytest.approx(expected_Wh)


def test_energy_is_the_same_in_one_step_or_many_small_ticks():
    one, many = started(), started()
    one.advance(900.0)
    for i in range(1, 4501):
        many.advance(i * 0.2)
    assert many.meter_Wh == pytest.approx(one.meter_Wh, rel=1e-9)


def test_power_limit_caps_the_ramp():
    port = started(limit_W=10_000)
    port.advance(600.0)
    assert port.power_W == pytest.approx(10_000)
    assert port.active_limit_W == 10_000


def test_set_limit_ramps_a_running_session_down_to_the_new_limit():
    port = started()
    port.advance(60.0)
    assert port.command(Command.SET_LIMIT, 2, 0, 12_000, now_s=60.0) == CommandStatus.OK
    port.advance(61.0)
    assert 12_000 < port.power_W < 30_000  # ramping down, not a step
    port.advance(120.0)
    assert port.power_W == pytest.approx(12_000)
    assert port.active_limit_W == 12_000


@pytest.mark.parametrize("steps", [1, 7, 400])
def test_session_stops_exactly_at_target_without_overshoot(steps):
    port = PortPhysics(PortParams(kind="fast", rated_power_W=30_000, initial_energy_Wh=1234))
    port.command(Command.START, 1, 1000, 0, now_s=0.0)
    for i in range(1, steps + 1):
        port.advance(3600.0 * i / steps)
    assert port.state == PortState.FINISHED
    assert port.power_W == 0
    assert port.session_Wh == 1000
    assert port.meter_Wh == 1234 + 1000


def test_target_zero_charges_until_stopped():
    port = started(target_Wh=0)
    port.advance(36_000.0)
    assert state_of(port) == PortState.CHARGING
    assert port.command(Command.STOP, 2, 0, 0, now_s=36_000.0) == CommandStatus.OK
    assert state_of(port) == PortState.FINISHED
    assert port.power_W == 0


def test_meter_register_wraps_at_two_to_the_32():
    spec = SimPileSpec("F1", "fast", 30_000, initial_energy_Wh=2**32 - 10)
    pile = SimPile(spec)
    pile.ports[0].command(Command.START, 1, 25, 0, now_s=0.0)
    snapshot = pile.snapshot(1, now_s=3600.0)
    assert snapshot["state"] == PortState.FINISHED
    assert snapshot["energy_Wh"] == 15  # 2**32 - 10 + 25, modulo 2**32


def test_meter_register_floors_the_float_accumulator():
    pile = SimPile(SimPileSpec("T1", "trickle", 7_000, tcp_port=0))
    pile.ports[0].command(Command.START, 1, 0, 0, now_s=0.0)
    end_s = 5.0 + 3600 / 7000 * 10.5  # ramp (4.86 Wh) then 10.5 Wh at 7 kW
    pile.advance_port(1, end_s)
    assert pile.ports[0].meter_Wh == pytest.approx(5 * 3500 / 3600 + 10.5)  # 15.36
    assert pile.snapshot(1, now_s=end_s)["energy_Wh"] == 15


# ------------------------------------------------------------------------------------ electricals


def test_trickle_is_single_phase_ac_and_current_is_power_over_voltage():
    port = started(TRICKLE)
    assert 225 <= port.voltage_V <= 230
    port.advance(600.0)
    assert 220 <= port.voltage_V <= 230
    assert port.current_A == pytest.approx(port.power_W / port.voltage_V)
    assert port.current_A == pytest.approx(7000 / 222, rel=1e-3)


def test_fast_dc_voltage_rises_with_delivered_energy_within_400_to_750():
    port = started()
    port.advance(60.0)
    early_V = port.voltage_V
    port.advance(6 * 3600.0)
    assert 400 <= early_V < port.voltage_V <= 750
    assert port.current_A == pytest.approx(port.power_W / port.voltage_V)


def test_idle_fast_port_shows_no_dc_output():
    assert PortPhysics(FAST).voltage_V == 0
    assert PortPhysics(FAST).current_A == 0


def test_temperature_rises_with_current_and_relaxes_to_ambient_after_stop():
    port = started()
    port.advance(3600.0)
    hot_C = port.temperature_C
    assert hot_C == pytest.approx(25 + 25 * (port.current_A / FAST.rated_current_A) ** 2, abs=0.5)
    port.command(Command.STOP, 2, 0, 0, now_s=3600.0)
    assert port.busy  # still cooling: the tick keeps advancing it
    port.advance(3600.0 + 3000.0)
    assert port.temperature_C == pytest.approx(25.0, abs=0.05)
    assert not port.busy


# ------------------------------------------------------------------------------------ commands


@pytest.mark.parametrize("state", [PortState.AVAILABLE, PortState.PLUGGED, PortState.FINISHED])
def test_start_is_accepted_from_idle_states(state):
    port = PortPhysics(FAST)
    port.state = state
    assert port.command(Command.START, 9, 500, 20_000, now_s=0.0) == CommandStatus.OK
    assert port.state == PortState.CHARGING
    assert (port.ack_seq, port.ack_status) == (9, CommandStatus.OK)
    assert (port.active_target_Wh, port.active_limit_W) == (500, 20_000)


def test_start_while_charging_is_rejected_state_and_session_continues():
    port = started(target_Wh=800)
    assert port.command(Command.START, 2, 5000, 0, now_s=1.0) == CommandStatus.REJECTED_STATE
    assert port.state == PortState.CHARGING
    assert (port.ack_seq, port.ack_status) == (2, CommandStatus.REJECTED_STATE)
    assert port.active_target_Wh == 800


def test_start_on_unavailable_port_is_rejected_state():
    port = PortPhysics(FAST)
    port.state = PortState.UNAVAILABLE
    assert port.command(Command.START, 1, 0, 0, now_s=0.0) == CommandStatus.REJECTED_STATE


def test_start_on_faulted_port_is_rejected_fault():
    port = faulted()
    assert port.command(Command.START, 5, 100, 0, now_s=11.0) == CommandStatus.REJECTED_FAULT
    assert port.state == PortState.FAULTED
    assert port.ack_seq == 5


def test_start_with_limit_above_rated_is_rejected_param():
    port = PortPhysics(FAST)
    assert port.command(Command.START, 3, 100, 30_001, now_s=0.0) == CommandStatus.REJECTED_PARAM
    assert port.state == PortState.AVAILABLE
    assert port.ack_status == CommandStatus.REJECTED_PARAM


def test_start_limit_zero_means_rated_power():
    port = started(limit_W=0)
    assert port.active_limit_W == 30_000


@pytest.mark.parametrize("state", [PortState.AVAILABLE, PortState.FINISHED, PortState.FAULTED])
def test_stop_when_not_charging_is_ok_and_changes_nothing(state):
    port = PortPhysics(FAST)
    port.state = state
    assert port.command(Command.STOP, 4, 0, 0, now_s=0.0) == CommandStatus.OK
    assert port.state == state
    assert port.ack_seq == 4


@pytest.mark.parametrize(("limit_W", "status"), [(0, CommandStatus.OK), (30_000, CommandStatus.OK),
                                                 (30_001, CommandStatus.REJECTED_PARAM)])  # fmt: skip
def test_set_limit_accepts_zero_to_rated_only(limit_W, status):
    port = started(limit_W=5_000)
    assert port.command(Command.SET_LIMIT, 6, 0, limit_W, now_s=1.0) == status
    assert port.active_limit_W == (5_000 if status != CommandStatus.OK else limit_W or 30_000)


def test_unknown_command_code_is_rejected_param():
    port = PortPhysics(FAST)
    assert port.command(42, 8, 0, 0, now_s=0.0) == CommandStatus.REJECTED_PARAM
    assert port.ack_seq == 8


# ------------------------------------------------------------------------------------ faults


@pytest.mark.parametrize("fault", [FaultCode.OVER_TEMPERATURE, FaultCode.METER_FAULT,
                                   FaultCode.CONTACTOR_FAULT])  # fmt: skip
def test_fault_stops_the_session_and_holds_the_port_faulted(fault):
    port = started()
    port.advance(60.0)
    port.inject_fault(fault, now_s=60.0)
    meter_Wh = port.meter_Wh
    port.advance(3600.0)
    assert (port.state, port.fault, port.power_W) == (PortState.FAULTED, fault, 0)
    assert port.meter_Wh == meter_Wh


def test_over_temperature_fault_shows_a_hot_port():
    port = faulted(FaultCode.OVER_TEMPERATURE)
    assert port.temperature_C >= OVER_TEMPERATURE_C


def test_clearing_returns_a_port_with_a_vehicle_to_plugged():
    port = faulted()
    port.clear_fault(now_s=20.0)
    assert (port.state, port.fault) == (PortState.PLUGGED, FaultCode.NONE)
    assert port.command(Command.START, 2, 0, 0, now_s=21.0) == CommandStatus.OK


def test_clearing_returns_an_empty_port_to_available():
    port = PortPhysics(FAST)
    port.inject_fault(FaultCode.METER_FAULT, now_s=1.0)
    port.inject_fault(FaultCode.NONE, now_s=2.0)
    assert (port.state, port.fault) == (PortState.AVAILABLE, FaultCode.NONE)


# ------------------------------------------------------------------------------------ register view

CONTROL = SIM_V1.port_address(1, SIM_V1.control)
SIM_FAULT = SIM_V1.port_address(1, SIM_V1.sim)  # type: ignore[arg-type]
TELEMETRY = SIM_V1.port_address(1, SIM_V1.telemetry)


def registers_for(pile: SimPile) -> list[int]:
    return [0] * (SIM_V1.port_base + SIM_V1.port_stride * pile.spec.ports)


def read(pile: SimPile, regs: list[int], block_name: str, now_s: float, port: int = 1) -> dict[str, object]:
    block = getattr(SIM_V1, block_name)
    at = SIM_V1.port_address(port, block)
    pile.render(regs, 0, at, block.size, now_s)
    return decode(SIM_V1, block, regs[at : at + block.size])


def write(pile: SimPile, regs: list[int], address: int, values: list[int], now_s: float) -> list[int]:
    pile.apply_write(regs, 0, address, values, now_s)
    regs[address : address + len(values)] = values  # what pymodbus does after the action
    return values


def control_words(command: int, seq: int, target_Wh: int = 0, limit_W: int = 0) -> list[int]:
    values = {"command": command, "command_seq": seq, "target_energy_Wh": target_Wh,
              "power_limit_W": limit_W}  # fmt: skip
    return encode(SIM_V1, SIM_V1.control, values)


def test_control_block_write_runs_the_command_and_resets_the_command_register():
    pile = SimPile(SimPileSpec("F1", "fast", 30_000))
    regs = registers_for(pile)
    stored = write(pile, regs, CONTROL, control_words(Command.START, 77, 2000, 15_000), now_s=0.0)
    assert stored[0] == 0
    assert read(pile, regs, "readback", now_s=1.0) == {
        "ack_seq": 77, "ack_status": CommandStatus.OK, "active_target_Wh": 2000,
        "active_limit_W": 15_000,
    }  # fmt: skip
    assert read(pile, regs, "telemetry", now_s=60.0)["state"] == PortState.CHARGING


def test_command_written_after_its_parameters_uses_the_stored_parameters():
    pile = SimPile(SimPileSpec("F1", "fast", 30_000))
    regs = registers_for(pile)
    words = control_words(0, 0, 3000, 10_000)
    write(pile, regs, CONTROL + 2, words[2:], now_s=0.0)
    write(pile, regs, CONTROL, [Command.START, 5], now_s=0.0)
    assert pile.ports[0].active_target_Wh == 3000
    assert pile.ports[0].active_limit_W == 10_000


def test_telemetry_registers_carry_energy_and_heartbeat_ticks_per_simulated_second():
    pile = SimPile(SimPileSpec("F1", "fast", 30_000))
    regs = registers_for(pile)
    assert read(pile, regs, "telemetry", now_s=0.9)["heartbeat"] == 0
    assert read(pile, regs, "telemetry", now_s=1.0)["heartbeat"] == 1
    assert read(pile, regs, "telemetry", now_s=65_537.5)["heartbeat"] == 1  # wrapped at 65535
    write(pile, regs, CONTROL, control_words(Command.START, 1), now_s=70_000.0)
    telemetry = read(pile, regs, "telemetry", now_s=70_000.0 + 3605.0)
    assert telemetry["energy_Wh"] == 30_020  # 5 s ramp at 15 kW average + 1 h at 30 kW
    assert telemetry["power_W"] == 30_000


def test_sim_fault_register_injects_and_clears_a_port_fault():
    pile = SimPile(SimPileSpec("F1", "fast", 30_000))
    regs = registers_for(pile)
    write(pile, regs, SIM_FAULT, [SimFault.METER_FAULT], now_s=1.0)
    telemetry = read(pile, regs, "telemetry", now_s=2.0)
    assert (telemetry["state"], telemetry["fault"]) == (PortState.FAULTED, FaultCode.METER_FAULT)
    write(pile, regs, SIM_FAULT, [SimFault.CLEAR], now_s=3.0)
    assert read(pile, regs, "telemetry", now_s=4.0)["state"] == PortState.AVAILABLE


def test_sim_fault_register_silent_mutes_the_whole_pile():
    pile = SimPile(SimPileSpec("F1", "fast", 30_000, ports=2))
    write(pile, registers_for(pile), SIM_FAULT, [SimFault.SILENT], now_s=1.0)
    assert pile.silent
    pile.inject_fault(2, SimFault.CLEAR, now_s=2.0)
    assert not pile.silent


def test_sim_fault_register_rejects_values_outside_simfault():
    pile = SimPile(SimPileSpec("F1", "fast", 30_000))
    with pytest.raises(WriteRejectedError, match="sim_fault 9"):
        pile.apply_write(registers_for(pile), 0, SIM_FAULT, [9], 1.0)


def test_second_port_has_its_own_registers():
    pile = SimPile(SimPileSpec("F1", "fast", 30_000, ports=2))
    regs = registers_for(pile)
    write(pile, regs, SIM_V1.port_address(2, SIM_V1.control), control_words(Command.START, 3), 0.0)
    assert read(pile, regs, "telemetry", now_s=30.0, port=2)["state"] == PortState.CHARGING
    assert read(pile, regs, "telemetry", now_s=30.0, port=1)["state"] == PortState.AVAILABLE


def test_segments_make_telemetry_and_readback_read_only():
    pile = SimPile(SimPileSpec("F1", "fast", 30_000))
    writable = {s.address: s.count for s in pile.segments() if s.writable}
    assert writable == {CONTROL: SIM_V1.control.size, SIM_FAULT: 1}


def test_identity_block_describes_the_pile():
    pile = SimPile(SimPileSpec("T7", "trickle", 7_000, ports=2))
    identity = decode(SIM_V1, SIM_V1.identity, pile.identity_registers())
    assert identity["serial"] == "T7"
    assert (identity["num_ports"], identity["rated_power_W"], identity["kind"]) == (2, 7000, 0)


# ------------------------------------------------------------------------------------ config


def raw_config(**overrides: object) -> dict[str, object]:
    raw: dict[str, object] = {
        "time_scale": 60,
        "serial_buses": [{"name": "bus1"}],
        "piles": [
            {"id": "F1", "kind": "fast", "rated_power_W": 30000, "tcp_port": 0},
            {"id": "T1", "kind": "trickle", "rated_power_W": 7000, "serial_bus": "bus1", "unit": 1},
            {"id": "T2", "kind": "trickle", "rated_power_W": 7000, "serial_bus": "bus1", "unit": 2},
        ],
    }
    raw.update(overrides)
    return raw


def problems_of(raw: dict[str, object]) -> list[str]:
    with pytest.raises(SimConfigError) as info:
        parse_sim_config(raw)
    return info.value.problems


def test_valid_config_parses_into_frozen_specs():
    config = parse_sim_config(raw_config())
    assert config.time_scale == 60.0
    assert config.piles[1] == SimPileSpec("T1", "trickle", 7000, unit=1, tcp_port=None,
                                          serial_bus="bus1")  # fmt: skip
    assert config.serial_buses == (SimSerialBusSpec("bus1"),)


def test_config_reports_every_problem_by_name_at_once():
    raw = raw_config(
        piles=[
            {"id": "F1", "kind": "fast", "rated_power_W": 30000},
            {"id": "F1", "kind": "turbo", "rated_power_W": 30000},
            {"id": "T1", "kind": "trickle", "rated_power_W": 7000, "serial_bus": "bus1", "unit": 1},
            {"id": "T2", "kind": "trickle", "rated_power_W": 7000, "serial_bus": "bus1", "unit": 1},
            {"id": "T3", "kind": "trickle", "rated_power_W": 7000, "serial_bus": "nowhere"},
        ]
    )
    problems = problems_of(raw)
    assert "duplicate pile id 'F1'" in problems
    assert "pile 'F1': kind 'turbo' is not one of ['fast', 'trickle']" in problems
    assert "serial bus 'bus1': unit 1 used by more than one pile" in problems
    assert "pile 'T3': serial_bus 'nowhere' is not a configured serial bus" in problems
    assert len(problems) == 4


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"time_scale": 0}, "time_scale 0.0 must be > 0"),
        ({"time_scale": "fast"}, "config: time_scale must be int or float, got 'fast'"),
        ({"colour": "red"}, "config: unknown key 'colour'"),
        ({"piles": []}, "no piles configured"),
        ({"serial_buses": [{"name": "bus1", "parity": "X"}]},
         "serial bus 'bus1': parity 'X' is not one of N, E, O"),
        ({"serial_buses": [{"name": "bus1"}, {"name": "bus2"}]}, "serial bus 'bus2' has no piles"),
        ({"control_port": 70000}, "control_port 70000 outside 0..65535"),
    ],
)  # fmt: skip
def test_config_problem_messages(change, message):
    assert message in problems_of(raw_config(**change))


@pytest.mark.parametrize(
    ("pile", "message"),
    [
        ({"kind": "fast", "rated_power_W": 1}, "piles[3]: id is required"),
        ({"id": "X", "kind": "fast", "rated_power_W": 0}, "pile 'X': rated_power_W 0 outside"),
        ({"id": "X", "kind": "fast", "rated_power_W": 1, "ports": 5}, "pile 'X': ports 5 outside 1..4"),
        ({"id": "X", "kind": "fast", "rated_power_W": 1, "unit": 0}, "pile 'X': unit 0 outside 1..255"),
        ({"id": "X", "kind": "fast", "rated_power_W": 1, "unit": 248, "serial_bus": "bus1"},
         "pile 'X': unit 248 outside 1..247"),
        ({"id": "X", "kind": "fast", "rated_power_W": True}, "pile 'X': rated_power_W must be int"),
        ({"id": "X", "kind": "fast", "rated_power_W": 1, "speed": 2}, "pile 'X': unknown key 'speed'"),
        ({"id": "X", "kind": "fast", "rated_power_W": 1, "tcp_port": 1, "serial_bus": "bus1"},
         "pile 'X': give either serial_bus or tcp_port, not both"),
        ({"id": "a b", "kind": "fast", "rated_power_W": 1}, "pile 'a b': id must be"),
    ],
)  # fmt: skip
def test_pile_problem_messages(pile, message):
    raw = raw_config()
    raw["piles"] = [*raw["piles"], pile]  # type: ignore[misc]
    assert any(p.startswith(message) for p in problems_of(raw)), problems_of(raw)


def test_duplicate_tcp_ports_are_reported():
    config = SimConfig(piles=(SimPileSpec("A", "fast", 1, tcp_port=1502),
                              SimPileSpec("B", "fast", 1, tcp_port=1502)))  # fmt: skip
    with pytest.raises(SimConfigError, match="tcp_port 1502 used more than once"):
        validate_sim_config(config)


def test_station_parameters_give_fast_then_trickle_piles_on_consecutive_ports():
    config = station_sim_config(
        {"FastChargingPileNum": 2, "TrickleChargingPileNum": 3, "fast_power_kw": 60,
         "slow_power_kw": 7.5, "WaitingAreaSize": 6},
        first_tcp_port=15020, time_scale=30,
    )  # fmt: skip
    assert [(p.id, p.kind, p.rated_power_W, p.tcp_port) for p in config.piles] == [
        ("F1", "fast", 60_000, 15020), ("F2", "fast", 60_000, 15021),
        ("T1", "trickle", 7_500, 15022), ("T2", "trickle", 7_500, 15023),
        ("T3", "trickle", 7_500, 15024),
    ]  # fmt: skip
    assert config.time_scale == 30


def test_station_defaults_are_two_fast_three_trickle_on_ephemeral_ports():
    config = station_sim_config({})
    assert [p.id for p in config.piles] == ["F1", "F2", "T1", "T2", "T3"]
    assert {p.tcp_port for p in config.piles} == {0}
    assert {p.rated_power_W for p in config.piles} == {30_000, 10_000}


def test_station_parameters_with_bad_values_name_the_key():
    with pytest.raises(SimConfigError) as info:
        station_sim_config({"FastChargingPileNum": -1, "slow_power_kw": "ten"})
    assert info.value.problems == [
        "station parameter FastChargingPileNum: invalid value -1",
        "station parameter slow_power_kw: invalid value 'ten'",
    ]
