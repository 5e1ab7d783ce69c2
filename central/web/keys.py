"""The typed keys under which the composition root (:mod:`central.app`) hands its parts to the web
layer. Handlers read ``request.app[KEY]``; nothing is looked up by a string name."""

from __future__ import annotations

from aiohttp import web

from central.adapters.storage import Store
from central.application.auth import AuthSettings
from central.application.payments import PaymentSettings
from central.web.station_runtime import Stations

STORE = web.AppKey("store", Store)
STATIONS = web.AppKey("stations", Stations)
"""The stations this central runs (each with its service, operator orders, ingest and live hub);
handlers find a request's station with ``Stations.resolve`` (see :mod:`central.web.station_runtime`)."""
AUTH = web.AppKey("auth", AuthSettings)
"""Account settings (token lifetime, login limiter, clock); defaults are installed when absent."""
PAYMENTS = web.AppKey("payments", PaymentSettings)
"""Payment-provider callback secrets; absent: no provider is configured and every callback is refused."""
