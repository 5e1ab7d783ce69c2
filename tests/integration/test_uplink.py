"""The MQTT uplink against a real Mosquitto on an ephemeral port; broker ACLs; the embedded broker.

Abrupt network loss is made with a small TCP proxy between the uplink and the broker: cutting it
closes both sockets without an MQTT DISCONNECT, exactly like a dropped link.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import json
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gateway import uplink as uplink_module
from gateway.outbox import Kind, Outbox, OutMessage, wall_ms
from gateway.uplink import Uplink, UplinkConfig, backoff_s, with_replayed
from pilegate.broker import (
    AclError,
    EmbeddedBroker,
    MosquittoBroker,
    add_mosquitto_user,
    free_port,
    gateway_user,
    port_accepts,
    render_acl,
)
from pilegate.tasks import cancel_and_wait
from tests.helpers import wait_for, wait_for_sync

if TYPE_CHECKING:
    from tests.broker_fixtures import ProbeFactory, ProbeMessage

pytest_plugins = ["tests.broker_fixtures"]

REPO = Path(__file__).resolve().parents[2]
GW_STATUS = "pilegate/v1/s1/gw/gw1/status"
TELEMETRY = "pilegate/v1/s1/pile/P1/port/1/telemetry"
EVENT = "pilegate/v1/s1/pile/P1/event"
CMD = "pilegate/v1/s1/pile/P1/port/1/cmd"


# -- helpers -----------------------------------------------------------------------------------


def status(state: str, session: int) -> OutMessage:
    body = json.dumps({"state": state, "session": session}, separators=(",", ":")).encode()
    return OutMessage(GW_STATUS, body, 1, True, "status", wall_ms())


def message(seq: int, kind: Kind = "telemetry", qos: int = 1, age_ms: int = 0) -> OutMessage:
    topic = TELEMETRY if kind == "telemetry" else EVENT
    body = json.dumps({"seq": seq, "kind": kind}, separators=(",", ":")).encode()
    return OutMessage(topic, body, qos, False, kind, wall_ms() - age_ms)


def seqs(messages: list[ProbeMessage], topic: str = TELEMETRY) -> list[int]:
    return [m.json()["seq"] for m in messages if m.topic == topic]


def states(messages: list[ProbeMessage]) -> list[tuple[str, int]]:
    return [(m.json()["state"], m.json()["session"]) for m in messages if m.topic == GW_STATUS]


class Gateway:
    """An outbox plus an uplink wired like the gateway wires them."""

    def __init__(self, tmp_path: Path, port: int, **config: object) -> None:
        self.outbox = Outbox(tmp_path / "outbox.db")
        self.sessions: list[int] = []
        self.commands: list[tuple[str, bytes, int]] = []
        settings: dict[str, object] = {"reconnect_min_s": 0.05, "reconnect_max_s": 0.2} | config
        self.uplink = Uplink(
            UplinkConfig("127.0.0.1", port, "pilegate-gw-s1-gw1", **settings),  # type: ignore[arg-type]
            self.outbox,
            will=lambda session: status("lost", session),
            on_connect=self._birth,
            on_message=lambda t, p: self.commands.append((t, p, threading.get_ident())),
            subscriptions=[("pilegate/v1/s1/pile/P1/port/+/cmd", 1)],
        )

    def _birth(self, session: int) -> list[OutMessage]:
        self.sessions.append(session)
        return [status("online", session)]

    def send(self, messages: list[OutMessage]) -> None:
        self.outbox.append_many(messages)
        self.uplink.notify()

    async def close(self) -> None:
        await self.uplink.stop(flush_timeout_s=0.5)
        self.outbox.close()


@pytest.fixture
async def cleanup() -> AsyncIterator[Callable[[Callable[[], object]], None]]:
    """Register teardown callables (sync or async); run in reverse order even if a test fails."""
    actions: list[Callable[[], object]] = []
    yield actions.append
    for action in reversed(actions):
        result = action()
        if inspect.isawaitable(result):
            await result


class TcpProxy:
    """Forwards a local port to the broker; cut() aborts every connection (no DISCONNECT)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers += [writer, up_writer]
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.transport.abort()

    def cut(self) -> None:
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        self.cut()
        await self._server.wait_closed()
        # a connection accepted just now has a handler task that has not run (nor registered) yet
        unstarted = {t for t in asyncio.all_tasks() if self._handles(t)}
        await cancel_and_wait(self._tasks | unstarted, what="proxy connections")

    def _handles(self, task: asyncio.Task[object]) -> bool:
        frame = getattr(task.get_coro(), "cr_frame", None)
        if frame is None or frame.f_code is not TcpProxy._handle.__code__:
            return False
        return frame.f_locals.get("self") is self


