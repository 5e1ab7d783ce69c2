"""The telemetry ingest in its own process, on both engines: ``pilegate central`` (``[ingest] mode =
"process"``, the default) runs ``pilegate ingest`` as a supervised child that stores the telemetry
while the central serves REST; a child killed with -9 mid-stream is restarted, and every reading
the gateways published is stored exactly once (manual acks + the de-duplication seeded from the
rows stored last)."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from central.ingest_main import IngestLock, IngestLocked
from pilegate.broker import MosquittoBroker, free_port
from protocols.payloads import PileStatus, Telemetry
from tests.e2e.harness import Api, CentralProcess, central_config, spawn, wait_until
from tests.postgres_server import BOTH_ENGINES

pytest_plugins = ("tests.integration.central_fixtures", "tests.broker_fixtures")
pytestmark = BOTH_ENGINES

STATION = "s1"
PILES = ("F1", "T1")  # the station's own piles (fast=1, trickle=1), two ports each
STREAMS = [(pile, port) for pile in PILES for port in (1, 2)]
START_MS = 1_767_225_600_000


def database_url(database: Path | str) -> str:
    return database if isinstance(database, str) else f"sqlite:///{Path(database).resolve()}"


def query(url: str, sql: str) -> list[tuple[object, ...]]:
    if url.startswith("postgresql://"):
        with psycopg.connect(url) as conn:
            return list(conn.execute(sql).fetchall())
    with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"), timeout=30)) as conn:
        return list(conn.execute(sql).fetchall())


def stored_count(url: str) -> int:
    return int(str(query(url, "SELECT count(*) FROM telemetry")[0][0]))


def children(pid: int) -> list[int]:
    """Pids of the live children of ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry.name))
    return found


def reading(seq: int) -> bytes:
    return Telemetry(
        START_MS + seq * 1000, 7, seq, "available", 230.0, 0.0, 0.0, 1000 + seq, 25.0, "none"
    ).to_json()


class Gateway:
    """A paho publisher standing in for the gateway: QoS 1, each publish acknowledged by the broker."""

    def __init__(self, port: int) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-gw", protocol=mqtt.MQTTv311)
        self.client.max_queued_messages_set(0)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> mqtt.MQTTMessageInfo:
        return self.client.publish(topic, payload, qos=1, retain=retain)

    def statuses(self) -> None:
        for pile in PILES:
            status = PileStatus("online", START_MS, kind="fast", ports=2, rated_power_W=30_000)
            self.publish(f"pilegate/v1/{STATION}/pile/{pile}/status", status.to_json(), retain=True)

    def readings(self, first: int, last: int) -> None:
        """Seqs ``first..last`` on every stream, each acknowledged by the broker."""
        infos = [
            self.publish(f"pilegate/v1/{STATION}/pile/{pile}/port/{port}/telemetry", reading(seq))
            for seq in range(first, last + 1)
            for pile, port in STREAMS
        ]
        for info in infos:
            info.wait_for_publish(30)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def central(tmp_path: Path, mosquitto: MosquittoBroker, database: Path | str) -> Iterator[CentralProcess]:
    config = (
        central_config(STATION, mosquitto.port, tmp_path / "data", 60, 1, 1).replace(
            "[mqtt]", f'database = "{database_url(database)}"\n[mqtt]'
        )
        + '\n[ingest]\nmode = "process"\n'
    )
    config_path = tmp_path / "central.toml"
    config_path.write_text(config)
    port = free_port()
    proc = spawn("central", ["central", "--config", str(config_path), "--port", str(port)], tmp_path)
    process = CentralProcess(proc, config_path, f"http://127.0.0.1:{port}")
    try:
        wait_until(process.answering, 30, "central HTTP", proc)
        yield process
    finally:
        proc.stop()


def ingest_subscribed(central: CentralProcess) -> bool:
    log = central.proc.log()
    return '"client_id": "central-s1-ingest"' in log and "broker connected" in log


