"""The fleet's pure parts: station lease keys are stable signed 64-bit integers, and a handler's
error survives the trip through ``station_calls`` as the same error."""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from central.adapters.lease import namespaced_key, station_key
from central.adapters.station_calls import (
    CALLS_KEY_NAMESPACE,
    CallError,
    StationCallFailed,
    decode_error,
    encode_error,
)
from central.domain.errors import ChangeNotAllowedError, QueueFullError


def test_a_station_key_is_pinned_across_versions():
    assert station_key("S1") == 5599308595729762833
    assert station_key("demo") == -6727633464817278349
    digest = hashlib.sha256(b"pilegate-station-lease:S1").digest()
    assert station_key("S1") == int.from_bytes(digest[:8], "big", signed=True)


@given(st.text(min_size=1, max_size=40))
def test_station_keys_fit_a_bigint_and_the_call_lock_has_its_own(code: str):
    key = station_key(code)
    assert -(2**63) <= key < 2**63
    assert namespaced_key(CALLS_KEY_NAMESPACE, code) != key


def test_a_domain_error_comes_back_as_its_own_class():
    error = encode_error(QueueFullError("6 cars wait"))
    assert error == CallError("domain:QueueFullError", "6 cars wait", None, {"code": "QUEUE_FULL"})
    back = decode_error(error)
    assert type(back) is QueueFullError and str(back) == "6 cars wait"
    assert type(decode_error(encode_error(ChangeNotAllowedError("charging")))) is ChangeNotAllowedError


class NotHere(LookupError):
    """An error the composition root asks to carry by class."""


def test_an_error_named_in_reraise_comes_back_as_its_class_and_others_as_station_call_failed():
    error = encode_error(NotHere("no such pile"), [NotHere])
    assert error.kind == "error:NotHere"
    assert type(decode_error(error, [NotHere])) is NotHere
    failed = decode_error(encode_error(KeyError("x")))
    assert isinstance(failed, StationCallFailed)
    assert (failed.status, failed.code) == (500, "KeyError")
    unknown = decode_error(CallError("domain:NoSuchError", "?"))
    assert isinstance(unknown, StationCallFailed)
