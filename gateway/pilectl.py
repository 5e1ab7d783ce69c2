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

import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import click

from gateway.config import GATEWAY_KEYS, ConfigError, GatewayConfig, load_config
from gateway.control_token import TokenFileError, read_token
from gateway.mapview import format_map, map_rows, map_summary
from protocols.registers import MapError, PortState, get_map, load_map

DEFAULT_URL = "http://127.0.0.1:8470"
DEFAULT_TOKEN_FILE = Path(GATEWAY_KEYS["data_dir"][0]) / "control.token"


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


def _call(ctx: click.Context, path: str, body: dict[str, Any] | None = None) -> Any:
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
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 (an http URL)
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        detail = json.loads(exc.read() or b"{}").get("error", exc.reason)
        if exc.code == 401:
            detail = f"the token from {source} is not this gateway's"
        raise click.ClickException(f"gateway refused: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise GatewayUnreachable(f"cannot reach the gateway at {url}: {exc}") from None


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
        f"dropped {ob.get('dropped', ob.get('dropped_total', 0))}",
        "",
        f"{'PILE':<8} {'BUS':<12} {'UNIT':>4} {'STATE':<11} {'LAST POLL':>9} "
        f"{'LATENCY':>8} {'TIMEOUTS':>8} {'ERRORS':>6}  LAST ERROR",
    ]
    now_ms = time.time() * 1000
    for name, bus in data["buses"].items():
        for pile_id, dev in bus.get("devices", {}).items():
            pile = data["piles"].get(pile_id, {})
            latency, last_ok = dev.get("last_latency_s"), dev.get("last_ok_ms")
            counters = dev.get("counters", {})
            error = (
                (dev.get("last_error") or {}).get("message", "") if pile.get("state") == "comm_fault" else ""
            )
            lines.append(
                f"{pile_id:<8} {name:<12} {dev.get('unit', ''):>4} "
                f"{pile.get('state') or 'unknown':<11} "
                f"{(f'{(now_ms - last_ok) / 1000:.1f}s ago' if last_ok else 'never'):>9} "
                f"{(f'{latency * 1000:.1f}ms' if latency else '-'):>8} "
                f"{counters.get('timeouts', 0):>8} {counters.get('errors', 0):>6}  {error}"
            )
    return "\n".join(lines)


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
    from drivers.plan import compile_read_plan, format_plan

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


@main.command()
@click.argument("unit", type=click.IntRange(1, 247))
@click.argument("address", type=click.IntRange(0, 65535))
@click.argument("count", type=click.IntRange(1, 125))
@click.option("--pile", help="pick the bus of this pile (needed when UNIT is on several buses)")
@json_option
@connection_options
@click.pass_context
def read(ctx: click.Context, unit: int, address: int, count: int, pile: str | None, as_json: bool) -> None:
    """Read COUNT holding registers from ADDRESS of Modbus device UNIT.

    Example:

        pilectl read 1 100 11 --pile F1
    """
    data = _call(ctx, "/read", {"unit": unit, "address": address, "count": count, "pile": pile})
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
