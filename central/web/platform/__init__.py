"""The operator platform API: stations, piles, ports, users, roles, addresses, notifications and
orders, over the same data as the driver API."""

from __future__ import annotations

from aiohttp import web

from central.web.openapi import register_routes
from central.web.platform import accounts, orders, stations


def add_operator_platform_api(app: web.Application) -> None:
    """Register every operator platform route (call after ``add_user_api``)."""
    register_routes(app, [*stations.ROUTES, *accounts.ROUTES, *orders.ROUTES])
