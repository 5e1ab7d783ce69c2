"""A broker started with StationAccess (the demo's): no anonymous clients, no wrong passwords, the ACL;
and with FleetAccess (the demo's several stations and centrals): every central its own user.

Both broker kinds, since the demo runs Mosquitto when installed and the embedded amqtt otherwise.
"""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest

from pilegate.broker import AclError, FleetAccess, StationAccess, free_port, render_fleet_acl, start_broker
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


FLEET = FleetAccess(
    stations={"north": {"gw1": ["F1"]}, "south": {"gw1": ["F1"]}},
    central_users=["central-a", "central-b"],
    passwords={
        "central-a": "central-a-pw-1",
        "central-b": "central-b-pw-1",
        "gw-north-gw1": "north-gw-pw-1",
        "gw-south-gw1": "south-gw-pw-1",
        "viewer": "view-pw-123",
    },
    readers=["viewer"],
)


@pytest.fixture(params=["mosquitto", "embedded"])
def fleet_broker(request, tmp_path: Path):
    running = start_broker(free_port(), tmp_path / "broker", request.param, access=FLEET)
    try:
        yield running
    finally:
        running.stop()


async def test_two_centrals_stay_connected_side_by_side_and_each_gateway_keeps_to_its_station(
    fleet_broker, mqtt_probe_factory
):
    a = await mqtt_probe_factory(fleet_broker.port, username="central-a", password="central-a-pw-1")
    b = await mqtt_probe_factory(fleet_broker.port, username="central-b", password="central-b-pw-1")
    for central in (a, b):
        await central.subscribe("pilegate/v1/#")
    viewer = await mqtt_probe_factory(fleet_broker.port, username="viewer", password="view-pw-123")
    await viewer.subscribe("pilegate/v1/north/#")
    await viewer.subscribe("pilegate/v1/south/#")
    north = await mqtt_probe_factory(fleet_broker.port, username="gw-north-gw1", password="north-gw-pw-1")
    await north.subscribe("pilegate/v1/north/pile/+/port/+/cmd")
    south = await mqtt_probe_factory(fleet_broker.port, username="gw-south-gw1", password="south-gw-pw-1")
    south.publish("pilegate/v1/north/pile/F1/port/1/telemetry", b'{"seq": 1, "by": "south"}')  # refused
    south.publish("pilegate/v1/south/pile/F1/port/1/telemetry", b'{"seq": 1, "by": "south"}')
    north.publish("pilegate/v1/north/pile/F1/port/1/telemetry", b'{"seq": 1, "by": "north"}')
    for reader in (a, b, viewer):  # both stations' readings reach both centrals and the viewer
        await reader.wait_for(
            lambda ms: (
                {m.topic.split("/")[2] for m in ms if m.topic.endswith("telemetry")} == {"north", "south"}
            ),
            timeout_s=5,
        )
    b.publish("pilegate/v1/north/pile/F1/port/1/cmd", b'{"id": "from-b"}')  # either may own north
    await north.wait_for(lambda ms: any(m.payload == b'{"id": "from-b"}' for m in ms), timeout_s=5)
    north_readings = [m.json()["by"] for m in a.matching("pilegate/v1/north/pile/+/port/+/telemetry")]
    assert north_readings == ["north"]
    assert a.disconnects == b.disconnects == 0  # distinct users: distinct client ids on Mosquitto


def test_a_fleet_acl_names_every_user_once_and_each_reader_reads_every_station():
    acl = render_fleet_acl(FLEET.stations, FLEET.central_users, FLEET.readers)
    users = [line.split()[1] for line in acl.splitlines() if line.startswith("user ")]
    assert users == ["central-a", "central-b", "gw-north-gw1", "gw-south-gw1", "viewer"]
    viewer = acl.split("user viewer\n", 1)[1].splitlines()
    assert viewer == ["topic read pilegate/v1/north/#", "topic read pilegate/v1/south/#"]
    south = acl.split("user gw-south-gw1\n", 1)[1].split("\n\n", 1)[0]
    assert "/north/" not in south
    with pytest.raises(AclError, match="named twice: central-a"):
        render_fleet_acl(FLEET.stations, ["central-a", "central-a"])
