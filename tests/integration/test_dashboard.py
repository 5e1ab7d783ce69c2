"""The station dashboard served by the central: the page and its headers, stream tickets, and the
live streams (a snapshot, then only changes; public, operator and driver channels each carry what
their audience may see). Station: one fast pile F1, one trickle pile T1 (see the central fixtures);
the hub ticks when a test says so.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import replace
from typing import Any

import pytest
from aiohttp import ClientResponse, web

from central.adapters import users
from central.application.auth import DEFAULT_TOKEN_TTL
from central.web import add_user_api
from central.web.dashboard import add_dashboard
from central.web.keys import AUTH, STATIONS, STORE
from central.web.live import LiveHub
from protocols.payloads import Telemetry
from tests.helpers import next_event

pytest_plugins = ("tests.integration.central_fixtures",)


def with_dashboard(app: web.Application) -> None:
    add_user_api(app)
    add_dashboard(app)
    runtime = app[STATIONS].get(app[STATIONS].default)
    runtime.hub = LiveHub(runtime.service, app[STORE], token_clock=app[AUTH].clock)


def hub_of(central) -> LiveHub:
    hub: LiveHub | None = central.app[STATIONS].get(central.app[STATIONS].default).hub
    assert hub is not None
    return hub


@pytest.fixture
async def central(tmp_path, station_params):
    """The fixtures' central, serving the driver API and the dashboard."""
    # imported here: the plugin must be imported by pytest first (assertion rewriting)
    from tests.integration.central_fixtures import start_central, stop_central

    running = await start_central(tmp_path, station_params, route_sets=(with_dashboard,))
    try:
        yield running
    finally:
        hub_of(running).close_streams()
        await stop_central(running)


async def ticket(central, account, view: str | None = None):
    body = {} if view is None else {"view": view}
    return await central.call("POST", "/dashboard/ticket", user=account, json=body)


async def open_stream(central, account=None, view: str | None = None):
    path = "/dashboard/stream"
    if account is not None:
        status, body = await ticket(central, account, view)
        assert status == 200, body
        path += f"?ticket={body['data']['ticket']}"
    response = await central.client.get(path)
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    return response


def reading(ts: int, power_w: float, energy_wh: int, state: str = "charging") -> Telemetry:
    return Telemetry(
        ts=ts,
        session=1,
        seq=ts,
        state=state,
        voltage_V=400.0,
        current_A=power_w / 400,
        power_W=power_w,
        energy_Wh=energy_wh,
        temperature_C=31.5,
        fault="none",
    )


async def submit(central, account, mode="fast", kwh=10):
    status, body = await central.call(
        "POST", "/api/charging/request/", user=account, json={"charging_mode": mode, "requested_amount": kwh}
    )
    assert status == 201, body
    return body["data"]


# --- the page ------------------------------------------------------------------------------------


async def test_the_page_is_served_at_the_root_with_a_strict_policy(central):
    response = await central.client.get("/")
    assert response.status == 200 and response.content_type == "text/html"
    policy = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy and "default-src 'none'" in policy
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    page = await response.text()
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page, re.S)
    assert scripts and all('src="/dashboard/static/' in attrs and not body.strip() for attrs, body in scripts)
    assert "http://" not in page and "https://" not in page  # nothing fetched from elsewhere
    assert " style=" not in page and "<style" not in page


@pytest.mark.parametrize(("name", "kind"), [("app.js", "javascript"), ("style.css", "text/css")])
async def test_assets_ship_in_the_package_with_the_same_headers(central, name, kind):
    response = await central.client.get(f"/dashboard/static/{name}")
    assert response.status == 200 and kind in response.content_type
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "Content-Security-Policy" in response.headers
    assert "://" not in await response.text()  # no other origin named, nothing fetched from elsewhere


async def test_the_apis_keep_their_own_headers(central, driver):
    response = await central.client.get("/api/charging/request/status/", headers=driver.headers)
    assert response.status == 200 and "Content-Security-Policy" not in response.headers


# --- tickets -------------------------------------------------------------------------------------


async def test_a_ticket_needs_a_token(central):
    status, body = await central.call("POST", "/dashboard/ticket")
    assert status == 401 and body["success"] is False


async def test_the_operator_view_needs_staff(central, driver, staff):
    assert (await ticket(central, driver, "operator"))[0] == 403
    status, body = await ticket(central, driver)
    assert status == 200 and body["data"]["view"] == "driver"
    status, body = await ticket(central, staff)
    assert status == 200 and body["data"]["view"] == "operator"


async def test_a_ticket_opens_one_stream_only(central, driver):
    _, body = await ticket(central, driver)
    path = f"/dashboard/stream?ticket={body['data']['ticket']}"
    first = await central.client.get(path)
    assert first.status == 200
    second = await central.client.get(path)
    assert second.status == 401
    assert (await central.client.get("/dashboard/stream?ticket=forged")).status == 401
    first.close()


