"""pilectl scan, write, tail and outbox against a running gateway: the gateway in-process, simulated
piles on a socat pty (units 1, 2 and 5; the gateway knows 1 and 2) and over Modbus TCP, a real
Mosquitto, and pilectl as the technician runs it (a separate process, the config gives the way in).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pty
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from structlog.testing import capture_logs

from firmware_sim.config import SimConfig, SimPileSpec, SimSerialBusSpec
from firmware_sim.runner import Simulation, start_simulation
from gateway.config import load_config
from gateway.daemon import Gateway
from pilegate.broker import free_port
from protocols.registers import SIM_V1, Command, PortState, encode
from tests.helpers import finishes, wait_for

pytestmark = pytest.mark.skipif(shutil.which("socat") is None, reason="socat not installed")

SIM = SimConfig(
    piles=(
        SimPileSpec("F1", "fast", 30_000),
        *(
            SimPileSpec(f"T{u}", "trickle", 7_000, unit=u, tcp_port=None, serial_bus="rs485")
            for u in (1, 2, 5)
        ),
    ),
    serial_buses=(SimSerialBusSpec("rs485", baudrate=38400),),
    time_scale=60.0,
)
CONTROL = SIM_V1.port_address(1, SIM_V1.control)


@dataclass
class Site:
    sim: Simulation
    gateway: Gateway
    config_path: Path
    stopped: bool = False

    def token(self) -> str:
        return self.gateway.config.control_token_file.read_text().strip()

    @property
    def url(self) -> str:
        return f"http://{self.gateway.config.control_listen}"


def gateway_toml(sim: Simulation, data_dir: Path, mqtt_port: int) -> str:
    rtu, tcp = sim.endpoints["T1"], sim.endpoints["F1"]
    return f"""
