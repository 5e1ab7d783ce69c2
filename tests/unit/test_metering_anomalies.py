"""Meter anomalies: a meter that goes backwards rebases the segment; an implausible rise is rejected."""

from __future__ import annotations

from central.domain.metering import REBASE_AFTER, MeterReset, MeterSession, Step

SPACING_MS = 60_000.0
TEN_KW = 10_000 / 3_600_000  # Wh per ms of a 10 kW pile at time scale 1


def test_a_reset_keeps_what_was_measured_and_counts_on_from_the_new_meter():
    meter = MeterSession.from_idle((0, 5_000))
    meter.observe(1_000, 5_000, True, SPACING_MS)
    meter.observe(61_000, 6_000, True, SPACING_MS)
    update = meter.observe(62_000, 100, True, SPACING_MS)
    assert update.reset == MeterReset(previous_wh=6_000, wh=100)
    assert meter.delivered_wh == 1_000  # the segment closed at the last good reading
    meter.observe(122_000, 600, True, SPACING_MS)
    assert meter.delivered_wh == 1_500  # and carries on from the new baseline
    assert [wh for _, wh in meter.samples] == sorted(wh for _, wh in meter.samples)


def test_a_reset_before_the_start_is_the_new_baseline():
    meter = MeterSession.from_idle((0, 5_000))
    update = meter.observe(1_000, 10, False, SPACING_MS)
    assert update.step is Step.IDLE and update.reset is not None
    meter.observe(2_000, 10, True, SPACING_MS)
    meter.observe(62_000, 110, True, SPACING_MS)
    assert meter.delivered_wh == 100


def test_a_rise_beyond_the_rating_is_rejected_and_a_later_good_reading_loses_nothing():
    meter = MeterSession.from_idle((0, 1_000))
    meter.observe(1_000, 1_000, True, SPACING_MS, TEN_KW)
    update = meter.observe(2_000, 15_000_000, True, SPACING_MS, TEN_KW)
    assert update.step is Step.IMPLAUSIBLE and meter.delivered_wh == 0
    assert meter.observe(601_000, 2_600, True, SPACING_MS, TEN_KW).step is Step.SAMPLE  # 1.6 kWh in 10 min
    assert meter.delivered_wh == 1_600


def test_a_new_session_reading_with_a_huge_meter_is_rejected():
    meter = MeterSession.from_idle((0, 500))
    update = meter.observe(240_000, 500 + 14_330, True, SPACING_MS, TEN_KW)  # 14.33 kWh in 4 min
    assert update.step is Step.IMPLAUSIBLE and not meter.started


def test_a_meter_that_really_jumped_becomes_the_new_baseline_after_repeated_rejections():
    meter = MeterSession.from_idle((0, 1_000))
    assert meter.observe(1_000, 1_040, True, SPACING_MS, TEN_KW).step is Step.STARTED
    steps = [
        meter.observe(2_000 + i * 1_000, 900_000 + i, True, SPACING_MS, TEN_KW) for i in range(REBASE_AFTER)
    ]
    assert [u.step for u in steps[:-1]] == [Step.IMPLAUSIBLE] * (REBASE_AFTER - 1)
    assert steps[-1].step is Step.SAMPLE and steps[-1].reset is not None
    assert meter.delivered_wh == 40