# -- pure helpers ------------------------------------------------------------------------------


def test_replayed_flag_is_added_to_compact_json_objects_only():
    assert with_replayed(b'{"seq":1}') == b'{"seq":1,"replayed":true}'
    assert with_replayed(b"{}") == b'{"replayed":true}'
    assert with_replayed(b"not json") == b"not json"
    assert json.loads(with_replayed(b'{"a":{"b":1}}\n')) == {"a": {"b": 1}, "replayed": True}


def test_reconnect_delay_doubles_is_capped_and_jittered():
    assert [backoff_s(n, 0.5, 4.0, lambda: 1.0) for n in (1, 2, 3, 4, 5)] == [0.5, 1, 2, 4, 4]
    assert backoff_s(3, 0.5, 4.0, lambda: 0.0) == 1.0


# -- delivery ----------------------------------------------------------------------------------


async def test_every_appended_message_arrives_exactly_once_in_order(tmp_path, mosquitto, mqtt_probe, cleanup):
    await mqtt_probe.subscribe("pilegate/v1/#")
    gw = Gateway(tmp_path, mosquitto.port, max_inflight=64)
    cleanup(gw.close)
    await gw.uplink.start()
    await wait_for(lambda: gw.uplink.connected, what="uplink connected")
    for start in range(0, 1500, 500):
        gw.send([message(start + i) for i in range(500)] + [message(start, "event", qos=0)])

    got = await mqtt_probe.wait_for(lambda ms: len(seqs(ms)) >= 1500 and len(seqs(ms, EVENT)) == 3, 20)
    assert seqs(got) == list(range(1500))
    assert seqs(got, EVENT) == [0, 500, 1000]
    assert not any("replayed" in m.json() for m in got if m.topic == TELEMETRY)
    await wait_for(lambda: gw.outbox.depth() == 0, what="outbox drained")
    assert gw.uplink.stats()["acked"] == 1504  # 1500 telemetry + 3 events + 1 birth
    assert gw.uplink.stats()["inflight"] == 0


async def test_backlog_is_sent_after_the_birth_and_old_telemetry_is_marked_replayed(
    tmp_path, mosquitto, mqtt_probe, cleanup
):
    await mqtt_probe.subscribe("pilegate/v1/#")
    gw = Gateway(tmp_path, mosquitto.port)
    cleanup(gw.close)
    # queued a second before the connection (in the same millisecond they would count as live)
    backlog = [message(i, age_ms=1000) for i in range(20)]
    gw.send([status("offline", 1), *backlog, message(20, "event", age_ms=1000)])
    await gw.uplink.start()

    got = await mqtt_probe.wait_for(lambda ms: len(seqs(ms, EVENT)) == 1, timeout_s=10)
    assert got[0].topic == GW_STATUS
    assert states(got) == [("online", gw.sessions[0])]  # the stale queued "offline" is discarded
    assert seqs(got) == list(range(20))
    assert all(m.json()["replayed"] is True for m in got if m.topic == TELEMETRY)
    assert "replayed" not in got[-1].json()  # events are never marked


async def test_start_returns_at_once_and_messages_wait_for_a_broker_that_is_not_there_yet(
    tmp_path, cleanup, mqtt_probe_factory: ProbeFactory
):
    port = free_port()
    gw = Gateway(tmp_path, port)
    cleanup(gw.close)
    await asyncio.wait_for(gw.uplink.start(), timeout=0.5)
    gw.send([message(i) for i in range(10)])
    await wait_for(lambda: gw.outbox.depth() == 10 and not gw.uplink.connected)

    broker = MosquittoBroker(port, tmp_path / "late-broker")
    broker.start()
    cleanup(broker.stop)
    probe = await mqtt_probe_factory(port)
    await probe.subscribe(GW_STATUS)  # retained birth arrives after the backlog has been sent
    await wait_for(lambda: gw.outbox.depth() == 0, what="backlog sent")
    await probe.wait_for(lambda ms: states(ms) == [("online", gw.sessions[-1])])


