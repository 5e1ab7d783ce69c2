"""Current-limit recipe arithmetic: power in W to a current in A, clamped, stepped, refused below min."""

from __future__ import annotations

import tomllib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.recipes import RecipeRefused, Write, current_for_power, current_steps
from protocols.maploader import parse_map
from protocols.regmodel import CurrentRecipe, RegisterMap

MAP = """
[map]
name = "wb"
document = "test"
nominal_voltage_V = 230
phases = {phases}
[telemetry]
energy_Wh = {{ address = 2, type = "u32" }}
state = {{ address = 0, values = {{ 0 = "available", 2 = "charging" }} }}
[control]
amps = {{ address = 10, scale = {scale} }}
on = {{ address = 3, function = 1 }}
[command]
style = "current"
current = "amps"
min_current_A = 6
max_current_A = 16
step_A = {step}
enable = "on"
stop = "{stop}"
"""


def wallbox(
    phases: int = 3, step: float = 1.0, stop: str = "current_zero", scale: float = 1.0
) -> RegisterMap:
    return parse_map(tomllib.loads(MAP.format(phases=phases, step=step, stop=stop, scale=scale)))


def recipe_of(regmap: RegisterMap) -> CurrentRecipe:
    assert isinstance(regmap.recipe, CurrentRecipe)
    return regmap.recipe


@pytest.mark.parametrize(
    ("phases", "step", "power_W", "amps"),
    [
        (3, 1.0, 11_040, 16.0),  # exactly 16 A at 230 V x 3
        (3, 1.0, 11_000, 15.0),  # 15.94 A rounds down to the step
        (3, 1.0, 22_000, 16.0),  # clamped to the maximum
        (3, 0.1, 7_000, 10.1),  # 10.14 A
        (1, 0.1, 1_380, 6.0),  # exactly the minimum
        (1, 0.5, 3_680, 16.0),
        (3, 1.0, None, 16.0),  # no limit: the maximum
        (3, 0.1, 11_040, 16.0),  # 16.0 / 0.1 must not floor to 15.9
    ],
)
def test_power_becomes_current_by_voltage_and_phases(phases, step, power_W, amps):
    regmap = wallbox(phases, step)
    assert current_for_power(recipe_of(regmap), regmap, power_W) == amps


def test_power_below_the_minimum_current_is_refused_with_the_arithmetic():
    regmap = wallbox(3)
    with pytest.raises(RecipeRefused, match=r"power_W 4000 is 5\.80 A at 230 V x 3 phase\(s\), below .* 6 A"):
        current_for_power(recipe_of(regmap), regmap, 4000)


@given(power_W=st.integers(4_140, 100_000), step=st.sampled_from([0.1, 0.5, 1.0]))
def test_current_never_exceeds_the_power_or_the_maximum_and_sits_on_a_step(power_W, step):
    regmap = wallbox(3, step)
    amps = current_for_power(recipe_of(regmap), regmap, power_W)
    assert 6.0 <= amps <= 16.0
    assert amps * 230 * 3 <= power_W + 1e-6
    assert abs(amps / step - round(amps / step)) < 1e-6
    assert min(16.0, power_W / 690) - amps < step + 1e-9  # rounded down by less than one step


def test_start_sets_the_limit_before_enabling_and_confirms_the_limit():
    regmap = wallbox(3, 0.1)
    steps = current_steps(recipe_of(regmap), regmap, "start", 7_000)
    assert steps.writes == (Write("amps", 10.1), Write("on", 1))
    assert (steps.confirm, steps.expect, steps.current_A) == ("amps", 10.1, 10.1)


def test_limit_sets_the_current_only():
    regmap = wallbox(3)
    assert current_steps(recipe_of(regmap), regmap, "limit", 5_000).writes == (Write("amps", 7.0),)


def test_stop_writes_zero_amps_or_disables_per_family():
    zero = wallbox(stop="current_zero")
    steps = current_steps(recipe_of(zero), zero, "stop", None)
    assert steps.writes == (Write("amps", 0.0),) and steps.expect == 0.0
    off = wallbox(stop="disable")
    steps = current_steps(recipe_of(off), off, "stop", None)
    assert steps.writes == (Write("on", 0),) and (steps.confirm, steps.expect) == ("on", 0)


def test_the_units_own_maximum_caps_the_current_when_lower():
    regmap = wallbox(3, 0.1)
    recipe = recipe_of(regmap)
    assert current_for_power(recipe, regmap, None, 13.0) == 13.0
    assert current_for_power(recipe, regmap, 22_000, 13.0) == 13.0
    assert current_for_power(recipe, regmap, 22_000, 40.0) == 16.0  # the family's maximum still holds
    assert current_for_power(recipe, regmap, 22_000, 0.0) == 16.0  # no reading: ignored
    with pytest.raises(RecipeRefused):
        current_for_power(recipe, regmap, 22_000, 5.0)  # a unit set below the minimum
