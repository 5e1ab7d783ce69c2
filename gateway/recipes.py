"""Command recipes as arithmetic: what a ``start``/``stop``/``limit`` writes on a current-limit family.

Pure (no I/O): :mod:`gateway.commands` turns these into register writes and read-backs. A power
limit in W becomes a current of ``power_W / (nominal_voltage_V * phases)`` A, clamped to the
recipe's maximum and rounded down to its step; a current below the minimum cannot be set, so the
command is refused. No power limit means the maximum current.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from protocols.regmodel import CurrentRecipe, RegisterMap


class RecipeRefused(Exception):
    """The command cannot be expressed in this family's registers; the message says why."""


@dataclass(frozen=True)
class Write:
    """One register (or coil) write of a command, by register name."""

    register: str
    value: float


@dataclass(frozen=True)
class CurrentSteps:
    """The writes of one command, the register to read back and the value that confirms it."""

    writes: tuple[Write, ...]
    confirm: str | None  # None: the write's reply is the confirmation (a write-only register)
    expect: float
    tolerance: float
    current_A: float  # the current the command sets (0 for a stop)


def current_for_power(
    recipe: CurrentRecipe, regmap: RegisterMap, power_W: int | None, unit_max_A: float | None = None
) -> float:
    """The current limit in A for ``power_W``: clamped to the maximum (the recipe's, or the unit's
    own ``unit_max_A`` if lower and positive), rounded down to the step."""
    top_A = recipe.max_current_A
    if unit_max_A is not None and unit_max_A > 0:
        top_A = min(top_A, unit_max_A)
    if power_W is None:
        return _down_to_step(top_A, recipe.step_A)
    amps = power_W / (regmap.nominal_voltage_V * regmap.phases)
    amps = _down_to_step(min(amps, top_A), recipe.step_A)
    if amps < recipe.min_current_A:
        raise RecipeRefused(
            f"power_W {power_W} is {power_W / (regmap.nominal_voltage_V * regmap.phases):.2f} A at "
            f"{regmap.nominal_voltage_V:g} V x {regmap.phases} phase(s), below the pile's minimum "
            f"{recipe.min_current_A:g} A"
        )
    return amps


def _down_to_step(amps: float, step_A: float) -> float:
    steps = math.floor(amps / step_A + 1e-9)  # 1e-9: 16.0 / 0.1 must not floor to 159
    return round(steps * step_A, 6)


def current_steps(
    recipe: CurrentRecipe, regmap: RegisterMap, op: str, power_W: int | None, unit_max_A: float | None = None
) -> CurrentSteps:
    """The writes and read-back of ``op`` (start, stop or limit)."""
    tolerance = recipe.confirm_tolerance_A + 1e-6
    if op == "stop":
        if recipe.stop == "disable" and recipe.enable is not None:
            off = Write(recipe.enable, recipe.enable_off)
            confirm = recipe.enable if recipe.enable_readable else None
            return CurrentSteps((off,), confirm, recipe.enable_off, 0.0, 0.0)
        return CurrentSteps((Write(recipe.current, 0.0),), recipe.confirm, 0.0, tolerance, 0.0)
    amps = current_for_power(recipe, regmap, power_W, unit_max_A)
    writes = [Write(recipe.current, amps)]
    if op == "start" and recipe.enable is not None:  # the limit first: enabling starts at once
        writes.append(Write(recipe.enable, recipe.enable_on))
    return CurrentSteps(tuple(writes), recipe.confirm, amps, tolerance, amps)
