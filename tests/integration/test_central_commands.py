"""CommandSender round trips through a real Mosquitto with a fake gateway (an MQTT probe that answers).

The central side is wired as the service wires it: CentralMqtt -> Ingest.handle -> cmd/result ->
CommandSender.on_result. Timeouts and expiry are driven by a fake clock where the test needs them
to be exact; the timer task only compares that clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from central.adapters.commands import CommandError, CommandOutcome, CommandSender
from central.adapters.ingest import Ingest
from central.adapters.mqtt import CentralMqtt, MqttSettings
from central.adapters.schema import migrations
from central.adapters.storage import Store
from pilegate.broker import MosquittoBroker
from protocols import topics
from protocols.payloads import CommandResult, PileEvent, Telemetry
from tests.helpers import wait_for

if TYPE_CHECKING:
    from tests.broker_fixtures import MqttProbe, ProbeMessage

pytest_plugins = ["tests.broker_fixtures"]

STATION = "s1"
CMD_FILTER = f"pilegate/v1/{STATION}/pile/+/port/+/cmd"
Script = Callable[[int, dict[str, Any]], list[str]]  # (attempt index, command) -> result statuses


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class FakeClock:
    def __init__(self) -> None:
        self.ms = now_ms()

    def __call__(self) -> int:
        return self.ms


class Listener:
    def __init__(self) -> None:
        self.results: list[CommandResult] = []

    def on_telemetry(self, pile_no: str, port: int, reading: Telemetry) -> None:
        pass

    def on_pile_state(self, pile_no: str, state: str) -> None:
        pass

    def on_command_result(self, pile_no: str, port: int, result: CommandResult) -> None:
        self.results.append(result)

    def on_pile_event(self, pile_no: str, event: PileEvent) -> None:
        pass


class FakeGateway:
    """Answers each command on the station's cmd topics as its script says."""

    def __init__(self, probe: MqttProbe, script: Script) -> None:
        self.probe, self.script = probe, script
        self.task: asyncio.Task[None] | None = None

    def commands(self, messages: list[ProbeMessage] | None = None) -> list[dict[str, Any]]:
        msgs = self.probe.messages if messages is None else messages
        return [m.json() for m in msgs if m.topic.endswith("/cmd")]

    async def start(self) -> None:
        await self.probe.subscribe(CMD_FILTER)
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def _run(self) -> None:
        answered = 0
        while True:
            msgs = await self.probe.wait_for(partial(self._more_than, answered), 3600)
            for index, cmd in enumerate(self.commands(msgs)[answered:], start=answered):
                for status in self.script(index, cmd):
                    self.answer(cmd["id"], status)
                answered = index + 1

    def _more_than(self, answered: int, messages: list[ProbeMessage]) -> bool:
        return len(self.commands(messages)) > answered

    def answer(self, command_id: str, status: str, pile: str = "F1", port: int = 1) -> None:
        result = CommandResult(command_id, status, now_ms(), reason=f"fake {status}")  # type: ignore[arg-type]
        self.probe.publish(topics.cmd_result(STATION, pile, port), result.to_json())


class Central:
    def __init__(self, store: Store, port: int, **sender: Any) -> None:
        self.listener = Listener()
        self.ingest = Ingest(store, STATION, self.listener)
        settings = MqttSettings("127.0.0.1", port, client_id="central-cmd-test")
        self.mqtt = CentralMqtt(settings, [self.ingest.subscription], self.ingest.handle)
        self.sender = CommandSender(self.mqtt, store, STATION, **sender)
        self.ingest.commands = self.sender
        self.outcomes: list[CommandOutcome] = []
        self.sender.on_outcome = self.outcomes.append

    async def start(self) -> None:
        await self.ingest.start()
        await self.sender.start()
        await self.mqtt.start()
        await self.mqtt.wait_connected(5)

    async def stop(self) -> None:
        await self.mqtt.stop()
        await self.sender.stop()
        await self.ingest.stop()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = Store(tmp_path / "central.db", [migrations])
    await store.open()
    yield store
    await store.close()


