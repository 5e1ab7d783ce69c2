"""Modbus RTU line timing: character times, inter-frame silence and frame sizes on the wire.

Used by the bus owner to keep the 3.5-character silence between frames that RTU receivers rely
on to find frame boundaries, and by ``bench/rtu_throughput.py`` to state the theoretical maximum
transaction rate of a read plan on a real line.

Figures (Modbus over Serial Line v1.02, section 2.5.1.1): a character is start bit + data bits +
parity bit (if any) + stop bits; frames are separated by at least 3.5 character times; above
19200 baud the Modbus serial line specification recommends a fixed 1.75 ms instead, which receivers then use.
"""

from __future__ import annotations

from drivers.plan import ReadPlan

FIXED_T35_S = 0.00175  # recommended t3.5 above 19200 baud
FIXED_T35_ABOVE_BAUD = 19200

READ_REQUEST_BYTES = 8  # unit, function, address(2), count(2), crc(2)
READ_RESPONSE_OVERHEAD_BYTES = 5  # unit, function, byte count, crc(2); plus 2 per register
WRITE_RESPONSE_BYTES = 8  # unit, function, address(2), count(2), crc(2)


def bits_per_char(bytesize: int = 8, parity: str = "N", stopbits: int = 1) -> int:
    """Bits on the wire per character: 8N1 -> 10, 8E1 -> 11, 8N2 -> 11."""
    return 1 + bytesize + (0 if parity.upper() == "N" else 1) + stopbits


def char_time_s(baudrate: int, bits: int = 10) -> float:
    """Seconds to send one character of ``bits`` bits at ``baudrate``."""
    return bits / baudrate


def t35_s(baudrate: int, bits: int = 10, *, spec_fixed: bool = True) -> float:
    """Minimum silence between frames: 3.5 characters, or Modbus's fixed 1.75 ms above 19200."""
    if spec_fixed and baudrate > FIXED_T35_ABOVE_BAUD:
        return FIXED_T35_S
    return 3.5 * char_time_s(baudrate, bits)


def read_response_bytes(count: int) -> int:
    """Bytes of a read-holding-registers response frame carrying ``count`` registers."""
    return READ_RESPONSE_OVERHEAD_BYTES + 2 * count


def write_request_bytes(count: int) -> int:
    """Bytes of a write-multiple-registers request frame carrying ``count`` registers."""
    return 9 + 2 * count


def transaction_time_s(
    request_bytes: int, response_bytes: int, baudrate: int, bits: int, gap_s: float
) -> float:
    """Line time of one request/response pair, with a silence of ``gap_s`` before each frame."""
    return (request_bytes + response_bytes) * char_time_s(baudrate, bits) + 2 * gap_s


def plan_cycle_time_s(plan: ReadPlan, baudrate: int, bits: int, gap_s: float) -> float:
    """Line time of one poll cycle of one device following ``plan``."""
    return sum(
        transaction_time_s(READ_REQUEST_BYTES, read_response_bytes(r.count), baudrate, bits, gap_s)
        for r in plan.requests
    )
