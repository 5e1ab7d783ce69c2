"""Simulated drivers for the demo: they arrive, change and cancel through the driver API, as people do.

A pool of driver accounts (``demo-car-1`` ... sharing one password) first sends its first wave of
cars, then acts at a steady rate: a driver without a request arrives with a new one (most often), a
waiting driver changes the amount or the mode, or gives up and cancels. Requests that finish end by
themselves at the station; the driver then arrives again later. At most ``caps[mode]`` requests of a
mode are active at once (the demo lets fast cars queue and keeps one slow port free for operator
orders). Every refusal (a full waiting area, a request that started charging in the meantime) is
simply skipped: the next action follows at the same rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog

log = structlog.get_logger(__name__)

BATTERY_KWH = 60
FAST_KWH = (10, 25)  # a fast car's request: 20-50 min at 30 kW
SLOW_KWH = (4, 9)  # a slow car's request: 25-55 min at 10 kW
ARRIVE, CHANGE, CANCEL = "arrive", "change", "cancel"
WEIGHTS = {ARRIVE: 6, CHANGE: 2, CANCEL: 1}


@dataclass
class Driver:
    username: str
    token: str = ""
    request_id: str | None = None
    status: str = ""  # waiting | charging while it has a request
    mode: str = ""  # fast | slow while it has a request


class DriverTraffic:
    """Drivers acting on the driver API at ``rate_per_min`` actions a minute (real time)."""

    def __init__(
        self,
        url: str,
        usernames: list[str],
        password: str,
        rate_per_min: float,
        caps: dict[str, int] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.caps = caps if caps is not None else {"fast": len(usernames), "slow": len(usernames)}
        self.drivers = [Driver(name) for name in usernames]
        self.password = password
        self.rate_per_min = rate_per_min
        self.rng = rng or random.Random()
        self.actions: dict[str, int] = {ARRIVE: 0, CHANGE: 0, CANCEL: 0}

    async def run(self, first_wave: dict[str, int]) -> None:
        """Log every driver in, send ``first_wave`` cars per mode (``{"fast": 2, "slow": 2}``, within
        the caps), then act at the steady rate until cancelled."""
        async with aiohttp.ClientSession() as session:
            for driver in self.drivers:
                await self._login(session, driver)
            idle = iter([d for d in self.drivers if d.token and d.request_id is None])
            for mode, cars in first_wave.items():
                room = max(0, min(cars, self.caps[mode] - self._active(mode)))
                for driver in [d for _, d in zip(range(room), idle, strict=False)]:
                    await self._arrive(session, driver, mode)
            if self.rate_per_min <= 0:
                return
            while True:
                await asyncio.sleep(self.rng.expovariate(self.rate_per_min / 60))
                await self.step(session)

    async def step(self, session: aiohttp.ClientSession) -> None:
        """One action of one driver, picked among those possible now."""
        for driver in self.drivers:
            if driver.request_id is not None:
                await self._refresh(session, driver)
        ready = [d for d in self.drivers if d.token]
        idle = [d for d in ready if d.request_id is None] if self._open_modes() else []
        waiting = [d for d in ready if d.status == "waiting"]
        choices = {ARRIVE: idle, CHANGE: waiting, CANCEL: waiting}
        possible = [action for action, drivers in choices.items() if drivers]
        if not possible:
            return
        action = self.rng.choices(possible, [WEIGHTS[a] for a in possible])[0]
        driver = self.rng.choice(choices[action])
        if action == ARRIVE:
            await self._arrive(session, driver, self.rng.choice(self._open_modes()))
        elif action == CHANGE:
            await self._change(session, driver)
        else:
            await self._cancel(session, driver)

    def _active(self, mode: str) -> int:
        return sum(d.request_id is not None and d.mode == mode for d in self.drivers)

    def _open_modes(self) -> list[str]:
        """The modes below their cap of active requests."""
        return [mode for mode, cap in self.caps.items() if self._active(mode) < cap]

    def _amount(self, mode: str) -> int:
        return self.rng.randint(*(FAST_KWH if mode == "fast" else SLOW_KWH))

    async def _login(self, session: aiohttp.ClientSession, driver: Driver) -> None:
        """Sign the driver in and resume its request from an earlier run, if any."""
        token = await sign_in(session, self.url, driver.username, self.password)
        if token is None:
            log.warning("demo driver cannot log in", driver=driver.username)
            return
        driver.token = token
        await self._refresh(session, driver)

    async def _refresh(self, session: aiohttp.ClientSession, driver: Driver) -> None:
        data = await self._call(session, "GET", "/api/charging/request/status/", token=driver.token)
        if data is None or data.get("current_status") not in ("waiting", "charging"):
            driver.request_id, driver.status, driver.mode = None, "", ""
        else:
            driver.request_id, driver.status = data["request_id"], data["current_status"]
            driver.mode = data["charging_mode"]

    async def _arrive(self, session: aiohttp.ClientSession, driver: Driver, mode: str) -> None:
        body = {
            "charging_mode": mode,
            "requested_amount": self._amount(mode),
            "battery_capacity": BATTERY_KWH,
        }
        data = await self._call(session, "POST", "/api/charging/request/", body, driver.token)
        if data is not None:
            driver.request_id, driver.status, driver.mode = data["request_id"], data["current_status"], mode
            self.actions[ARRIVE] += 1

    async def _change(self, session: aiohttp.ClientSession, driver: Driver) -> None:
        mode = self.rng.choice([driver.mode, *self._open_modes()])  # a new mode only below its cap
        body = {"charging_mode": mode, "requested_amount": self._amount(mode)}
        path = f"/api/charging/request/{driver.request_id}/"
        if await self._call(session, "PUT", path, body, driver.token) is not None:
            driver.mode = mode
            self.actions[CHANGE] += 1

    async def _cancel(self, session: aiohttp.ClientSession, driver: Driver) -> None:
        path = f"/api/charging/request/{driver.request_id}/cancel/"
        if await self._call(session, "DELETE", path, token=driver.token) is not None:
            driver.request_id, driver.status, driver.mode = None, "", ""
            self.actions[CANCEL] += 1

    async def _call(
        self,
        session: aiohttp.ClientSession,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        token: str | None = None,
    ) -> dict[str, Any] | None:
        return await call(session, method, self.url + path, body, token)


async def call(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    body: dict[str, Any] | None = None,
    token: str | None = None,
) -> dict[str, Any] | None:
    """The ``data`` of a successful driver API answer; None for a refusal or when the central is away."""
    headers = {"Authorization": f"Token {token}"} if token else {}
    with contextlib.suppress(aiohttp.ClientError, OSError, ValueError, TimeoutError):
        async with session.request(method, url, json=body, headers=headers) as resp:
            if resp.status < 300:
                data = (await resp.json()).get("data")
                return dict(data) if isinstance(data, dict) else {}
    return None


async def sign_in(session: aiohttp.ClientSession, url: str, username: str, password: str) -> str | None:
    """A token of the driver ``username``: registered now, or logged in when it exists already."""
    body = {
        "username": username,
        "password": password,
        "email": f"{username}@example.invalid",
        "phone": "13800000000",
    }
    data = await call(session, "POST", f"{url}/api/auth/register/", body)
    if data is None:
        data = await call(session, "POST", f"{url}/api/auth/login/", body)
    return str(data["token"]) if data is not None else None
