"""Modbus RTU throughput of the bus owner against simulated piles, versus what the line allows.

Starts the simulator (``python -m firmware_sim.cli sim``) as a child process with N single-port
piles on one socat pty line, polls them back to back through :class:`drivers.bus.Bus` for a
bounded time per baud rate, and prints transactions per second next to the theoretical maximum
for the read plan:

    T_txn = (request_bytes + response_bytes) * bits_per_char / baud + 2 * t3.5
    request_bytes = 8, response_bytes = 5 + 2 * registers, bits_per_char = 10 for 8N1
    t3.5 = 3.5 * bits_per_char / baud  (Modbus over serial line recommends a fixed 1.75 ms above 19200 baud)

A pty has no baud rate: bytes cross it at memory speed, so the measured rate is bounded only by
software (gateway, simulator) and the inter-frame silence the bus owner keeps. The "real line"
column predicts the rate on a physical line: the frames' wire time is added back, and the
gateway's measured software time per transaction counts only where it exceeds the silence it
overlaps with.

Usage: python bench/rtu_throughput.py [--units 4] [--bauds 19200,115200] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from drivers.bus import Bus, BusSpec, DeviceSpec, SerialTransport
from drivers.plan import compile_read_plan
from drivers.timing import (
    READ_REQUEST_BYTES,
    bits_per_char,
    char_time_s,
    read_response_bytes,
    t35_s,
    transaction_time_s,
)
from protocols.registers import SIM_V1

READY_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Measurement:
    """One baud rate's run."""

    baudrate: int
    transactions: int
    failures: int
    elapsed_s: float
    cpu_s: float
    master_gap_s: float  # mean time from a reply's last byte to the next request
    master_gap_p95_s: float

    @property
    def rate(self) -> float:
        return self.transactions / self.elapsed_s

    @property
    def cpu_per_txn_s(self) -> float:
        return self.cpu_s / max(1, self.transactions)


def _sim_toml(units: int, baudrate: int) -> str:
    lines = ["time_scale = 60.0", "", "[[serial_buses]]", 'name = "rtu0"', f"baudrate = {baudrate}"]
    for unit in range(1, units + 1):
        lines += [
            "",
            "[[piles]]",
            f'id = "R{unit}"',
            'kind = "trickle"',
            "rated_power_W = 7000",
            'serial_bus = "rtu0"',
            f"unit = {unit}",
        ]
    return "\n".join(lines) + "\n"


async def _start_sim(config_path: Path) -> tuple[asyncio.subprocess.Process, dict[str, object]]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "firmware_sim.cli", "sim", "--config", str(config_path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert process.stdout is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), READY_TIMEOUT_S)
        ready = json.loads(line)
    except (TimeoutError, ValueError):
        await _stop_sim(process)
        raise SystemExit("simulator did not print its ready line") from None
    return process, ready


