"""How ``pilectl`` shows answers to people: scan tables and progress, tail lines, the outbox report.

Pure formatting of the control API's JSON (and of a scan run without a gateway, which produces the
same lines); ``--json`` prints that JSON instead.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import Any

import click

NUMBERED = ("serial", "product")  # identity numbers worth showing next to a family's text


def identity_text(identity: Mapping[str, object]) -> str:
    """``pilegate SIM-AC T1 1.0, 1 port, 7000 W`` from a decoded identity block; a family whose
    identity is all numbers shows them by name (``serial 20512345, product 311201``)."""
    texts = " ".join(v for v in identity.values() if isinstance(v, str) and v)
    if not texts:
        return ", ".join(f"{k} {v}" for k, v in identity.items() if not isinstance(v, str))
    ports, rated = identity.get("num_ports"), identity.get("rated_power_W")
    extras = [f"{ports} port{'' if ports == 1 else 's'}"] if isinstance(ports, int) else []
    extras += [f"{rated} W"] if isinstance(rated, int) else []
    extras += [f"{k} {v}" for k in NUMBERED if isinstance(v := identity.get(k), int) and v]
    return ", ".join([texts, *extras])


def match_label(match: Mapping[str, Any]) -> str:
    """``keba-p30``; ``bender-cc61x (unconfirmed)`` when no match rule confirmed it; ``alfen-ng9xx
    station`` for a family's station unit, ``(identity on unit 200)`` for a pile of it."""
    label = str(match["map"])
    if match.get("role") == "station":
        label += " station"
    if match.get("identity_unit") is not None:
        label += f" (identity on unit {match['identity_unit']})"
    if match.get("confirmed") is False:
        label += " (unconfirmed)"
    return label


def format_scan(start: Mapping[str, Any], done: Mapping[str, Any]) -> str:
    lines = [f"{'UNIT':>4}  {'PILE':<8} {'MAP':<20} IDENTITY"]
    for unit in done["found"]:
        matches = unit["matches"]
        name = ", ".join(match_label(m) for m in matches) or "(no map fits)"
        about = identity_text(matches[0]["identity"]) if matches else unit["note"]
        lines.append(f"{unit['unit']:>4}  {unit.get('pile') or '-':<8} {name:<20} {about}")
    transport = start.get("transport", {})
    where = " ".join(str(v) for k, v in transport.items() if k != "kind")
    summary = (
        f"scanned units {done['first']}..{done['last']} ({done['probed']} probed) on "
        f"{start.get('bus') or where} in {done['elapsed_s']:.1f} s: {len(done['found'])} answered"
    )
    stopped = f"; stopped: {done['stopped']}" if done.get("stopped") else ""
    return "\n".join([*lines, summary + stopped] if done["found"] else [summary + stopped])


class ScanView:
    """Shows a scan's progress on stderr: a bar on a terminal, a plain line per answer otherwise."""

    def __init__(self, tty: bool) -> None:
        self.tty = tty
        self.start: dict[str, Any] = {}
        self.done: dict[str, Any] | None = None
        self._bar: Any = None

    def show(self, item: Mapping[str, Any]) -> None:
        kind = item.get("kind")
        if kind == "start":
            self.start = dict(item)
            total = item["last"] - item["first"] + 1
            if self.tty:
                self._bar = click.progressbar(length=total, label="scanning", file=sys.stderr)
                self._bar.__enter__()
        elif kind == "unit":
            self._on_unit(item)
        elif kind == "done":
            self.done = dict(item)
            self.close()

    def _on_unit(self, item: Mapping[str, Any]) -> None:
        if self._bar is not None:
            self._bar.update(1)
        elif item.get("answered"):
            maps = ", ".join(match_label(m) for m in item["matches"]) or f"no map fits: {item['note']}"
            click.echo(f"unit {item['unit']}: answers ({maps})", err=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None


def _clock(ts_ms: object) -> str:
    if not isinstance(ts_ms, int):
        return "--:--:--.---"
    return time.strftime("%H:%M:%S", time.localtime(ts_ms / 1000)) + f".{ts_ms % 1000:03d}"


def _telemetry_line(item: Mapping[str, Any]) -> str:
    parts = [f"{item.get('state', '?'):<11}"]
    for key, unit, width in (
        ("voltage_V", "V", 6),
        ("current_A", "A", 7),
        ("power_W", "W", 7),
        ("energy_Wh", "Wh", 9),
        ("temperature_C", "°C", 5),
    ):
        if key in item:
            parts.append(f"{item[key]:>{width}} {unit}")
    if item.get("fault") not in (None, "none"):
        parts.append(f"FAULT {item['fault']}")
    if item.get("active_limit_W"):
        parts.append(f"limit {item['active_limit_W']} W")
    return "  ".join(parts)


def format_tail_item(item: Mapping[str, Any]) -> str | None:
    """One feed item as a human line (``None`` for bookkeeping items)."""
    kind = item.get("kind")
    where = f"{item.get('pile')}/{item['port']}" if item.get("port") else str(item.get("pile"))
    head = f"{_clock(item.get('ts'))} {where:<10}"
    if kind == "telemetry":
        return f"{head} {_telemetry_line(item)}"
    if kind == "event":
        fault = f" fault {item['fault']}" if item.get("fault") not in (None, "none") else ""
        energy = f" at {item['energy_Wh']} Wh" if item.get("energy_Wh") is not None else ""
        return f"{head} EVENT {item.get('type')}{fault}{energy}"
    if kind == "status":
        error = f" ({item['error']})" if item.get("error") else ""
        return f"{head} PILE {item.get('state')}{error}"
    if kind == "dropped":
        return f"-- {item.get('count')} items dropped: this reader did not keep up --"
    return None


def format_outbox(data: Mapping[str, Any]) -> str:
    counters, limits, oldest = data["counters"], data["limits"], data.get("oldest")
    lines = [
        f"depth       {counters['depth']} messages, {counters['bytes']} bytes "
        f"(bounds {limits['max_messages']} messages, {limits['max_bytes']} bytes, "
        f"telemetry kept {limits['max_age_s']:g} s)",
        f"oldest      {oldest['kind']} from {data['oldest_age_s']:.1f} s ago ({oldest['topic']})"
        if oldest
        else "oldest      - (empty)",
        "dropped     " + ", ".join(f"{k[8:]} {v}" for k, v in counters.items() if k.startswith("dropped_")),
        f"quarantined {counters.get('quarantined', 0)} (rows the broker would not take)",
    ]
    for row in data["quarantine"]:
        lines.append(
            f"  #{row['id']} {row['kind']} {row['topic']} at {_clock(row['quarantined_ms'])}: {row['reason']}"
        )
    return "\n".join(lines)
