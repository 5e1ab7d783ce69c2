"""The one meter-session rule: 32-bit wrap, meter reset, baseline, delivered Wh, sample keeping."""

from __future__ import annotations

from central.domain.metering import METER_WRAP, MeterReset, MeterSession, Step

SPACING_MS = 60_000.0


def test_a_reading_far_below_the_last_is_a_wrap_and_counts_on():
    meter = MeterSession()
    assert meter.unwrap(METER_WRAP - 100) == METER_WRAP - 100
    assert meter.unwrap(50) == METER_WRAP + 50
    assert meter.wraps == 1
    assert meter.unwrap(400) == METER_WRAP + 400


def test_a_reading_slightly_below_the_last_is_a_reset_not_a_wrap_and_is_reported_not_raised():
    meter = MeterSession()
    meter.unwrap(10_000)
    outcome = meter.unwrap(9_000)
    assert outcome == MeterReset(previous_wh=10_000, wh=9_000)
    assert meter.wraps == 0


def test_a_reset_during_a_segment_is_an_outcome_and_the_session_keeps_running():
    meter = MeterSession.from_idle((0, 5_000))
    meter.observe(1_000, 5_000, True, SPACING_MS)
    update = meter.observe(120_000, 100, True, SPACING_MS)
    assert update.reset == MeterReset(previous_wh=5_000, wh=100)
    assert update.step is Step.SAMPLE


def test_the_idle_reading_before_the_start_is_the_baseline():
    meter = MeterSession.from_idle((0, 7_000))
    assert (meter.base_wh, meter.samples, meter.started) == (7_000, [(0, 7_000)], False)
    assert meter.observe(1_000, 7_010, False, SPACING_MS).step is Step.STARTED  # the meter moved
    assert meter.base_wh == 7_000 and meter.delivered_wh == 10


def test_idle_readings_move_the_baseline_until_the_port_charges():
    meter = MeterSession()
    assert meter.observe(0, 7_000, False, SPACING_MS).step is Step.IDLE
    assert meter.observe(1_000, 7_000, False, SPACING_MS).step is Step.IDLE
    assert meter.base_wh == 7_000 and meter.delivered_wh == 0
    update = meter.observe(2_000, 7_000, True, SPACING_MS)
    assert update.step is Step.STARTED and meter.started_ms == 2_000
    meter.observe(70_000, 7_500, True, SPACING_MS)
    assert meter.delivered_wh == 500


def test_a_first_charging_reading_without_an_idle_one_is_the_baseline():
    meter = MeterSession()
    assert meter.observe(5_000, 3_000, True, SPACING_MS).step is Step.STARTED
    assert meter.base_wh == 3_000 and meter.samples == [(5_000, 3_000)]


def test_a_reading_not_newer_than_the_last_sample_is_stale():
    meter = MeterSession.from_idle((10_000, 1_000))
    assert meter.observe(10_000, 2_000, True, SPACING_MS).step is Step.STALE
    assert meter.samples == [(10_000, 1_000)] and not meter.started


def test_samples_are_kept_by_spacing_and_the_newest_replaces_a_close_one():
    meter = MeterSession()
    meter.observe(0, 0, True, SPACING_MS)
    assert meter.observe(30_000, 10, True, SPACING_MS).kept  # the second sample
    assert not meter.observe(40_000, 20, True, SPACING_MS).kept  # within spacing of the first
    assert meter.samples == [(0, 0), (40_000, 20)]
    assert meter.observe(70_000, 30, True, SPACING_MS).kept
    assert meter.samples == [(0, 0), (40_000, 20), (70_000, 30)]
    assert meter.last_wh == 30


def test_a_copy_does_not_share_samples():
    meter = MeterSession.from_idle((0, 1))
    copy = meter.copy()
    meter.observe(1_000, 2, True, SPACING_MS)
    assert copy.samples == [(0, 1)]
