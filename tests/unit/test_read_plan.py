"""Read plans: merging of register ranges, caps, gap rule, decoding, the technician table, line time."""

from __future__ import annotations

import pytest

from drivers.plan import PlanError, ReadRequest, compile_read_plan, format_plan
from drivers.specs import BusSpec, DeviceSpec, SerialTransport, SpecError
from drivers.timing import bits_per_char, plan_cycle_time_s, t35_s
from protocols.registers import SIM_V1, CodecError, encode


def _image(values_by_port: dict[int, dict[str, dict[str, object]]]) -> dict[int, int]:
    """Sparse register image (address -> word) of SIM_V1 blocks holding the given values."""
    image: dict[int, int] = {}
    for port, blocks in values_by_port.items():
        for name, values in blocks.items():
            block = getattr(SIM_V1, name)
            base = SIM_V1.port_address(port, block)
            for i, word in enumerate(encode(SIM_V1, block, values)):
                image[base + i] = word
    return image


def _responses(plan_requests: tuple[ReadRequest, ...], image: dict[int, int]) -> list[list[int]]:
    # 0xDEAD in holes shows that gap registers are read but never decoded
    return [[image.get(r.address + i, 0xDEAD) for i in range(r.count)] for r in plan_requests]


PORT1: dict[str, dict[str, object]] = {
    "telemetry": {
        "state": 2,
        "voltage_V": 230.5,
        "current_A": 13.37,
        "power_W": 3075,
        "energy_Wh": 123456,
        "temperature_C": -4.5,
        "fault": 0,
        "heartbeat": 77,
    },
    "readback": {"ack_seq": 5, "ack_status": 1, "active_target_Wh": 20000, "active_limit_W": 7000},
}
PORT2: dict[str, dict[str, object]] = {
    "telemetry": {
        "state": 4,
        "voltage_V": 400.0,
        "current_A": -1.5,
        "power_W": -600,
        "energy_Wh": 70000,
        "temperature_C": 61.2,
        "fault": 1,
        "heartbeat": 9,
    },
    "readback": {"ack_seq": 6, "ack_status": 3, "active_target_Wh": 0, "active_limit_W": 0},
}


def test_single_port_pile_is_one_request_per_cycle() -> None:
    plan = compile_read_plan(SIM_V1, 1)
    assert plan.requests == (ReadRequest(100, 30),)


def test_two_port_pile_is_one_request_per_cycle() -> None:
    plan = compile_read_plan(SIM_V1, 2)
    assert plan.requests == (ReadRequest(100, 70),)


def test_hole_wider_than_max_gap_splits_the_request() -> None:
    # SIM_V1 has 13 unpolled registers (111..123) between telemetry and read-back
    assert compile_read_plan(SIM_V1, 1, max_gap=13).requests == (ReadRequest(100, 30),)
    assert compile_read_plan(SIM_V1, 1, max_gap=12).requests == (
        ReadRequest(100, 11),
        ReadRequest(124, 6),
    )


def test_four_ports_split_at_the_125_register_limit() -> None:
    plan = compile_read_plan(SIM_V1, 4)
    assert plan.requests == (ReadRequest(100, 110), ReadRequest(220, 30))
    assert all(r.count <= 125 for r in plan.requests)


def test_lower_device_cap_splits_and_is_never_exceeded() -> None:
    assert compile_read_plan(SIM_V1, 1, max_registers=30).requests == (ReadRequest(100, 30),)
    assert compile_read_plan(SIM_V1, 1, max_registers=29).requests == (
        ReadRequest(100, 11),
        ReadRequest(124, 6),
    )
    plan = compile_read_plan(SIM_V1, 2, max_registers=40)
    assert plan.requests == (ReadRequest(100, 30), ReadRequest(140, 30))


def test_every_polled_block_is_covered_by_exactly_one_request() -> None:
    for cap in (11, 17, 30, 64, 125):
        for gap in (0, 10, 13, 16, 40):
            plan = compile_read_plan(SIM_V1, 4, max_registers=cap, max_gap=gap)
            assert len(plan.slots) == 8
            for slot in plan.slots:
                req = plan.requests[slot.request]
                assert req.address + slot.offset == slot.address
                assert slot.offset + slot.block.size <= req.count <= cap