async def test_messages_appended_while_the_broker_is_down_all_arrive_after_restart(
    tmp_path, cleanup, mqtt_probe_factory: ProbeFactory
):
    broker = MosquittoBroker(free_port(), tmp_path / "broker", persistence=True)
    broker.start()
    cleanup(broker.stop)
    # A persistent subscriber: the broker queues for it while it reconnects after the restart.
    probe = await mqtt_probe_factory(broker.port, client_id="central-probe", clean_session=False)
    await probe.subscribe("pilegate/v1/s1/pile/#")
    gw = Gateway(tmp_path, broker.port)
    cleanup(gw.close)
    await gw.uplink.start()
    await wait_for(lambda: gw.uplink.connected)
    gw.send([message(i) for i in range(100)])
    await wait_for(lambda: gw.outbox.depth() == 0, what="first batch acknowledged")

    broker.stop()
    await wait_for(lambda: not gw.uplink.connected, what="uplink noticed the outage")
    gw.send([message(100 + i) for i in range(200)])
    broker.start()

    got = await probe.wait_for(lambda ms: set(seqs(ms)) == set(range(300)), timeout_s=20)
    assert gw.uplink.stats()["sent"] == 300 + 2  # each message published once, plus 2 births
    first_seen = {m.json()["seq"]: m.json() for m in reversed(got) if m.topic == TELEMETRY}
    assert list(dict.fromkeys(seqs(got))) == list(range(300))  # in order
    # The broker itself may redeliver to its subscriber what that probe had not acked yet.
    doubled = [seq for seq, n in collections.Counter(seqs(got)).items() if n > 1]
    assert all(seq < 100 for seq in doubled), doubled
    replayed = [first_seen[seq].get("replayed", False) for seq in range(300)]
    assert replayed == [False] * 100 + [True] * 200
    assert gw.sessions[1] > gw.sessions[0]
    assert gw.uplink.stats()["reconnects"] == 1


# -- will, clean stop, subscriptions ----------------------------------------------------------


async def test_will_fires_on_abrupt_connection_loss_and_the_uplink_comes_back_with_a_new_session(
    tmp_path, mosquitto, mqtt_probe, cleanup
):
    await mqtt_probe.subscribe(GW_STATUS)
    proxy = TcpProxy(mosquitto.port)
    await proxy.start()
    cleanup(proxy.close)
    gw = Gateway(tmp_path, proxy.port)
    cleanup(gw.close)
    await gw.uplink.start()
    await mqtt_probe.wait_for(lambda ms: len(states(ms)) == 1)

    proxy.cut()
    got = await mqtt_probe.wait_for(lambda ms: len(states(ms)) == 3)
    first, second = gw.sessions
    assert states(got) == [("online", first), ("lost", first), ("online", second)]
    assert second > first


async def test_commands_reach_on_message_on_the_loop_and_again_after_a_reconnect(
    tmp_path, mosquitto, mqtt_probe, cleanup
):
    proxy = TcpProxy(mosquitto.port)
    await proxy.start()
    cleanup(proxy.close)
    gw = Gateway(tmp_path, proxy.port)
    cleanup(gw.close)
    await gw.uplink.start()
    await wait_for(lambda: gw.uplink.connected)
    await wait_for(lambda: gw.uplink.stats()["acked"] == 1, what="birth acknowledged")
    mqtt_probe.publish(CMD, b'{"id":"c1"}')
    await wait_for(lambda: len(gw.commands) == 1, what="first command")

    proxy.cut()
    await wait_for(lambda: len(gw.sessions) == 2 and gw.uplink.connected)
    await wait_for(lambda: gw.uplink.stats()["acked"] == 2, what="second birth acknowledged")
    mqtt_probe.publish(CMD, b'{"id":"c2"}')
    await wait_for(lambda: len(gw.commands) == 2, what="command after reconnect")
    assert [(t, p) for t, p, _ in gw.commands] == [(CMD, b'{"id":"c1"}'), (CMD, b'{"id":"c2"}')]
    assert {thread for _, _, thread in gw.commands} == {threading.get_ident()}


