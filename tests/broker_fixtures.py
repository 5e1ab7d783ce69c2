"""Pytest fixtures for tests that need a real MQTT broker: ``mosquitto`` and ``mqtt_probe``.

Use them from any test module with ``pytest_plugins = ["tests.broker_fixtures"]`` (or from a
conftest.py). ``mosquitto`` is a started :class:`pilegate.broker.MosquittoBroker` on a free port
(``.port``, ``.stop()``, ``.start()`` on the same port, ``.kill()``), stopped at teardown.
``mqtt_probe`` is a connected :class:`MqttProbe` on that broker, and ``mqtt_probe_factory`` makes
more (``await mqtt_probe_factory(port, username=..., clean_session=False)``), closed at teardown::

    await mqtt_probe.subscribe("pilegate/v1/#")
    msgs = await mqtt_probe.wait_for(lambda ms: len(ms) >= 10, timeout_s=5)

The probe runs paho's own network thread (it is a test helper, not product code), records every
message under a lock (its waits poll that record), reconnects by itself when the broker comes
back, and re-subscribes on every connect.
"""

from __future__ import annotations

import getpass
import itertools
import json
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from pilegate.broker import MosquittoBroker, free_port
from tests.helpers import wait_for

_ids = itertools.count(1)
PROBE_POLL_S = 0.01  # paho delivers on its own thread; the waits poll what it recorded


@dataclass(frozen=True)
class ProbeMessage:
    """One message the probe received."""

    topic: str
    payload: bytes
    retain: bool
    qos: int

    def json(self) -> Any:
        return json.loads(self.payload)


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT filter matching (``+`` one level, ``#`` the rest)."""
    return bool(mqtt.topic_matches_sub(topic_filter, topic))


class MqttProbe:
    """A paho subscriber that records messages and lets async tests wait for conditions."""

    def __init__(
        self,
        port: int,
        host: str = "127.0.0.1",
        *,
        client_id: str | None = None,
        username: str | None = None,
        password: str | None = None,
        clean_session: bool = True,
    ) -> None:
        self.port, self.host = port, host
        self.client_id = client_id or f"probe-{next(_ids)}"
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=clean_session
        )
        if username is not None:
            self._client.username_pw_set(username, password)
        self._client.reconnect_delay_set(min_delay=1, max_delay=2)
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        self._client.on_disconnect = self._on_disconnect
        self._filters: dict[str, int] = {}
        self._lock = threading.Lock()
        self._messages: list[ProbeMessage] = []
        self._connects = 0
        self.disconnects = 0
        self._subacks: dict[int, list[Any]] = {}

    # -- lifecycle ---------------------------------------------------------------------------

    async def connect(self, timeout_s: float = 5.0) -> None:
        """Connect and start paho's thread; returns after CONNACK."""
        self._client.connect(self.host, self.port, keepalive=10)
        self._client.loop_start()
        await self.wait_connected(timeout_s)

    async def wait_connected(self, timeout_s: float = 5.0, *, connects: int = 1) -> None:
        """Wait until the probe has connected ``connects`` times in total."""
        await wait_for(lambda: self._connects >= connects, timeout_s, PROBE_POLL_S, "probe connected")

    def close(self) -> None:
        """Disconnect and join paho's thread."""
        self._client.disconnect()
        self._client.loop_stop()

    # -- subscribing and publishing ----------------------------------------------------------

    async def subscribe(self, topic_filter: str, qos: int = 1, timeout_s: float = 5.0) -> list[Any]:
        """Subscribe (re-made on every reconnect); returns the SUBACK reason codes."""
        self._filters[topic_filter] = qos
        rc, mid = self._client.subscribe(topic_filter, qos)
        assert mid is not None, f"subscribe {topic_filter} failed: {mqtt.error_string(rc)}"
        await wait_for(lambda: mid in self._subacks, timeout_s, PROBE_POLL_S, f"SUBACK for {topic_filter}")
        return self._subacks[mid]

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        self._client.publish(topic, payload, qos, retain)

    # -- reading -----------------------------------------------------------------------------

    @property
    def messages(self) -> list[ProbeMessage]:
        """Everything received so far, in arrival order (a snapshot)."""
        with self._lock:
            return list(self._messages)

    def matching(self, topic_filter: str) -> list[ProbeMessage]:
        return [m for m in self.messages if topic_matches(topic_filter, m.topic)]

    def clear(self) -> None:
        with self._lock:
            self._messages.clear()

    async def wait_for(
        self, pred: Callable[[list[ProbeMessage]], bool], timeout_s: float = 10.0
    ) -> list[ProbeMessage]:
        """Wait until ``pred(messages)`` is true; returns the messages then."""
        await wait_for(
            lambda: pred(self.messages),
            timeout_s,
            PROBE_POLL_S,
            "probe condition",
            context=self._last_messages,
        )
        return self.messages

    def _last_messages(self) -> str:
        """The ten newest messages, for a failed wait."""
        return f"last: {[(m.topic, m.payload[:80]) for m in self.messages[-10:]]}"

    # -- paho callbacks (paho's thread) -------------------------------------------------------

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if self._filters:
            client.subscribe(list(self._filters.items()))
        self._connects += 1

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        self.disconnects += 1

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reasons: list[Any], properties: Any
    ) -> None:
        self._subacks[mid] = reasons

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self._messages.append(ProbeMessage(msg.topic, bytes(msg.payload), bool(msg.retain), msg.qos))


