"""Meter session properties: a 32-bit meter reported modulo 2**32 unwraps to the true values whatever
the wraps, a reading that goes backwards without wrapping is a reported reset (never an exception),
and sample keeping keeps the first and the newest reading, so delivered Wh is the true difference
whatever the spacing."""

from __future__ import annotations

from itertools import accumulate, pairwise

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from central.domain.metering import METER_WRAP, MeterReset, MeterSession, Step

HALF = METER_WRAP // 2
FAST = settings(max_examples=100, deadline=None)

# A true (never wrapping) meter starts anywhere on the 32-bit scale and moves on by increments below
# half the range; small and huge increments both matter (a wrap needs the huge ones).
increments = st.lists(
    st.one_of(st.integers(0, 5_000), st.integers(0, HALF - 1), st.integers(HALF - 1_000, HALF - 1)),
    min_size=1,
    max_size=40,
)
starts = st.integers(0, METER_WRAP - 1)
spacings = st.floats(0, 600_000, allow_nan=False)


def drops(limit: int) -> st.SearchStrategy[int]:
    """How far a reading goes back: 1 to ``limit`` Wh, often close to ``limit`` (half the range at most)."""
    return st.one_of(st.integers(1, limit), st.integers(max(1, limit - 1_000), limit))


def true_values(start: int, steps: list[int]) -> list[int]:
    return list(accumulate(steps, initial=start))


def timestamps(gaps: list[int], start_ms: int = 1_000) -> list[int]:
    return list(accumulate(gaps, initial=start_ms))


@FAST
@given(start=starts, steps=increments)
def test_readings_modulo_2_32_unwrap_to_the_true_values(start: int, steps: list[int]) -> None:
    values = true_values(start, steps)
    meter = MeterSession()
    assert [meter.unwrap(v % METER_WRAP) for v in values] == values
    assert meter.wraps == values[-1] // METER_WRAP


@FAST
@given(start=starts, steps=increments, spacing=spacings, data=st.data())
def test_delivered_wh_is_the_true_difference_across_wraps(
    start: int, steps: list[int], spacing: float, data: st.DataObject
) -> None:
    values = true_values(start, steps)
    gaps = data.draw(st.lists(st.integers(1, 300_000), min_size=len(steps), max_size=len(steps)))
    meter = MeterSession()
    updates = [
        meter.observe(ts, v % METER_WRAP, True, spacing)
        for ts, v in zip(timestamps(gaps), values, strict=True)
    ]
    assert [u.reset for u in updates] == [None] * len(values)
    assert meter.base_wh == values[0]
    assert meter.delivered_wh == values[-1] - values[0]


@FAST
@given(start=starts, steps=increments, charging=st.booleans(), data=st.data())
def test_a_reading_that_goes_back_without_wrapping_is_a_reset_outcome(
    start: int, steps: list[int], charging: bool, data: st.DataObject
) -> None:
    values = true_values(start, steps)
    last_raw = values[-1] % METER_WRAP
    assume(last_raw > 0)
    # back by at most half the range, and not below zero (that reading would be a huge one, not a drop)
    back = data.draw(drops(min(HALF, last_raw)))
    meter = MeterSession()
    for ts, v in zip(timestamps([1_000] * len(steps)), values, strict=True):
        meter.observe(ts, v % METER_WRAP, True, 60_000.0)
    update = meter.observe(10**9, last_raw - back, charging, 60_000.0)
    assert update.reset == MeterReset(previous_wh=values[-1], wh=values[-1] - back)
    assert update.step is Step.SAMPLE  # the segment keeps running
    assert meter.last_wh == values[-1] - back


@FAST
@given(previous=st.integers(1, METER_WRAP - 1), data=st.data())
def test_unwrap_reports_a_reset_and_does_not_count_a_wrap(previous: int, data: st.DataObject) -> None:
    back = data.draw(drops(min(HALF, previous)))
    meter = MeterSession()
    meter.unwrap(previous)
    assert meter.unwrap(previous - back) == MeterReset(previous_wh=previous, wh=previous - back)
    assert meter.wraps == 0


@FAST
@given(
    idle=st.integers(0, 5),
    start=starts,
    steps=increments,
    spacing=spacings,
    data=st.data(),
)
def test_sample_keeping_keeps_the_baseline_and_the_newest_reading(
    idle: int, start: int, steps: list[int], spacing: float, data: st.DataObject
) -> None:
    values = true_values(start, steps)
    gaps = data.draw(
        st.lists(st.integers(1, 300_000), min_size=idle + len(steps), max_size=idle + len(steps))
    )
    times = timestamps(gaps)
    readings = [(ts, values[0], False) for ts in times[:idle]]  # idle, the meter still: baselines
    readings += [(ts, v, True) for ts, v in zip(times[idle:], values, strict=True)]
    meter = MeterSession()
    for ts, v, charging in readings:
        meter.observe(ts, v % METER_WRAP, charging, spacing)
    baseline_ms = times[idle - 1] if idle else times[0]
    assert meter.samples[0] == (baseline_ms, values[0])
    assert meter.samples[-1] == (times[-1], values[-1])
    assert meter.last_wh == values[-1]
    assert all(a[0] < b[0] for a, b in pairwise(meter.samples))
    assert meter.delivered_wh == values[-1] - values[0]
