"""De-duplication of (stream, session, seq): duplicates dropped, gaps counted, bounded memory."""

import tracemalloc

from central.adapters.ingest import Deduplicator

T1 = "pilegate/v1/s1/pile/F1/port/1/telemetry"
T2 = "pilegate/v1/s1/pile/F2/port/1/telemetry"


def feed(d: Deduplicator, stream: str, session: int, seqs) -> list[int]:
    """The seqs accepted, in order."""
    return [s for s in seqs if d.accept(stream, session, s)]


def test_repeated_seq_is_dropped_as_duplicate():
    d = Deduplicator()
    assert feed(d, T1, 1, [1, 2, 3, 2, 3, 3, 4]) == [1, 2, 3, 4]
    assert d.duplicates == 3
    assert d.gaps == 0


def test_seq_jump_counts_one_gap_and_what_is_missing():
    d = Deduplicator()
    assert feed(d, T1, 1, [1, 2, 6, 7, 10]) == [1, 2, 6, 7, 10]
    assert d.gaps == 2
    assert d.missing == 3 + 2


def test_late_message_inside_the_window_is_accepted_once():
    d = Deduplicator(window=64)
    feed(d, T1, 1, [1, 2, 5])
    assert feed(d, T1, 1, [4, 3, 4, 3]) == [4, 3]
    assert d.late == 2
    assert d.duplicates == 2


def test_seq_below_the_window_is_dropped_as_stale():
    d = Deduplicator(window=16)
    feed(d, T1, 1, range(1, 101))
    assert not d.accept(T1, 1, 50)
    assert d.stale == 1
    assert d.accept(T1, 1, 90) is False  # inside the window and seen
    assert d.duplicates == 1


def test_new_session_restarts_at_one_without_a_gap():
    d = Deduplicator()
    feed(d, T1, 1, range(1, 50))
    assert feed(d, T1, 2, [1, 2, 3]) == [1, 2, 3]
    assert d.gaps == 0
    assert d.sessions(T1) == [1, 2]


def test_new_session_that_began_unseen_counts_a_gap():
    d = Deduplicator()
    feed(d, T1, 1, [1, 2])
    assert d.accept(T1, 2, 4)
    assert (d.gaps, d.missing) == (1, 3)


def test_first_message_of_an_unknown_stream_is_no_gap():
    d = Deduplicator()
    assert d.accept(T1, 7, 5000)  # e.g. the central restarted mid-session
    assert d.gaps == 0


def test_replayed_backlog_of_an_old_session_is_accepted_exactly_once():
    d = Deduplicator()
    feed(d, T1, 1, range(1, 11))  # before the outage
    feed(d, T1, 2, range(1, 6))  # the gateway reconnected: new session
    backlog = list(range(8, 21))  # the outbox resends from its oldest unacked row
    assert feed(d, T1, 1, backlog) == list(range(11, 21))
    assert feed(d, T1, 1, backlog) == []
    assert feed(d, T1, 2, range(1, 8)) == [6, 7]
    assert d.gaps == 0


def test_backlog_of_a_session_never_seen_is_accepted_once():
    d = Deduplicator()
    feed(d, T1, 3, range(1, 5))
    assert feed(d, T1, 2, range(40, 51)) == list(range(40, 51))
    assert feed(d, T1, 2, range(40, 51)) == []
    assert d.sessions(T1) == [2, 3]


def test_streams_are_independent():
    d = Deduplicator()
    assert d.accept(T1, 1, 1)
    assert d.accept(T2, 1, 1)
    assert not d.accept(T2, 1, 1)


def test_sessions_beyond_the_limit_are_forgotten_and_then_stale():
    d = Deduplicator(max_sessions=3)
    for session in range(1, 6):
        feed(d, T1, session, [1, 2])
    assert d.sessions(T1) == [3, 4, 5]
    assert not d.accept(T1, 1, 3)
    assert not d.accept(T1, 2, 99)
    assert d.stale == 2


def test_least_recently_used_stream_is_forgotten_beyond_max_streams():
    d = Deduplicator(max_streams=2)
    d.accept(T1, 1, 1)
    d.accept(T2, 1, 1)
    d.accept(T1, 1, 2)  # T1 is now the most recently used
    d.accept("third", 1, 1)
    assert len(d) == 2
    assert d.sessions(T2) == []
    assert d.sessions(T1) == [1]
    assert d.evicted_streams == 1


def test_a_long_stream_keeps_a_bounded_window():
    d = Deduplicator(window=4096)
    tracemalloc.start()
    try:
        feed(d, T1, 1, range(1, 1000))
        before, _ = tracemalloc.get_traced_memory()
        accepted = sum(d.accept(T1, 1, seq) for seq in range(1000, 100_001))
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert accepted == 100_001 - 1000
    assert after - before < 4096 // 8 + 2048  # one window's bitmap at most, not 10^5 seqs
    assert not d.accept(T1, 1, 100_000 - 100)


def test_memory_for_100k_streams_is_bounded_per_stream():
    d = Deduplicator()
    streams = [f"pilegate/v1/s1/pile/P{i}/port/1/telemetry" for i in range(100_000)]
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for stream in streams:
            d.accept(stream, 1, 1)
            d.accept(stream, 1, 2)
            d.accept(stream, 1, 3)
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(d) == 100_000
    per_stream = (after - before) / len(streams)
    assert per_stream < 400, f"{per_stream:.0f} bytes per stream"
    assert all(not d.accept(s, 1, 2) for s in streams[:1000])
