"""Modbus RTU on a line with real wire time: the bus driver and the gateway daemon against the limit.

A pty has no baud rate: bytes cross it at memory speed. This bench puts a relay between two socat
pty pairs (the simulator's line and the gateway's) that delivers every byte one character time
(bits per char / baud) after the previous one, as a UART on an RS-485 line would, and keeps the
line's 3.5-character silence before a frame (what a conforming device waits for before it answers):

    gateway ── pty pair ── relay (wire time) ── pty pair ── simulator (N units, one RTU line)

For each baud rate it then measures, for a bounded time each:

1. the bus driver (:class:`drivers.bus.Bus`) polling back to back: the relay's own accuracy, since
   nothing else limits it;
2. the real gateway daemon (``pilegate gateway``, with Mosquitto on a free port) polling the same
   piles with ``poll_period_s`` shorter than a cycle, i.e. a saturated bus.

It prints Modbus transactions per second (counted by the bus owner) against the line's theoretical
limit for the read plan (``drivers/timing.py``: ``T_txn = (8 + 5 + 2 * registers) * bits / baud +
2 * t3.5``), and how late the relay delivered bytes. ``--gateway-src DIR`` runs the daemon from
another checkout (for a before/after comparison); the relay and the driver run from this one.

    .venv/bin/python bench/rtu_wire.py --bauds 9600,19200 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import termios
import time
import tty
from array import array
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from drivers.bus import Bus, BusSpec, DeviceSpec, SerialTransport
from drivers.plan import compile_read_plan
from drivers.timing import READ_REQUEST_BYTES, char_time_s, read_response_bytes, t35_s, transaction_time_s
from pilegate.broker import MosquittoBroker, free_port
from protocols.registers import SIM_V1
from tests.e2e.harness import GatewayProcess, Proc, spawn, wait_until

BITS_PER_CHAR = 10  # 8N1
SOCAT = "/usr/bin/socat" if os.path.exists("/usr/bin/socat") else "socat"
IDLE_WAKE_S = 0.2  # the relay checks for a stop request at least this often
READ_CHUNK = 4096
BUS_TIMEOUT_S = 0.5  # the driver alone is not held to a poll period


# ------------------------------------------------------------------------------------- the relay


@dataclass(slots=True)
class _Byte:
    due_s: float  # when its last bit has crossed the line
    fd: int
    value: int
    ends_chunk: bool


class WireRelay:
    """Forwards bytes between two ptys with the wire time of one shared half-duplex line.

    A byte read from one side is due at the other when its last bit would have arrived: one
    character time after the previous byte on the line. A chunk that arrives on an idle line starts
    a new frame, which the line does not start before 3.5 characters of silence after the last one.
    The relay wakes when a chunk's last byte is due and writes every byte due by then (a receiver
    acts on whole frames, so only the last byte's time matters; no byte is ever early).
    """

    def __init__(self, fd_a: int, fd_b: int, baudrate: int, bits: int = BITS_PER_CHAR) -> None:
        self.fds = (fd_a, fd_b)
        self.char_s = char_time_s(baudrate, bits)
        self.gap_s = t35_s(baudrate, bits)
        self.free_at_s = 0.0  # when the last scheduled byte has crossed the line
        self.pending: deque[_Byte] = deque()
        self.lateness_s = array("d")
        self.frames = 0
        self.bytes = 0
        self.delivered_at_s: dict[int, float] = {}  # per side: when it got the last byte of a frame
        self.reply_s: dict[int, array[float]] = {fd: array("d") for fd in self.fds}

    def schedule(self, now_s: float, data: bytes, to_fd: int) -> None:
        if now_s >= self.free_at_s:  # the line is idle: a new frame, after the inter-frame silence
            self.frames += 1
            from_fd = self.fds[0] if to_fd == self.fds[1] else self.fds[1]
            if (delivered_s := self.delivered_at_s.pop(from_fd, None)) is not None:
                self.reply_s[from_fd].append(now_s - delivered_s)  # how long that side took to answer
            start_s = max(now_s, self.free_at_s + self.gap_s)
        else:
            start_s = self.free_at_s
        for i, value in enumerate(data, 1):
            self.pending.append(_Byte(start_s + i * self.char_s, to_fd, value, i == len(data)))
        self.free_at_s = start_s + len(data) * self.char_s
        self.bytes += len(data)

    def deliver_due(self) -> None:
        now_s = time.monotonic()
        out: dict[int, bytearray] = {}
        while self.pending and self.pending[0].due_s <= now_s:
            b = self.pending.popleft()
            out.setdefault(b.fd, bytearray()).append(b.value)
            if b.ends_chunk:
                self.lateness_s.append(now_s - b.due_s)
                self.delivered_at_s[b.fd] = now_s
        for fd, data in out.items():
            os.write(fd, bytes(data))

    def run(self, stopped: list[bool]) -> None:
        a, b = self.fds
        while not stopped[0]:
            self.deliver_due()
            # wake when the chunk on the line has fully crossed it: receivers act on whole frames
            wait_s = self.pending[-1].due_s - time.monotonic() if self.pending else IDLE_WAKE_S
            try:
                readable, _, _ = select.select([a, b], [], [], max(0.0, wait_s))
            except InterruptedError:
                continue
            now_s = time.monotonic()
            for fd in readable:
                data = os.read(fd, READ_CHUNK)
                if data:
                    self.schedule(now_s, data, b if fd == a else a)

    def stats(self) -> dict[str, float | bool]:
        late = sorted(self.lateness_s) or [0.0]
        return {
            "realtime": os.sched_getscheduler(0) == os.SCHED_FIFO,
            "frames": self.frames,
            "bytes": self.bytes,
            "late_mean_ms": 1e3 * sum(late) / len(late),
            "late_p99_ms": 1e3 * late[int(0.99 * (len(late) - 1))],
            "late_max_ms": 1e3 * late[-1],
            "sim_reply_ms": 1e3 * _mean(self.reply_s[self.fds[0]]),
            "gateway_reply_ms": 1e3 * _mean(self.reply_s[self.fds[1]]),
        }


def _mean(values: array[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _open_raw(path: str) -> int:
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    tty.setraw(fd, termios.TCSANOW)
    return fd


def _own_pty(link: str) -> int:
    """A pty pair of the relay's own (no socat hop): the gateway opens ``link``; the master is ours."""
    master, slave = os.openpty()
    tty.setraw(slave, termios.TCSANOW)
    os.symlink(os.ttyname(slave), link)
    return master  # the slave stays open too, so the gateway closing it does not hang the pty up


