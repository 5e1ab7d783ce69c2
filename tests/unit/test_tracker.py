"""Event detection from successive readings, and pile state from poll outcomes."""

from gateway.poller import next_deadline
from gateway.tracker import PileTracker, PortTracker, SessionMeter
from protocols.registers import FaultCode, PortState


def reading(state, fault=0, energy=1000):
    return {"state": int(state), "fault": int(fault), "energy_Wh": energy}


def test_first_reading_of_a_healthy_port_raises_no_event():
    assert PortTracker(1).update(reading(PortState.AVAILABLE)) == []


def test_fault_raised_and_cleared_are_reported_once():
    tracker = PortTracker(1)
    tracker.update(reading(PortState.CHARGING))
    raised = tracker.update(reading(PortState.FAULTED, FaultCode.OVER_TEMPERATURE, 1500))
    assert [(e.type, e.fault, e.energy_Wh) for e in raised] == [
        ("fault_raised", "over_temperature", 1500),
        ("session_stopped", "none", 1500),
    ]
    assert tracker.update(reading(PortState.FAULTED, FaultCode.OVER_TEMPERATURE)) == []
    cleared = tracker.update(reading(PortState.AVAILABLE))
    assert (cleared[0].type, cleared[0].fault) == ("fault_cleared", "over_temperature")


def test_session_start_and_stop_carry_the_meter_value():
    tracker = PortTracker(2)
    tracker.update(reading(PortState.AVAILABLE, energy=10))
    started = tracker.update(reading(PortState.CHARGING, energy=10))
    assert [(e.type, e.port, e.energy_Wh) for e in started] == [
        ("plugged", 2, 10),
        ("session_started", 2, 10),
    ]
    stopped = tracker.update(reading(PortState.FINISHED, energy=5010))
    assert [(e.type, e.energy_Wh) for e in stopped] == [("session_stopped", 5010)]
    assert [e.type for e in tracker.update(reading(PortState.AVAILABLE))] == ["unplugged"]


def test_pile_state_follows_faults_and_comm_faults():
    pile = PileTracker("F1", ports=2)
    _, state = pile.on_reading({1: reading(PortState.AVAILABLE), 2: reading(PortState.AVAILABLE)})
    assert state == "online"
    _, state = pile.on_reading(
        {1: reading(PortState.AVAILABLE), 2: reading(PortState.FAULTED, FaultCode.METER_FAULT)}
    )
    assert state == "faulted"
    assert pile.on_comm_fault() == "comm_fault"
    assert pile.on_comm_fault() is None  # unchanged: nothing to publish
    _, state = pile.on_reading({1: reading(PortState.AVAILABLE), 2: reading(PortState.AVAILABLE)})
    assert state == "online"
    assert pile.on_stop() == "offline"


def test_deadlines_do_not_drift_with_cycle_time():
    assert next_deadline(10.0, 10.3, 1.0) == (11.0, 0)


def test_overrun_skips_missed_deadlines_and_counts_them():
    assert next_deadline(10.0, 12.5, 1.0) == (13.0, 2)
    assert next_deadline(10.0, 11.0, 1.0) == (11.0, 0)  # exactly on time is not an overrun


def test_session_meter_adds_each_finished_session_to_a_cumulative_meter():
    meter = SessionMeter()
    readings = [0, 500, 1200, 1200, 0, 300, 50, 50]
    assert [meter.cumulative(r) for r in readings] == [0, 500, 1200, 1200, 1200, 1500, 1550, 1550]
