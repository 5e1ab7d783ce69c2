"""``pilectl``: the field technician's CLI on the gateway.

It talks to the running gateway's local control API (``control_listen`` in the gateway config) and
can check a config file or print a read plan without a running gateway. Every command takes
``--json`` for scripts.

The control API wants the bearer token the gateway keeps in its control token file. ``pilectl``
finds it without typing: the file named by ``--token-file`` (``PILECTL_TOKEN_FILE``), else the
token in ``PILECTL_TOKEN``, else the gateway config's ``control_token_file`` when ``--config`` is
given, else the default file in the default data dir. Reading it takes membership of the gateway's
group.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import click

from drivers.bus import MODBUS_MAX_WRITE
from drivers.errors import DriverError
from drivers.plan import compile_read_plan, format_plan
from drivers.probe import LineProbe
from drivers.specs import SerialTransport, SpecError, TcpTransport
from gateway.config import GATEWAY_KEYS, ConfigError, GatewayConfig, load_config
from gateway.control_token import TokenFileError, read_token
from gateway.mapview import format_map, map_rows, map_summary
from gateway.pilectl_format import ScanView, format_outbox, format_scan, format_tail_item
from gateway.scan import (
    TCP_UNIT_IDS,
    UnitReport,
    default_timeout_s,
    min_timeout_s,
    scan,
    shipped_maps,
    unit_ids,
)
from protocols.registers import MapError, PortState, get_map, load_map

DEFAULT_URL = "http://127.0.0.1:8470"
DEFAULT_TOKEN_FILE = Path(GATEWAY_KEYS["data_dir"][0]) / "control.token"
CALL_TIMEOUT_S = 10.0
STREAM_TIMEOUT_S = 60.0  # a stream that sends nothing (not even a heartbeat) this long is lost
SCAN_DEADLINE_S = 120.0


class GatewayUnreachable(click.ClickException):
    """The control API did not answer."""


def _options(ctx: click.Context) -> dict[str, Any]:
    return dict(ctx.find_root().obj or {})


def _gateway_config(ctx: click.Context) -> GatewayConfig | None:
    """The gateway config named by ``--config``, if any."""
    path = _options(ctx).get("config")
    if not path:
        return None
    try:
        return load_config(path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _url(ctx: click.Context) -> str:
    config = _gateway_config(ctx)
    if config is not None:
        return f"http://{config.control_listen}"
    return str(_options(ctx).get("url", DEFAULT_URL)).rstrip("/")


def _token(ctx: click.Context) -> tuple[str, str]:
    """The control API token and where it came from (for error messages)."""
    token_file = _options(ctx).get("token_file")
    if not token_file and os.environ.get("PILECTL_TOKEN"):
        return os.environ["PILECTL_TOKEN"].strip(), "PILECTL_TOKEN"
    if not token_file:
        config = _gateway_config(ctx)
        token_file = config.control_token_file if config is not None else DEFAULT_TOKEN_FILE
    try:
        return read_token(Path(token_file)), str(token_file)
    except TokenFileError as exc:
        raise click.ClickException(str(exc)) from None


def _open(ctx: click.Context, path: str, body: dict[str, Any] | None, timeout_s: float) -> Any:
    """The control API's response to ``path`` (POST ``body`` as JSON, else GET), not yet read."""
    url = _url(ctx) + path
    token, source = _token(ctx)
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(  # noqa: S310 (an http URL)
        url,
        data=data,
        method="POST" if data else "GET",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    try:
        return urllib.request.urlopen(req, timeout=timeout_s)  # noqa: S310 (an http URL)
    except urllib.error.HTTPError as exc:
        detail = json.loads(exc.read() or b"{}").get("error", exc.reason)
        if exc.code == 401:
            detail = f"the token from {source} is not this gateway's"
        raise click.ClickException(f"gateway refused: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise GatewayUnreachable(f"cannot reach the gateway at {url}: {exc}") from None


def _call(ctx: click.Context, path: str, body: dict[str, Any] | None = None) -> Any:
    with _open(ctx, path, body, CALL_TIMEOUT_S) as resp:
        try:
            return json.loads(resp.read())
        except (OSError, ValueError) as exc:
            raise GatewayUnreachable(f"the gateway's answer to {path} was cut short: {exc}") from None


def _lines(ctx: click.Context, path: str, body: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
    """The JSON objects a streaming route sends, one per line, as they arrive."""
    with _open(ctx, path, body, STREAM_TIMEOUT_S) as resp:
        while True:
            try:
                line = resp.readline()
            except (OSError, http.client.HTTPException) as exc:
                raise GatewayUnreachable(f"lost the gateway during {path}: {exc}") from None
            if not line:
                return
            try:
                item = json.loads(line)
            except ValueError:
                raise click.ClickException(
                    f"the gateway sent a line that is not JSON: {line[:80]!r}"
                ) from None
            if isinstance(item, dict):
                yield item


def _emit(data: Any, as_json: bool, text: str) -> None:
    click.echo(json.dumps(data, indent=2, default=str) if as_json else text)


json_option = click.option("--json", "as_json", is_flag=True, help="print JSON")


def _remember(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A connection option given after the sub-command overrides the one given before it."""
    if value is not None and param.name is not None:
        root = ctx.find_root()
        root.obj = {**(root.obj or {}), param.name: value}
    return value


def connection_options(command: Any) -> Any:
    """``--config``, ``--url`` and ``--token-file`` accepted after the sub-command too."""
    for name, kind, text in (
        ("--token-file", click.Path(dir_okay=False), "the gateway's control token file"),
        ("--url", None, "the gateway's control API"),
        ("--config", click.Path(dir_okay=False), "take the control address and token file from this config"),
    ):
        command = click.option(name, type=kind, expose_value=False, callback=_remember, help=text)(command)
    return command


def port_state_name(code: Any) -> str:
    """A port state register value by its name (``charging``), the raw value if it has none."""
    try:
        return PortState(code).name.lower()
    except ValueError:
        return str(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--url", default=DEFAULT_URL, show_default=True, envvar="PILECTL_URL", help="the gateway's control API"
)
@click.option(
    "--config",
    "config",
    type=click.Path(dir_okay=False),
    envvar="PILECTL_CONFIG",
    help="take the control address and token file from this gateway config",
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False),
    envvar="PILECTL_TOKEN_FILE",
    help=f"the gateway's control token file [default: from --config, else {DEFAULT_TOKEN_FILE}]",
)
@click.pass_context
def main(ctx: click.Context, url: str, config: str | None, token_file: str | None) -> None:
    """Inspect and operate a running pilegate gateway.

    Example:

        pilectl status
        pilectl start F1 1 --energy-wh 5000
    """
    ctx.obj = {"url": url, "config": config, "token_file": token_file}


@main.command()
@json_option
@connection_options
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Buses, piles (state, last poll, latency, errors), uplink and outbox.

    Example:

        pilectl status
    """
    data = _call(ctx, "/status")
    _emit(data, as_json, format_status(data))


def format_status(data: dict[str, Any]) -> str:
    gw, up, ob = data["gateway"], data["uplink"], data["outbox"]
    lines = [
        f"gateway {gw['id']} station {gw['station']} v{gw['version']} "
        f"up {gw['uptime_s']}s session {gw['session']}",
        f"uplink  {'connected' if up.get('connected') else 'DISCONNECTED'}  "
        f"sent {up.get('sent', 0)} acked {up.get('acked', 0)} "
        f"inflight {up.get('inflight', 0)} reconnects {up.get('reconnects', 0)}",
        f"outbox  depth {ob.get('depth', 0)} bytes {ob.get('bytes', 0)} "
        f"dropped {sum(v for k, v in ob.items() if k.startswith('dropped_'))} "
        f"quarantined {ob.get('quarantined', 0)}",
        "",
        f"{'PILE':<8} {'BUS':<12} {'UNIT':>4} {'STATE':<11} {'LAST POLL':>9} {'READ/S':>6} "
        f"{'LATENCY':>8} {'TIMEOUTS':>8} {'ERRORS':>6}  LAST ERROR",
    ]
    now_ms = time.time() * 1000
    for name, bus in data["buses"].items():
        for pile_id, dev in bus.get("devices", {}).items():
            pile = data["piles"].get(pile_id, {})
            reads = bus.get("poller", {}).get("piles", {}).get(pile_id, {}).get("readings_per_s")
            latency, last_ok = dev.get("last_latency_s"), dev.get("last_ok_ms")
            counters = dev.get("counters", {})
            error = (
                (dev.get("last_error") or {}).get("message", "") if pile.get("state") == "comm_fault" else ""
            )
            lines.append(
                f"{pile_id:<8} {name:<12} {dev.get('unit', ''):>4} "
                f"{pile.get('state') or 'unknown':<11} "
                f"{(f'{(now_ms - last_ok) / 1000:.1f}s ago' if last_ok else 'never'):>9} "
                f"{_num(reads, '.2f'):>6} "
                f"{(f'{latency * 1000:.1f}ms' if latency else '-'):>8} "
                f"{counters.get('timeouts', 0):>8} {counters.get('errors', 0):>6}  {error}"
            )
    return "\n".join([*lines, "", *format_bus_rates(data["buses"])])


def format_bus_rates(buses: dict[str, Any]) -> list[str]:
    """One line per bus: polling mode and the achieved rates (over the poller's recent window)."""
    lines = [f"{'BUS':<12} {'POLLING':<13} {'CYCLE':>7} {'CYCLES/S':>8} {'TXN/S':>7} {'LINE':>5}"]
    for name, bus in buses.items():
        p = bus.get("poller", {})
        mode = "back to back" if p.get("saturated") else f"every {p.get('period_s', 0):g}s"
        util = p.get("line_utilisation")
        lines.append(
            f"{name:<12} {mode:<13} {p.get('last_cycle_s', 0) * 1000:>5.0f}ms "
            f"{_num(p.get('cycles_per_s'), '.2f'):>8} {_num(p.get('transactions_per_s'), '.1f'):>7} "
            f"{(f'{util:.0%}' if util is not None else '-'):>5}"
        )
    return lines


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


@main.command()
@json_option
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False),
    help="compute the plan from this config instead of asking the gateway",
)
@click.pass_context
def plan(ctx: click.Context, as_json: bool, config_file: str | None) -> None:
    """Print each pile's read plan: the merged Modbus requests of one poll cycle.

    Example:

        pilectl plan --config /etc/pilegate/gateway.toml
    """
    data = offline_plans(config_file) if config_file else _call(ctx, "/plan")
    text = "\n".join(f"{pid} (bus {p['bus']}, unit {p['unit']}):\n{p['text']}" for pid, p in data.items())
    _emit(data, as_json, text)


def offline_plans(config_file: str) -> dict[str, Any]:
    config = load_config(config_file)
    plans = {}
    for p in config.piles:
        rp = compile_read_plan(get_map(p.map), p.ports, max_registers=p.max_registers, max_gap=p.max_gap)
        plans[p.id] = {
            "bus": p.bus,
            "unit": p.unit,
            "text": format_plan(rp),
            "requests": [[r.address, r.count] for r in rp.requests],
        }
    return plans


READ_FUNCTIONS = {"holding": 3, "input": 4, "coils": 1, "discrete": 2, "3": 3, "4": 4, "1": 1, "2": 2}


@main.command()
@click.argument("unit", type=click.IntRange(1, 247))
@click.argument("address", type=click.IntRange(0, 65535))
@click.argument("count", type=click.IntRange(1, 2000))
@click.option("--pile", help="pick the bus of this pile (needed when UNIT is on several buses)")
@click.option(
    "--function",
    "-f",
    "function_name",
    type=click.Choice(list(READ_FUNCTIONS)),
    default="holding",
    show_default=True,
    help="what to read: holding (3) or input (4) registers, coils (1) or discrete inputs (2)",
)
@json_option
@connection_options
@click.pass_context
def read(
    ctx: click.Context,
    unit: int,
    address: int,
    count: int,
    pile: str | None,
    function_name: str,
    as_json: bool,
) -> None:
    """Read COUNT registers (at most 125) or bits (at most 2000) from ADDRESS of Modbus device UNIT.

    Examples:

        pilectl read 1 100 11 --pile F1

        pilectl read 3 0 8 --pile W1 --function coils
    """
    function = READ_FUNCTIONS[function_name]
    bits = function in (1, 2)
    if not bits and count > 125:
        raise click.BadParameter(f"{count} registers: at most 125 per read", param_hint="COUNT")
    body = {"unit": unit, "address": address, "count": count, "pile": pile, "function": function}
    data = _call(ctx, "/read", body)
    if bits:
        rows = [f"{address + i:>5}  {b}" for i, b in enumerate(data["bits"])]
        _emit(data, as_json, "\n".join([f"{'ADDR':>5}  BIT", *rows]))
        return
    rows = [f"{address + i:>5}  {w:>5}  0x{w:04x}" for i, w in enumerate(data["registers"])]
    _emit(data, as_json, "\n".join([f"{'ADDR':>5}  {'DEC':>5}  HEX", *rows]))


def _command(
    ctx: click.Context, pile: str, port: int, op: str, params: dict[str, int], as_json: bool
) -> None:
    result = _call(ctx, "/command", {"pile": pile, "port": port, "op": op, "params": params})
    reason = f" ({result['reason']})" if result.get("reason") else ""
    _emit(result, as_json, f"{op} {pile} port {port}: {result['status']}{reason}")
    if result["status"] != "done":
        sys.exit(1)


@main.command()
@click.argument("pile")
@click.argument("port", type=click.IntRange(1, 99))
@click.option("--energy-wh", type=click.IntRange(0), help="stop after delivering this energy")
@click.option("--power-w", type=click.IntRange(0), help="power limit")
@json_option
@connection_options
@click.pass_context
def start(
    ctx: click.Context, pile: str, port: int, energy_wh: int | None, power_w: int | None, as_json: bool
) -> None:
    """Start charging on PILE's PORT.

    Example:

        pilectl start F1 1 --energy-wh 5000
    """
    params = {k: v for k, v in (("energy_Wh", energy_wh), ("power_W", power_w)) if v is not None}
    _command(ctx, pile, port, "start", params, as_json)


@main.command()
@click.argument("pile")
@click.argument("port", type=click.IntRange(1, 99))
@json_option
@connection_options
@click.pass_context
def stop(ctx: click.Context, pile: str, port: int, as_json: bool) -> None:
    """Stop charging on PILE's PORT.

    Example:

        pilectl stop F1 1
    """
    _command(ctx, pile, port, "stop", {}, as_json)


@main.command()
@click.argument("pile")
@click.argument("port", type=click.IntRange(1, 99))
@click.argument("power_w", type=click.IntRange(0))
@json_option
@connection_options
@click.pass_context
def limit(ctx: click.Context, pile: str, port: int, power_w: int, as_json: bool) -> None:
    """Limit the power of the session on PILE's PORT to POWER_W watts.

    Example:

        pilectl limit T1 1 3500
    """
    _command(ctx, pile, port, "limit", {"power_W": power_w}, as_json)


@main.command()
@json_option
@connection_options
@click.pass_context
def telemetry(ctx: click.Context, as_json: bool) -> None:
    """The latest reading of every port.

    Example:

        pilectl telemetry --json
    """
    data = _call(ctx, "/telemetry")
    lines = [f"{'PILE':<8} {'PORT':>4} {'STATE':<11} {'V':>7} {'A':>8} {'W':>7} {'Wh':>10} {'°C':>6}"]
    for pid, pile in data.items():
        for port, v in pile.get("ports", {}).items():
            lines.append(
                f"{pid:<8} {port:>4} {port_state_name(v.get('state')):<11} {v.get('voltage_V', 0):>7} "
                f"{v.get('current_A', 0):>8} {v.get('power_W', 0):>7} "
                f"{v.get('energy_Wh', 0):>10} {v.get('temperature_C', 0):>6}"
            )
    _emit(data, as_json, "\n".join(lines))


@main.command("check-config")
@click.argument("file", type=click.Path(dir_okay=False))
@json_option
def check_config(file: str, as_json: bool) -> None:
    """Validate a gateway config file and list every problem by entry name.

    Example:

        pilectl check-config /etc/pilegate/gateway.toml
    """
    try:
        config = load_config(Path(file))
    except ConfigError as exc:
        _emit({"ok": False, "problems": exc.problems}, as_json, str(exc))
        sys.exit(2)
    summary = {
        "ok": True,
        "gateway": config.id,
        "station": config.station,
        "buses": len(config.buses),
        "piles": len(config.piles),
    }
    _emit(
        summary,
        as_json,
        f"OK: gateway {config.id} of station {config.station}, "
        f"{len(config.buses)} buses, {len(config.piles)} piles",
    )


# ---------------------------------------------------------------------------------------- write


def register_value(text: str) -> int:
    """A register value from ``1234`` or ``0x04d2``."""
    try:
        value = int(text, 0)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a number (decimal, or hex as 0x...)") from None
    if not 0 <= value <= 0xFFFF:
        raise click.BadParameter(f"{text} is not a register value 0..65535 (0x0000..0xffff)")
    return value


def _confirm_write(unit: int, address: int, values: list[int], pile: str | None, yes: bool) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise click.UsageError("no terminal to confirm the write on; pass --yes to write anyway")
    where = f" on pile {pile}'s bus" if pile else ""
    shown = ", ".join(f"{v} (0x{v:04x})" for v in values)
    last = address + len(values) - 1
    click.confirm(f"Write {shown} to unit {unit}{where}, registers {address}..{last}?", abort=True)


@main.command()
@click.argument("unit", type=click.IntRange(1, 247))
@click.argument("address", type=click.IntRange(0, 65535))
@click.argument("values", nargs=-1, required=True)
@click.option("--pile", help="pick the bus of this pile (needed when UNIT is on several buses)")
@click.option("--yes", "-y", is_flag=True, help="do not ask for confirmation (needed without a terminal)")
@json_option
@connection_options
@click.pass_context
def write(
    ctx: click.Context,
    unit: int,
    address: int,
    values: tuple[str, ...],
    pile: str | None,
    yes: bool,
    as_json: bool,
) -> None:
    """Write holding registers VALUES... from ADDRESS of Modbus device UNIT (function 16).

    Goes through the gateway's bus owner ahead of polls; the gateway logs every write. Values are
    raw 16-bit registers, decimal or 0x hex. Asks first on a terminal.

    Example:

        pilectl write 1 116 2 --pile T1
    """
    words = [register_value(v) for v in values]
    if len(words) > MODBUS_MAX_WRITE:
        raise click.BadParameter(
            f"{len(words)} values; at most {MODBUS_MAX_WRITE} per write", param_hint="VALUES"
        )
    _confirm_write(unit, address, words, pile, yes)
    data = _call(ctx, "/write", {"unit": unit, "address": address, "values": words, "pile": pile})
    last = address + len(words) - 1
    _emit(
        data, as_json, f"wrote {len(words)} registers {address}..{last} of unit {unit} (pile {data['pile']})"
    )


# ---------------------------------------------------------------------------------------- scan


def unit_range(text: str, allowed: range = TCP_UNIT_IDS) -> range:
    """``5`` or ``1-247`` as unit ids within ``allowed`` (1..247 on an RTU line, 1..255 on TCP)."""
    first, _, last = text.partition("-")
    try:
        units = range(int(first), int(last or first) + 1)
    except ValueError:
        raise click.BadParameter(
            f"{text!r}: expected UNIT or FIRST-LAST, e.g. 1-247", param_hint="--units"
        ) from None
    if not units or units.start < allowed.start or units.stop > allowed.stop:
        where = "a TCP host" if allowed == TCP_UNIT_IDS else "an RTU line"
        raise click.BadParameter(
            f"{text!r}: unit ids on {where} are {allowed.start}..{allowed.stop - 1}, first <= last",
            param_hint="--units",
        )
    return units


def _transport(
    device: str | None, host: str | None, port: int, line: tuple[int, int, str, int]
) -> SerialTransport | TcpTransport:
    baudrate, bytesize, parity, stopbits = line
    try:
        if host:
            return TcpTransport(host, port)
        return SerialTransport(str(device), baudrate, bytesize, parity, stopbits)
    except SpecError as exc:
        raise click.BadParameter(str(exc)) from None


async def _scan_line(
    transport: SerialTransport | TcpTransport,
    units: range,
    timeout_s: float,
    deadline_s: float,
    view: ScanView,
) -> None:
    """Scan a line no gateway owns, feeding ``view`` the same lines the gateway's route sends."""
    start = {"kind": "start", "bus": None, "transport": transport.describe()}
    view.show({**start, "first": units.start, "last": units.stop - 1, "timeout_s": timeout_s})

    async def progress(report: UnitReport, probed: int) -> None:
        view.show({"kind": "unit", "probed": probed, "pile": None, **report.as_dict()})

    try:
        async with LineProbe(transport, timeout_s) as probe:
            report = await scan(probe.read, units, shipped_maps(), deadline_s=deadline_s, progress=progress)
    except DriverError as exc:
        view.close()
        raise click.ClickException(exc.message) from None
    view.show({"kind": "done", "bus": None, **report.as_dict()})


def _scan_gateway(ctx: click.Context, body: dict[str, Any], view: ScanView) -> None:
    for item in _lines(ctx, "/scan", body):
        view.show(item)
    view.close()
    if view.done is None:
        raise GatewayUnreachable("the gateway ended the scan without a result")


@main.command("scan")
@click.option(
    "--units",
    "units",
    help="unit ids to probe: N or FIRST-LAST [default: 1-247 on an RTU line, 1-255 on a TCP host]",
)
@click.option(
    "--timeout", "timeout_s", type=click.FloatRange(0.001, 10), help="seconds to wait for each unit"
)
@click.option(
    "--deadline",
    "deadline_s",
    type=click.FloatRange(0.1, 3600),
    default=SCAN_DEADLINE_S,
    show_default=True,
    help="seconds for the whole scan",
)
@click.option("--bus", help="through the gateway: scan this bus (default: its only bus)")
@click.option("--pile", help="through the gateway: scan the bus of this pile")
@click.option("--device", help="no gateway: scan this serial line (the gateway must not be running on it)")
@click.option("--baudrate", type=click.IntRange(1), default=19200, show_default=True)
@click.option("--bytesize", type=click.Choice(["7", "8"]), default="8", show_default=True)
@click.option("--parity", type=click.Choice(["N", "E", "O"]), default="N", show_default=True)
@click.option("--stopbits", type=click.Choice(["1", "2"]), default="1", show_default=True)
@click.option("--host", help="no gateway: scan the units behind this Modbus TCP host")
@click.option("--port", "tcp_port", type=click.IntRange(1, 65535), default=502, show_default=True)
@json_option
@connection_options
@click.pass_context
def scan_command(
    ctx: click.Context,
    units: str | None,
    timeout_s: float | None,
    deadline_s: float,
    bus: str | None,
    pile: str | None,
    device: str | None,
    baudrate: int,
    bytesize: str,
    parity: str,
    stopbits: str,
    host: str | None,
    tcp_port: int,
    as_json: bool,
) -> None:
    """Probe unit ids and show which answer and which shipped register map fits each.

    Through the running gateway's bus owner (it queues the probes with its polls), or, when no
    gateway runs, directly on a serial line (--device) or a Modbus TCP host (--host). Each unit
    gets a short timeout (--timeout, default from the line speed) and the scan a deadline.

    A map with a match rule fits when the rule accepts the unit's identity; a map without one (a
    family whose identity text no source pins down) fits "unconfirmed". A family whose identity
    answers on a station unit (Alfen: 200) shows that unit as its station and its sockets as piles.

    Example:

        pilectl scan --units 1-32
        pilectl scan --device /dev/ttyUSB0 --baudrate 9600 --parity E
        pilectl scan --host 192.168.1.40 --units 255
    """
    if device and host:
        raise click.UsageError("give --device or --host, not both")
    view = ScanView(tty=sys.stderr.isatty())
    if device or host:
        transport = _transport(device, host, tcp_port, (baudrate, int(bytesize), parity, int(stopbits)))
        allowed = unit_ids(transport)
        wanted = unit_range(units, allowed) if units else allowed
        timeout_s = _line_timeout_s(transport, timeout_s)
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # our errors say it, once
        asyncio.run(_scan_line(transport, wanted, timeout_s, deadline_s, view))
    else:
        body: dict[str, Any] = {"deadline_s": deadline_s, "bus": bus, "pile": pile}
        if units:  # else the gateway scans every unit id the bus's transport has
            wanted = unit_range(units)
            body |= {"first": wanted.start, "last": wanted.stop - 1}
        _scan_gateway(ctx, {**body, **({"timeout_s": timeout_s} if timeout_s else {})}, view)
    if view.done is None:
        raise click.ClickException("the scan ended without a result")
    _emit(
        {**view.done, "transport": view.start.get("transport")}, as_json, format_scan(view.start, view.done)
    )


def _line_timeout_s(transport: SerialTransport | TcpTransport, timeout_s: float | None) -> float:
    maps = shipped_maps()
    if timeout_s is None:
        return default_timeout_s(transport, maps)
    if timeout_s <= (shortest_s := min_timeout_s(transport, maps)):
        raise click.BadParameter(
            f"{timeout_s:g} s is not longer than the {shortest_s:.3f} s an identity read takes on this line",
            param_hint="--timeout",
        )
    return timeout_s


# ---------------------------------------------------------------------------------------- tail


@main.command()
@click.option("--pile", help="only this pile")
@click.option("--port", type=click.IntRange(1, 99), help="only this port (with pile statuses)")
@json_option
@connection_options
@click.pass_context
def tail(ctx: click.Context, pile: str | None, port: int | None, as_json: bool) -> None:
    """Follow live telemetry, events and pile states, like tail -f; Ctrl-C to stop.

    With --json, one JSON object per line (kind telemetry, event, status; dropped when this reader
    fell behind and the gateway skipped items).

    Example:

        pilectl tail --pile T1 --port 1
    """
    query = urllib.parse.urlencode({k: v for k, v in (("pile", pile), ("port", port)) if v is not None})
    try:
        for item in _lines(ctx, "/tail" + (f"?{query}" if query else "")):
            _show_tail_item(item, as_json)
    except KeyboardInterrupt:
        return
    raise GatewayUnreachable("the gateway closed the stream")


def _show_tail_item(item: Mapping[str, Any], as_json: bool) -> None:
    if item.get("kind") == "end":
        raise click.ClickException(f"the gateway ended the stream: {item.get('reason')}")
    if item.get("kind") in ("start", "heartbeat"):
        return
    text = json.dumps(item, default=str) if as_json else format_tail_item(item)
    if text is not None:
        click.echo(text)


# ---------------------------------------------------------------------------------------- outbox


@main.command()
@json_option
@connection_options
@click.pass_context
def outbox(ctx: click.Context, as_json: bool) -> None:
    """The outbox: messages and bytes waiting for the broker, the oldest one's age, drops, quarantine.

    Example:

        pilectl outbox
    """
    data = _call(ctx, "/outbox")
    _emit(data, as_json, format_outbox(data))


# ---------------------------------------------------------------------------- register maps


@main.group("map")
def map_group() -> None:
    """Check and show register maps (docs/register-maps.md); no running gateway needed."""


@map_group.command("check")
@click.argument("file", type=click.Path(dir_okay=False))
@json_option
def map_check(file: str, as_json: bool) -> None:
    """Validate a register map file; list every problem and exit 1 on a bad map.

    Example:

        pilectl map check /etc/pilegate/maps/acme.toml
    """
    try:
        regmap = load_map(file)
    except MapError as exc:
        _emit({"ok": False, "file": file, "problems": exc.problems}, as_json, str(exc))
        sys.exit(1)
    rows = map_rows(regmap)
    unconfirmed = [f"{r['section']}.{r['name']}" for r in rows if r["unconfirmed"]]
    summary = {
        "ok": True,
        "file": file,
        "name": regmap.name,
        "registers": len(rows),
        "unconfirmed": unconfirmed,
    }
    text = f"OK: map {regmap.name}, {len(rows)} registers"
    if unconfirmed:
        text += f", {len(unconfirmed)} unconfirmed: {', '.join(unconfirmed)}"
    _emit(summary, as_json, text)


@map_group.command("show")
@click.argument("ref", metavar="NAME|FILE")
@json_option
def map_show(ref: str, as_json: bool) -> None:
    """Print a shipped map (by name) or a map file as a table of registers.

    Example:

        pilectl map show pilegate-sim-v1
    """
    try:
        regmap = get_map(ref)
    except MapError as exc:
        raise click.ClickException(str(exc)) from None
    _emit(map_summary(regmap), as_json, format_map(regmap))


if __name__ == "__main__":
    main()
