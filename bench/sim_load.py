"""CPU cost of the simulator serving many TCP piles polled once per second.

Starts ``--procs`` simulator processes (``python -m firmware_sim.cli sim``) sharing ``--piles`` TCP
piles, starts a session on a fraction of them, then polls every pile once per second (one read of
the port's telemetry..read-back span, as the gateway does) with a minimal raw Modbus TCP client, so
the poller's own cost stays small. Reports the simulator processes' CPU (from /proc) over the
measurement window and the poll latencies.

Example:
    .venv/bin/python bench/sim_load.py --piles 1000 --procs 2 --duration 30
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import struct
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from protocols.registers import SIM_V1, Command, encode

REPO = Path(__file__).resolve().parents[1]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
POLL_ADDRESS = SIM_V1.port_address(1, SIM_V1.telemetry)
POLL_COUNT = SIM_V1.port_span()


@dataclass
class Pile:
    """One raw Modbus TCP connection to one simulated pile."""

    pile_id: str
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    tid: int = 0

    async def request(self, pdu: bytes, timeout_s: float) -> bytes:
        self.tid = (self.tid + 1) & 0xFFFF
        self.writer.write(struct.pack(">HHHB", self.tid, 0, len(pdu) + 1, 1) + pdu)
        async with asyncio.timeout(timeout_s):
            header = await self.reader.readexactly(7)
            tid, _proto, length, _unit = struct.unpack(">HHHB", header)
            body = await self.reader.readexactly(length - 1)
        if tid != self.tid or body[0] & 0x80:
            raise RuntimeError(f"{self.pile_id}: bad answer tid={tid} body={body.hex()}")
        return body


def write_configs(directory: Path, piles: int, procs: int, time_scale: float) -> list[Path]:
    paths = []
    for proc in range(procs):
        lines = [f"time_scale = {time_scale}", "tick_s = 0.2"]
        for i in range(proc, piles, procs):
            kind, power = ("fast", 30000) if i % 3 == 0 else ("trickle", 7000)
            lines += ["[[piles]]", f'id = "P{i}"', f'kind = "{kind}"', f"rated_power_W = {power}"]
        path = directory / f"sim{proc}.toml"
        path.write_text("\n".join(lines) + "\n")
        paths.append(path)
    return paths


async def spawn_sims(configs: list[Path]) -> list[asyncio.subprocess.Process]:
    return [
        await asyncio.create_subprocess_exec(
            sys.executable, "-m", "firmware_sim.cli", "sim", "--config", str(config),
            cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
            limit=2**24,  # the ready line lists every pile
        )
        for config in configs
    ]  # fmt: skip


async def ready_ports(processes: list[asyncio.subprocess.Process]) -> dict[str, int]:
    ports: dict[str, int] = {}
    for process in processes:
        assert process.stdout is not None
        ready = json.loads(await asyncio.wait_for(process.stdout.readline(), 120))
        ports |= {pile_id: ep["port"] for pile_id, ep in ready["piles"].items()}
    return ports


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


async def poll_once(piles: list[Pile], latencies: list[float], spread_s: float = 0.0) -> int:
    """One read per pile; with ``spread_s`` the requests are staggered evenly over that time."""
    pdu = struct.pack(">BHH", 3, POLL_ADDRESS, POLL_COUNT)

    async def one(index: int, pile: Pile) -> bool:
        await asyncio.sleep(spread_s * index / len(piles))
        start = time.perf_counter()
        try:
            await pile.request(pdu, timeout_s=1.0)
        except (TimeoutError, RuntimeError, OSError):
            return False
        latencies.append(time.perf_counter() - start)
        return True

    results = await asyncio.gather(*(one(i, p) for i, p in enumerate(piles)))
    return results.count(False)


async def start_sessions(piles: list[Pile], fraction: float) -> None:
    words = encode(SIM_V1, SIM_V1.control, {"command": Command.START, "command_seq": 1,
                                            "target_energy_Wh": 0, "power_limit_W": 0})  # fmt: skip
    address = SIM_V1.port_address(1, SIM_V1.control)
    pdu = struct.pack(f">BHHB{len(words)}H", 16, address, len(words), 2 * len(words), *words)
    share = round(fraction * 10)  # every process gets the same share of charging piles
    chosen = [pile for i, pile in enumerate(piles) if i % 10 < share]
    await asyncio.gather(*(p.request(pdu, timeout_s=5.0) for p in chosen))


async def run(args: argparse.Namespace) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        configs = write_configs(Path(tmp), args.piles, args.procs, args.time_scale)
        t0 = time.monotonic()
        processes = await spawn_sims(configs)
        piles: list[Pile] = []
        try:
            ports = await ready_ports(processes)
            startup_s = time.monotonic() - t0
            for pile_id, port in ports.items():
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                piles.append(Pile(pile_id, reader, writer))
            await start_sessions(piles, args.charging_fraction)
            return await measure(args, processes, piles, startup_s)
        finally:
            for pile in piles:
                pile.writer.close()
            for process in processes:
                process.terminate()
            for process in processes:
                await process.wait()


async def measure(
    args: argparse.Namespace, processes: list[asyncio.subprocess.Process], piles: list[Pile],
    startup_s: float,
) -> dict[str, object]:  # fmt: skip
    latencies: list[float] = []
    failures = 0
    await poll_once(piles, [])  # warm-up round
    cpu_before = [cpu_seconds(p.pid) for p in processes]
    wall_start = time.monotonic()
    for second in range(args.duration):
        failures += await poll_once(piles, latencies, args.spread)
        next_round = wall_start + second + 1
        await asyncio.sleep(max(0.0, next_round - time.monotonic()))
    wall_s = time.monotonic() - wall_start
    cpu = [cpu_seconds(p.pid) - before for p, before in zip(processes, cpu_before, strict=True)]
    latencies.sort()
    return {
        "piles": len(piles), "sim_processes": len(processes), "duration_s": round(wall_s, 1),
        "startup_s": round(startup_s, 2), "charging_fraction": args.charging_fraction,
        "spread_s": args.spread,
        "cpu_percent_per_process": [round(100 * c / wall_s, 1) for c in cpu],
        "cpu_percent_total": round(100 * sum(cpu) / wall_s, 1),
        "polls": len(latencies), "failed_polls": failures,
        "latency_ms_p50": round(1000 * statistics.median(latencies), 2),
        "latency_ms_p99": round(1000 * latencies[int(0.99 * (len(latencies) - 1))], 2),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--piles", type=int, default=1000)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--duration", type=int, default=30, help="measured seconds")
    parser.add_argument("--charging-fraction", type=float, default=0.3)
    parser.add_argument("--time-scale", type=float, default=60.0)
    parser.add_argument(
        "--spread",
        type=float,
        default=0.0,
        help="stagger each round's requests over this many seconds (0 = one burst)",
    )
    print(json.dumps(asyncio.run(run(parser.parse_args()))))


if __name__ == "__main__":
    main()
