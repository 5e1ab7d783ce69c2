"""The error boundary and the authentication of every API route.

Access is a table, not code: each route registered through :func:`central.web.openapi.register_routes`
records a :class:`RoutePolicy` (access level + the API style that renders its errors); any other path
under a prefix of :data:`PREFIX_POLICIES` gets that prefix's policy (deny by default under ``/api/``);
paths outside every prefix (metrics, dashboard) pass through untouched. The rules themselves are
:mod:`central.web.permissions`.

Two middlewares: :func:`error_middleware` (outer) renders every exception of a policed request
through :func:`central.web.errors.api_error_for`; :func:`auth_middleware` (inner) reads
``Authorization: Token <t>`` or ``Bearer <t>`` and stores the caller under :data:`USER_KEY`.

App keys read (set by the composition root, see :mod:`central.web.keys`): the store
(:data:`~central.web.keys.STORE`), the stations and their charging services
(:data:`~central.web.keys.STATIONS`), the account settings (:data:`~central.web.keys.AUTH`, else
:func:`install_middlewares` installs defaults) and ``app["timezone"]`` (IANA name, used when no
station runs).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import zoneinfo
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.web_urldispatcher import AbstractRoute

from central.adapters.storage import Store
from central.adapters.users import verify_token
from central.application.auth import AuthSettings, AuthUser, InvalidToken
from central.application.charging import ChargingService
from central.web.errors import (
    AUTH_INVALID,
    AUTH_REQUIRED,
    PLATFORM_STYLE,
    USER_STYLE,
    ApiError,
    ApiStyle,
    api_error_for,
)
from central.web.keys import AUTH, STATIONS, STORE
from central.web.permissions import Access, check_access
from central.web.station_runtime import StationRuntime

T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
DEFAULT_TIMEZONE = "Asia/Shanghai"


@dataclass(frozen=True)
class RoutePolicy:
    """Access rule and error style of one route."""

    access: Access
    style: ApiStyle


_PLATFORM_PREFIXES = (
    "/api/ChargingStations",
    "/api/ChargingPiles",
    "/api/ChargingPorts",
    "/api/Users",
    "/api/UserRoles",
    "/api/UserAddresses",
    "/api/UserNotifications",
    "/api/Orders",
)
PREFIX_POLICIES: tuple[tuple[str, RoutePolicy], ...] = (
    *((prefix, RoutePolicy(Access.USER, PLATFORM_STYLE)) for prefix in _PLATFORM_PREFIXES),
    ("/api/", RoutePolicy(Access.USER, USER_STYLE)),
)
"""Policies of paths no registered route matched (404/405 bodies), longest prefix first."""

POLICIES_KEY = web.AppKey("pilegate_route_policies", dict[AbstractRoute, RoutePolicy])
USER_KEY = web.RequestKey("pilegate_user", AuthUser)
TOKEN_KEY = web.RequestKey("pilegate_token", str)
_INSTALLED_KEY = web.AppKey("pilegate_middlewares_installed", bool)
HASHER_KEY = web.AppKey("pilegate_password_hasher", ThreadPoolExecutor)
HASH_THREADS = 2  # scrypt takes ~60 ms and 16 MiB: a small pool keeps logins off the loop, bounded
_SCHEMES = ("token", "bearer")


def policy_for(request: web.Request) -> RoutePolicy | None:
    """The policy of the route a request matched, else of its path prefix, else None (not an API)."""
    route = request.match_info.route
    policies = request.app.get(POLICIES_KEY, {})
    if route in policies:
        return policies[route]
    for prefix, policy in PREFIX_POLICIES:
        if request.path.startswith(prefix):
            return policy
    return None


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render every error of a policed request in its API's style; never leak a stack trace."""
    policy = policy_for(request)
    if policy is None:
        return await handler(request)
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return policy.style.render(api_error_for(exc))
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        return policy.style.render(api_error_for(exc))


def bearer_token(request: web.Request) -> str:
    """The token of ``Authorization: Token <t>`` / ``Bearer <t>``; ApiError 401 if absent or malformed."""
    header = request.headers.get("Authorization", "").strip()
    if not header:
        raise ApiError(401, AUTH_REQUIRED, "需要认证: 请提供 Authorization: Token <token>")
    scheme, _, token = header.partition(" ")
    if scheme.lower() not in _SCHEMES or not token.strip():
        raise ApiError(401, AUTH_INVALID, "认证无效: Authorization 应为 'Token <token>' 或 'Bearer <token>'")
    return token.strip()


async def authenticate_request(request: web.Request) -> AuthUser:
    """Verify the request's token and remember the caller on the request."""
    token = bearer_token(request)
    settings = auth_settings(request.app)
    now = settings.clock()
    try:
        user = await store_of(request).read(lambda db: verify_token(db, token, now=now))
    except InvalidToken as exc:
        raise ApiError(401, AUTH_INVALID, f"认证无效: {exc}") from exc
    request[USER_KEY] = user
    request[TOKEN_KEY] = token
    return user


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Enforce the route's access level; unmatched paths fall through to their 404/405."""
    policy = policy_for(request)
    if policy is None or policy.access is Access.PUBLIC or request.match_info.http_exception is not None:
        return await handler(request)
    check_access(policy.access, await authenticate_request(request))
    return await handler(request)


