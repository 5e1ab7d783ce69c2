"""The gateway's live view of its piles: poll results in, telemetry, events and statuses out.

One ``PileRuntime`` per configured pile keeps its identity (read once from the pile), the last
reading of each port, and the trackers that detect events and state changes. ``GatewayRuntime``
routes each bus's poll results to its piles and everything they produce to the publisher.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import structlog

from drivers.bus import Bus, PollResult
from drivers.errors import DriverError
from gateway.config import GatewayConfig, PileConfig, pile_map
from gateway.publisher import Publisher
from gateway.tracker import PileTracker, SessionMeter
from pilegate.tasks import cancel_and_wait
from protocols.payloads import PileState, PileStatus
from protocols.registers import RegisterMap

log = structlog.get_logger(__name__)


@dataclass
class PileRuntime:
    """What the gateway knows of one pile."""

    config: PileConfig
    bus: Bus
    regmap: RegisterMap
    tracker: PileTracker
    identity: dict[str, object] = field(default_factory=dict)
    last: dict[int, dict[str, object]] = field(default_factory=dict)
    last_ts_ms: int = 0
    last_error: str | None = None
    meters: dict[int, SessionMeter] = field(default_factory=dict)  # session energy families only

    def __post_init__(self) -> None:
        energy = self.regmap.fields_by_name.get("energy_Wh")
        if energy is not None and energy[1].energy_kind == "session":
            self.meters = {port: SessionMeter() for port in range(1, self.config.ports + 1)}

    @property
    def id(self) -> str:
        return self.config.id

    @property
    def kind(self) -> str | None:
        if self.config.kind:
            return self.config.kind
        kind = self.identity.get("kind")
        return {0: "trickle", 1: "fast"}.get(kind) if isinstance(kind, int) else None

    @property
    def rated_power_W(self) -> int | None:
        rated = self.identity.get("rated_power_W")
        return rated if isinstance(rated, int) and rated > 0 else None

    @property
    def state(self) -> PileState | None:
        return self.tracker.state

    def status(self, ts_ms: int) -> PileStatus:
        ident = self.identity
        return PileStatus(
            state=self.tracker.state or "offline",
            ts=ts_ms,
            kind=self.kind if self.kind in ("fast", "trickle") else None,  # type: ignore[arg-type]
            ports=self.config.ports,
            rated_power_W=self.rated_power_W,
            vendor=_str(ident.get("vendor")),
            model=_str(ident.get("model")),
            serial=_str(ident.get("serial")),
            firmware=_str(ident.get("firmware")),
            error=self.last_error if self.tracker.state == "comm_fault" else None,
        )


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


class GatewayRuntime:
    """Routes poll results to piles and what they produce to the publisher."""

    def __init__(self, config: GatewayConfig, buses: Mapping[str, Bus], publisher: Publisher) -> None:
        self.config, self.buses, self.publisher = config, buses, publisher
        self.piles: dict[str, PileRuntime] = {
            p.id: PileRuntime(p, buses[p.bus], pile_map(p), PileTracker(p.id, p.ports)) for p in config.piles
        }
        self._identity_tasks: set[asyncio.Task[None]] = set()
        self.telemetry_count = 0

    def on_results(self, results: Sequence[PollResult]) -> None:
        for result in results:
            pile = self.piles.get(result.pile_id)
            if pile is None or result.skipped:
                continue
            if result.ok:
                self._on_reading(pile, result)
            else:
                self._on_failure(pile, result.error)

    def _on_reading(self, pile: PileRuntime, result: PollResult) -> None:
        for port, meter in pile.meters.items():
            values = result.ports.get(port, {})
            if isinstance(energy := values.get("energy_Wh"), int):
                values["energy_Wh"] = meter.cumulative(energy)
        pile.last, pile.last_ts_ms, pile.last_error = result.ports, result.ts_ms, None
        for port, values in result.ports.items():
            self.publisher.telemetry(pile.id, port, result.ts_ms, values)
        self.telemetry_count += len(result.ports)
        events, new_state = pile.tracker.on_reading(result.ports)
        for event in events:
            self.publisher.event(pile.id, result.ts_ms, event)
        if new_state:
            log.info("pile state", pile=pile.id, state=new_state)
            self.publisher.pile_status(pile.id, pile.status(result.ts_ms))
        if not pile.identity:
            self._read_identity_later(pile)

    def _on_failure(self, pile: PileRuntime, error: DriverError | None) -> None:
        pile.last_error = str(error) if error else "no response"
        if pile.bus.health(pile.id).state != "comm_fault":
            return
        if pile.tracker.on_comm_fault():
            log.warning("pile state", pile=pile.id, state="comm_fault", error=pile.last_error)
            self.publisher.pile_status(pile.id, pile.status(self.publisher.now_ms()))

    def _read_identity_later(self, pile: PileRuntime) -> None:
        if not pile.regmap.identity_blocks:  # the family has no identity registers
            return
        if any(t.get_name() == f"identity-{pile.id}" for t in self._identity_tasks):
            return
        task = asyncio.get_running_loop().create_task(self._read_identity(pile), name=f"identity-{pile.id}")
        self._identity_tasks.add(task)
        task.add_done_callback(self._identity_tasks.discard)

    async def _read_identity(self, pile: PileRuntime) -> None:
        try:
            pile.identity = await pile.bus.read_identity(pile.id)
        except DriverError as exc:
            log.debug("identity read failed", pile=pile.id, error=str(exc))
            return
        log.info("pile identity", pile=pile.id, **{k: v for k, v in pile.identity.items()})
        self.publisher.pile_status(pile.id, pile.status(self.publisher.now_ms()))

    async def read_identities(self, timeout_s: float) -> None:
        """Read every pile's identity once at start-up; piles that do not answer are retried later."""

        async def one(pile: PileRuntime) -> None:
            try:
                pile.identity = await asyncio.wait_for(pile.bus.read_identity(pile.id), timeout_s)
            except (DriverError, TimeoutError) as exc:
                log.warning("identity not read at start", pile=pile.id, error=str(exc))

        await asyncio.gather(*(one(p) for p in self.piles.values() if p.regmap.identity_blocks))

    def stop_statuses(self) -> None:
        """Mark every pile offline (a clean stop: nobody is polling them any more)."""
        now = self.publisher.now_ms()
        for pile in self.piles.values():
            if pile.tracker.on_stop():
                self.publisher.pile_status(pile.id, pile.status(now))

    async def close(self) -> None:
        await cancel_and_wait(list(self._identity_tasks), what="identity reads")

    def snapshot(self) -> dict[str, object]:
        """JSON-able view of every pile for the control API."""
        return {
            pid: {
                "state": p.state,
                "bus": p.config.bus,
                "unit": p.config.unit,
                "kind": p.kind,
                "identity": p.identity,
                "last_ts_ms": p.last_ts_ms,
                "last_error": p.last_error,
                "ports": p.last,
            }
            for pid, p in self.piles.items()
        }