async def _stop_sim(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            process.kill()
            await process.wait()


def _bus(ready: dict[str, object], units: int, baudrate: int) -> Bus:
    piles = ready["piles"]
    assert isinstance(piles, dict)
    device = str(piles["R1"]["device"])
    specs = tuple(DeviceSpec(f"R{u}", u, SIM_V1, timeout_s=0.5) for u in range(1, units + 1))
    return Bus(BusSpec("bench", SerialTransport(device, baudrate=baudrate), specs))


class PacketClock:
    """pymodbus ``trace_packet`` hook: times every frame sent and every chunk received."""

    def __init__(self) -> None:
        self.events: list[tuple[float, bool]] = []

    def __call__(self, sending: bool, data: bytes) -> bytes:
        self.events.append((time.perf_counter(), sending))
        return data

    def master_gaps_s(self) -> list[float]:
        """Silence the gateway left between the end of each reply and its next request."""
        gaps, last_recv = [], None
        for t, sending in self.events:
            if sending and last_recv is not None:
                gaps.append(t - last_recv)
                last_recv = None
            elif not sending:
                last_recv = t
        return gaps


def _instrument(bus: Bus) -> PacketClock:
    # bench-only: reach into the owner's client to time frames on the line
    packets = PacketClock()
    ctx = bus._client.ctx  # type: ignore[union-attr]
    owner_hook = ctx.trace_packet  # the bus owner times the line's silence with it: keep it
    ctx.trace_packet = lambda sending, data: packets(sending, owner_hook(sending, data))
    return packets


async def _poll_for(bus: Bus, seconds: float) -> tuple[int, float, float]:
    """Cycles back to back for ``seconds``: (failed results, elapsed s, process CPU s)."""
    failures = 0
    cpu0, t0 = time.process_time(), time.monotonic()
    while time.monotonic() - t0 < seconds:
        failures += sum(not r.ok for r in await bus.poll_cycle())
    return failures, time.monotonic() - t0, time.process_time() - cpu0


def _mean_p95(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values) or [0.0]
    return sum(ordered) / len(ordered), ordered[int(0.95 * (len(ordered) - 1))]


async def measure(units: int, baudrate: int, seconds: float) -> Measurement:
    """Run the simulator at ``baudrate`` and poll it back to back for ``seconds``."""
    with tempfile.TemporaryDirectory(prefix="rtu-bench-") as tmp:
        config = Path(tmp, "sim.toml")
        await asyncio.to_thread(config.write_text, _sim_toml(units, baudrate))
        process, ready = await _start_sim(config)
        bus = _bus(ready, units, baudrate)
        try:
            await bus.start()
            for unit in range(1, units + 1):
                await bus.read_identity(f"R{unit}")  # opens the line, warms up
            before = sum(bus.health(f"R{u}").counters.requests for u in range(1, units + 1))
            packets = _instrument(bus)
            failures, elapsed_s, cpu_s = await _poll_for(bus, seconds)
            after = sum(bus.health(f"R{u}").counters.requests for u in range(1, units + 1))
        finally:
            await bus.stop()
            await _stop_sim(process)
    gap_s, gap_p95_s = _mean_p95(packets.master_gaps_s())
    return Measurement(baudrate, after - before, failures, elapsed_s, cpu_s, gap_s, gap_p95_s)


def _report(units: int, results: list[Measurement]) -> str:
    plan = compile_read_plan(SIM_V1, 1)
    (request,) = plan.requests
    bits = bits_per_char(8, "N", 1)
    req_b, resp_b = READ_REQUEST_BYTES, read_response_bytes(request.count)
    out = [
        f"{units} units x 1 port on one line, 8N1 ({bits} bits/char); read plan per unit: "
        f"1 request of {request.count} registers at {request.address}",
        f"T_txn = ({req_b} + {resp_b}) bytes * {bits} / baud + 2 * t3.5",
        "",
        f"{'baud':>7} {'t3.5 ms':>8} {'T_txn ms':>9} {'max/s':>7} {'spec max/s':>10} "
        f"{'pty/s':>7} {'gw CPU ms':>9} {'gw gap ms (p95)':>16} {'real line/s':>12} "
        f"{'of max':>6} fails",
    ]
    for m in results:
        t35 = t35_s(m.baudrate, bits, spec_fixed=False)
        t35_spec = t35_s(m.baudrate, bits)
        txn = transaction_time_s(req_b, resp_b, m.baudrate, bits, t35)
        txn_spec = transaction_time_s(req_b, resp_b, m.baudrate, bits, t35_spec)
        wire_s = (req_b + resp_b) * char_time_s(m.baudrate, bits)
        real_s = wire_s + t35_spec + m.master_gap_s  # slave answers after exactly t3.5
        gap = f"{m.master_gap_s * 1e3:.2f} ({m.master_gap_p95_s * 1e3:.2f})"
        out.append(
            f"{m.baudrate:>7} {t35 * 1e3:>8.2f} {txn * 1e3:>9.2f} {1 / txn:>7.1f} "
            f"{1 / txn_spec:>10.1f} {m.rate:>7.1f} {m.cpu_per_txn_s * 1e3:>9.3f} {gap:>16} "
            f"{1 / real_s:>12.1f} {txn_spec / real_s:>6.0%} {m.failures}"
        )
    out += [
        "",
        "max/s: t3.5 = 3.5 chars. spec max/s: t3.5 = 1.75 ms above 19200 baud (what the owner keeps).",
        "pty/s: measured; a pty has no wire time, so this is software + the owner's frame silences.",
        "gw CPU: gateway process CPU per transaction. gw gap: measured time from the last byte of",
        "a reply to the next request (the owner keeps >= t3.5; software work overlaps with it).",
        "real line/s: predicted on a physical line = wire time + t3.5 (slave) + measured gw gap.",
    ]
    return "\n".join(out)


async def _main(args: argparse.Namespace) -> None:
    results = [await measure(args.units, baud, args.seconds) for baud in args.bauds]
    print(_report(args.units, results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--units", type=int, default=4, help="piles on the line (default 4)")
    parser.add_argument(
        "--bauds",
        type=lambda s: [int(b) for b in s.split(",")],
        default=[19200, 115200],
        help="comma-separated baud rates (default 19200,115200)",
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="polling time per baud rate")
    args = parser.parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()
