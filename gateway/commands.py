"""Commands from the central service (or a technician) to a pile's port.

A command is validated (known pile and port, pile reachable, port state allows it, power within the
pile's rating, the family's recipe can express it, not expired), answered ``accepted``, written to
the control registers through the bus owner at command priority, and confirmed by read-back. The
final ``cmd/result`` is ``done``, ``rejected``, ``failed`` or ``expired``. Commands are idempotent
by id: a repeated id gets the recorded result again and is never executed twice.

The map's recipe says how (docs/register-maps.md): ``sequenced`` writes the whole control block
(command code, sequence number, energy target, power limit) and waits for the pile's ``ack_seq``;
``current`` writes a current limit (and an enable register or coil), and waits until the confirm
register shows it. A current-limit family takes no energy target: the central stops the port at
the target, and the result's reason says so.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from drivers.errors import DriverError
from gateway.publisher import Publisher, wall_ms
from gateway.recipes import CurrentSteps, RecipeRefused, current_steps
from gateway.refresh import CurrentRefresher, write_register
from gateway.runtime import GatewayRuntime, PileRuntime
from pilegate.tasks import cancel_and_wait
from protocols import topics
from protocols.codec import decode, decode_field, encode
from protocols.payloads import CommandMessage, CommandResult, PayloadError, ResultStatus
from protocols.regmodel import CurrentRecipe, PortState, SequencedRecipe

log = structlog.get_logger(__name__)

_STARTABLE = {PortState.AVAILABLE, PortState.PLUGGED, PortState.FINISHED}
_REJECTIONS = {
    "rejected_state": "the pile refused: port state does not allow it",
    "rejected_fault": "the pile refused: port is faulted",
    "rejected_param": "the pile refused: parameter out of range",
    "rejected": "the pile refused",
}


@dataclass
class _Cut:
    """Set when a later stop of the same port supersedes the command (``by``: the stop's id)."""

    event: asyncio.Event = field(default_factory=asyncio.Event)
    by: str = ""


class Rejected(Exception):
    """A command that must not be executed; the message says why."""


class CommandExecutor:
    """Validates, executes and confirms commands; remembers results by command id."""

    def __init__(
        self,
        runtime: GatewayRuntime,
        publisher: Publisher,
        *,
        timeout_s: float,
        clock_ms: Callable[[], int] = wall_ms,
        history: int = 10_000,
        readback_interval_s: float = 0.05,
    ) -> None:
        self.runtime, self.publisher = runtime, publisher
        self.timeout_s, self._clock_ms = timeout_s, clock_ms
        self._history = history
        self._readback_interval_s = readback_interval_s
        self._results: OrderedDict[str, CommandResult] = OrderedDict()
        self._running: dict[str, asyncio.Task[CommandResult]] = {}
        # a port's commands take turns in arrival order; a stop cuts the line (see submit)
        self._turns: dict[tuple[str, int], asyncio.Lock] = {}
        self._lines: dict[tuple[str, int], dict[str, _Cut]] = {}
        self._seq: dict[tuple[str, int], int] = {}
        self._refresher = CurrentRefresher()
        self.counts: dict[str, int] = {"received": 0, "invalid": 0, "duplicate": 0}

    def on_message(self, topic: str, payload: bytes) -> None:
        """MQTT hand-off (on the loop): parse and start executing; never raises."""
        try:
            parsed = topics.parse(topic)
        except topics.TopicError as exc:
            log.warning("command on a foreign topic", topic=topic, error=str(exc))
            return
        if parsed.kind != "cmd" or parsed.pile not in self.runtime.piles or parsed.port is None:
            return
        self.counts["received"] += 1
        try:
            command = CommandMessage.from_json(payload)
        except PayloadError as exc:
            self._reject_malformed(parsed.pile, parsed.port, payload, str(exc))
            return
        self.submit(parsed.pile, parsed.port, command)

    def submit(self, pile_id: str, port: int, command: CommandMessage) -> asyncio.Task[CommandResult]:
        """Execute ``command`` once; a repeated id returns the first execution's task or result.

        One port's commands run one at a time, in arrival order: a ``limit`` sent right after a
        ``start`` is written once the start is confirmed, so neither read-back is taken for the
        other's. A ``stop`` does not wait: every earlier command of its port, queued or waiting for
        its read-back, is answered ``failed`` ("superseded by stop ...") and the stop runs at once.
        """
        if command.id in self._running:
            self.counts["duplicate"] += 1
            return self._running[command.id]
        task = asyncio.get_running_loop().create_task(
            self._execute(pile_id, port, command), name=f"cmd-{command.id}"
        )
        self._running[command.id] = task
        line = self._lines.setdefault((pile_id, port), {})
        if command.op == "stop":
            for earlier in line.values():
                earlier.by = command.id
                earlier.event.set()
        line[command.id] = _Cut()
        task.add_done_callback(lambda _t: self._done(pile_id, port, command.id))
        return task

    def _done(self, pile_id: str, port: int, command_id: str) -> None:
        self._running.pop(command_id, None)
        line = self._lines.get((pile_id, port))
        if line is not None:
            line.pop(command_id, None)
            if not line:
                del self._lines[(pile_id, port)]

    async def _execute(self, pile_id: str, port: int, command: CommandMessage) -> CommandResult:
        if command.id in self._results:
            self.counts["duplicate"] += 1
            result = self._results[command.id]
            self.publisher.cmd_result(pile_id, port, result)  # answer again, do not execute again
            return result
        result = await self._run(pile_id, port, command)
        self._remember(result)
        self.publisher.cmd_result(pile_id, port, result)
        log.info(
            "command",
            pile=pile_id,
            port=port,
            id=command.id,
            op=command.op,
            status=result.status,
            reason=result.reason,
        )
        return result

    async def _run(self, pile_id: str, port: int, command: CommandMessage) -> CommandResult:
        """Wait for the port's turn and execute, unless a later stop cuts in first."""
        cut = self._lines.get((pile_id, port), {}).get(command.id) or _Cut()
        turn = self._turns.setdefault((pile_id, port), asyncio.Lock())
        work = asyncio.ensure_future(self._in_turn(turn, pile_id, port, command))
        cutting = asyncio.ensure_future(cut.event.wait())
        try:
            await asyncio.wait({work, cutting}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # the gateway stops
            work.cancel()
            raise
        finally:
            cutting.cancel()
        if work.done():
            return work.result()
        work.cancel()
        await asyncio.gather(work, return_exceptions=True)  # it leaves the port's turn
        return self._result(command, "failed", f"superseded by stop {cut.by} before it was confirmed")

    async def _in_turn(
        self, turn: asyncio.Lock, pile_id: str, port: int, command: CommandMessage
    ) -> CommandResult:
        async with turn:
            return await self._run_in_turn(pile_id, port, command)

    async def _run_in_turn(self, pile_id: str, port: int, command: CommandMessage) -> CommandResult:
        if self._clock_ms() > command.expires_at:
            return self._result(command, "expired", "expires_at is in the past")
        pile = self.runtime.piles[pile_id]
        try:
            self._validate(pile, port, command)
        except Rejected as exc:
            return self._result(command, "rejected", str(exc))
        self.publisher.cmd_result(pile_id, port, self._result(command, "accepted"))
        try:
            return await asyncio.wait_for(self._write_and_confirm(pile, port, command), self.timeout_s)
        except TimeoutError:
            return self._result(command, "failed", f"no read-back confirmation within {self.timeout_s}s")
        except DriverError as exc:
            return self._result(command, "failed", f"{exc.kind}: {exc}")

    def _validate(self, pile: PileRuntime, port: int, command: CommandMessage) -> None:
        if not 1 <= port <= pile.config.ports:
            raise Rejected(f"pile {pile.id} has no port {port} (ports 1..{pile.config.ports})")
        if pile.state not in ("online", "faulted"):
            raise Rejected(f"pile {pile.id} is not reachable (state {pile.state or 'unknown'})")
        values = pile.last.get(port, {})
        power = command.params.get("power_W")
        rated = pile.rated_power_W
        if power is not None and rated is not None and power > rated:
            raise Rejected(f"power_W {power} exceeds the pile's rated {rated} W")
        if command.op == "start":
            if values.get("fault"):
                raise Rejected(f"port {port} is faulted (fault code {values.get('fault')})")
            if values.get("state") not in _STARTABLE:
                raise Rejected(f"port {port} cannot start in state {values.get('state')}")
        if command.op == "limit" and values.get("state") != PortState.CHARGING:
            raise Rejected(f"port {port} is not charging")
        recipe = pile.regmap.recipe
        if recipe is None:
            raise Rejected(f"map {pile.regmap.name} has no command recipe: its piles are read-only")
        if isinstance(recipe, CurrentRecipe):
            try:
                current_steps(recipe, pile.regmap, command.op, power, _unit_max_A(pile, port, recipe))
            except RecipeRefused as exc:
                raise Rejected(str(exc)) from None

    async def _write_and_confirm(
        self, pile: PileRuntime, port: int, command: CommandMessage
    ) -> CommandResult:
        recipe = pile.regmap.recipe
        if isinstance(recipe, SequencedRecipe):
            return await self._sequenced(pile, port, command, recipe)
        assert isinstance(recipe, CurrentRecipe)  # _validate refused maps without a recipe
        return await self._current(pile, port, command, recipe)

    async def _sequenced(
        self, pile: PileRuntime, port: int, command: CommandMessage, recipe: SequencedRecipe
    ) -> CommandResult:
        regmap, unit = pile.regmap, pile.config.unit
        control, _ = regmap.fields_by_name[recipe.command]
        seq = self._next_seq(pile, port, recipe.ack_sequence)
        values = {
            recipe.command: dict(recipe.codes)[command.op],
            recipe.sequence: seq,
            recipe.target_energy: command.params.get("energy_Wh", 0),
            recipe.power_limit: command.params.get("power_W", 0),
        }
        words = encode(regmap, control, values)
        await pile.bus.write_registers(unit, regmap.port_address(port, control), words)
        readback, _ = regmap.fields_by_name[recipe.ack_sequence]
        address = regmap.port_address(port, readback)
        while True:
            raw = await pile.bus.read_registers(unit, address, readback.size, readback.function)
            acked = decode(regmap, readback, raw)
            if acked[recipe.ack_sequence] == seq:
                return self._acknowledged(command, recipe, acked)
            await asyncio.sleep(self._readback_interval_s)

    def _acknowledged(
        self, command: CommandMessage, recipe: SequencedRecipe, readback: dict[str, object]
    ) -> CommandResult:
        status = readback[recipe.ack_status]
        outcome = dict(recipe.statuses).get(status) if isinstance(status, int) else None
        if outcome == "ok":
            return self._result(command, "done", readback=readback)
        reason = _REJECTIONS.get(outcome or "", f"the pile answered status {status}")
        return self._result(command, "rejected", reason, readback)

    async def _current(
        self, pile: PileRuntime, port: int, command: CommandMessage, recipe: CurrentRecipe
    ) -> CommandResult:
        power = command.params.get("power_W")
        steps = current_steps(recipe, pile.regmap, command.op, power, _unit_max_A(pile, port, recipe))
        for write in steps.writes:
            await write_register(pile, port, write.register, write.value)
        if recipe.refresh_s:
            self._refresher.hold(pile, port, recipe, steps.current_A)
        if steps.confirm is None:
            return self._current_done(command, steps, None)
        while True:
            value = await self._read_register(pile, port, steps.confirm)
            if isinstance(value, int | float) and abs(value - steps.expect) <= steps.tolerance:
                return self._current_done(command, steps, value)
            await asyncio.sleep(self._readback_interval_s)

    def _current_done(self, command: CommandMessage, steps: CurrentSteps, value: object) -> CommandResult:
        energy_Wh = command.params.get("energy_Wh")
        reason = None
        if command.op == "start" and energy_Wh:
            reason = f"the pile takes no energy target: the central stops the port at {energy_Wh} Wh"
        readback: dict[str, object] = {"current_A": steps.current_A}
        if steps.confirm is not None:
            readback[steps.confirm] = value
        return self._result(command, "done", reason, readback)

    async def _read_register(self, pile: PileRuntime, port: int, name: str) -> object:
        regmap, unit = pile.regmap, pile.config.unit
        block, f = regmap.fields_by_name[name]
        address = regmap.field_address(port, name)
        raw = await pile.bus.read_registers(unit, address, f.width, block.function)
        return decode_field(regmap, f, raw, block.bits)

    def _next_seq(self, pile: PileRuntime, port: int, ack_name: str) -> int:
        key = (pile.id, port)
        last = self._seq.get(key)
        if last is None:  # continue after the pile's own last ack so a restart cannot collide
            ack = pile.last.get(port, {}).get(ack_name)
            last = ack if isinstance(ack, int) else 0
        seq = last % 0xFFFF + 1
        self._seq[key] = seq
        return seq

    def _result(
        self,
        command: CommandMessage,
        status: ResultStatus,
        reason: str | None = None,
        readback: dict[str, object] | None = None,
    ) -> CommandResult:
        return CommandResult(
            command.id,
            status,
            self._clock_ms(),
            reason,
            readback,
        )

    def _remember(self, result: CommandResult) -> None:
        self._results[result.id] = result
        while len(self._results) > self._history:
            self._results.popitem(last=False)

    def _reject_malformed(self, pile: str, port: int, payload: bytes, reason: str) -> None:
        self.counts["invalid"] += 1
        log.warning("malformed command", pile=pile, port=port, error=reason)
        command_id = _peek_id(payload)
        if command_id:
            self.publisher.cmd_result(
                pile,
                port,
                CommandResult(command_id, "rejected", self._clock_ms(), f"malformed command: {reason}"),
            )

    async def close(self) -> None:
        await self._refresher.close()
        await cancel_and_wait(list(self._running.values()), what="commands")


def _unit_max_A(pile: PileRuntime, port: int, recipe: CurrentRecipe) -> float | None:
    """The unit's own maximum current from its last reading, when the map names such a register."""
    if recipe.max_current is None:
        return None
    value = pile.last.get(port, {}).get(recipe.max_current)
    return float(value) if isinstance(value, int | float) else None


def _peek_id(payload: bytes) -> str | None:
    """The ``id`` of a command that failed validation, if one can be read, to answer it."""
    try:
        obj = json.loads(payload)
    except ValueError:
        return None
    value = obj.get("id") if isinstance(obj, dict) else None
    return value if isinstance(value, str) and 1 <= len(value) <= 64 else None