@pytest.fixture
async def make_central(store: Store, mosquitto: MosquittoBroker) -> AsyncIterator[Callable[..., Any]]:
    made: list[Central] = []

    async def make(**sender: Any) -> Central:
        central = Central(store, mosquitto.port, **sender)
        made.append(central)
        await central.start()
        return central

    yield make
    for central in made:
        await central.stop()


@pytest.fixture
async def make_gateway(mqtt_probe: MqttProbe) -> AsyncIterator[Callable[[Script], Any]]:
    made: list[FakeGateway] = []

    async def make(script: Script) -> FakeGateway:
        gateway = FakeGateway(mqtt_probe, script)
        made.append(gateway)
        await gateway.start()
        return gateway

    yield make
    for gateway in made:
        await gateway.stop()


async def command_rows(store: Store) -> list[dict[str, Any]]:
    return await store.read(
        lambda db: [dict(r) for r in db.query("SELECT * FROM commands ORDER BY attempt, created_ms")]
    )


async def wait_outcome(central: Central, timeout_s: float = 10.0) -> CommandOutcome:
    await wait_for(lambda: central.outcomes, timeout_s=timeout_s, what="a command outcome")
    return central.outcomes[0]


async def wait_rows(store: Store, pred: Callable[[list[dict[str, Any]]], bool]) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []

    async def check() -> bool:
        got[:] = await command_rows(store)
        return pred(got)

    await wait_for(check, timeout_s=5, what="command rows")
    return got


# -- round trips -----------------------------------------------------------------------------


async def test_accepted_then_done_is_one_successful_outcome(make_central, make_gateway, store):
    gateway = await make_gateway(lambda i, cmd: ["accepted", "done"])
    central = await make_central()
    before = now_ms()
    command_id = await central.sender.send("F1", 1, "start", {"energy_Wh": 5000}, car="V1")
    outcome = await wait_outcome(central)
    assert (outcome.command_id, outcome.status, outcome.attempts, outcome.car) == (
        command_id,
        "done",
        1,
        "V1",
    )
    [wire] = gateway.commands()
    assert (wire["id"], wire["op"], wire["params"]) == (command_id, "start", {"energy_Wh": 5000})
    assert before + 29_000 <= wire["expires_at"] <= now_ms() + 30_000
    assert [r.status for r in central.listener.results] == ["accepted", "done"]
    rows = await wait_rows(store, lambda rs: bool(rs) and rs[0]["status"] == "done")
    assert [(r["id"], r["attempt"], r["op"], r["car"]) for r in rows] == [(command_id, 1, "start", "V1")]
    assert json.loads(rows[0]["params"]) == {"energy_Wh": 5000}


async def test_failed_attempt_is_retried_with_a_new_id_then_done(make_central, make_gateway, store):
    gateway = await make_gateway(lambda i, cmd: ["accepted", "failed" if i == 0 else "done"])
    central = await make_central()
    command_id = await central.sender.send("F1", 1, "stop", {})
    outcome = await wait_outcome(central)
    assert (outcome.status, outcome.attempts) == ("done", 2)
    ids = [c["id"] for c in gateway.commands()]
    assert ids[0] == command_id and len(set(ids)) == 2
    assert outcome.last_command_id == ids[1]
    rows = await wait_rows(store, lambda rs: [r["status"] for r in rs] == ["failed", "done"])
    assert [(r["id"], r["attempt"]) for r in rows] == [(ids[0], 1), (ids[1], 2)]