def test_block_larger_than_cap_is_split_between_fields_and_still_decodes() -> None:
    plan = compile_read_plan(SIM_V1, 1, max_registers=10, max_gap=0)
    assert plan.requests == (ReadRequest(100, 10), ReadRequest(110, 1), ReadRequest(124, 6))
    values = plan.decode(_responses(plan.requests, _image({1: PORT1})))
    assert values[1] == {**PORT1["telemetry"], **PORT1["readback"]}


def test_field_wider_than_cap_is_refused_by_name() -> None:
    with pytest.raises(PlanError, match=r"telemetry\.current_A has 2 registers, more than a read of 1"):
        compile_read_plan(SIM_V1, 1, max_registers=1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ports": 0}, "ports=0 outside 1..4"),
        ({"ports": 5}, "ports=5 outside 1..4"),
        ({"ports": 1, "max_registers": 126}, "max_registers=126"),
        ({"ports": 1, "max_gap": -1}, "max_gap=-1"),
    ],
)
def test_bad_plan_arguments_name_the_problem(kwargs: dict[str, int], message: str) -> None:
    ports = kwargs.pop("ports")
    with pytest.raises(PlanError, match=message):
        compile_read_plan(SIM_V1, ports, **kwargs)


@pytest.mark.parametrize(("cap", "gap"), [(125, 16), (20, 0), (30, 16)])
def test_decode_places_values_of_a_two_port_pile_right(cap: int, gap: int) -> None:
    plan = compile_read_plan(SIM_V1, 2, max_registers=cap, max_gap=gap)
    values = plan.decode(_responses(plan.requests, _image({1: PORT1, 2: PORT2})))
    assert values[1] == {**PORT1["telemetry"], **PORT1["readback"]}
    assert values[2] == {**PORT2["telemetry"], **PORT2["readback"]}


def test_decode_refuses_a_short_reply() -> None:
    plan = compile_read_plan(SIM_V1, 1)
    with pytest.raises(CodecError, match="reply has 29"):
        plan.decode([[0] * 29])
    with pytest.raises(CodecError, match="1 requests, got 2"):
        plan.decode([[0] * 30, [0] * 30])


def test_format_plan_lists_requests_blocks_and_gap_waste() -> None:
    text = format_plan(compile_read_plan(SIM_V1, 2))
    assert "1 request(s) per cycle, 70 registers, 36 wasted in gaps" in text
    row = text.splitlines()[2].split()
    assert row[:4] == ["1", "100", "70", "36"]
    assert "p2.readback@164+6" in row


def test_rtu_line_time_of_single_port_cycle_at_19200_8n1() -> None:
    plan = compile_read_plan(SIM_V1, 1)
    bits = bits_per_char(8, "N", 1)
    assert bits == 10
    assert bits_per_char(8, "E", 1) == 11
    # request 8 bytes + response 5 + 2*30 bytes + two 3.5-character silences = 80 characters
    assert plan_cycle_time_s(plan, 19200, bits, t35_s(19200, bits)) == pytest.approx(800 / 19200)
    assert t35_s(115200, bits) == pytest.approx(0.00175)
    assert t35_s(115200, bits, spec_fixed=False) == pytest.approx(35 / 115200)


def test_rtu_timeout_shorter_than_the_wire_time_of_a_read_is_refused() -> None:
    line = SerialTransport("/dev/ttyUSB0", baudrate=1200)
    with pytest.raises(SpecError, match=r"device A: timeout_s=0\.5 is not longer than the 0\.667 s"):
        BusSpec("rs485", line, (DeviceSpec("A", 1, SIM_V1, timeout_s=0.5),))
    BusSpec("rs485", line, (DeviceSpec("A", 1, SIM_V1, timeout_s=1.0),))  # long enough


def test_device_whose_fields_exceed_its_register_cap_is_refused_at_construction() -> None:
    with pytest.raises(SpecError, match="current_A has 2 registers"):
        DeviceSpec("A", 1, SIM_V1, max_registers=1)
