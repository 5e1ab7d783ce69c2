"""Station parameters: defaults, the example config, and whole-file validation by key."""

from __future__ import annotations

from datetime import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from central.config import load_params
from central.domain.params import (
    DispatchPolicy,
    FaultStrategy,
    StationParams,
    StationParamsError,
    params_from_mapping,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "station.example.toml"


def problems(data: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(StationParamsError) as info:
        params_from_mapping(data)
    return dict(info.value.problems)


def test_example_config_spells_out_the_defaults():
    assert load_params(EXAMPLE) == StationParams()


def test_defaults_match_the_user_api():
    params = params_from_mapping({})
    assert (params.fast_pile_num, params.trickle_pile_num) == (2, 3)
    assert (params.waiting_area_size, params.charging_queue_len) == (6, 2)
    assert params.pricing.peak_rate == Decimal("1.2")
    assert params.time_periods.valley == ("23:00-07:00",)
    assert params.fault_strategy is FaultStrategy.PRIORITY
    assert params.dispatch_policy is DispatchPolicy.BEST_OR_WAIT


def test_every_problem_is_reported_by_key_in_one_error():
    found = problems(
        {
            "FastChargingPileNum": -1,
            "WaitingAreaSize": "six",
            "ChargingQueueLen": 0,
            "fast_power_kw": 0,
            "colour": "red",
            "pricing": {"peak_rate": -1, "tip": 1},
            "fault_strategy": "random",
            "dispatch_policy": "fastest",
            "timezone": "Mars/Olympus",
            "start_time": "25:00",
        }
    )
    assert set(found) == {
        "FastChargingPileNum",
        "WaitingAreaSize",
        "ChargingQueueLen",
        "fast_power_kw",
        "colour",
        "pricing.peak_rate",
        "pricing.tip",
        "fault_strategy",
        "dispatch_policy",
        "timezone",
        "start_time",
    }
    assert found["colour"] == "unknown key"
    assert "priority | time_order" in found["fault_strategy"]


def test_overlapping_periods_are_refused():
    found = problems(
        {"time_periods": {"peak": ["10:00-15:00"], "normal": ["07:00-11:00", "15:00-07:00"], "valley": []}}
    )
    assert "peak 10:00-15:00 overlaps normal 07:00-11:00" in found["time_periods"]


def test_periods_must_cover_the_whole_day():
    found = problems(
        {"time_periods": {"peak": ["10:00-15:00"], "normal": ["15:00-24:00"], "valley": ["00:00-09:00"]}}
    )
    assert found["time_periods"] == "09:00-10:00 is in no period"


@pytest.mark.parametrize("bad", ["10:00", "10:00-10:00", "25:00-01:00", "10:0-11:00", 7])
def test_malformed_period_ranges_are_refused(bad):
    found = problems({"time_periods": {"peak": [bad], "normal": ["00:00-24:00"], "valley": []}})
    assert "time_periods.peak" in found


@pytest.mark.parametrize("power", [0, 0.01, 20_000, "fast"])
def test_pile_power_must_be_a_sane_number_of_kw(power):
    assert "fast_power_kw" in problems({"fast_power_kw": power})


def test_a_station_needs_at_least_one_pile():
    assert "FastChargingPileNum" in problems({"FastChargingPileNum": 0, "TrickleChargingPileNum": 0})


def test_mapping_round_trip_and_partial_update():
    params = StationParams(start_time=time(6, 30), fault_strategy=FaultStrategy.TIME_ORDER)
    assert params_from_mapping(params.to_mapping()) == params
    cheaper = params.updated({"pricing": {"valley_rate": 0.3}, "WaitingAreaSize": 10})
    assert cheaper.pricing.valley_rate == Decimal("0.3")
    assert cheaper.pricing.peak_rate == Decimal("1.2")
    assert cheaper.waiting_area_size == 10


def test_update_is_validated():
    with pytest.raises(StationParamsError, match="ChargingQueueLen"):
        StationParams().updated({"ChargingQueueLen": -2})


def test_bad_toml_file_is_reported(tmp_path):
    path = tmp_path / "station.toml"
    path.write_text("FastChargingPileNum = = 2\n")
    with pytest.raises(StationParamsError, match="not valid TOML"):
        load_params(path)