[gateway]
id = "gw-site"
station = "s9"
data_dir = "{data_dir}"
poll_period_s = 0.5
control_listen = "127.0.0.1:{free_port()}"
[mqtt]
url = "mqtt://127.0.0.1:{mqtt_port}"
[[bus]]
name = "rs485"
transport = "rtu"
device = "{rtu.device}"
baudrate = 38400
timeout_s = 0.2
[[bus]]
name = "tcp-F1"
transport = "tcp"
host = "{tcp.host}"
port = {tcp.port}
timeout_s = 0.2
[[pile]]
id = "T1"
bus = "rs485"
unit = 1
[[pile]]
id = "T2"
bus = "rs485"
unit = 2
[[pile]]
id = "F1"
bus = "tcp-F1"
unit = {tcp.unit}
"""


SiteFactory = Callable[[int], Awaitable[Site]]


@pytest.fixture
async def make_site(tmp_path: Path) -> AsyncIterator[SiteFactory]:
    sims: list[Simulation] = []
    sites: list[Site] = []

    async def make(mqtt_port: int) -> Site:
        sim = await start_simulation(SIM)
        sims.append(sim)
        config_path = tmp_path / "gateway.toml"
        config_path.write_text(gateway_toml(sim, tmp_path / "gw-data", mqtt_port))
        gateway = Gateway(load_config(config_path))
        site = Site(sim, gateway, config_path)
        await gateway.start()
        sites.append(site)
        await wait_for(
            lambda: all(p.state == "online" for p in gateway.runtime.piles.values()),
            timeout_s=15,
            what="every pile online",
        )
        return site

    yield make
    for site in sites:
        if not site.stopped:
            await finishes(site.gateway.stop(), 30, "the gateway's stop")
    for sim in sims:
        await finishes(sim.stop(), 30, "the simulation's stop")


@pytest.fixture
async def site(make_site: SiteFactory, mosquitto) -> Site:
    return await make_site(mosquitto.port)


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PILECTL_")}


def _argv(site: Site, args: tuple[str, ...]) -> list[str]:
    return [sys.executable, "-m", "gateway.pilectl", "--config", str(site.config_path), *args]


async def pilectl(site: Site, *args: str) -> Run:
    proc = await asyncio.create_subprocess_exec(
        *_argv(site, args),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_env(),
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return Run(proc.returncode or 0, out.decode(), err.decode())


def start_words(seq: int) -> list[str]:
    values = {"command": int(Command.START), "command_seq": seq, "target_energy_Wh": 100_000}
    return [str(w) for w in encode(SIM_V1, SIM_V1.control, values)]


# -------------------------------------------------------------------------------------------- scan


async def test_scan_through_the_gateway_finds_every_unit_on_the_line(site: Site):
    polls_before = site.gateway.runtime.telemetry_count
    run = await pilectl(site, "scan", "--bus", "rs485", "--units", "1-8", "--timeout", "0.1", "--json")
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert [u["unit"] for u in report["found"]] == [1, 2, 5]
    assert [u["pile"] for u in report["found"]] == ["T1", "T2", None]  # unit 5 is not configured
    assert all(u["matches"][0]["map"] == "pilegate-sim-v1" for u in report["found"])
    assert report["found"][2]["matches"][0]["identity"]["serial"] == "T5"
    assert report["complete"] and report["probed"] == 8
    assert site.gateway.runtime.telemetry_count > polls_before  # polling went on during the scan
    assert "unit 5: answers (pilegate-sim-v1)" in run.stderr  # plain progress lines: not a tty


async def test_scan_of_a_tcp_host_through_the_gateway_finds_only_its_unit(site: Site):
    run = await pilectl(site, "scan", "--pile", "F1", "--units", "1-4")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].split() == ["UNIT", "PILE", "MAP", "IDENTITY"]
    assert lines[1].split()[:3] == ["1", "F1", "pilegate-sim-v1"]
    assert "pilegate" in lines[1] and "30000 W" in lines[1]
    assert "scanned units 1..4 (4 probed) on tcp-F1" in lines[-1] and "1 answered" in lines[-1]


async def test_scan_requests_are_checked_and_one_scan_per_bus_runs(site: Site):
    too_short = await pilectl(site, "scan", "--bus", "rs485", "--timeout", "0.001")
    assert too_short.returncode == 1 and "every unit would look silent" in too_short.stderr
    which = await pilectl(site, "scan")
    assert which.returncode == 1 and "the gateway has 2 buses" in which.stderr
    headers = {"Authorization": f"Bearer {site.token()}"}
    body = {"bus": "rs485", "first": 3, "last": 247, "timeout_s": 0.1}
    async with (
        aiohttp.ClientSession(headers=headers) as http,
        http.post(f"{site.url}/scan", json=body) as first,
    ):
        assert json.loads(await first.content.readline())["kind"] == "start"
        async with http.post(f"{site.url}/scan", json=body) as second:
            assert second.status == 409
            assert "already running" in (await second.json())["error"]
    # the first reader went away: its scan stops and the bus may be scanned again

    async def scanned() -> Run | None:
        run = await pilectl(site, "scan", "--bus", "rs485", "--units", "1", "--json")
        return run if run.returncode == 0 else None

    again = await wait_for(scanned, timeout_s=10, what="a new scan once the abandoned one noticed")
    assert again is not None
    assert json.loads(again.stdout)["found"][0]["unit"] == 1


# ------------------------------------------------------------------------------------------- write


async def test_write_reaches_the_pile_and_the_gateway_logs_it(site: Site):
    with capture_logs() as logs:
        run = await pilectl(site, "write", "1", str(CONTROL), *start_words(7), "--pile", "T1", "--yes")
    assert run.returncode == 0, run.stderr
    assert f"wrote 6 registers {CONTROL}..{CONTROL + 5} of unit 1 (pile T1)" in run.stdout
    await wait_for(
        lambda: site.sim.port_snapshot("T1", 1)["state"] == PortState.CHARGING, 5, what="T1 charging"
    )
    assert site.sim.port_snapshot("T1", 1)["ack_seq"] == 7
    (audit,) = [e for e in logs if e["event"] == "register write"]
    assert (audit["pile"], audit["unit"], audit["address"], audit["result"]) == ("T1", 1, CONTROL, "written")
    assert audit["values"] == [int(w) for w in start_words(7)]
    assert audit["who"] == "control token holder" and audit["peer"] == "127.0.0.1"


async def test_write_refuses_without_a_terminal_or_yes_and_reports_device_errors(site: Site):
    refused = await pilectl(site, "write", "1", str(CONTROL), *start_words(8), "--pile", "T1")
    assert refused.returncode == 2 and "no terminal to confirm the write on" in refused.stderr
    assert site.sim.port_snapshot("T1", 1)["ack_seq"] != 8
    bad = await pilectl(site, "write", "1", "100", "70000", "--yes", "--pile", "T1")
    assert bad.returncode == 2 and "not a register value" in bad.stderr
    with capture_logs() as logs:
        absent = await pilectl(site, "write", "9", "100", "1", "--yes", "--pile", "T1", "--json")
    assert absent.returncode == 1 and "gateway refused: timeout" in absent.stderr
    assert [e["result"] for e in logs if e["event"] == "register write"] == ["timeout: no reply within 0.5 s"]


async def _pilectl_on_a_terminal(site: Site, args: tuple[str, ...], answer: bytes) -> str:
    """pilectl with its stdin and stdout on a pseudo-terminal; ``answer`` typed once it asks."""
    master, slave = pty.openpty()
    proc = await asyncio.create_subprocess_exec(
        *_argv(site, args), stdin=slave, stdout=slave, stderr=slave, env=_env()
    )
    os.close(slave)
    os.set_blocking(master, False)
    seen = bytearray()
    try:
        await wait_for(lambda: _prompted(master, seen), 30, what="the confirmation prompt")
        os.write(master, answer)
        await asyncio.wait_for(proc.wait(), 30)
        return (bytes(seen) + _drain_pty(master)).decode(errors="replace")
    finally:
        os.close(master)


def _prompted(fd: int, seen: bytearray) -> bool:
    with contextlib.suppress(BlockingIOError):
        seen += os.read(fd, 4096)
    return b"[y/N]" in seen


def _drain_pty(fd: int) -> bytes:
    out = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except (BlockingIOError, OSError):  # EIO once the child closed its side
            return out
        if not chunk:
            return out
        out += chunk


async def test_write_asks_on_a_terminal_and_no_means_nothing_is_written(site: Site):
    args = ("write", "2", str(CONTROL), *start_words(9), "--pile", "T2")
    declined = await _pilectl_on_a_terminal(site, args, b"n\n")
    assert f"to unit 2 on pile T2's bus, registers {CONTROL}..{CONTROL + 5}?" in declined
    assert "Aborted" in declined
    assert site.sim.port_snapshot("T2", 1)["ack_seq"] != 9
    accepted = await _pilectl_on_a_terminal(site, args, b"y\n")
    assert "wrote 6 registers" in accepted
    await wait_for(lambda: site.sim.port_snapshot("T2", 1)["ack_seq"] == 9, 5, what="T2 took the write")


# -------------------------------------------------------------------------------------------- tail


async def _lines_until(stream: asyncio.StreamReader, done: Callable[[list[str]], bool]) -> list[str]:
    lines: list[str] = []
    async with asyncio.timeout(20):
        while not done(lines):
            line = await stream.readline()
            assert line, f"the stream ended; got {lines[-5:]}"
            lines.append(line.decode())
    return lines


async def test_tail_follows_one_port_and_stops_cleanly_on_ctrl_c(site: Site):
    proc = await asyncio.create_subprocess_exec(
        *_argv(site, ("tail", "--pile", "T1", "--port", "1", "--json")),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_env(),
    )
    assert proc.stdout is not None and proc.stderr is not None
    await _lines_until(proc.stdout, lambda lines: len(lines) >= 2)
    started = await pilectl(site, "start", "T1", "1", "--energy-wh", "50000")
    assert started.returncode == 0, started.stdout + started.stderr
    lines = await _lines_until(proc.stdout, lambda lines: any('"session_started"' in line for line in lines))
    items = [json.loads(line) for line in lines]
    assert {(i["pile"], i.get("port", 1)) for i in items} == {("T1", 1)}
    assert {"telemetry", "event"} <= {i["kind"] for i in items}
    assert all(i["state"] in ("available", "charging") for i in items if i["kind"] == "telemetry")
    proc.send_signal(signal.SIGINT)
    assert await asyncio.wait_for(proc.wait(), 10) == 0
    assert "Traceback" not in (await proc.stderr.read()).decode()


async def test_tail_prints_human_lines_with_names_and_units(site: Site):
    proc = await asyncio.create_subprocess_exec(
        *_argv(site, ("tail", "--pile", "F1")), stdout=asyncio.subprocess.PIPE, env=_env()
    )
    assert proc.stdout is not None
    (line,) = await _lines_until(proc.stdout, lambda lines: len(lines) >= 1)
    proc.send_signal(signal.SIGINT)
    await asyncio.wait_for(proc.wait(), 10)
    assert " F1/1 " in line and " available " in line
    for unit in (" V ", " A ", " W ", " Wh ", " °C"):
        assert unit in line


async def test_stopping_the_gateway_ends_the_tails_at_once(site: Site):
    headers = {"Authorization": f"Bearer {site.token()}"}
    async with (
        aiohttp.ClientSession(headers=headers) as http,
        http.get(f"{site.url}/tail", params={"queue": "5"}) as tail,
    ):
        start = json.loads(await tail.content.readline())
        assert start == {"kind": "start", "pile": None, "port": None, "queue_items": 5}
        began = time.monotonic()
        site.stopped = True
        await site.gateway.stop()
        assert time.monotonic() - began < 10  # not the server's 60 s shutdown timeout
        kinds = [json.loads(line)["kind"] async for line in tail.content]
    assert kinds[-1] == "end"


# ------------------------------------------------------------------------------------------ outbox


async def test_outbox_shows_depth_oldest_age_and_quarantine(make_site: SiteFactory):
    site = await make_site(free_port())  # no broker there: everything waits in the outbox
    outbox = site.gateway.outbox
    await wait_for(lambda: outbox.depth() >= 5, 10, what="messages waiting for the broker")
    stuck = outbox.peek(1)[0]
    assert outbox.quarantine(stuck.id, "broker refused the topic")
    run = await pilectl(site, "outbox", "--json")
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    assert data["counters"]["depth"] >= 4 and data["counters"]["bytes"] > 0
    assert data["oldest_age_s"] >= 0 and data["oldest"]["topic"].startswith("pilegate/v1/s9/")
    assert data["counters"]["quarantined"] == 1
    assert [(q["id"], q["reason"]) for q in data["quarantine"]] == [(stuck.id, "broker refused the topic")]
    human = (await pilectl(site, "outbox")).stdout
    assert "quarantined 1 (rows the broker would not take)" in human
    assert f"#{stuck.id} {stuck.kind} {stuck.topic}" in human and "s ago" in human


# ------------------------------------------------------------------------------- guard and input


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/tail"), ("GET", "/outbox"), ("POST", "/scan"), ("POST", "/write")]
)
async def test_the_new_routes_need_the_token(site: Site, method: str, path: str):
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, f"{site.url}{path}", json={"unit": 1, "address": CONTROL, "values": [2]}) as r,
    ):
        assert r.status == 401
    assert site.sim.port_snapshot("T1", 1)["ack_seq"] == 0


@pytest.mark.parametrize(
    ("method", "path", "body", "problem"),
    [
        ("POST", "/write", {"pile": "T1", "unit": 1, "address": 100, "values": "7"}, "values must be a list"),
        (
            "POST",
            "/write",
            {"pile": "T1", "unit": 1, "address": 100, "values": [1, -1]},
            "values: -1 is not a register",
        ),
        ("POST", "/write", {"pile": "T1", "unit": 1, "address": 65535, "values": [1, 2]}, "go past 65535"),
        ("POST", "/write", {"unit": 0, "address": 1, "values": [1]}, "unit must be an integer 1..247"),
        ("POST", "/scan", {"bus": "rs485", "first": 9, "last": 3}, "last must be an integer 9..247"),
        ("POST", "/scan", {"bus": "nope"}, "bus must be one of ['rs485', 'tcp-F1']"),
        ("POST", "/scan", {"bus": "rs485", "deadline_s": "soon"}, "deadline_s must be a number"),
        ("GET", "/tail?port=x", None, "port must be an integer 1..99"),
        ("GET", "/tail?pile=Z9", None, "pile must be one of"),
    ],
)
async def test_bad_requests_are_refused_naming_the_field(site: Site, method, path, body, problem):
    headers = {"Authorization": f"Bearer {site.token()}"}
    async with (
        aiohttp.ClientSession(headers=headers) as http,
        http.request(method, f"{site.url}{path}", json=body) as r,
    ):
        assert r.status == 400
        assert problem in (await r.json())["error"]
    assert site.sim.port_snapshot("T1", 1)["ack_seq"] == 0


async def test_a_reader_that_falls_behind_is_told_how_many_items_it_lost(site: Site):
    headers = {"Authorization": f"Bearer {site.token()}"}
    async with (
        aiohttp.ClientSession(headers=headers) as http,
        http.get(f"{site.url}/tail", params={"pile": "T1", "port": "3", "queue": "10"}) as tail,
    ):
        assert json.loads(await tail.content.readline())["queue_items"] == 10
        burst = [{"kind": "event", "pile": "T1", "port": 3, "type": "plugged", "n": n} for n in range(500)]
        for item in burst:  # all at once: the route cannot send any before the burst is over
            site.gateway.feed.publish(item)
        site.gateway.feed.publish({"kind": "event", "pile": "T1", "port": 3, "type": "unplugged"})
        got = [json.loads(await tail.content.readline()) for _ in range(11)]
    assert [i["n"] for i in got[:10]] == list(range(10))
    assert got[10] == {"kind": "dropped", "count": 491}  # 490 of the burst and the last item


async def test_read_takes_a_function_code_for_input_registers_and_bits(site: Site):
    holding = json.loads((await pilectl(site, "read", "1", "0", "4", "--pile", "T1", "--json")).stdout)
    assert holding["function"] == 3 and len(holding["registers"]) == 4
    # the simulated family keeps everything in holding registers: the pile itself answers the others
    for option, code in (("input", "0x04"), ("coils", "0x01"), ("2", "0x02")):
        run = await pilectl(site, "read", "1", "0", "16", "--pile", "T1", "--function", option)
        assert run.returncode == 1
        assert f"ILLEGAL_DATA_ADDRESS (0x02) in reply to function {code}" in run.stderr
    too_many = await pilectl(site, "read", "1", "0", "200", "--pile", "T1")
    assert too_many.returncode == 2 and "200 registers: at most 125 per read" in too_many.stderr
