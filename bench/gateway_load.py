"""Gateway load benchmark: one gateway process polling N simulated piles over Modbus TCP.

Starts Mosquitto on a free loopback port, N simulated single-port piles (10 values each) split over
several simulator processes, one gateway (one TCP bus per pile, 1 Hz), and a subscriber that counts
telemetry arriving at the broker. After a warm-up it samples the gateway's CPU time and RSS from
/proc over a fixed window and prints the figures. Everything is bounded in time and stopped at the end.

    .venv/bin/python bench/gateway_load.py --piles 1000 --seconds 30
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pilegate.broker import MosquittoBroker
from tests.e2e.harness import (
    GatewayProcess,
    GatewaySettings,
    free_port,
    gateway_config,
    spawn,
    wait_until,
)

NOT_VALUES = frozenset({"ts", "session", "seq", "replayed"})
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mib(pid: int) -> float:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE / 2**20


class Counter:
    """Counts telemetry messages arriving at the broker (QoS 0 subscription, own thread)."""

    def __init__(self, port: int) -> None:
        self.count = 0
        self.values = 0
        self.replayed = 0
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-counter")
        self.client.on_connect = lambda c, *_: c.subscribe("pilegate/v1/+/pile/+/port/+/telemetry")
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        values = count_values(msg.payload)
        with self._lock:
            self.count += 1
            self.values += values

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def count_values(payload: bytes | bytearray) -> int:
    """Telemetry values in one message: its non-null fields other than ts, session, seq, replayed."""
    doc = json.loads(payload)
    return sum(1 for key, value in doc.items() if key not in NOT_VALUES and value is not None)


def sim_configs(workdir: Path, piles: int, processes: int, maps: list[str]) -> list[Path]:
    """Simulator configs of ``piles`` single-port piles over ``processes``, speaking ``maps`` in turn."""
    paths = []
    per = -(-piles // processes)
    for i in range(processes):
        ids = range(i * per, min(piles, (i + 1) * per))
        lines = ["time_scale = 1.0", "tick_s = 0.5", ""]
        for n in ids:
            lines += [
                "[[piles]]",
                f'id = "P{n:04d}"',
                'kind = "trickle"',
                "rated_power_W = 7000",
                "tcp_port = 0",
                f'map = "{maps[n % len(maps)]}"',
                "",
            ]
        path = workdir / f"sim{i}.toml"
        path.write_text("\n".join(lines))
        paths.append(path)
    return paths


def start_gateway(workdir: Path, piles: dict[str, dict[str, object]], mqtt_port: int) -> GatewayProcess:
    """The gateway process, handed back before its control API answers, so that a start that fails
    (a loaded machine may take a while) is still stopped by ``main``'s cleanup."""
    settings = GatewaySettings(
        poll_period_s=1.0, timeout_s=0.5, keepalive_s=30, extra_gateway={"log_level": "warning"}
    )
    data_dir, config_path = workdir / "gateway-data", workdir / "gateway.toml"
    control_port = free_port()
    config_path.write_text(gateway_config(piles, mqtt_port, data_dir, control_port, settings))
    proc = spawn("gateway", ["gateway", "--config", str(config_path)], workdir)
    return GatewayProcess(proc, config_path, control_port, data_dir)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--piles", type=int, default=1000)
    ap.add_argument("--sim-processes", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=30.0, help="measurement window")
    ap.add_argument("--warmup", type=float, default=10.0)
    ap.add_argument(
        "--maps",
        default="pilegate-sim-v1",
        help="comma-separated register maps the piles speak in turn, e.g. "
        "pilegate-sim-v1,abb-terra-ac,keba-p30,alfen-ng9xx,bender-cc61x",
    )
    ap.add_argument("--profile", type=Path, help="also record the gateway with py-spy (collapsed stacks)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        broker = MosquittoBroker(free_port(), workdir / "broker")
        broker.start()
        sims, gateway, counter = [], None, None
        try:
            piles: dict[str, dict[str, object]] = {}
            for i, cfg in enumerate(
                sim_configs(workdir, args.piles, args.sim_processes, args.maps.split(","))
            ):
                ready = workdir / f"sim{i}.ready.json"
                proc = spawn(f"sim{i}", ["sim", "--config", str(cfg), "--ready-file", str(ready)], workdir)
                sims.append(proc)
                doc = wait_until(
                    lambda r=ready: r.exists() and json.loads(r.read_text()), 120, "simulator ready", proc
                )
                piles.update(doc["piles"])
            gateway = start_gateway(workdir, piles, broker.port)
            wait_until(gateway.answering, 180, "gateway control API", gateway.proc)
            counter = Counter(broker.port)
            pid = gateway.proc.popen.pid
            time.sleep(args.warmup)  # benchmark warm-up: a fixed duration, not a condition
            if args.profile:
                import subprocess

                subprocess.Popen(
                    [
                        "py-spy",
                        "record",
                        "-p",
                        str(pid),
                        "-d",
                        str(int(args.seconds)),
                        "-f",
                        "raw",
                        "-r",
                        "200",
                        "-o",
                        str(args.profile),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            c0, n0, v0 = cpu_s(pid), counter.count, counter.values
            r0, t0 = rss_mib(pid), time.monotonic()
            rss_samples = [r0]
            while time.monotonic() - t0 < args.seconds:
                time.sleep(1.0)
                rss_samples.append(rss_mib(pid))
            c1, n1, v1, t1 = cpu_s(pid), counter.count, counter.values, time.monotonic()
            status = gateway.status()
            elapsed = t1 - t0
            overruns = sum(b["poller"]["overruns"] for b in status["buses"].values())
            online = sum(1 for p in status["piles"].values() if p["state"] == "online")
            print(
                f"piles={args.piles} (online {online}) sim_processes={args.sim_processes} "
                f"window={elapsed:.1f}s"
            )
            print(
                f"telemetry at broker: {(n1 - n0) / elapsed:.1f} msg/s (expected {args.piles:.0f}/s at 1 Hz)"
            )
            cpu = c1 - c0
            per_msg = (v1 - v0) / max(1, n1 - n0)
            print(f"gateway CPU: {100 * cpu / elapsed:.1f}% of one core")
            print(
                f"per gateway CPU-second: {(n1 - n0) / cpu:.0f} telemetry messages, "
                f"{(v1 - v0) / cpu:.0f} values ({per_msg:.1f} values per message)"
            )
            print(
                f"gateway RSS: start {r0:.1f} MiB, end {rss_samples[-1]:.1f} MiB, "
                f"max {max(rss_samples):.1f} MiB"
            )
            print(
                f"outbox depth {status['outbox'].get('depth')}, poll overruns {overruns}, "
                f"uplink {json.dumps(status['uplink'])}"
            )
        except Exception:
            if gateway:
                print(f"gateway log (end):\n{gateway.proc.log_tail()}", file=sys.stderr)
            raise
        finally:
            if counter:
                counter.stop()
            if gateway:
                gateway.proc.stop()
            for proc in sims:
                proc.stop()
            broker.stop()


if __name__ == "__main__":
    main()
