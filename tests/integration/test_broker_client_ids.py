"""The shipped Mosquitto config: a gateway's credentials cannot take over the central's client id.

Mosquitto disconnects a client when another connects with the same client id. With the shipped
``use_username_as_clientid true`` the broker uses the user name as the client id, so a gateway
claiming ``pilegate-central`` only ever gets its own session, and the central's persistent session
follows the central's user.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from pilegate.broker import add_mosquitto_user, free_port, render_acl
from tests.broker_fixtures import ShippedConfMosquitto, connect_result

pytest_plugins = ["tests.broker_fixtures"]

CENTRAL, GATEWAY = "pilegate-central", "gw-station1-gw1"
PASSWORDS = {CENTRAL: "central-secret-1", GATEWAY: "gateway-secret-1"}
TELEMETRY = "pilegate/v1/station1/pile/F1/port/1/telemetry"


@pytest.fixture
def broker(tmp_path: Path):
    passwd, acl = tmp_path / "passwd", tmp_path / "acl"
    for user, password in PASSWORDS.items():
        add_mosquitto_user(passwd, user, password)
    acl.write_text(render_acl("station1", {"gw1": ["F1"]}, CENTRAL))
    with ShippedConfMosquitto(
        free_port(), tmp_path / "broker", password_file=passwd, acl_file=acl
    ) as running:
        yield running


async def test_gateway_credentials_with_the_central_client_id_do_not_disconnect_the_central(
    broker, mqtt_probe_factory
):
    central = await mqtt_probe_factory(
        broker.port, client_id=CENTRAL, username=CENTRAL, password=PASSWORDS[CENTRAL], clean_session=False
    )
    await central.subscribe("pilegate/v1/#")
    intruder = await mqtt_probe_factory(
        broker.port, client_id=CENTRAL, username=GATEWAY, password=PASSWORDS[GATEWAY]
    )
    await asyncio.sleep(1.0)  # a take-over disconnects at once; give it time to show
    assert central.disconnects == 0
    assert intruder.disconnects == 0  # the gateway keeps working under its own session
    intruder.publish(TELEMETRY, b'{"seq": 1}')
    await central.wait_for(lambda ms: any(m.topic == TELEMETRY for m in ms), timeout_s=5)
    assert central.disconnects == 0


async def test_the_central_persistent_session_follows_its_user(broker, mqtt_probe_factory):
    first = await mqtt_probe_factory(
        broker.port, client_id=CENTRAL, username=CENTRAL, password=PASSWORDS[CENTRAL], clean_session=False
    )
    await first.subscribe("pilegate/v1/#")
    first.close()
    gateway = await mqtt_probe_factory(
        broker.port, client_id="pilegate-gw-station1-gw1", username=GATEWAY, password=PASSWORDS[GATEWAY]
    )
    gateway.publish(TELEMETRY, b'{"seq": 2}')
    await asyncio.sleep(0.3)  # the broker queues it for the absent central
    # whatever client id the central sends, the broker resumes the session of its user
    again = await mqtt_probe_factory(
        broker.port,
        client_id="pilegate-central-restarted",
        username=CENTRAL,
        password=PASSWORDS[CENTRAL],
        clean_session=False,
    )
    messages = await again.wait_for(lambda ms: any(m.topic == TELEMETRY for m in ms), timeout_s=5)
    assert [m.payload for m in messages if m.topic == TELEMETRY] == [b'{"seq": 2}']


def test_anonymous_and_wrong_passwords_are_refused(broker):
    assert connect_result(broker.port) == "Not authorized"
    assert connect_result(broker.port, username=CENTRAL, password="wrong") == "Not authorized"
    assert connect_result(broker.port, username=CENTRAL, password=PASSWORDS[CENTRAL]) == "Success"