async def test_stop_sends_the_final_status_and_disconnects_without_firing_the_will(
    tmp_path, mosquitto, mqtt_probe, cleanup
):
    await mqtt_probe.subscribe(GW_STATUS)
    gw = Gateway(tmp_path, mosquitto.port)
    await gw.uplink.start()
    await mqtt_probe.wait_for(lambda ms: len(states(ms)) == 1)
    session = gw.uplink.session
    gw.send([message(i) for i in range(50)])

    await gw.uplink.stop(final=[status("offline", session)])
    assert gw.outbox.depth() == 0 and not gw.uplink.connected
    gw.outbox.close()
    # A marker published after stop() returned is delivered after anything the broker did
    # about the uplink's connection, so a will would already be in the probe's list.
    mqtt_probe.publish(GW_STATUS, b'{"state":"marker","session":0}')
    got = await mqtt_probe.wait_for(lambda ms: ("marker", 0) in states(ms))
    assert states(got) == [("online", session), ("offline", session), ("marker", 0)]


class PickyBroker:
    """A minimal MQTT 3.1.1 broker that drops the connection, without a PUBACK, on one topic."""

    def __init__(self, poison_topic: str) -> None:
        self.poison_topic = poison_topic
        self.received: list[str] = []
        self.connections = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            while packet := await self._read_packet(reader):
                if not self._answer(*packet, writer):
                    break
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.transport.abort()

    @staticmethod
    async def _read_packet(reader: asyncio.StreamReader) -> tuple[int, bytes] | None:
        first = await reader.read(1)
        if not first:
            return None
        length, shift = 0, 0
        while True:
            byte = (await reader.readexactly(1))[0]
            length += (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return first[0], await reader.readexactly(length)

    def _answer(self, header: int, body: bytes, writer: asyncio.StreamWriter) -> bool:
        kind = header >> 4
        if kind == 1:  # CONNECT
            writer.write(bytes([0x20, 2, 0, 0]))
        elif kind == 3:  # PUBLISH
            topic = body[2 : 2 + int.from_bytes(body[:2], "big")].decode()
            self.received.append(topic)
            if topic == self.poison_topic:
                return False  # close without PUBACK
            if (header >> 1) & 3:
                mid = body[2 + len(topic.encode()) : 4 + len(topic.encode())]
                writer.write(bytes([0x40, 2]) + mid)
        elif kind == 8:  # SUBSCRIBE: grant QoS 1 to one filter
            writer.write(bytes([0x90, 3]) + body[:2] + b"\x01")
        elif kind == 12:  # PINGREQ
            writer.write(bytes([0xD0, 0]))
        return kind != 14  # DISCONNECT


async def test_a_message_the_broker_never_acks_is_quarantined_and_the_rest_flows(
    tmp_path, cleanup, monkeypatch
):
    monkeypatch.setattr(uplink_module, "STUCK_CONNECTIONS", 3)
    poison = "pilegate/v1/s1/pile/P1/port/9/telemetry"
    broker = PickyBroker(poison)
    await broker.start()
    cleanup(broker.close)
    gw = Gateway(tmp_path, broker.port, max_inflight=1)
    cleanup(gw.close)
    bad = OutMessage(poison, b'{"seq":1}', 1, False, "telemetry", wall_ms())
    gw.send([message(0), bad, message(2, "event")])
    await gw.uplink.start()

    await wait_for(lambda: gw.outbox.depth() == 0, what="outbox drained past the poison row")
    assert gw.outbox.stats()["quarantined"] == 1
    assert gw.uplink.stats()["quarantined"] == 1
    assert broker.received.count(poison) == 1 + 3  # behind message 0, then first on 3 connections
    assert broker.received[-1] == EVENT


async def test_a_message_mqtt_cannot_carry_is_quarantined_and_the_rest_flows(
    tmp_path, mosquitto, mqtt_probe, cleanup
):
    await mqtt_probe.subscribe("pilegate/v1/#")
    gw = Gateway(tmp_path, mosquitto.port)
    cleanup(gw.close)
    too_long = OutMessage("t/" + "x" * 70_000, b"{}", 1, False, "event", wall_ms())
    gw.send([message(0), too_long, message(1)])
    await gw.uplink.start()

    got = await mqtt_probe.wait_for(lambda ms: len(seqs(ms)) == 2)
    assert seqs(got) == [0, 1]
    await wait_for(lambda: gw.outbox.depth() == 0)
    assert gw.outbox.stats()["quarantined"] == 1


# -- ACLs --------------------------------------------------------------------------------------

ACL_GATEWAYS = {"gw1": ["P1"], "gw2": ["P2"]}


def publish_reasons(port: int, user: str, *topics: str, timeout_s: float = 5.0) -> list[int]:
    """MQTT v5 PUBACK reason code of one QoS 1 publish to each topic, by ``user``.

    One short connection per topic: Mosquitto 2.0.11 acks a denied publish and then drops the
    connection.
    """
    return [publish_reason(port, user, f"acl-{user}-{n}", topic, timeout_s) for n, topic in enumerate(topics)]


def publish_reason(port: int, user: str, client_id: str, topic: str, timeout_s: float) -> int:
    """One connection, one QoS 1 publish; runs paho's loop inline (a few ms on loopback), no thread."""
    acks: dict[int, int] = {}
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.username_pw_set(user, f"pw-{user}")
    client.on_publish = lambda c, u, mid, reason, p: acks.__setitem__(mid, reason.value)
    client.connect("127.0.0.1", port)
    mid = client.publish(topic, b"{}", 1).mid

    def acked() -> bool:
        client.loop(timeout=0.05)
        return mid in acks

    wait_for_sync(acked, timeout_s, 0, f"PUBACK for {topic}")
    client.disconnect()
    client.loop(timeout=0.05)
    return acks[mid]


NOT_AUTHORIZED = 135  # MQTT v5 reason code
NO_SUBSCRIBERS = 16  # success: the broker accepted the message


@pytest.fixture
def acl_broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A started Mosquitto with generated users and the ACL of station s1 (gw1: P1, gw2: P2)."""
    acl = tmp_path / "acl"
    acl.write_text(render_acl("s1", ACL_GATEWAYS, "central"))
    passwords = tmp_path / "passwd"
    for user in (gateway_user("s1", "gw1"), gateway_user("s1", "gw2"), "central"):
        add_mosquitto_user(passwords, user, f"pw-{user}")
    with MosquittoBroker(free_port(), tmp_path / "broker", password_file=passwords, acl_file=acl) as broker:
        yield broker


def test_gateway_user_may_publish_only_its_own_topics(acl_broker):
    own = [
        "pilegate/v1/s1/gw/gw1/status",
        "pilegate/v1/s1/pile/P1/status",
        EVENT,
        TELEMETRY,
        "pilegate/v1/s1/pile/P1/port/1/cmd/result",
    ]
    foreign = [
        "pilegate/v1/s1/gw/gw2/status",
        "pilegate/v1/s1/pile/P2/port/1/telemetry",
        "pilegate/v1/s1/pile/P2/event",
        CMD,
    ]
    reasons = publish_reasons(acl_broker.port, gateway_user("s1", "gw1"), *own, *foreign)
    assert reasons == [NO_SUBSCRIBERS] * len(own) + [NOT_AUTHORIZED] * len(foreign)


async def test_gateway_receives_only_its_own_piles_commands(acl_broker, mqtt_probe_factory: ProbeFactory):
    user = gateway_user("s1", "gw1")
    probe = await mqtt_probe_factory(acl_broker.port, username=user, password=f"pw-{user}")
    assert await probe.subscribe("pilegate/v1/#")  # granted: Mosquitto filters on delivery
    p2_cmd = "pilegate/v1/s1/pile/P2/port/1/cmd"
    assert publish_reasons(acl_broker.port, "central", p2_cmd, CMD) == [
        0,
        0,
    ]  # both accepted (there is a subscriber)
    got = await probe.wait_for(lambda ms: any(m.topic == CMD for m in ms))
    assert [m.topic for m in got] == [CMD]  # P2's command (sent first) never reached gw1


async def test_central_user_reads_everything_and_may_publish_only_commands(
    acl_broker, mqtt_probe_factory: ProbeFactory
):
    probe = await mqtt_probe_factory(acl_broker.port, username="central", password="pw-central")
    await probe.subscribe("pilegate/v1/#")
    denied = [TELEMETRY, GW_STATUS, EVENT, "pilegate/v1/s1/pile/P1/port/1/cmd/result"]
    reasons = publish_reasons(acl_broker.port, "central", *denied, CMD)
    assert reasons == [NOT_AUTHORIZED] * 4 + [0]  # 0: success, with a subscriber
    p2_telemetry = "pilegate/v1/s1/pile/P2/port/1/telemetry"
    assert publish_reasons(acl_broker.port, gateway_user("s1", "gw2"), p2_telemetry) == [0]
    got = await probe.wait_for(lambda ms: len(ms) == 2)
    assert [m.topic for m in got] == [CMD, p2_telemetry]


def test_shipped_acl_is_the_render_acl_output_for_the_example_station():
    shipped = (REPO / "config/mosquitto/acl").read_text()
    example = {"gw1": ["F1", "T1", "T2"], "gw2": ["F2", "T3"]}
    assert shipped == render_acl("station1", example, "pilegate-central", ingest_user="pilegate-ingest")


@pytest.mark.parametrize(
    ("station", "gateways", "problem"),
    [
        ("s/1", {"gw1": ["P1"]}, "station"),
        ("s1", {"gw+": ["P1"]}, "gateway"),
        ("s1", {"gw1": ["P#"]}, "pile"),
        ("s1", {"gw1": ["P1"], "gw2": ["P1"]}, "listed under gateways"),
    ],
)
def test_render_acl_rejects_ids_that_would_widen_the_acl(station, gateways, problem):
    with pytest.raises(AclError, match=problem):
        render_acl(station, gateways, "central")


def test_shipped_mosquitto_conf_starts_and_enforces_the_shipped_acl(tmp_path):
    passwords = tmp_path / "passwd"
    add_mosquitto_user(passwords, "pilegate-central", "pw-pilegate-central")
    port = free_port()
    conf = (REPO / "config/mosquitto/mosquitto.conf").read_text()
    for old, new in [
        ("/etc/mosquitto/pilegate.passwd", str(passwords)),
        ("/etc/mosquitto/pilegate.acl", str(REPO / "config/mosquitto/acl")),
        ("listener 1883 ", f"listener {port} "),
        ("/var/lib/mosquitto/", f"{tmp_path}/"),
        ("log_dest syslog", "log_dest stderr"),
    ]:
        assert old in conf
        conf = conf.replace(old, new)

    class ShippedConf(MosquittoBroker):
        def render_conf(self) -> str:
            return conf + f"user {super().render_conf().splitlines()[1].split()[1]}\n"

    with ShippedConf(port, tmp_path / "broker"):
        telemetry = "pilegate/v1/station1/pile/F1/port/1/telemetry"
        cmd = "pilegate/v1/station1/pile/F1/port/1/cmd"
        reasons = publish_reasons(port, "pilegate-central", telemetry, cmd)
        assert reasons == [NOT_AUTHORIZED, NO_SUBSCRIBERS]


def test_a_killed_broker_starts_again_on_the_same_port(mosquitto):
    port = mosquitto.port
    mosquitto.kill()
    assert not mosquitto.running and not port_accepts(port)
    mosquitto.start()
    assert mosquitto.running and mosquitto.port == port and port_accepts(port)


# -- the embedded broker (demo without mosquitto) ----------------------------------------------


async def test_embedded_broker_carries_qos1_retained_messages_and_the_will(
    tmp_path, cleanup, mqtt_probe_factory: ProbeFactory
):
    broker = EmbeddedBroker(free_port(), tmp_path / "amqtt")
    broker.start()
    cleanup(broker.stop)
    proxy = TcpProxy(broker.port)
    await proxy.start()
    cleanup(proxy.close)
    gw = Gateway(tmp_path, proxy.port)
    cleanup(gw.close)
    await gw.uplink.start()
    gw.send([message(i) for i in range(50)])
    await wait_for(lambda: gw.outbox.depth() == 0, what="acknowledged by amqtt")

    probe = await mqtt_probe_factory(broker.port)
    await probe.subscribe(GW_STATUS)
    await probe.wait_for(lambda ms: ("online", gw.sessions[0]) in states(ms))
    assert all(m.retain for m in probe.messages)
    proxy.cut()
    await probe.wait_for(lambda ms: ("lost", gw.sessions[0]) in states(ms))
