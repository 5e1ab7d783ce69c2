"""The typed keys under which the composition root (:mod:`central.app`) hands its parts to the web
layer. Handlers read ``request.app[KEY]``; nothing is looked up by a string name."""

from __future__ import annotations

from aiohttp import web

from central.adapters.ingest import Ingest
from central.adapters.storage import Store
from central.application.auth import AuthSettings
from central.application.charging import ChargingService
from central.application.orders import OperatorOrders
from central.application.payments import PaymentSettings
from central.web.live import LiveHub

STORE = web.AppKey("store", Store)
SERVICE = web.AppKey("service", ChargingService)
ORDERS = web.AppKey("orders", OperatorOrders)
INGEST = web.AppKey("ingest", Ingest)
AUTH = web.AppKey("auth", AuthSettings)
"""Account settings (token lifetime, login limiter, clock); defaults are installed when absent."""
PAYMENTS = web.AppKey("payments", PaymentSettings)
"""Payment-provider callback secrets; absent: no provider is configured and every callback is refused."""
LIVE = web.AppKey("live", LiveHub)
"""The dashboard's live-update hub (Server-Sent Events of what changed)."""