async def require_metrics_reader(request: web.Request, metrics_token: str | None) -> None:
    """Let a request read ``/metrics`` if it bears the configured metrics token or a staff token;
    else raise 401 (no or unknown token) or 403 (a driver's token), as plain HTTP errors since
    ``/metrics`` is outside both APIs."""
    scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() not in _SCHEMES or not token:
        raise web.HTTPUnauthorized(
            text="a bearer token is required\n", headers={"WWW-Authenticate": "Bearer"}
        )
    if metrics_token is not None and hmac.compare_digest(token.encode(), metrics_token.encode()):
        return
    try:
        user = await authenticate_request(request)
    except ApiError:
        raise web.HTTPUnauthorized(
            text="the token is unknown or expired\n", headers={"WWW-Authenticate": "Bearer"}
        ) from None
    if not user.is_staff:
        raise web.HTTPForbidden(text="metrics are for operators\n")


def install_middlewares(app: web.Application) -> None:
    """Add the error and auth middlewares once, and default auth settings if the app has none."""
    if app.get(_INSTALLED_KEY):
        return
    app[_INSTALLED_KEY] = True
    app.middlewares.extend([error_middleware, auth_middleware])
    app.setdefault(POLICIES_KEY, {})
    app[HASHER_KEY] = ThreadPoolExecutor(HASH_THREADS, thread_name_prefix="password-hash")
    app.on_cleanup.append(_stop_hasher)
    app.setdefault(AUTH, AuthSettings())


async def _stop_hasher(app: web.Application) -> None:
    app[HASHER_KEY].shutdown(wait=True)


async def off_loop(request: web.Request, fn: Callable[..., T], *args: Any) -> T:
    """Run a slow pure function (password hashing) on the app's hashing threads."""
    return await asyncio.get_running_loop().run_in_executor(request.app[HASHER_KEY], fn, *args)


# --- what handlers read ------------------------------------------------------------------------


def current_user(request: web.Request) -> AuthUser:
    """The caller (set by :func:`auth_middleware`)."""
    if USER_KEY not in request:
        raise ApiError(401, AUTH_REQUIRED)
    return request[USER_KEY]


def store_of(request: web.Request) -> Store:
    """The store the composition root opened."""
    store = request.app.get(STORE)
    if store is None:
        raise RuntimeError("the application has no store")
    return store


def runtime_of(request: web.Request, code: str | None = None) -> StationRuntime:
    """The runtime of the request's station: ``code`` (a body's ``station``), else ``?station=``,
    else the default station; 404 for a code no station has, 503 for one not running here."""
    stations = request.app.get(STATIONS)
    if stations is None:
        raise RuntimeError("the application runs no stations")
    return stations.resolve(request, code)


def service_of(request: web.Request, code: str | None = None) -> ChargingService:
    """The charging service of the request's station (see :func:`runtime_of`)."""
    return runtime_of(request, code).service


async def station_of(request: web.Request, code: str | None = None) -> StationRuntime:
    """The request's station as :func:`runtime_of` names it, wherever it runs: its runtime here, or
    a current read view of a station another central owns (whose ``actions`` forward changes);
    404 for a code no station has, 503 for a station that runs nowhere."""
    stations = request.app.get(STATIONS)
    if stations is None:
        raise RuntimeError("the application runs no stations")
    return await stations.find_for(request, code)


def auth_settings(app: web.Application) -> AuthSettings:
    """The app's account settings (installed by :func:`install_middlewares`)."""
    return app[AUTH]


def client_address(request: web.Request) -> str | None:
    """The client's IP address: the peer, or when the peer is a trusted reverse proxy the last
    ``X-Forwarded-For`` entry that is not one (earlier entries are the client's own claims)."""
    peer = request.remote
    trusted = auth_settings(request.app).trusted_proxies
    if not trusted or peer is None or not _is_trusted(peer, trusted):
        return peer
    hops = [
        hop.strip() for header in request.headers.getall("X-Forwarded-For", []) for hop in header.split(",")
    ]
    for hop in reversed(hops):
        if not _is_trusted(hop, trusted):
            return hop if _is_address(hop) else peer
    return peer


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _is_trusted(text: str, trusted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> bool:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    return any(address in network for network in trusted)


def station_zone(request: web.Request, code: str | None = None) -> zoneinfo.ZoneInfo:
    """The time zone of the request's station (``code``, else ``?station=``, else the default
    station): its service's parameters when it runs here (or its read view's), else the default
    station's, else
    ``app["timezone"]``, else Asia/Shanghai. Never an error: it only formats times."""
    name = None
    stations = request.app.get(STATIONS)
    if stations is not None:
        wanted = code or request.query.get("station") or stations.default
        runtime = stations.running.get(wanted) or stations.viewed(wanted)
        runtime = runtime or stations.running.get(stations.default) or stations.viewed(stations.default)
        if runtime is not None:
            name = runtime.service.parameters().get("timezone")
    name = name or request.app.get("timezone") or DEFAULT_TIMEZONE
    return zoneinfo.ZoneInfo(str(name))