# --- streams -------------------------------------------------------------------------------------


async def test_the_public_board_shows_queue_numbers_but_no_personal_data(central, driver, driver2):
    await submit(central, driver, kwh=10)
    await submit(central, driver2, kwh=5)
    response = await open_stream(central)
    event, data = await next_event(response)
    assert event == "snapshot" and data["ch"] == "public"
    state = data["state"]
    assert state["point:F1"]["queue"] == ["F1"] and state["point:F1"]["working"] is True
    assert state["line:fast"] == [["F2", pytest.approx(state["line:fast"][0][1])]]
    assert state["area"] == {"current": 1, "max": 2}
    text = json.dumps(data)
    assert "driver" not in text and '"user' not in text and "request" not in text
    response.close()


async def test_the_operator_stream_sends_a_snapshot_then_only_what_changed(central, driver, staff):
    car = (await submit(central, driver, kwh=10))["request_id"]
    hub: LiveHub = hub_of(central)
    hub.observe_telemetry("F1", 1, reading(central.wall.ms, 0.0, 1000, "idle"))
    response = await open_stream(central, staff)
    event, data = await next_event(response)
    assert event == "snapshot" and data["ch"] == "operator"
    state = data["state"]
    assert state["point:F1"]["cars"][0]["user"] == "driver1"
    assert state["port:F1-1"]["kw"] == 0.0 and state["stats"]["sessions"] == 0
    assert data["chart"]["points"] == []
    await hub.tick()  # the first tick samples the chart
    event, sample = await next_event(response)
    assert event == "chart" and sample[1] == {"F1": 0.0}
    central.service.live.health["F1"] = "online"
    central.wall.advance(60)
    for r in (
        reading(central.wall.ms, 0.0, 1000, "charging"),
        reading(central.wall.ms + 60_000, 30000.0, 1500),
    ):  # 0.5 kWh in a minute at 30 kW
        hub.observe_telemetry("F1", 1, r)
        central.service.live.on_telemetry("F1", 1, r)
    await hub.tick()
    event, change = await next_event(response)
    assert event == "change" and change["ch"] == "operator"
    assert change["set"]["port:F1-1"]["kw"] == 30.0
    assert change["set"]["port:F1-1"]["session_kwh"] == 0.5
    assert "area" not in change["set"] and "tariff" not in change["set"]  # unchanged keys are not sent
    assert central.service.sessions[car].delivered_wh == 500
    response.close()


async def test_meter_anomalies_show_in_the_operators_recent_faults_once_per_port_and_kind(central, driver):
    await submit(central, driver, kwh=10)
    hub = hub_of(central)
    central.service.live.health["F1"] = "online"
    at = central.wall.ms
    for minute, wh in enumerate([1000, 1500, 200, 300, 100, 900_000]):
        # charging from 1000 Wh; back to 200 (a reset); on; back to 100 (the same again); a leap no
        # 30 kW pile makes in a minute (implausible)
        r = reading(at + minute * 60_000, 30000.0, wh, "charging")
        hub.observe_telemetry("F1", 1, r)
        central.service.live.on_telemetry("F1", 1, r)
    assert central.service.live.meter_anomalies()["meter_resets"] == 2
    assert central.service.live.meter_anomalies()["implausible_readings"] == 1
    shown = [(f["where"], f["what"]) for f in hub.operator_state()["faults"]]
    assert shown == [
        ("F1-1", "implausible meter reading 900000 Wh after 100 Wh rejected"),
        ("F1-1", "meter went back from 1500 Wh to 200 Wh: new baseline"),
    ]


async def test_a_driver_stream_carries_only_their_own_request(central, driver, driver2):
    mine = await submit(central, driver, kwh=10)
    await submit(central, driver2, mode="slow", kwh=5)
    response = await open_stream(central, driver)
    snapshots = {}
    for _ in range(2):
        event, data = await next_event(response)
        assert event == "snapshot"
        snapshots[data["ch"]] = data["state"]
    request = snapshots[f"driver:{driver.user_id}"]["request"]
    assert (request["id"], request["no"], request["status"]) == (mine["request_id"], "F1", "charging")
    assert set(snapshots) == {"public", f"driver:{driver.user_id}"}
    assert "driver2" not in json.dumps(snapshots) and "T1" in snapshots["public"]["point:T1"]["queue"]
    await central.call("DELETE", f"/api/charging/request/{mine['request_id']}/cancel/", user=driver)
    await hub_of(central).tick()
    changes: dict[str, Any] = {}
    while len(changes) < 2:
        event, data = await next_event(response)
        if event == "change":
            changes[data["ch"]] = data
    assert changes[f"driver:{driver.user_id}"]["set"]["request"]["status"] == "cancelled"
    response.close()


