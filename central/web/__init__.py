"""The central service's REST surface: the driver API, operator endpoints in the same style, the
OpenAPI document, and the auth / error middlewares other APIs reuse.

The application factory calls :func:`add_user_api` before the app starts. App keys read:

- the store, :class:`central.adapters.storage.Store`, opened (with the central migrations) before
  the first request: ``app[central.web.keys.STORE]``.
- the charging service, :class:`central.application.charging.ChargingService` (charging routes,
  parameters, the station time zone): ``app[central.web.keys.SERVICE]``.
- ``app[central.web.keys.AUTH]`` (optional): :class:`central.application.auth.AuthSettings` (token
  lifetime, login limiter, clock); when absent the defaults are installed (tokens live 7 days).
- ``app["timezone"]`` (optional): IANA zone name used when there is no service (default
  Asia/Shanghai).

Another API (the operator platform API) adds its routes with
:func:`central.web.openapi.register_routes` and its own :class:`central.web.errors.ApiStyle`; the
middlewares and the OpenAPI document then cover it too.
"""

from __future__ import annotations

from aiohttp import web

from central.web.openapi import OPENAPI_SPEC, register_routes
from central.web.operator_api import OPERATOR_ROUTES
from central.web.user_api import USER_ROUTES

__all__ = ["add_user_api", "register_routes"]


def add_user_api(app: web.Application) -> None:
    """Register the driver API, its operator endpoints, /api/openapi.json and the middlewares.

    Call before the app starts. See :mod:`central.web.middleware` for the app keys handlers read.
    """
    register_routes(app, [*USER_ROUTES, *OPERATOR_ROUTES, OPENAPI_SPEC])
