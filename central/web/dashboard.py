"""The station dashboard in the browser: the page at ``/``, its static assets, and its live streams.

- ``GET /``: the page (public board; logging in opens the operator or the driver view). Its script,
  styles and chart are hand-written files shipped in the package (``central/web/static``); nothing
  is fetched from elsewhere at run time.
- ``GET /dashboard/static/{file}``: those assets.
- ``POST /dashboard/ticket``: with ``Authorization: Token <t>`` (or ``Bearer``) and an optional
  JSON body ``{"view": "operator" | "driver"}``, a short-lived single-use ticket for the live
  stream. The operator view needs permission level >= 3.
- ``GET /dashboard/stream[?ticket=...]``: Server-Sent Events (see :mod:`central.web.live`); without a
  ticket, the public board's channel only.

Both take ``?station=CODE`` (default: the default station): each station has its own live hub, in
the central instance that runs it; another instance relays both to that one
(:mod:`central.web.peer_streams`).

Every dashboard response carries a strict Content-Security-Policy (scripts and styles only from this
origin, no inline scripts), ``X-Content-Type-Options: nosniff``, no framing and no referrer. The
page reads and changes everything else through the two REST APIs with the logged-in token.
"""

from __future__ import annotations

import json
from pathlib import Path

from aiohttp import web

from central.application.auth import token_hash
from central.web.errors import AUTH_INVALID, USER_STYLE, ApiError, validation_error
from central.web.keys import STATIONS
from central.web.live import OPERATOR, PUBLIC, TICKET_TTL_S, LiveHub, driver_channel
from central.web.middleware import TOKEN_KEY, authenticate_request, station_of
from central.web.peer_streams import PEERS, peer_streams
from central.web.permissions import forbidden
from central.web.station_runtime import StationRuntime

STATIC_DIR = Path(__file__).parent / "static"
STATIC_PREFIX = "/dashboard/static"
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
VIEWS = ("operator", "driver")


CONTENT_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
}
ASSETS_KEY = web.AppKey("dashboard_assets", dict[str, tuple[bytes, str]])


def load_assets() -> dict[str, tuple[bytes, str]]:
    """Every shipped asset's bytes and content type, read once: they are small, and serving from
    memory needs no file I/O (nor a thread) per request."""
    return {
        path.name: (path.read_bytes(), CONTENT_TYPES[path.suffix])
        for path in sorted(STATIC_DIR.iterdir())
        if path.suffix in CONTENT_TYPES
    }


def _asset(request: web.Request, name: str) -> web.Response:
    found = request.app[ASSETS_KEY].get(name)
    if found is None:
        raise web.HTTPNotFound()
    body, content_type = found
    return web.Response(
        body=body, content_type=content_type, charset="utf-8", headers={"Cache-Control": "no-cache"}
    )


async def index(request: web.Request) -> web.StreamResponse:
    """GET /: the dashboard page (revalidated each time, so a new release shows at once)."""
    return _asset(request, "index.html")


async def static(request: web.Request) -> web.StreamResponse:
    """GET /dashboard/static/{name}: one shipped asset."""
    return _asset(request, request.match_info["name"])


async def ticket(request: web.Request) -> web.StreamResponse:
    """POST /dashboard/ticket: a stream ticket for the caller's view."""
    try:
        user = await authenticate_request(request)
        raw = await request.read()
        body = json.loads(raw) if raw else {}
        view = body.get("view") if isinstance(body, dict) else None
        if view is None:
            view = "operator" if user.is_staff else "driver"
        if view not in VIEWS:
            raise validation_error({"view": f"must be one of {' | '.join(VIEWS)}, got {view!r}"})
        if view == "operator" and not user.is_staff:
            raise forbidden("权限不足: 运营视图需要管理员账户 (permission level >= 3)")
    except ApiError as exc:
        return USER_STYLE.render(exc)
    except ValueError:
        return USER_STYLE.render(validation_error({"body": "must be a JSON object"}))
    channels = (OPERATOR,) if view == "operator" else (PUBLIC, driver_channel(user.id))
    try:
        runtime = await station_of(request)
        if runtime.remote:
            return await request.app[PEERS].ticket(request, runtime.code, raw)
        issued = _hub(runtime).issue_ticket(user.id, channels, token_hash(request[TOKEN_KEY]))
    except ApiError as exc:
        return USER_STYLE.render(exc)
    data = {"ticket": issued, "view": view, "expires_in": TICKET_TTL_S, "username": user.username}
    return web.json_response({"success": True, "data": data})


async def stream(request: web.Request) -> web.StreamResponse:
    """GET /dashboard/stream: the live stream of a ticket's channels, or of the public board."""
    try:
        runtime = await station_of(request)
        if runtime.remote:
            return await request.app[PEERS].stream(request, runtime.code)
        hub = _hub(runtime)
    except ApiError as exc:
        return USER_STYLE.render(exc)
    given = request.query.get("ticket")
    if given is None:
        return await hub.serve(request, (PUBLIC,))
    grant = hub.redeem(given)
    if grant is None:
        return USER_STYLE.render(ApiError(401, AUTH_INVALID, "认证无效: 票据无效或已过期"))
    return await hub.serve(request, grant.channels, grant)


async def _secure(request: web.Request, response: web.StreamResponse) -> None:
    if request.path == "/" or request.path.startswith("/dashboard/"):
        response.headers.update(SECURITY_HEADERS)


def _hub(runtime: StationRuntime) -> LiveHub:
    """The live hub of a station this instance runs."""
    if runtime.hub is None:
        raise ApiError(503, "STATION_NOT_RUNNING", "the station has no live hub")
    return runtime.hub


async def _end_streams(app: web.Application) -> None:
    if (peers := app.get(PEERS)) is not None:
        peers.end_streams()
    stations = app.get(STATIONS)
    for runtime in stations.runtimes() if stations is not None else ():
        if runtime.hub is not None:
            runtime.hub.close_streams()


def add_dashboard(app: web.Application) -> None:
    """Register the dashboard's routes; each station's runtime has its live hub (``?station=``)."""
    app.router.add_get("/", index)
    app[ASSETS_KEY] = load_assets()
    app.router.add_get(STATIC_PREFIX + "/{name}", static)
    app.router.add_post("/dashboard/ticket", ticket)
    app.router.add_get("/dashboard/stream", stream)
    app.on_response_prepare.append(_secure)
    app.cleanup_ctx.append(peer_streams)
    app.on_shutdown.append(_end_streams)
