"""The station dashboard in a real headless browser (Playwright driving Debian's chromium) against a
real station: Mosquitto, simulated piles, a gateway and the central, as processes.

One station and one browser for the module; each scenario opens its own pages. The pages must do
everything through what the central serves: login, the live stream, and the REST actions. Polls
with deadlines (``expect``), never sleeps. Station time runs 120x: a fast pile (30 kW) charges 1 kWh
in one second, a slow one (10 kW) in three. With ``DASHBOARD_SCREENSHOTS=<dir>`` the scenarios also
save screenshots of what they see (operator, driver, phone width) there.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest

from pilegate.broker import MosquittoBroker, free_port
from tests.e2e.harness import (
    Api,
    CentralProcess,
    GatewaySettings,
    start_central,
    start_gateway,
    start_sim,
    wait_until,
)

try:
    from playwright.sync_api import Browser, Page, expect, sync_playwright

    HAVE_PLAYWRIGHT = True
except ImportError:  # the test extra installs it; without it the module skips (fails in CI)
    HAVE_PLAYWRIGHT = False

pytestmark = pytest.mark.e2e
T = TypeVar("T")
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCALE = 120.0
ADMIN_PASSWORD = "admin-pw-dash-1"
DRIVER_PASSWORD = "secret-pw-1"
WAIT_MS = 20_000
SHOTS = os.environ.get("DASHBOARD_SCREENSHOTS")


def _require_browser() -> None:
    missing = [
        what for what, ok in (("chromium", CHROMIUM.exists()), ("playwright", HAVE_PLAYWRIGHT)) if not ok
    ]
    if missing:
        reason = f"{' and '.join(missing)} not installed (scripts/system-deps; pip install -e '.[test]')"
        if os.environ.get("CI"):
            pytest.fail(f"the dashboard's browser tests must run in CI: {reason}")
        pytest.skip(reason)


class BrowserThread:
    """One chromium driven through Playwright's sync API on a thread of its own: the sync API runs an
    event loop on the thread that starts it, and the test's own asyncio fixtures need the main one."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="browser")
        self._playwright = self.run(lambda: sync_playwright().start())
        self.chromium: Browser = self.run(
            lambda: self._playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        )

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the browser's thread and return (or raise) its outcome."""
        return self._pool.submit(fn, *args).result()

    def close(self) -> None:
        try:
            self.run(self.chromium.close)
            self.run(self._playwright.stop)
        finally:
            self._pool.shutdown(wait=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[BrowserThread]:
    _require_browser()
    thread = BrowserThread()
    try:
        yield thread
    finally:
        thread.close()


@pytest.fixture(scope="module")
def station(tmp_path_factory: pytest.TempPathFactory, browser: BrowserThread) -> Iterator[dict[str, Any]]:
    workdir = tmp_path_factory.mktemp("dashboard")
    broker = MosquittoBroker(free_port(), workdir / "mosquitto")
    broker.start()
    sim = start_sim(workdir, fast=1, trickle=1, time_scale=SCALE)
    gateway = start_gateway(workdir, sim.piles, broker.port, GatewaySettings(station="s1", poll_period_s=0.5))
    central = start_central(
        workdir, broker.port, time_scale=SCALE, fast=1, trickle=1, admin_password=ADMIN_PASSWORD
    )
    parts: dict[str, Any] = {"central": central, "dir": workdir}
    try:
        probe = Api(central.url).register("probe")
        wait_until(lambda: piles_normal(probe, {"F1", "T1"}), 30, "both piles online", central.proc)
        yield parts
    finally:
        parts["central"].proc.stop()
        gateway.proc.stop()
        sim.proc.stop()
        broker.stop()


def piles_normal(api: Api, piles: set[str]) -> bool:
    code, body = api.call("GET", "/api/charging/piles/status/")
    entries = body["data"]["fast_piles"] + body["data"]["slow_piles"] if code == 200 else []
    return {p["pile_id"] for p in entries if p["status"] == "normal"} >= piles


# --- the scenarios, each run on the browser's thread ------------------------------------------------


def test_the_public_board_shows_every_pile_without_login(
    browser: BrowserThread, station: dict[str, Any]
) -> None:
    browser.run(_the_public_board_shows_every_pile_without_login, browser.chromium, station)


def test_an_operator_watches_a_piles_power_change(browser: BrowserThread, station: dict[str, Any]) -> None:
    browser.run(_an_operator_watches_a_piles_power_change, browser.chromium, station)


def test_a_driver_submits_and_watches_the_request_queue_charge_and_bill(
    browser: BrowserThread, station: dict[str, Any]
) -> None:
    browser.run(_a_driver_submits_and_watches_the_request_queue_charge_and_bill, browser.chromium, station)


def test_taking_a_pile_out_of_service_requeues_the_drivers_car(
    browser: BrowserThread, station: dict[str, Any]
) -> None:
    browser.run(_taking_a_pile_out_of_service_requeues_the_drivers_car, browser.chromium, station)


def test_a_page_signs_out_when_an_administrator_resets_the_password(
    browser: BrowserThread, station: dict[str, Any]
) -> None:
    browser.run(_a_page_signs_out_when_an_administrator_resets_the_password, browser.chromium, station)


def test_the_page_reconnects_after_the_central_restarts(
    browser: BrowserThread, station: dict[str, Any]
) -> None:
    browser.run(_the_page_reconnects_after_the_central_restarts, browser.chromium, station)


class Watched:
    """A page with its console errors and uncaught exceptions collected (there must be none)."""

    def __init__(self, browser: Browser, url: str, **context: Any) -> None:
        self.context = browser.new_context(**context)
        self.page: Page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on("console", lambda msg: self.errors.append(msg.text) if msg.type == "error" else None)
        self.page.goto(url)

    def login(self, username: str, password: str) -> Page:
        page = self.page
        page.fill("#login-user", username)
        page.fill("#login-pass", password)
        page.click("#login-submit")
        expect(page.locator("#who-name")).to_have_text(username, timeout=WAIT_MS)
        expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=WAIT_MS)
        return page

    def shot(self, name: str) -> None:
        if SHOTS:
            Path(SHOTS).mkdir(parents=True, exist_ok=True)
            # bytes written here: a path would have Playwright write on a thread of its own
            (Path(SHOTS) / name).write_bytes(self.page.screenshot(full_page=True))

    def close(self, allowed: str | None = None) -> None:
        self.context.close()
        unexpected = [e for e in self.errors if allowed is None or not re.search(allowed, e)]
        assert not unexpected, unexpected