def relay_main(args: argparse.Namespace) -> None:
    """The relay process: run until SIGTERM, then print its statistics as one JSON line."""
    stopped = [False]

    def stop(*_: object) -> None:
        stopped[0] = True

    signal.signal(signal.SIGTERM, stop)
    with contextlib.suppress(OSError):  # a sleeping relay on a busy machine: wake it on time if allowed
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    gateway_fd = _open_raw(args.gateway_pty) if args.gateway_pty else _own_pty(args.gateway_link)
    relay = WireRelay(_open_raw(args.sim_pty), gateway_fd, args.line_baud)
    print("ready", flush=True)
    relay.run(stopped)
    print(json.dumps(relay.stats()), flush=True)


# ------------------------------------------------------------------------------------- the line


@dataclass
class Line:
    """Simulator, its pty pair, the relay and the gateway's pty pair, for one baud rate."""

    workdir: Path
    baudrate: int
    units: int
    sim: Proc | None = None
    socat: subprocess.Popen[bytes] | None = None
    relay: subprocess.Popen[str] | None = None
    gateway_path: str = ""
    realtime: bool = False  # run the simulator and the socats at real-time priority (hardware-like)
    gateway_socat: bool = False  # the gateway's pty pair from socat, not the relay's own

    def start(self) -> None:
        self.sim, sim_side = _start_sim(self.workdir, self.units, self.baudrate)
        self.gateway_path = str(self.workdir / "gateway")
        gateway_side = ["--gateway-link", self.gateway_path]
        if self.gateway_socat:
            gateway_side = ["--gateway-pty", self._start_socat()]
        self.relay = subprocess.Popen(
            [sys.executable, __file__, "relay", "--sim-pty", sim_side, *gateway_side,
             "--line-baud", str(self.baudrate)],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.relay.stdout is not None
        if self.relay.stdout.readline().strip() != "ready":
            raise SystemExit("relay did not start")
        if self.realtime:
            sim_pid = self.sim.popen.pid
            for pid in (sim_pid, *_children(sim_pid), *([self.socat.pid] if self.socat else [])):
                set_realtime(pid)

    def _start_socat(self) -> str:
        relay_side = str(self.workdir / "relay")
        self.socat = subprocess.Popen(
            [SOCAT, f"pty,raw,echo=0,link={relay_side}", f"pty,raw,echo=0,link={self.gateway_path}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_until(lambda: os.path.lexists(relay_side) and os.path.lexists(self.gateway_path), 5, "pty pair")
        return relay_side

    def stop(self) -> dict[str, float]:
        stats: dict[str, float] = {}  # the relay's statistics line
        if self.relay is not None:
            self.relay.terminate()
            out, _ = self.relay.communicate(timeout=10)
            with contextlib.suppress(ValueError, IndexError):
                stats = json.loads(out.strip().splitlines()[-1])
        if self.socat is not None:
            self.socat.terminate()
            self.socat.wait(5)
        if self.sim is not None:
            self.sim.stop()
        return stats


def set_realtime(pid: int, on: bool = True) -> bool:
    """SCHED_FIFO priority 1 for ``pid`` (0 = this process), or back to normal; False if not allowed."""
    policy, priority = (os.SCHED_FIFO, 1) if on else (os.SCHED_OTHER, 0)
    try:
        os.sched_setscheduler(pid, policy, os.sched_param(priority))
    except OSError:
        return False
    return True


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def _start_sim(workdir: Path, units: int, baudrate: int) -> tuple[Proc, str]:
    lines = ["time_scale = 1.0", "", "[[serial_buses]]", 'name = "rtu0"', f"baudrate = {baudrate}"]
    for unit in range(1, units + 1):
        lines += ["", "[[piles]]", f'id = "R{unit}"', 'kind = "trickle"', "rated_power_W = 7000"]
        lines += ['serial_bus = "rtu0"', f"unit = {unit}"]
    config, ready = workdir / "sim.toml", workdir / "sim.ready.json"
    config.write_text("\n".join(lines) + "\n")
    sim = spawn("sim", ["sim", "--config", str(config), "--ready-file", str(ready)], workdir)
    doc = wait_until(lambda: ready.exists() and json.loads(ready.read_text()), 30, "simulator ready", sim)
    return sim, str(doc["piles"]["R1"]["device"])


# ------------------------------------------------------------------------------------- the runs


def _requests(devices: dict[str, Any]) -> int:
    return sum(int(d["counters"]["requests"]) for d in devices.values())


async def _bus_back_to_back(line: Line, seconds: float, timeout_s: float) -> tuple[float, int]:
    """The bus driver polling back to back: (transactions/s, failed results)."""
    specs = tuple(DeviceSpec(f"R{u}", u, SIM_V1, timeout_s=timeout_s) for u in range(1, line.units + 1))
    bus = Bus(BusSpec("bench", SerialTransport(line.gateway_path, baudrate=line.baudrate), specs))
    await bus.start()
    failures = 0
    try:
        for spec in specs:
            await bus.read_identity(spec.pile_id)
        before, t0 = _requests(bus.snapshot()["devices"]), time.monotonic()  # type: ignore[arg-type]
        while time.monotonic() - t0 < seconds:
            failures += sum(not r.ok for r in await bus.poll_cycle())
        after, t1 = _requests(bus.snapshot()["devices"]), time.monotonic()  # type: ignore[arg-type]
    finally:
        await bus.stop()
    return (after - before) / (t1 - t0), failures


def _gateway_toml(line: Line, mqtt_port: int, control_port: int, period_s: float, timeout_s: float) -> str:
    text = f"""[gateway]
id = "gw-wire"
station = "bench"
data_dir = "{line.workdir / "gw-data"}"
poll_period_s = {period_s}
control_listen = "127.0.0.1:{control_port}"
log_level = "warning"
log_format = "json"
[mqtt]
url = "mqtt://127.0.0.1:{mqtt_port}"
[[bus]]
name = "rtu0"
transport = "rtu"
device = "{line.gateway_path}"
baudrate = {line.baudrate}
timeout_s = {timeout_s}
"""
    for unit in range(1, line.units + 1):
        text += f'[[pile]]\nid = "R{unit}"\nbus = "rtu0"\nunit = {unit}\n'
    return text


@dataclass
class DaemonRun:
    rate: float
    timeouts: int
    overrun_lines: int  # "poll cycle overran" warnings in the gateway's log
    poller: dict[str, Any]


def _gateway_daemon(line: Line, args: argparse.Namespace) -> DaemonRun:
    """The real daemon on a saturated bus: transactions/s over ``args.seconds`` after a warm-up."""
    broker = MosquittoBroker(free_port(), line.workdir / "broker")
    broker.start()
    control_port = free_port()
    config = line.workdir / "gateway.toml"
    config.write_text(_gateway_toml(line, broker.port, control_port, args.period, args.timeout))
    proc = _spawn_gateway(config, line.workdir, args.gateway_src or str(REPO))
    gw = GatewayProcess(proc, config, control_port, line.workdir / "gw-data")
    if args.realtime_gateway:
        set_realtime(proc.popen.pid)
    try:
        wait_until(gw.answering, 30, "gateway control API", proc)
        online = lambda: all(p.get("state") == "online" for p in gw.status()["piles"].values())  # noqa: E731
        wait_until(online, 30, "every pile online", proc)
        time.sleep(args.warmup)  # benchmark warm-up: a fixed duration, not a condition
        s0, t0 = gw.status(), time.monotonic()
        time.sleep(args.seconds)  # the measurement window
        s1, t1 = gw.status(), time.monotonic()
    finally:
        proc.stop()
        broker.stop()
    bus0, bus1 = s0["buses"]["rtu0"], s1["buses"]["rtu0"]
    timeouts = sum(d["counters"]["timeouts"] for d in bus1["devices"].values())
    overruns = proc.log().count("poll cycle overran")
    rate = (_requests(bus1["devices"]) - _requests(bus0["devices"])) / (t1 - t0)
    return DaemonRun(rate, timeouts, overruns, bus1.get("poller", {}))


def _spawn_gateway(config: Path, workdir: Path, source: str) -> Proc:
    """``pilegate gateway`` from the checkout ``source``: first on the path, run outside any checkout
    (``python -m`` puts the working directory ahead of PYTHONPATH)."""
    log_path = workdir / "gateway.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": source}
    with log_path.open("ab") as log_file:
        popen = subprocess.Popen(
            [sys.executable, "-m", "pilegate.cli", "gateway", "--config", str(config)],
            stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=workdir,
        )  # fmt: skip
    return Proc("gateway", popen, log_path)


def _limit_per_s(baudrate: int) -> float:
    (request,) = compile_read_plan(SIM_V1, 1).requests
    response = read_response_bytes(request.count)
    gap_s = t35_s(baudrate, BITS_PER_CHAR)
    return 1 / transaction_time_s(READ_REQUEST_BYTES, response, baudrate, BITS_PER_CHAR, gap_s)


def measure(baudrate: int, args: argparse.Namespace) -> str:
    """One baud rate: a fresh line, the driver back to back, then the daemon; one report row."""
    with tempfile.TemporaryDirectory(prefix="rtu-wire-") as tmp:
        line = Line(Path(tmp), baudrate, args.units, realtime=args.realtime, gateway_socat=args.gateway_socat)
        try:
            line.start()
            set_realtime(0, args.realtime_gateway)
            bus_rate, bus_fails = asyncio.run(_bus_back_to_back(line, args.seconds, BUS_TIMEOUT_S))
            set_realtime(0, False)
            daemon = None if args.bus_only else _gateway_daemon(line, args)
        finally:
            relay = line.stop()
    limit = _limit_per_s(baudrate)
    row = f"{baudrate:>6} {limit:>8.2f} {bus_rate:>8.2f} {bus_rate / limit:>6.1%} {bus_fails:>5}"
    if daemon is not None:
        util = daemon.poller.get("line_utilisation")
        row += (
            f" {daemon.rate:>8.2f} {daemon.rate / limit:>6.1%} {daemon.timeouts:>5} {daemon.overrun_lines:>7}"
            f" {util if util is not None else '-':>6}"
        )
    late_ms = [relay.get(k, 0.0) for k in ("late_mean_ms", "late_p99_ms", "late_max_ms")]
    row += "  " + "/".join(f"{v:.3f}" for v in late_ms)
    return row + f"  {relay.get('sim_reply_ms', 0):.2f}/{relay.get('gateway_reply_ms', 0):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    relay = sub.add_parser("relay", help="(internal) run the wire-time relay between two ptys")
    relay.add_argument("--sim-pty", required=True)
    relay.add_argument("--gateway-pty", help="the relay's end of a socat pty pair")
    relay.add_argument("--gateway-link", help="or: make a pty pair here, the gateway's end linked here")
    relay.add_argument("--line-baud", type=int, required=True)
    parser.add_argument("--units", type=int, default=4, help="piles on the line (default 4)")
    parser.add_argument("--bauds", type=lambda s: [int(b) for b in s.split(",")], default=[9600, 19200])
    parser.add_argument("--seconds", type=float, default=20.0, help="measurement window per run")
    parser.add_argument("--warmup", type=float, default=3.0, help="daemon warm-up before measuring")
    parser.add_argument(
        "--period", type=float, default=0.1, help="gateway poll_period_s (shorter than a cycle)"
    )
    parser.add_argument("--timeout", type=float, default=0.095, help="per-request timeout_s")
    parser.add_argument("--gateway-src", default="", help="run the daemon from this checkout (PYTHONPATH)")
    parser.add_argument("--bus-only", action="store_true", help="measure the driver and the relay only")
    parser.add_argument(
        "--gateway-socat",
        action="store_true",
        help="give the gateway the far end of a socat pty pair (one more hop) instead of the relay's own pty",
    )
    parser.add_argument(
        "--realtime",
        action="store_true",
        help="run the simulator and socat at real-time priority, like hardware on a busy machine",
    )
    parser.add_argument(
        "--realtime-gateway",
        action="store_true",
        help="the gateway (and the driver run) at real-time priority too: no CPU contention",
    )
    args = parser.parse_args()
    if args.command == "relay":
        relay_main(args)
        return
    print(
        f"{args.units} units x one {compile_read_plan(SIM_V1, 1).requests[0].count}-register read, 8N1, "
        f"wire-time relay; daemon poll_period_s={args.period}, timeout_s={args.timeout}, "
        f"{args.seconds:g} s per run; gateway from {args.gateway_src or 'this checkout'}; real-time: "
        f"relay, {'line' if args.realtime else 'not line'}, "
        f"{'gateway' if args.realtime_gateway else 'not gateway'}; load {os.getloadavg()[0]:.1f}"
    )
    header = f"{'baud':>6} {'limit/s':>8} {'bus/s':>8} {'of max':>6} {'fails':>5}"
    if not args.bus_only:
        header += f" {'daemon/s':>8} {'of max':>6} {'t/outs':>5} {'overrun':>7} {'util':>6}"
    print(header + "  relay late ms mean/p99/max  reply ms sim/gw")
    for baudrate in args.bauds:
        print(measure(baudrate, args), flush=True)


if __name__ == "__main__":
    main()
