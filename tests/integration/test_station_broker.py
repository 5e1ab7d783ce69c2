"""A broker started with StationAccess (the demo's): no anonymous clients, no wrong passwords, the ACL.

Both broker kinds, since the demo runs Mosquitto when installed and the embedded amqtt otherwise.
"""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest

from pilegate.broker import StationAccess, free_port, start_broker
from tests.broker_fixtures import connect_result

pytest_plugins = ["tests.broker_fixtures"]

ACCESS = StationAccess(
    station="demo",
    central_user="pilegate-central",
    gateways={"gw1": ["F1"]},
    passwords={
        "pilegate-central": "central-pw-123",
        "gw-demo-gw1": "gateway-pw-123",
        "viewer": "view-pw-123",
    },
    readers=["viewer"],
)
CMD = "pilegate/v1/demo/pile/F1/port/1/cmd"
TELEMETRY = "pilegate/v1/demo/pile/F1/port/1/telemetry"


@pytest.fixture(params=["mosquitto", "embedded"])
def broker(request, tmp_path: Path):
    running = start_broker(free_port(), tmp_path / "broker", request.param, access=ACCESS)
    try:
        yield running
    finally:
        running.stop()


def test_anonymous_clients_and_wrong_passwords_are_refused(broker):
    assert connect_result(broker.port) != "Success"
    assert connect_result(broker.port, username="pilegate-central", password="wrong") != "Success"
    assert connect_result(broker.port, username="nobody", password="central-pw-123") != "Success"
    for user, password in ACCESS.passwords.items():
        assert connect_result(broker.port, username=user, password=password) == "Success", user


def test_the_password_file_holds_hashes_readable_by_the_owner_only(broker, tmp_path):
    passwd = tmp_path / "broker" / "passwd"
    assert stat.S_IMODE(passwd.stat().st_mode) == 0o600
    text = passwd.read_text()
    assert "pilegate-central:" in text
    assert not any(password in text for password in ACCESS.passwords.values())


async def test_only_the_central_may_publish_commands(broker, mqtt_probe_factory):
    gateway = await mqtt_probe_factory(broker.port, username="gw-demo-gw1", password="gateway-pw-123")
    await gateway.subscribe("pilegate/v1/demo/pile/+/port/+/cmd")
    viewer = await mqtt_probe_factory(broker.port, username="viewer", password="view-pw-123")
    await viewer.subscribe("pilegate/v1/demo/#")
    gateway.publish(TELEMETRY, b'{"seq": 1}')
    await viewer.wait_for(lambda ms: any(m.topic == TELEMETRY for m in ms), timeout_s=5)
    central = await mqtt_probe_factory(broker.port, username="pilegate-central", password="central-pw-123")
    central.publish(CMD, b'{"id": "from-central"}')
    await gateway.wait_for(lambda ms: any(m.topic == CMD for m in ms), timeout_s=5)
    viewer.publish(CMD, b'{"id": "from-viewer"}')  # refused (Mosquitto may also disconnect it)
    gateway.publish(CMD, b'{"id": "from-gateway"}')
    await asyncio.sleep(0.5)
    assert [m.payload for m in gateway.messages if m.topic == CMD] == [b'{"id": "from-central"}']