def driver(central: CentralProcess, name: str) -> Api:
    return Api(central.url).register(name, DRIVER_PASSWORD)


def _the_public_board_shows_every_pile_without_login(browser: Browser, station: dict[str, Any]) -> None:
    central: CentralProcess = station["central"]
    board = Watched(browser, central.url, viewport={"width": 390, "height": 844}, device_scale_factor=2)
    page = board.page
    expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=WAIT_MS)
    expect(page.locator("#point-F1")).to_have_attribute("data-status", "normal", timeout=WAIT_MS)
    expect(page.locator("#point-T1")).to_be_visible()
    expect(page.locator("#operator")).to_be_hidden()
    expect(page.locator("#driver")).to_be_hidden()
    headers = page.request.get(central.url + "/").headers
    assert "script-src 'self'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    board.close()


def _an_operator_watches_a_piles_power_change(browser: Browser, station: dict[str, Any]) -> None:
    central: CentralProcess = station["central"]
    operator = Watched(browser, central.url, viewport={"width": 1280, "height": 900})
    page = operator.login("admin", ADMIN_PASSWORD)
    expect(page.locator("#operator")).to_be_visible()
    kw = page.locator("#port-F1-1 .kw")
    expect(kw).to_have_text("0.00", timeout=WAIT_MS)
    car = driver(central, "watched")
    code, body = car.call("POST", "/api/charging/request/", {"charging_mode": "fast", "requested_amount": 20})
    assert code == 201, body
    expect(kw).to_have_text(re.compile(r"^[1-9]\d*\.\d\d$"), timeout=WAIT_MS)
    expect(page.locator("#port-F1-1 .session")).to_have_text(
        re.compile(r"^(?!0\.00)\d+\.\d\d$"), timeout=WAIT_MS
    )
    expect(page.locator("#queue-F1 .cars")).to_contain_text("watched")
    expect(page.locator("#legend")).to_contain_text("F1")
    operator.shot("operator.png")
    assert car.call("POST", "/api/charging/complete/")[0] == 200
    expect(kw).to_have_text("0.00", timeout=WAIT_MS)
    expect(page.locator("#stat-sessions")).to_have_text(re.compile(r"^[1-9]"), timeout=WAIT_MS)
    operator.close()