async def test_streams_end_when_the_hub_stops(central):
    response = await open_stream(central)
    await next_event(response)
    await hub_of(central).stop()
    async with asyncio.timeout(5):
        assert await response.content.read() == b""


async def snapshots_of(response: ClientResponse, count: int) -> None:
    for _ in range(count):
        assert (await next_event(response))[0] == "snapshot"


async def ended(response: ClientResponse) -> str:
    """The reason of the stream's ``ended`` event; the stream must then end."""
    while True:
        event, data = await next_event(response)
        if event == "ended":
            break
    async with asyncio.timeout(5):
        assert await response.content.read() == b""
    return str(data["reason"])


async def _logout(central, account) -> None:
    assert (await central.call("POST", "/api/auth/logout/", user=account))[0] == 200


async def _disable(central, account) -> None:
    await central.store.write(
        lambda db: db.execute("UPDATE users SET status = 0 WHERE id = ?", [account.user_id])
    )


async def _expire(central, account) -> None:
    central.wall.advance(DEFAULT_TOKEN_TTL.total_seconds() + 1)


@pytest.mark.parametrize("end", [_logout, _disable, _expire], ids=["logout", "disabled", "expired"])
async def test_a_driver_stream_ends_when_the_sign_in_behind_it_ends(central, driver, driver2, end):
    # the other driver signed in for longer: their stream outlives this one whichever way it ends
    longer = await central.store.write(
        lambda db: users.issue_token(db, driver2.user_id, now=central.wall.now(), ttl=2 * DEFAULT_TOKEN_TTL)
    )
    driver2 = replace(driver2, token=longer)
    mine, theirs, public = (
        await open_stream(central, driver),
        await open_stream(central, driver2),
        await open_stream(central),
    )
    await snapshots_of(mine, 2)
    await snapshots_of(theirs, 2)
    hub = hub_of(central)
    assert await hub.recheck_tokens() == 0  # every token holds: nothing ends
    await end(central, driver)
    assert await hub.recheck_tokens() == 1
    assert "sign-in that opened this stream has ended" in await ended(mine)
    assert (await ticket(central, driver))[0] == 401  # and the page cannot open another
    # the other driver's stream and the public board go on
    await submit(central, driver2, kwh=5)
    await hub.tick()
    for response in (theirs, public):
        assert (await next_event(response))[0] in {"snapshot", "change"}
    theirs.close()
    public.close()


async def test_an_operator_stream_ends_when_the_account_loses_its_staff_role(central, staff):
    response = await open_stream(central, staff)
    await snapshots_of(response, 1)
    hub = hub_of(central)
    assert await hub.recheck_tokens() == 0
    await central.store.write(
        lambda db: db.execute("DELETE FROM user_roles WHERE user_id = ?", [staff.user_id])
    )
    assert await hub.recheck_tokens() == 1
    assert "no longer has a staff role" in await ended(response)
    assert (await ticket(central, staff, "operator"))[0] == 403


async def test_the_hub_rechecks_the_tokens_as_it_ticks(central, driver):
    response = await open_stream(central, driver)
    await snapshots_of(response, 2)
    await _logout(central, driver)
    await hub_of(central).tick()  # the first tick is due a check; later ones every TOKEN_RECHECK_S
    assert "ended" in await ended(response)


async def test_the_operator_sees_the_takings_of_the_station_local_day(central, driver, staff):
    def billed(db, at: str, peak: str, valley: str) -> None:
        detail = {"periods": {"peak": ["5", "0.25", peak], "valley": ["5", "0.5", valley]}}
        db["orders"].insert({
            "id": at, "station": "test", "order_no": at, "user_id": driver.user_id, "pile_no": "F1",
            "status": 2,
            "electricity": "10", "service_fee": "8", "total_amount": str(8 + float(peak) + float(valley)),
            "detail": json.dumps(detail), "generated_time": at, "create_time": at,
        })  # fmt: skip

    def write(db):
        billed(db, "2025-06-01T15:30:00+00:00", "6", "2")  # 23:30 the day before, station time
        billed(db, "2025-06-01T16:30:00+00:00", "6", "2")  # 00:30 today, station time
        billed(db, "2025-06-02T01:59:00+00:00", "6.004", "2")  # 09:59 today

    await central.store.write(write)
    response = await open_stream(central, staff)
    _, data = await next_event(response)
    assert data["state"]["stats"] == {
        "date": "2025-06-02",
        "sessions": 2,
        "kwh": 20.0,
        "peak": 12.0,
        "normal": 0.0,
        "valley": 4.0,
        "service": 16.0,
        "total": 32.0,
    }
    assert data["state"]["notes"] == []
    response.close()