def connect_result(
    port: int,
    *,
    username: str | None = None,
    password: str | None = None,
    client_id: str = "",
    timeout_s: float = 5.0,
) -> str:
    """The broker's answer to one CONNECT ("Success", "Not authorized", ...), then disconnect."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or f"probe-{next(_ids)}")
    if username is not None:
        client.username_pw_set(username, password)
    answered = threading.Event()
    reasons: list[str] = []

    def on_connect(c: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        reasons.append(str(reason))
        answered.set()

    client.on_connect = on_connect
    client.connect("127.0.0.1", port, keepalive=10)
    client.loop_start()
    try:
        assert answered.wait(timeout_s), f"no CONNACK from the broker on port {port}"
    finally:
        client.disconnect()
        client.loop_stop()
    return reasons[0]


_LISTENER_OPTIONS = {
    "use_username_as_clientid",
    "max_connections",
    "mount_point",
    "protocol",
    "socket_domain",
    "bind_interface",
    "certfile",
    "keyfile",
    "cafile",
    "capath",
    "require_certificate",
    "use_identity_as_username",
    "use_subject_as_username",
    "tls_version",
    "http_dir",
}
SHIPPED_MOSQUITTO_CONF = Path(__file__).parents[1] / "config" / "mosquitto" / "mosquitto.conf"


class ShippedConfMosquitto(MosquittoBroker):
    """Mosquitto running the shipped production config, moved onto a free loopback port, this test's
    password and ACL files, its data dir and stderr logging; every other line is the shipped one."""

    def render_conf(self) -> str:
        assert self.password_file is not None and self.acl_file is not None
        moved = {
            "listener": f"listener {self.port} {self.host}",
            "password_file": f"password_file {self.password_file.resolve()}",
            "acl_file": f"acl_file {self.acl_file.resolve()}",
            "persistence_location": f"persistence_location {self.data_dir.resolve()}/",
            "log_dest": "log_dest stderr",
        }
        lines, seen = [f"user {getpass.getuser()}"], set()
        for line in SHIPPED_MOSQUITTO_CONF.read_text().splitlines():
            directive = line.split(maxsplit=1)[0] if line.strip() else ""
            # a listener option before any listener makes Mosquitto open port 1883 on every interface
            assert directive not in _LISTENER_OPTIONS or "listener" in seen, f"{directive} before listener"
            if directive in moved:
                line = moved[directive]
                seen.add(directive)
            lines.append(line)
        assert seen == set(moved), f"the shipped config no longer has {set(moved) - seen}"
        return "\n".join(lines) + "\n"


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A started Mosquitto on a free 127.0.0.1 port (persistence off), stopped at teardown."""
    broker = MosquittoBroker(free_port(), tmp_path / "mosquitto")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
async def mqtt_probe(mosquitto: MosquittoBroker) -> AsyncIterator[MqttProbe]:
    """A connected MqttProbe on the ``mosquitto`` broker, closed at teardown."""
    probe = MqttProbe(mosquitto.port)
    await probe.connect()
    try:
        yield probe
    finally:
        probe.close()


ProbeFactory = Callable[..., Awaitable[MqttProbe]]


@pytest.fixture
async def mqtt_probe_factory() -> AsyncIterator[ProbeFactory]:
    """``await make(port, **MqttProbe kwargs)``: a connected probe, closed at teardown."""
    probes: list[MqttProbe] = []

    async def make(port: int, **kwargs: Any) -> MqttProbe:
        probe = MqttProbe(port, **kwargs)
        probes.append(probe)
        await probe.connect()
        return probe

    try:
        yield make
    finally:
        for probe in probes:
            probe.close()