def test_the_ingest_child_stores_while_the_central_serves_and_a_killed_child_loses_and_doubles_nothing(
    central: CentralProcess, mosquitto: MosquittoBroker, database: Path | str
) -> None:
    url = database_url(database)
    child = wait_until(lambda: children(central.proc.popen.pid), 30, "the ingest child", central.proc)[0]
    # its first subscription: from then on its persistent session keeps what it misses
    wait_until(lambda: ingest_subscribed(central), 30, "the ingest child subscribed", central.proc)
    driver = Api(central.url).register("ingest-driver")
    gateway = Gateway(mosquitto.port)
    try:
        gateway.statuses()
        gateway.readings(1, 100)
        wait_until(
            lambda: stored_count(url) == 100 * len(STREAMS), 30, "the first readings stored", central.proc
        )
        status, body = driver.call("GET", "/api/charging/piles/status/")
        assert status == 200, body  # the central serves while its child stores

        publishing = threading.Thread(target=gateway.readings, args=(101, 600))
        publishing.start()
        wait_until(lambda: stored_count(url) > 150 * len(STREAMS), 30, "readings flowing", central.proc)
        os.kill(child, signal.SIGKILL)  # mid-stream: a batch in its buffer, PUBACKs not yet sent
        publishing.join(60)
        assert not publishing.is_alive()
        restarted = wait_until(
            lambda: [pid for pid in children(central.proc.popen.pid) if pid != child],
            30,
            "a new ingest child",
            central.proc,
        )
        assert restarted
        total = 600 * len(STREAMS)
        wait_until(lambda: stored_count(url) >= total, 60, "every reading stored", central.proc)
        rows = query(url, "SELECT pile_no, port, seq, count(*) FROM telemetry GROUP BY pile_no, port, seq")
        assert len(rows) == total  # none lost
        assert {n for *_, n in rows} == {1}  # none twice
        assert {(p, int(str(port))) for p, port, *_ in rows} == set(STREAMS)
        assert stored_count(url) == total
        ports = query(url, "SELECT max(meter_wh) FROM ports")
        assert ports[0][0] == 1000 + 600  # the live fields follow the latest reading
        status, body = driver.call("GET", "/api/charging/queue/status/")
        assert status == 200, body
    finally:
        gateway.close()
    assert "ingest child exited; restarting" in central.proc.log()


def test_one_ingest_per_database(database: Path | str) -> None:
    first = IngestLock(database_url(database))
    first.acquire()
    try:
        with pytest.raises(IngestLocked, match="one ingest per database"):
            IngestLock(database_url(database)).acquire()
    finally:
        first.release()
    second = IngestLock(database_url(database))
    second.acquire()  # free again once released
    second.release()


def test_a_standing_by_ingest_takes_over_when_the_one_that_stores_dies_and_misses_nothing(
    tmp_path: Path, central: CentralProcess, mosquitto: MosquittoBroker, database: Path | str
) -> None:
    """Another central's ingest child on the same database (``pilegate ingest --wait``) stands by;
    when the storing one dies with its central (kill -9), it takes over the same broker session."""
    url = database_url(database)
    # its first subscription: from then on its persistent session keeps what it misses
    wait_until(lambda: ingest_subscribed(central), 30, "the ingest child subscribed", central.proc)
    standby = spawn("ingest-2", ["ingest", "--config", str(central.config_path), "--wait"], tmp_path)
    gateway = Gateway(mosquitto.port)
    try:
        wait_until(lambda: "ingest standing by" in standby.log(), 30, "the other ingest standing by", standby)
        gateway.statuses()
        gateway.readings(1, 100)
        wait_until(lambda: stored_count(url) == 100 * len(STREAMS), 30, "the first readings", central.proc)
        assert "broker connected" not in standby.log()  # it stores nothing while it stands by

        publishing = threading.Thread(target=gateway.readings, args=(101, 600))
        publishing.start()
        wait_until(lambda: stored_count(url) > 150 * len(STREAMS), 30, "readings flowing", central.proc)
        central.proc.stop(signal.SIGKILL)  # its ingest child dies with it, mid-stream
        publishing.join(60)
        assert not publishing.is_alive()
        wait_until(lambda: "ingest taking over" in standby.log(), 30, "the takeover", standby)
        total = 600 * len(STREAMS)
        wait_until(lambda: stored_count(url) >= total, 60, "every reading stored", standby)
        rows = query(url, "SELECT pile_no, port, seq, count(*) FROM telemetry GROUP BY pile_no, port, seq")
        assert len(rows) == total  # none lost: the same client id resumed the broker session
        assert {n for *_, n in rows} == {1}  # none twice
    finally:
        gateway.close()
        standby.stop()
