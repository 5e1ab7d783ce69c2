"""Payment-provider callbacks that prove themselves.

A wallet payment (微信 1, 支付宝 2) is money the central never sees, so a driver's word (a
transaction id typed into a request) proves nothing. Such a payment is recorded only when an
operator confirms it or when the provider calls back with a signed message:

* the provider is named by the ``X-Payment-Provider`` header (``wechat`` | ``alipay``) and must
  have a secret configured;
* ``X-Payment-Timestamp`` is the Unix time (seconds) of the call, within ``tolerance_s`` of the
  central's clock either way, so a captured call cannot be replayed later;
* ``X-Payment-Signature`` is the lowercase hex HMAC-SHA256, keyed by that provider's secret, of
  ``timestamp + "." + the raw request body``; it is compared in constant time.

A replay inside the tolerance finds the order already paid by the same transaction and changes
nothing; a transaction id pays one order only (the database refuses a second use).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from central.domain.orders import PROVIDERS, PaymentMethod

DEFAULT_TOLERANCE_S = 300


class CallbackRejected(Exception):
    """A callback that does not prove it comes from a configured provider, now."""


@dataclass(frozen=True)
class PaymentSettings:
    """Provider secrets by payment method (none: every callback is refused) and the replay window."""

    secrets: Mapping[PaymentMethod, bytes] = field(default_factory=dict)
    tolerance_s: int = DEFAULT_TOLERANCE_S
    clock: Callable[[], float] = time.time


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """The hex HMAC-SHA256 a provider sends: over ``timestamp.body``."""
    return hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def verify_callback(
    settings: PaymentSettings, provider: str, timestamp: str, sent: str, body: bytes
) -> PaymentMethod:
    """The payment method of a callback whose signature and timestamp hold, else CallbackRejected."""
    method = PROVIDERS.get(provider)
    secret = settings.secrets.get(method) if method is not None else None
    if method is None or not secret:
        raise CallbackRejected(f"unknown or unconfigured payment provider {provider[:20]!r}")
    if not timestamp.isdigit() or len(timestamp) > 12:
        raise CallbackRejected("X-Payment-Timestamp must be Unix seconds")
    if abs(settings.clock() - int(timestamp)) > settings.tolerance_s:
        raise CallbackRejected("X-Payment-Timestamp is outside the accepted window")
    if not hmac.compare_digest(signature(secret, timestamp, body), sent.lower()):
        raise CallbackRejected("X-Payment-Signature does not match")
    return method