async def test_silent_gateway_times_out_retries_then_fails(make_central, make_gateway, store):
    gateway = await make_gateway(lambda i, cmd: [])
    central = await make_central(result_timeout_s=0.3, retries=2)
    await central.sender.send("F1", 1, "limit", {"power_W": 3000})
    outcome = await wait_outcome(central)
    assert (outcome.status, outcome.attempts) == ("failed", 3)
    assert outcome.reason is not None and "no result" in outcome.reason
    assert len({c["id"] for c in gateway.commands()}) == 3
    await wait_rows(
        store,
        lambda rs: [(r["attempt"], r["status"]) for r in rs] == [(1, "failed"), (2, "failed"), (3, "failed")],
    )


async def test_rejected_is_final_without_a_retry(make_central, make_gateway):
    gateway = await make_gateway(lambda i, cmd: ["rejected"])
    central = await make_central(retries=3)
    await central.sender.send("F1", 1, "start", {})
    outcome = await wait_outcome(central)
    assert (outcome.status, outcome.attempts, outcome.reason) == ("rejected", 1, "fake rejected")
    assert central.sender.stats()["retries"] == 0
    assert central.sender.stats()["pending"] == 0
    assert len(gateway.commands()) == 1


async def test_no_retry_past_the_original_expiry(make_central, make_gateway):
    clock = FakeClock()
    gateway = await make_gateway(lambda i, cmd: [])
    central = await make_central(clock_ms=clock, result_timeout_s=0.3, retries=5)
    await central.sender.send("F1", 1, "start", {}, expires_in_s=0.5)
    expires_at = clock.ms + 500
    await gateway.probe.wait_for(lambda ms: len(gateway.commands(ms)) == 1, timeout_s=5)
    clock.ms += 300  # attempt 1 overdue, expiry not yet reached: retried
    await gateway.probe.wait_for(lambda ms: len(gateway.commands(ms)) == 2, timeout_s=5)
    clock.ms += 300  # attempt 2 overdue and past the expiry: final
    outcome = await wait_outcome(central)
    assert (outcome.status, outcome.attempts) == ("expired", 2)
    assert [c["expires_at"] for c in gateway.commands()] == [expires_at, expires_at]


async def test_a_start_on_the_port_ends_the_retries_of_an_older_stop(make_central, make_gateway):
    """A stop of the port's previous segment that is still being retried must not hit the segment a
    later start begins: it ends ``expired`` and is not sent again (the chaos suite saw such a retry
    stop a new car's charge, which was then billed as complete)."""
    clock = FakeClock()
    gateway = await make_gateway(lambda i, cmd: ["done"] if cmd["op"] == "start" else [])
    central = await make_central(clock_ms=clock, result_timeout_s=0.3, retries=5)
    await central.sender.send("F1", 1, "stop", {}, car="V1")
    await gateway.probe.wait_for(lambda ms: len(gateway.commands(ms)) == 1, timeout_s=5)
    await central.sender.send("F1", 1, "start", {"energy_Wh": 5000}, car="V2")
    await wait_for(lambda: len(central.outcomes) == 2, timeout_s=5, what="both outcomes")
    by_op = {o.op: o for o in central.outcomes}
    assert (by_op["stop"].status, by_op["stop"].attempts) == ("expired", 1)
    assert by_op["stop"].reason is not None and "superseded" in by_op["stop"].reason
    assert by_op["start"].status == "done"
    clock.ms += 1000  # the stop's attempt is long overdue: still no retry
    await asyncio.sleep(0.3)
    assert [c["op"] for c in gateway.commands()] == ["stop", "start"]
    assert central.sender.stats()["pending"] == 0


