"""Register writes of a map's control registers, and the keeper of current limits that expire.

Some families hold a written current limit only for a validity time and then fall back to their
own safe current, so a stopped port would start charging again (map key ``refresh_s`` of a
``current`` recipe). :class:`CurrentRefresher` rewrites the last current of every such port (0 A
after a stop included) every ``refresh_s`` seconds, at command priority, from one task.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import structlog

from drivers.errors import DriverError
from gateway.runtime import PileRuntime
from protocols.codec import encode_field
from protocols.regmodel import CodecError, CurrentRecipe

log = structlog.get_logger(__name__)


async def write_register(pile: PileRuntime, port: int, name: str, value: float) -> None:
    """Write the control register ``name`` of ``port``: a coil (function 5), or a holding register
    with function 16, or 6 where the map says ``write_function = 6``."""
    regmap, unit = pile.regmap, pile.config.unit
    block, f = regmap.fields_by_name[name]
    address = regmap.field_address(port, name)
    if block.bits:
        await pile.bus.write_coil(unit, address, bool(value))
        return
    words = encode_field(regmap, block, name, value)
    if f.write_function == 6:
        await pile.bus.write_register(unit, address, words[0])
    else:
        await pile.bus.write_registers(unit, address, words)


@dataclass
class _Held:
    pile: PileRuntime
    port: int
    register: str
    current_A: float
    interval_s: float
    due_at: float


class CurrentRefresher:
    """Rewrites held current limits before the pile forgets them."""

    def __init__(self) -> None:
        self._held: dict[tuple[str, int], _Held] = {}
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    def hold(self, pile: PileRuntime, port: int, recipe: CurrentRecipe, current_A: float) -> None:
        """Keep ``current_A`` written on ``port`` (replacing what was held there)."""
        now = asyncio.get_running_loop().time()
        held = _Held(pile, port, recipe.current, current_A, recipe.refresh_s, now + recipe.refresh_s)
        self._held[(pile.id, port)] = held
        self._changed.set()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="current-refresh")

    def held(self, pile_id: str, port: int) -> float | None:
        """The current kept on a port, if any."""
        held = self._held.get((pile_id, port))
        return held.current_A if held else None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._changed.clear()
            due_at = min((h.due_at for h in self._held.values()), default=loop.time() + 3600)
            try:
                await asyncio.wait_for(self._changed.wait(), max(0.0, due_at - loop.time()))
                continue  # a new hold: recompute the next due time
            except TimeoutError:
                pass
            for held in [h for h in self._held.values() if h.due_at <= loop.time()]:
                held.due_at = loop.time() + held.interval_s
                await self._rewrite(held)

    async def _rewrite(self, held: _Held) -> None:
        try:
            await write_register(held.pile, held.port, held.register, held.current_A)
        except (DriverError, CodecError) as exc:
            log.warning("current refresh failed", pile=held.pile.id, port=held.port, error=str(exc))

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
