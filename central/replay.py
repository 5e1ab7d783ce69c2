"""Scenario replay: parse ``HH:MM (TYPE,ID,MODE,VALUE)`` lines, drive the domain scheduler with a
virtual clock and ideal constant-power piles, and write one JSON object per event line plus a final
``{"end", "bills"}`` object.

Times are the station's local wall clock. The clock starts at ``start_time`` (default: the first
event); an event whose HH:MM is earlier than the previous event's is on the next day, and times on
later days are shown with ``+N``. Times with seconds (ideal completions of fractional kWh) are shown
as ``HH:MM:SS``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from fractions import Fraction
from typing import Any, TextIO

import click

from central.config import load_params
from central.domain.billing import Bill, DetailRecord
from central.domain.errors import DomainError
from central.domain.events import Event, RequestCancelled, RequestCompleted, RequestQueued
from central.domain.ideal import complete_all, complete_until
from central.domain.model import Request, points_from_params
from central.domain.params import StationParams, StationParamsError
from central.domain.scheduler import Scheduler
from central.domain.units import QuantityError, display_number, exact, hours_between

REPLAY_DATE = date(2024, 1, 1)
"""Calendar date of the virtual day 0 (only matters for time zones with DST)."""
_LINE = re.compile(r"^(\d{1,2}):(\d{2})\s*\(([^()]*)\)$")
_ID = re.compile(r"^[A-Za-z0-9_.\-]+$")


class ScenarioError(ValueError):
    """The scenario has malformed lines; ``problems`` lists (line number, what is wrong)."""

    def __init__(self, problems: list[tuple[int, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"line {n}: {what}" for n, what in problems))


@dataclass(frozen=True)
class ScenarioEvent:
    """One parsed scenario line."""

    line_no: int
    minute: int  # minutes after local midnight
    kind: str  # A | B | C
    ident: str  # car or pile id
    mode: str  # F | T | O
    value: Fraction
    text: str  # normalised "(A,V1,F,30)"


def parse_scenario(lines: Iterable[str], params: StationParams) -> list[ScenarioEvent]:
    """Parse every line; ScenarioError lists every malformed line with its number."""
    piles = {p.pile_id for p in points_from_params(params)}
    events: list[ScenarioEvent] = []
    problems: list[tuple[int, str]] = []
    line_no = 0
    try:
        for line_no, raw in enumerate(lines, start=1):
            text = raw.split("#", 1)[0].strip()
            if text:
                try:
                    events.append(_parse_line(line_no, text, piles))
                except ValueError as exc:
                    problems.append((line_no, str(exc)))
    except UnicodeDecodeError:
        problems.append((line_no + 1, "not UTF-8 text"))
    if problems:
        raise ScenarioError(problems)
    return events


def _parse_line(line_no: int, text: str, piles: set[str]) -> ScenarioEvent:
    match = _LINE.match(text)
    if match is None:
        raise ValueError(f"expected 'HH:MM (TYPE,ID,MODE,VALUE)', got {text!r}")
    hours, minutes = int(match[1]), int(match[2])
    if hours > 23 or minutes > 59:
        raise ValueError(f"{match[1]}:{match[2]} is not a time of day (00:00-23:59)")
    fields = [f.strip() for f in match[3].split(",")]
    if len(fields) != 4:
        raise ValueError(f"expected 4 fields TYPE,ID,MODE,VALUE in parentheses, got {len(fields)}")
    kind, ident, mode, value_text = fields
    value = _check_fields(kind, ident, mode, value_text, piles)
    return ScenarioEvent(
        line_no, hours * 60 + minutes, kind, ident, mode, value, f"({kind},{ident},{mode},{value_text})"
    )


def _check_fields(kind: str, ident: str, mode: str, value_text: str, piles: set[str]) -> Fraction:
    if kind not in ("A", "B", "C"):
        raise ValueError(f"TYPE must be A (arrive/cancel), B (pile) or C (change), got {kind!r}")
    if not _ID.match(ident):
        raise ValueError(f"ID {ident!r} must be letters, digits, '_', '.' or '-'")
    if mode not in ("F", "T", "O"):
        raise ValueError(f"MODE must be F, T or O, got {mode!r}")
    try:
        value = exact(value_text)
    except QuantityError:
        raise ValueError(f"VALUE must be a number, got {value_text!r}") from None
    {"A": _check_arrival, "B": _check_pile, "C": _check_change}[kind](ident, mode, value, piles)
    return value


def _check_arrival(ident: str, mode: str, value: Fraction, piles: set[str]) -> None:
    if mode == "O" and value != 0:
        raise ValueError(f"(A,{ident},O,VALUE) cancels and needs VALUE 0, got {value}")
    if mode != "O" and value <= 0:
        raise ValueError(f"requested kWh must be > 0, got {value}")


def _check_pile(ident: str, mode: str, value: Fraction, piles: set[str]) -> None:
    if ident not in piles:
        raise ValueError(f"unknown pile {ident!r} (this station has {', '.join(sorted(piles))})")
    if mode != "O":
        raise ValueError(f"pile events need MODE O, got {mode!r}")
    if value not in (0, 1):
        raise ValueError(f"pile event VALUE must be 0 (fault) or 1 (recovery), got {value}")


def _check_change(ident: str, mode: str, value: Fraction, piles: set[str]) -> None:
    if value != -1 and value <= 0:
        raise ValueError(f"new kWh must be > 0 or -1 (unchanged), got {value}")


class VirtualClock:
    """Local wall-clock times of the replay's virtual days, as UTC instants and back."""

    def __init__(self, params: StationParams, first_minute: int) -> None:
        self.zone = params.zone
        start = params.start_time
        self.minute = first_minute if start is None else start.hour * 60 + start.minute
        self.day = 0

    def advance(self, minute: int) -> datetime:
        """The instant of the next event at ``minute``: same day unless that is earlier."""
        if minute < self.minute:
            self.day += 1
        self.minute = minute
        return self.instant(self.day, minute)

    def instant(self, day: int, minute: int) -> datetime:
        """UTC instant of local ``minute`` on virtual day ``day``."""
        when = datetime.combine(REPLAY_DATE + timedelta(days=day), time(minute // 60, minute % 60))
        return when.replace(tzinfo=self.zone).astimezone(UTC)

    def label(self, at: datetime) -> str:
        """``HH:MM`` (``HH:MM:SS[.ffffff]`` if needed) plus ``+N`` on later days."""
        local = at.astimezone(self.zone)
        text = local.strftime("%H:%M")
        if local.second or local.microsecond:
            text += local.strftime(":%S") + (
                f".{local.microsecond:06d}".rstrip("0") if local.microsecond else ""
            )
        days = (local.date() - REPLAY_DATE).days
        return text + (f"+{days}" if days else "")


@dataclass
class _BillSlot:
    """One request, in arrival order; filled when the request ends."""

    car: str
    bill: Bill | None = None


@dataclass
class _Run:
    """State of one replay: scheduler, clock and the bills collected from events."""

    scheduler: Scheduler
    clock: VirtualClock
    slots: list[_BillSlot] = field(default_factory=list)
    active: dict[str, _BillSlot] = field(default_factory=dict)

    def absorb(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, RequestQueued):
                self.active[event.car] = _BillSlot(event.car)
                self.slots.append(self.active[event.car])
            elif isinstance(event, RequestCompleted | RequestCancelled):
                self.active.pop(event.car).bill = event.bill


def replay(lines: Iterable[str], params: StationParams) -> Iterator[dict[str, Any]]:
    """Parse ``lines`` (raising ScenarioError now) and return the replay's output objects."""
    events = parse_scenario(lines, params)
    clock = VirtualClock(params, events[0].minute if events else 0)
    return _drive(_Run(Scheduler(params), clock), events)


def _drive(run: _Run, events: list[ScenarioEvent]) -> Iterator[dict[str, Any]]:
    scheduler = run.scheduler
    last_event = run.clock.instant(0, run.clock.minute)
    for event in events:
        last_event = at = run.clock.advance(event.minute)
        complete_until(scheduler, at)
        error = apply_event(scheduler, event, at)
        scheduler.dispatch(at)
        run.absorb(scheduler.pop_events())
        yield _snapshot(run, event, at, error)
    last_completion = complete_all(scheduler)
    run.absorb(scheduler.pop_events())
    yield _final(run, max(last_event, last_completion or last_event))


def apply_event(scheduler: Scheduler, event: ScenarioEvent, at: datetime) -> dict[str, str] | None:
    """Feed one scenario event (without calling); a refusal becomes an ``error`` object."""
    try:
        if event.kind == "A" and event.mode == "O":
            scheduler.cancel(at, event.ident, dispatch=False)
        elif event.kind == "A":
            scheduler.arrive(at, event.ident, event.mode, event.value, dispatch=False)
        elif event.kind == "B" and event.value == 0:
            scheduler.pile_fault(at, event.ident, dispatch=False)
        elif event.kind == "B":
            scheduler.pile_recover(at, event.ident, dispatch=False)
        else:
            mode = None if event.mode == "O" else event.mode
            kwh = None if event.value == -1 else event.value
            scheduler.change(at, event.ident, mode, kwh, dispatch=False)
    except DomainError as exc:
        return {"code": exc.code, "message": str(exc)}
    return None


def _snapshot(run: _Run, event: ScenarioEvent, at: datetime, error: dict[str, str] | None) -> dict[str, Any]:
    scheduler = run.scheduler
    piles = {
        p.point.point_id: {"status": p.status, "queue": [_queue_entry(scheduler, at, c) for c in p.queue]}
        for p in scheduler.point_states()
    }
    out: dict[str, Any] = {
        "time": run.clock.label(at),
        "event": event.text,
        "piles": piles,
        "waiting": [_line_entry(r) for r in scheduler.waiting_cars()],
        "fault_queue": [_line_entry(r) for r in scheduler.fault_queue()],
    }
    if error is not None:
        out["error"] = error
    return out


def _queue_entry(scheduler: Scheduler, at: datetime, car: str) -> dict[str, Any]:
    request = scheduler.requests[car]
    if request.segment_start is None:
        return {"car": car, "charged_kwh": 0.0, "cost": 0.0}
    preview = scheduler.segment_preview(at, car)
    return {"car": car, "charged_kwh": display_number(preview.kwh), "cost": display_number(preview.total)}


def _line_entry(request: Request) -> dict[str, Any]:
    return {"car": request.car, "mode": request.mode.value, "kwh": display_number(request.remaining_kwh)}


def _final(run: _Run, end: datetime) -> dict[str, Any]:
    for car, slot in run.active.items():
        slot.bill = run.scheduler.requests[car].bill("open")
    bills = [
        {"car": s.car, "details": [_detail(run.clock, d) for d in s.bill.details]}
        for s in run.slots
        if s.bill is not None and s.bill.details
    ]
    out: dict[str, Any] = {"end": run.clock.label(end), "bills": bills}
    if run.active:
        out["unfinished"] = sorted(run.active)
    return out


def _detail(clock: VirtualClock, detail: DetailRecord) -> dict[str, Any]:
    minutes = hours_between(detail.start, detail.stop) * 60
    return {
        "pile": detail.point_id,
        "start": clock.label(detail.start),
        "stop": clock.label(detail.stop),
        "kwh": display_number(detail.kwh),
        "minutes": int(minutes) if minutes.denominator == 1 else display_number(minutes),
        "charge_cost": display_number(detail.charge_fee),
        "service_cost": display_number(detail.service_fee),
        "total": display_number(detail.total),
        "periods": {p.value: display_number(c.kwh) for p, c in detail.periods.items()},
    }


def to_json_line(obj: dict[str, Any]) -> str:
    """One compact JSON line, as the replay writes it."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


@click.command("replay")
@click.argument("scenario", type=click.File("r", encoding="utf-8"))
@click.option(
    "--params",
    "params_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="station parameters TOML (default: built-in defaults)",
)
def replay_command(scenario: TextIO, params_file: str | None) -> None:
    """Replay a charging SCENARIO with a virtual clock and ideal piles; JSON Lines on stdout.

    One line per event: `HH:MM (TYPE,ID,MODE,VALUE)`; blank lines and # comments are ignored.
    Malformed lines are reported on stderr with their line numbers (exit code 2).

    \b
    Example:
        pilegate replay tests/scenarios/02_fault_priority.scn --params tests/scenarios/02_fault_priority.toml
    """
    name = getattr(scenario, "name", "SCENARIO")
    try:
        params = load_params(params_file) if params_file else StationParams()
        rows = replay(scenario, params)
    except StationParamsError as exc:
        for key, what in exc.problems:
            click.echo(f"{params_file}: {key}: {what}", err=True)
        click.get_current_context().exit(2)
    except ScenarioError as exc:
        for line_no, what in exc.problems:
            click.echo(f"{name}:{line_no}: {what}", err=True)
        click.get_current_context().exit(2)
    for row in rows:
        click.echo(to_json_line(row))
