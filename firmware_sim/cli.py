"""Command line of the simulator: ``pilegate sim`` runs piles, ``pilegate sim-fault`` injects faults.

The lead registers :data:`sim` and :data:`sim_fault` under the ``pilegate`` group; :data:`main` is a
standalone group with both, for ``python -m firmware_sim.cli``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import click
import structlog

from .config import SimConfig, SimConfigError, load_sim_config, station_sim_config
from .control import FAULT_KINDS
from .runner import start_simulation
from .server import SimServerError

HTTP_TIMEOUT_S = 10.0


def _log_to_stderr() -> None:
    """Keep stdout for the one ready line: structlog prints to stdout unless configured."""
    if not structlog.is_configured():
        structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so readers see either nothing or the whole file."""
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _build_config(
    config_path: Path | None,
    station: Path | None,
    first_port: int,
    time_scale: float | None,
    control_port: int | None,
) -> SimConfig:
    if (config_path is None) == (station is None):
        raise click.UsageError("give exactly one of --config FILE or --station PARAMS.toml")
    if config_path is not None and first_port:
        raise click.UsageError("--first-port applies to --station only")
    if config_path is not None:
        config = load_sim_config(config_path)
    else:
        config = station_sim_config(station or Path(), first_tcp_port=first_port)
    if time_scale is not None:
        config = dataclasses.replace(config, time_scale=time_scale)
    if control_port is not None:
        config = dataclasses.replace(config, control_port=control_port)
    return config


async def _serve(config: SimConfig, ready_file: Path | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    simulation = await start_simulation(config)
    try:
        line = json.dumps(simulation.ready_document())
        if ready_file is not None:
            try:
                write_atomically(ready_file, line + "\n")
            except OSError as exc:
                raise click.ClickException(f"cannot write --ready-file {ready_file}: {exc}") from exc
        click.echo(line)
        sys.stdout.flush()
        await stop.wait()
    finally:
        await simulation.stop()


@click.command("sim")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Simulator TOML (see config/sim.example.toml).",
)
@click.option(
    "--station",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Station parameters TOML: fast piles F1..Fn and trickle piles T1..Tn over TCP.",
)
@click.option(
    "--first-port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="With --station: TCP port of the first pile, the others follow; 0 = ephemeral.",
)
@click.option(
    "--time-scale",
    type=click.FloatRange(min=0, min_open=True),
    help="Simulated seconds per real second (overrides the config).",
)
@click.option(
    "--control-port",
    type=click.IntRange(0, 65535),
    help="Serve the control API on 127.0.0.1:PORT (0 = ephemeral).",
)
@click.option(
    "--ready-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the ready JSON to this file (atomically).",
)
def sim(
    config_path: Path | None,
    station: Path | None,
    first_port: int,
    time_scale: float | None,
    control_port: int | None,
    ready_file: Path | None,
) -> None:  # fmt: skip
    """Run simulated charging piles as real Modbus servers until SIGINT/SIGTERM.

    Once every server listens, prints one JSON line to stdout:
    {"ready": true, "piles": {ID: endpoint}, "control_port": N}. Logs go to stderr.

    Example:

    \b
        pilegate sim --station config/station.toml --time-scale 60 --control-port 8765
        pilegate sim --config config/sim.example.toml --ready-file /tmp/sim.json
    """
    _log_to_stderr()
    try:
        config = _build_config(config_path, station, first_port, time_scale, control_port)
        asyncio.run(_serve(config, ready_file))
    except (SimConfigError, SimServerError) as exc:
        raise click.ClickException(str(exc)) from exc


def _post_json(url: str, body: dict[str, object]) -> dict[str, object]:
    request = urllib.request.Request(  # noqa: S310 - the URL is built from our own http:// prefix
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:  # noqa: S310
            return dict(json.loads(response.read()))
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read()).get("error", exc.reason)
        except (ValueError, AttributeError):
            message = exc.reason
        raise click.ClickException(f"control API refused ({exc.code}): {message}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise click.ClickException(f"cannot reach the simulator control API at {url}: {exc}") from exc


@click.command("sim-fault")
@click.option(
    "--control-port",
    type=click.IntRange(1, 65535),
    required=True,
    help="Port of the simulator's control API (see `pilegate sim --control-port`).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Host of the control API.")
@click.option(
    "--port",
    "port",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Charging port of the pile (1-based).",
)
@click.argument("pile")
@click.argument("kind", type=click.Choice(sorted(FAULT_KINDS)))
def sim_fault(control_port: int, host: str, port: int, pile: str, kind: str) -> None:
    """Inject (or clear) a fault on a simulated pile through the simulator's control API.

    KIND is a fault (over_temperature, meter_fault, contactor_fault, residual_current,
    overcurrent, ...: the port faults and stops charging, its fault shown in the pile's register
    map's own code or bit), silent (the whole pile stops answering Modbus) or clear (clears the
    port's fault and silent).

    Example:

    \b
        pilegate sim-fault --control-port 8765 F1 over_temperature
        pilegate sim-fault --control-port 8765 T2 --port 1 clear
    """
    url = f"http://{host}:{control_port}/piles/{urllib.parse.quote(pile, safe='')}/fault"
    result = _post_json(url, {"port": port, "kind": kind})
    click.echo(json.dumps(result))


@click.group()
def main() -> None:
    """Simulated charging piles (standalone entry; normally run as `pilegate sim`)."""


main.add_command(sim)
main.add_command(sim_fault)

if __name__ == "__main__":
    main()
