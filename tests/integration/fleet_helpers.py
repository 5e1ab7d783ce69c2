"""Helpers of the fleet tests: instances as processes of their own (``tests/integration/fleet_node.py``),
their journals, and who holds which lease according to PostgreSQL (pg_locks)."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from central.adapters.lease import station_key
from tests.e2e.harness import stop_process

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Node:
    """A fleet_node process: one central instance's leases and station calls."""

    instance: str
    log: Path
    popen: subprocess.Popen[bytes]
    output: Path

    def events(self, *kinds: str) -> list[dict[str, Any]]:
        """Its journal so far (only ``kinds`` when given); a half-written last line is skipped."""
        if not self.log.exists():
            return []
        found = []
        for line in self.log.read_text(encoding="utf-8").splitlines():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not kinds or event["event"] in kinds:
                found.append(event)
        return found

    def exited(self) -> str | None:
        """Why a wait for this node is pointless (it exited), for ``wait_for(give_up=...)``."""
        code = self.popen.poll()
        return None if code is None else f"{self.instance} exited with {code}: {self.tail()}"

    def tail(self) -> str:
        return self.output.read_text(errors="replace")[-2000:] if self.output.exists() else ""

    def kill(self) -> float:
        """kill -9; the monotonic time of the kill."""
        at = time.monotonic()
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(10)
        return at

    def stop(self) -> int:
        return stop_process(self.popen, timeout_s=20)


@dataclass
class Nodes:
    """Starts fleet_node processes; the fixture stops every one of them."""

    url: str
    directory: Path
    started: list[Node] = field(default_factory=list)

    def start(self, instance: str, stations: Iterable[str]) -> Node:
        log = self.directory / f"{instance}.jsonl"
        output = self.directory / f"{instance}.out"
        argv = [sys.executable, "-m", "tests.integration.fleet_node", "--url", self.url]
        argv += ["--instance", instance, "--stations", ",".join(stations), "--log", str(log)]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with output.open("ab") as out:
            popen = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        node = Node(instance, log, popen, output)
        self.started.append(node)
        return node


def lease_holders(url: str, stations: Iterable[str]) -> dict[str, list[str]]:
    """station -> the application names of the sessions holding its lease (pg_locks), for each of
    ``stations``; more than one name would be a double ownership."""
    keys = {station_key(code): code for code in stations}
    holders: dict[str, list[str]] = {code: [] for code in keys.values()}
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT (l.classid::bigint << 32) | l.objid::bigint, a.application_name "
            "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ).fetchall()
    for key, name in rows:
        if key in keys:
            holders[keys[key]].append(str(name).removeprefix("pilegate-lease "))
    return holders


def running(nodes: Iterable[Node]) -> dict[str, set[str]]:
    """station -> the instances whose journal shows its runtime running (acquired, not yet lost)."""
    found: dict[str, set[str]] = {}
    for node in nodes:
        for event in node.events("acquired", "lost"):
            owners = found.setdefault(event["station"], set())
            if event["event"] == "acquired":
                owners.add(node.instance)
            else:
                owners.discard(node.instance)
    return found


Span = tuple[float, float, str]  # start, end (time.monotonic()), instance


def runtime_intervals(nodes: Iterable[Node], killed_at: dict[str, float]) -> dict[str, list[Span]]:
    """station -> (start, end, instance) of every runtime the journals show: from ``acquired`` to
    ``lost``; a runtime still running ends now, or at its process's kill (``killed_at``)."""
    intervals: dict[str, list[Span]] = {}
    now = time.monotonic()
    for node in nodes:
        open_since: dict[str, float] = {}
        for event in node.events("acquired", "lost"):
            if event["event"] == "acquired":
                open_since[event["station"]] = event["t"]
            elif event["station"] in open_since:
                start = open_since.pop(event["station"])
                intervals.setdefault(event["station"], []).append((start, event["t"], node.instance))
        end = killed_at.get(node.instance, now)
        for station, start in open_since.items():
            intervals.setdefault(station, []).append((start, end, node.instance))
    return intervals


def overlaps(intervals: dict[str, list[Span]]) -> list[str]:
    """Two runtimes of one station at once, described (none expected)."""
    found = []
    for station, spans in intervals.items():
        ordered = sorted(spans)
        for (s1, e1, i1), (s2, e2, i2) in itertools.pairwise(ordered):
            if s2 < e1:
                found.append(f"{station}: {i1} [{s1:.3f}, {e1:.3f}] and {i2} [{s2:.3f}, {e2:.3f}]")
    return found
