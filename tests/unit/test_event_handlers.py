"""Every scheduler event has a handler in the charging service, or is deliberately ignored."""

from __future__ import annotations

from central.application.recording import EVENT_HANDLERS, IGNORED_EVENTS
from central.domain import events
from central.domain.events import Event


def _concrete_events() -> set[type[Event]]:
    found: set[type[Event]] = set()
    pending = list(Event.__subclasses__())
    while pending:
        cls = pending.pop()
        found.add(cls)
        pending.extend(cls.__subclasses__())
    return found


def test_every_event_type_is_handled_or_ignored():
    missing = {e.__name__ for e in _concrete_events()} - {
        e.__name__ for e in (*EVENT_HANDLERS, *IGNORED_EVENTS)
    }
    assert not missing, f"events without a handler: {sorted(missing)}"


def test_handled_and_ignored_are_disjoint_and_name_real_events():
    assert not set(EVENT_HANDLERS) & set(IGNORED_EVENTS)
    declared = {v for v in vars(events).values() if isinstance(v, type) and issubclass(v, Event)} - {Event}
    assert set(EVENT_HANDLERS) | set(IGNORED_EVENTS) == declared
