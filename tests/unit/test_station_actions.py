"""The JSON forms of forwarded station calls lose nothing, and a forwarded call's failure becomes
the API error the caller answers (``central/web/station_actions.py``, ``central/web/errors.py``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from fractions import Fraction

from central.adapters.station_calls import CallError, StationCallError, StationCallFailed, StationCallTimeout
from central.application.ports import OrderTarget
from central.application.views import RequestView
from central.web.errors import api_error_for
from central.web.station_actions import target_from_json, target_json, view_from_json, view_json


def test_a_request_view_survives_its_json_form() -> None:
    berlin = timezone(timedelta(hours=1))
    view = RequestView(
        request_id="c1",
        user_id=7,
        queue_number="F3",
        charging_mode="fast",
        requested_amount=12.345678,
        battery_capacity=None,
        current_status="charging",
        queue_position=0,
        ahead_count=0,
        estimated_wait_time=-1.0,
        charging_pile_id="F1",
        start_time=datetime(2026, 3, 29, 1, 59, 59, 123456, tzinfo=berlin),
        current_amount=0.1,
        created_at=datetime(2026, 3, 29, 0, 0, tzinfo=UTC),
    )
    assert view_from_json(view_json(view)) == view


def test_an_order_target_keeps_its_exact_power() -> None:
    target = OrderTarget(1, "p", "F1", "q", 2, Fraction(22, 3), 1, 5000)
    assert target_from_json(target_json(target)) == target


def test_the_owners_api_error_is_answered_as_the_owner_would() -> None:
    failed = StationCallFailed(CallError("api:CONFLICT", "端口 F1-1 不可用", 409, {"reason": "busy"}))
    error = api_error_for(failed)
    assert (error.status, error.code, error.message, error.details) == (
        409,
        "CONFLICT",
        "端口 F1-1 不可用",
        {"reason": "busy"},
    )


def test_a_call_nobody_answered_is_503_and_an_unknown_outcome_504() -> None:
    orphaned = api_error_for(
        StationCallFailed(CallError("owner_stopped", "owner stopped while applying", 503))
    )
    assert (orphaned.status, orphaned.code) == (503, "STATION_NOT_RUNNING")
    withdrawn = api_error_for(StationCallTimeout("not taken in 10 s; it was not applied", applied=False))
    assert (withdrawn.status, withdrawn.code) == (503, "STATION_NOT_RUNNING")
    unknown = api_error_for(StationCallTimeout("no answer in 15 s", applied=None))
    assert (unknown.status, unknown.code) == (504, "STATION_TIMEOUT")
    assert "may have been applied" in unknown.message
    unreachable = api_error_for(StationCallError("the call could not be forwarded"))
    assert (unreachable.status, unreachable.code) == (503, "STATION_NOT_RUNNING")
