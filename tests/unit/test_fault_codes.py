"""Every fault a map can name travels: the gateway publishes it by name, the central's payload decoder
accepts it, the ingest stores its code, and the operator API can describe it."""

from __future__ import annotations

import json

import pytest

from central.adapters.ingest import FAULT_TYPES
from central.web.platform.common import FAULT_TYPE
from gateway.tracker import fault_name
from protocols.canonical import FAULT_NAMES
from protocols.payloads import PileEvent
from protocols.regmodel import FaultCode


@pytest.mark.parametrize("fault", list(FaultCode))
def test_each_fault_code_is_published_accepted_stored_and_described(fault):
    name = fault_name(int(fault))
    assert name == fault.name.lower() and FAULT_NAMES[name] == fault
    event = {
        "ts": 1_700_000_000_000,
        "session": 1,
        "seq": 1,
        "type": "fault_raised",
        "port": 1,
        "fault": name,
    }
    assert PileEvent.from_json(json.dumps(event)).fault == name
    assert FAULT_TYPES[name] == int(fault)
    assert FAULT_TYPE[int(fault)]