def _a_driver_submits_and_watches_the_request_queue_charge_and_bill(
    browser: Browser, station: dict[str, Any]
) -> None:
    central: CentralProcess = station["central"]
    ahead = driver(central, "ahead")
    driver(central, "dana")
    code, body = ahead.call(
        "POST", "/api/charging/request/", {"charging_mode": "slow", "requested_amount": 2}
    )
    assert code == 201, body
    dana = Watched(browser, central.url, viewport={"width": 1280, "height": 900})
    page = dana.login("dana", DRIVER_PASSWORD)
    expect(page.locator("#driver")).to_be_visible()
    expect(page.locator("#req-none")).to_be_visible()
    page.select_option("#submit-mode", "slow")
    page.fill("#submit-kwh", "1")
    page.click("#submit-btn")
    status = page.locator("#req-status")
    expect(status).to_have_attribute("data-status", "waiting", timeout=WAIT_MS)
    expect(page.locator("#req-no")).to_have_text(re.compile(r"^T\d+$"))
    expect(status).to_have_attribute("data-status", "charging", timeout=WAIT_MS)
    expect(page.locator("#req-pile")).to_have_text("T1")
    expect(status).to_have_attribute("data-status", "completed", timeout=WAIT_MS)
    bill = page.locator("#bills tbody tr").first
    expect(bill.locator(".kwh")).to_have_text("1.00", timeout=WAIT_MS)
    expect(page.locator("#my-notes li").first).not_to_have_class("empty", timeout=WAIT_MS)
    dana.shot("driver.png")
    dana.close()
    phone = Watched(browser, central.url, viewport={"width": 390, "height": 844}, device_scale_factor=2)
    phone.login("dana", DRIVER_PASSWORD)
    expect(phone.page.locator("#bills tbody tr").first).to_be_visible(timeout=WAIT_MS)
    width = phone.page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the phone layout scrolls sideways ({width}px)"
    phone.shot("phone.png")
    phone.close()


def _taking_a_pile_out_of_service_requeues_the_drivers_car(browser: Browser, station: dict[str, Any]) -> None:
    central: CentralProcess = station["central"]
    driver(central, "erin")
    erin = Watched(browser, central.url, viewport={"width": 1280, "height": 900})
    mine = erin.login("erin", DRIVER_PASSWORD)
    operator = Watched(browser, central.url, viewport={"width": 1280, "height": 900})
    ops = operator.login("admin", ADMIN_PASSWORD)
    mine.select_option("#submit-mode", "fast")
    mine.fill("#submit-kwh", "60")
    mine.click("#submit-btn")
    status = mine.locator("#req-status")
    expect(status).to_have_attribute("data-status", "charging", timeout=WAIT_MS)
    expect(mine.locator("#req-pile")).to_have_text("F1")
    ops.click("#queue-F1 button.off")
    expect(ops.locator("#queue-F1")).to_have_attribute("data-status", "offline", timeout=WAIT_MS)
    expect(status).to_have_attribute("data-status", "waiting", timeout=WAIT_MS)
    expect(mine.locator("#req-pile")).to_have_text("—")
    expect(ops.locator("#waiting, #faultgroup")).to_contain_text(["erin"], timeout=WAIT_MS)
    ops.click("#queue-F1 button.on")
    expect(status).to_have_attribute("data-status", "charging", timeout=WAIT_MS)
    mine.click("#req-end")
    expect(status).to_have_attribute("data-status", "completed", timeout=WAIT_MS)
    expect(mine.locator("#bills tbody tr").first).to_be_visible(timeout=WAIT_MS)
    operator.close()
    erin.close()


def _a_page_signs_out_when_an_administrator_resets_the_password(
    browser: Browser, station: dict[str, Any]
) -> None:
    central: CentralProcess = station["central"]
    gus = driver(central, "gus")
    kiosk = Watched(browser, central.url, viewport={"width": 1280, "height": 900})
    page = kiosk.login("gus", DRIVER_PASSWORD)
    expect(page.locator("#driver")).to_be_visible()
    status, profile = gus.call("GET", "/api/auth/profile/")
    assert status == 200, profile
    status, body = Api(central.url).call(
        "POST", "/api/Users/login", {"openId": "admin", "password": ADMIN_PASSWORD}
    )
    assert status == 200, body
    admin = Api(central.url, body["token"])
    reset = admin.call("PUT", f"/api/Users/{profile['data']['id']}/password", {"newPassword": "another-pw-2"})
    assert reset[0] == 204, reset
    # every sign-in of gus ended: the page's stream ends, its next ticket is refused, it signs out
    expect(page.locator("#login-form")).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("#driver")).to_be_hidden()
    expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=WAIT_MS)  # the public board
    kiosk.close(allowed=r"401")  # the refused ticket


def _the_page_reconnects_after_the_central_restarts(browser: Browser, station: dict[str, Any]) -> None:
    central: CentralProcess = station["central"]
    operator = Watched(browser, central.url, viewport={"width": 1280, "height": 900})
    page = operator.login("admin", ADMIN_PASSWORD)
    conn = page.locator("#conn")
    central.proc.stop()
    expect(conn).to_have_attribute("data-state", "reconnecting", timeout=WAIT_MS)
    station["central"] = central.restart(station["dir"])
    expect(conn).to_have_attribute("data-state", "live", timeout=30_000)
    expect(page.locator("#point-F1")).to_have_attribute("data-status", "normal", timeout=WAIT_MS)
    expect(page.locator("#port-F1-1 .kw")).to_have_text(re.compile(r"\d\.\d\d"), timeout=WAIT_MS)
    # while the central was away, the browser saw failed requests: only those may be in the console
    operator.close(allowed=r"Failed to load resource|ERR_CONNECTION_REFUSED|ERR_EMPTY_RESPONSE")