async def test_a_start_on_the_port_ends_the_retries_of_an_older_start(make_central, make_gateway):
    """A start of the port's previous segment still being retried must not run after the new
    segment's start: its retry would start the previous charge again, with its full amount."""
    clock = FakeClock()
    gateway = await make_gateway(lambda i, cmd: ["done"] if cmd["params"]["energy_Wh"] == 5000 else [])
    central = await make_central(clock_ms=clock, result_timeout_s=0.3, retries=5)
    await central.sender.send("F1", 1, "start", {"energy_Wh": 12000}, car="V1")
    await gateway.probe.wait_for(lambda ms: len(gateway.commands(ms)) == 1, timeout_s=5)
    await central.sender.send("F1", 1, "start", {"energy_Wh": 5000}, car="V2")
    await wait_for(lambda: len(central.outcomes) == 2, timeout_s=5, what="both outcomes")
    first, second = sorted(central.outcomes, key=lambda o: o.car or "")
    assert (first.status, first.attempts, first.reason) == ("expired", 1, "superseded by a start on the port")
    assert second.status == "done"
    clock.ms += 1000  # the first start's attempt is long overdue: still no retry
    central.sender.expire_overdue()
    assert [c["params"]["energy_Wh"] for c in gateway.commands()] == [12000, 5000]
    assert central.sender.stats()["pending"] == 0


async def test_a_late_done_for_a_superseded_attempt_still_counts(make_central, make_gateway):
    clock = FakeClock()
    gateway = await make_gateway(lambda i, cmd: [])
    central = await make_central(clock_ms=clock, result_timeout_s=1.0, retries=2)
    first = await central.sender.send("F1", 1, "start", {})
    await gateway.probe.wait_for(lambda ms: len(gateway.commands(ms)) == 1, timeout_s=5)
    clock.ms += 1000
    await gateway.probe.wait_for(lambda ms: len(gateway.commands(ms)) == 2, timeout_s=5)
    gateway.answer(first, "done")
    outcome = await wait_outcome(central)
    assert (outcome.status, outcome.attempts, outcome.last_command_id) == ("done", 2, first)


async def test_duplicate_and_unknown_results_are_counted_and_ignored(make_central, make_gateway):
    gateway = await make_gateway(lambda i, cmd: ["done", "done"])
    central = await make_central()
    await central.sender.send("F1", 1, "stop", {})
    await wait_outcome(central)
    gateway.answer("no-such-command", "done")
    await wait_for(lambda: central.sender.stats()["unknown"] == 1, timeout_s=5)
    assert central.sender.stats()["duplicates"] == 1
    assert len(central.outcomes) == 1


async def test_publish_while_disconnected_is_retried_then_fails(store):
    mqtt = CentralMqtt(MqttSettings("127.0.0.1", 9), [], lambda t, p: None)  # never started
    sender = CommandSender(mqtt, store, STATION, result_timeout_s=0.2, retries=2, retry_delay_s=0.01)
    outcomes: list[CommandOutcome] = []
    sender.on_outcome = outcomes.append
    await sender.start()
    try:
        await sender.send("F1", 1, "stop", {})
        await wait_for(lambda: outcomes, timeout_s=5, what="the final outcome")
    finally:
        await sender.stop()
    assert (outcomes[0].status, outcomes[0].attempts) == ("failed", 3)
    assert outcomes[0].reason is not None and "not published" in outcomes[0].reason
    rows = await command_rows(store)
    assert [(r["attempt"], r["status"]) for r in rows] == [(1, "failed"), (2, "failed"), (3, "failed")]


@pytest.mark.parametrize(
    ("pile", "port", "op", "params", "problem"),
    [
        ("F1", 1, "reboot", {}, "op"),
        ("F1", 1, "limit", {}, "power_W"),
        ("F1", 1, "start", {"energy_Wh": -5}, "energy_Wh"),
        ("F1", 1, "stop", {"power_W": 1}, "unknown"),
        ("F/1", 1, "stop", {}, "pile"),
        ("F1", 0, "stop", {}, "port"),
    ],
)
async def test_a_malformed_command_is_refused_by_name(store, pile, port, op, params, problem):
    mqtt = CentralMqtt(MqttSettings("127.0.0.1", 9), [], lambda t, p: None)
    sender = CommandSender(mqtt, store, STATION)
    with pytest.raises(CommandError, match=problem):
        await sender.send(pile, port, op, params)
    assert sender.stats()["attempts"] == 0
