"""Simulated drivers for the demo: they arrive, change and cancel through the driver API, as people do.

A pool of driver accounts (``demo-car-1`` ... sharing one password) first sends its first wave of
cars, then acts at a steady rate: a driver without a request arrives with a new one (most often), a
waiting driver changes the amount or the mode, or gives up and cancels. Requests that finish end by
themselves at the station; the driver then arrives again later. At most ``caps[mode]`` requests of a
mode are active at once (the demo lets fast cars queue and keeps one slow port free for operator
orders). Every refusal (a full waiting area, a request that started charging in the meantime) is
simply skipped: the next action follows at the same rate.

A traffic serves one station: its requests name it (``station``; the central's default station when
None). With several central instances (``pilegate demo --centrals N``) the drivers are spread over
their URLs, and a driver whose instance does not answer (killed, restarting) turns to the next one,
as a load balancer would send it there.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog

log = structlog.get_logger(__name__)

BATTERY_KWH = 60
FAST_KWH = (10, 25)  # a fast car's request: 20-50 min at 30 kW
SLOW_KWH = (4, 9)  # a slow car's request: 25-55 min at 10 kW
ARRIVE, CHANGE, CANCEL = "arrive", "change", "cancel"
DRIVER_PHONE = "13800000000"  # every simulated driver's (a valid mainland mobile number)
WEIGHTS = {ARRIVE: 6, CHANGE: 2, CANCEL: 1}


@dataclass
class Driver:
    username: str
    home: int = 0  # index of the central URL this driver tries first
    token: str = ""
    request_id: str | None = None
    status: str = ""  # waiting | charging while it has a request
    mode: str = ""  # fast | slow while it has a request


class Unreachable(Exception):
    """No central instance answered the call (each refused the connection or timed out)."""


class DriverTraffic:
    """Drivers acting on the driver API at ``rate_per_min`` actions a minute (real time), on
    ``station`` (None: the default station) through the central instances at ``url``."""

    def __init__(
        self,
        url: str | Sequence[str],
        usernames: list[str],
        password: str,
        rate_per_min: float,
        caps: dict[str, int] | None = None,
        rng: random.Random | None = None,
        station: str | None = None,
    ) -> None:
        self.urls = [u.rstrip("/") for u in ([url] if isinstance(url, str) else url)]
        self.station = station
        self.caps = caps if caps is not None else {"fast": len(usernames), "slow": len(usernames)}
        self.drivers = [Driver(name, n % len(self.urls)) for n, name in enumerate(usernames)]
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
        token = None
        for url in self._urls(driver):
            with contextlib.suppress(Unreachable):
                token = await sign_in(session, url, driver.username, self.password, strict=True)
                break
        if token is None:
            log.warning("demo driver cannot log in", driver=driver.username)
            return
        driver.token = token
        await self._refresh(session, driver)

    async def _refresh(self, session: aiohttp.ClientSession, driver: Driver) -> None:
        data = await self._call(session, driver, "GET", "/api/charging/request/status/")
        if data is None or data.get("current_status") not in ("waiting", "charging"):
            driver.request_id, driver.status, driver.mode = None, "", ""
        else:
            driver.request_id, driver.status = data["request_id"], data["current_status"]
            driver.mode = data["charging_mode"]

    async def _arrive(self, session: aiohttp.ClientSession, driver: Driver, mode: str) -> None:
        body: dict[str, Any] = {
            "charging_mode": mode,
            "requested_amount": self._amount(mode),
            "battery_capacity": BATTERY_KWH,
        }
        if self.station is not None:
            body["station"] = self.station
        data = await self._call(session, driver, "POST", "/api/charging/request/", body)
        if data is not None:
            driver.request_id, driver.status, driver.mode = data["request_id"], data["current_status"], mode
            self.actions[ARRIVE] += 1

    async def _change(self, session: aiohttp.ClientSession, driver: Driver) -> None:
        mode = self.rng.choice([driver.mode, *self._open_modes()])  # a new mode only below its cap
        body = {"charging_mode": mode, "requested_amount": self._amount(mode)}
        path = f"/api/charging/request/{driver.request_id}/"
        if await self._call(session, driver, "PUT", path, body) is not None:
            driver.mode = mode
            self.actions[CHANGE] += 1

    async def _cancel(self, session: aiohttp.ClientSession, driver: Driver) -> None:
        path = f"/api/charging/request/{driver.request_id}/cancel/"
        if await self._call(session, driver, "DELETE", path) is not None:
            driver.request_id, driver.status, driver.mode = None, "", ""
            self.actions[CANCEL] += 1

    def _urls(self, driver: Driver) -> list[str]:
        """The central URLs in the order ``driver`` tries them: its own first."""
        return self.urls[driver.home :] + self.urls[: driver.home]

    async def _call(
        self,
        session: aiohttp.ClientSession,
        driver: Driver,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
    ) -> dict[str, Any] | None:
        """:func:`call` on the first central instance of ``driver``'s that answers (any instance
        serves every station); None when none answers."""
        for url in self._urls(driver):
            with contextlib.suppress(Unreachable):
                return await call(session, method, url + path, body, driver.token, strict=True)
        return None


async def call(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    body: dict[str, Any] | None = None,
    token: str | None = None,
    *,
    strict: bool = False,
) -> dict[str, Any] | None:
    """The ``data`` of a successful driver API answer; None for a refusal, or when the central is
    away (``strict``: then :class:`Unreachable` instead, so another instance can be tried)."""
    headers = {"Authorization": f"Token {token}"} if token else {}
    try:
        async with session.request(method, url, json=body, headers=headers) as resp:
            if resp.status >= 500 and strict:  # a stopping instance; another may answer
                raise Unreachable(f"{url} answered {resp.status}")
            if resp.status < 300:
                data = (await resp.json()).get("data")
                return dict(data) if isinstance(data, dict) else {}
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        if strict:
            raise Unreachable(f"{url}: {exc}") from exc
    except ValueError:
        pass
    return None


async def sign_in(
    session: aiohttp.ClientSession, url: str, username: str, password: str, *, strict: bool = False
) -> str | None:
    """A token of the driver ``username``: logged in, or registered now when it does not exist yet
    (``strict``: :class:`Unreachable` when the central at ``url`` is away). Login first: the
    central counts every registration attempt from an address, taken names too."""
    body = {
        "username": username,
        "password": password,
        "email": f"{username}@example.invalid",
        "phone": DRIVER_PHONE,
    }
    data = await call(session, "POST", f"{url}/api/auth/login/", body, strict=strict)
    if data is None:
        data = await call(session, "POST", f"{url}/api/auth/register/", body, strict=strict)
    return str(data["token"]) if data is not None else None
