"""Loopback HTTP control API of a running simulation (aiohttp): inspect piles, inject faults.

- ``GET /piles`` -> ``{"piles": {id: {"endpoint": {...}, "ports": {"1": snapshot, ...}}}}``
- ``POST /piles/{id}/fault`` with ``{"port": 1, "kind": KIND}`` -> ``{"pile", "port", "kind",
  "snapshot"}``. KIND is a pilegate fault name (``over_temperature``, ``meter_fault``,
  ``contactor_fault``, ``residual_current``, ... :data:`~firmware_sim.device.INJECTABLE`), shown in
  the pile's map's own code or bit; ``silent`` (the pile stops answering) or ``clear``. This is
  how faults are injected into piles of vendor maps, which carry no simulator registers.

Errors are ``{"error": message}``: 400 for a malformed request, 404 for an unknown pile.
"""

from __future__ import annotations

import json

import structlog
from aiohttp import web

from .device import INJECTABLE
from .runner import Simulation
from .server import SimServerError

log = structlog.get_logger(__name__)

FAULT_KINDS: tuple[str, ...] = INJECTABLE
SIMULATION_KEY = web.AppKey("simulation", Simulation)


class ControlRequestError(ValueError):
    """A control request that cannot be acted on; the message names the problem."""


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _simulation(request: web.Request) -> Simulation:
    return request.app[SIMULATION_KEY]


async def list_piles(request: web.Request) -> web.Response:
    sim = _simulation(request)
    piles = {
        pile_id: {
            "endpoint": endpoint.to_json(),
            "ports": {str(p): sim.port_snapshot(pile_id, p) for p in range(1, endpoint.ports + 1)},
        }
        for pile_id, endpoint in sim.endpoints.items()
    }
    return web.json_response({"piles": piles})


async def _fault_request(request: web.Request, ports: int) -> tuple[int, str]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ControlRequestError('body must be a JSON object like {"port": 1, "kind": "silent"}') from None
    if not isinstance(body, dict):
        raise ControlRequestError("body must be a JSON object")
    unknown = sorted(set(body) - {"port", "kind"})
    if unknown:
        raise ControlRequestError(f"unknown fields {unknown}; expected port and kind")
    port, kind = body.get("port", 1), body.get("kind")
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= ports:
        raise ControlRequestError(f"port must be an integer 1..{ports}, got {port!r}")
    if kind not in FAULT_KINDS:
        raise ControlRequestError(f"kind must be one of {sorted(FAULT_KINDS)}, got {kind!r}")
    return port, str(kind)


async def inject_fault(request: web.Request) -> web.Response:
    sim = _simulation(request)
    pile_id = request.match_info["pile_id"]
    endpoint = sim.endpoints.get(pile_id)
    if endpoint is None:
        return _error(404, f"no pile {pile_id!r}; known: {sorted(sim.endpoints)}")
    try:
        port, kind = await _fault_request(request, endpoint.ports)
    except ControlRequestError as exc:
        return _error(400, str(exc))
    sim.inject(pile_id, port, kind)
    log.info("fault via control api", pile=pile_id, port=port, kind=kind)
    snapshot = sim.port_snapshot(pile_id, port)
    return web.json_response({"pile": pile_id, "port": port, "kind": kind, "snapshot": snapshot})


def create_control_app(sim: Simulation) -> web.Application:
    """The control API application for ``sim``."""
    app = web.Application()
    app[SIMULATION_KEY] = sim
    app.router.add_get("/piles", list_piles)
    app.router.add_post("/piles/{pile_id}/fault", inject_fault)
    return app


async def start_control_api(sim: Simulation, port: int) -> tuple[web.AppRunner, int]:
    """Serve the control API on 127.0.0.1:``port`` (0 = ephemeral); returns the runner and port."""
    runner = web.AppRunner(create_control_app(sim), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise SimServerError(f"control API cannot listen on 127.0.0.1:{port}: {exc}") from exc
    bound = runner.addresses[0][1]
    log.info("control api listening", port=bound)
    return runner, int(bound)
