"""Logging in with a password, shared by both APIs' login routes: throttled per (account, client
address) and per client address with growing delays, the password checked off the event loop, a
token issued on success."""

from __future__ import annotations

from aiohttp import web

from central.adapters import users
from central.application import auth
from central.web.middleware import auth_settings, client_address, off_loop, store_of


async def login_with_password(
    request: web.Request, username: str, password: str
) -> tuple[auth.AuthUser, str]:
    """Throttle, verify the password off the loop, then stamp the login and issue a token."""
    settings, store = auth_settings(request.app), store_of(request)
    address = client_address(request)
    settings.limiter.check(username, address)
    record = await store.read(lambda db: users.find_login(db, username))
    try:
        await off_loop(request, auth.check_login, record, password)
    except auth.InvalidCredentials:
        settings.limiter.record_failure(username, address)
        raise
    assert record is not None
    settings.limiter.record_success(username, address)
    now = settings.clock()
    return await store.write(lambda db: users.start_session(db, record, now=now, ttl=settings.token_ttl))
