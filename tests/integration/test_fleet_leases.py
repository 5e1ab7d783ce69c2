"""Station leases on a real PostgreSQL (``central/adapters/lease.py``): each station is owned by
exactly one instance, a killed owner's stations are taken over within 10 s, stations spread over the
live instances, and a lost lease session stops every station (fencing)."""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import time
from pathlib import Path

import psycopg

from central.adapters.lease import Instance, PgLeases, SingleLeases, station_leases
from tests.helpers import wait_for, wait_for_sync
from tests.integration.fleet_helpers import Node, Nodes, lease_holders, overlaps, running, runtime_intervals

pytest_plugins = ("tests.integration.central_fixtures", "tests.integration.fleet_fixtures")

STATIONS = ("S1", "S2", "S3")


class Journal:
    """``on_acquired``/``on_lost`` of an in-process lease, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.leases: PgLeases | None = None
        self.fencing: list[bool] = []  # leases.fencing during each on_lost
        self.owned_when_lost: list[bool] = []  # leases.owns(code) during each on_lost

    async def acquired(self, code: str) -> None:
        self.events.append(("acquired", code))

    async def lost(self, code: str) -> None:
        self.events.append(("lost", code))
        if self.leases is not None:
            self.fencing.append(self.leases.fencing)
            self.owned_when_lost.append(self.leases.owns(code))

    def since(self, index: int, kind: str) -> set[str]:
        return {code for what, code in self.events[index:] if what == kind}


def _settled(url: str, live: list[Node], doubles: list[object]) -> dict[str, list[str]] | None:
    """The holders once every station has one holder (pg_locks), the ``live`` nodes all hold some,
    and their journals agree (each station's runtime runs on its holder only); a station with two
    holders, or two running runtimes, is recorded in ``doubles``."""
    holders = lease_holders(url, STATIONS)
    runtimes = running(live)
    if any(len(names) > 1 for names in holders.values()) or any(len(r) > 1 for r in runtimes.values()):
        doubles.append((holders, runtimes))
    if any(len(names) != 1 for names in holders.values()):
        return None
    if any(runtimes.get(code, set()) != set(names) for code, names in holders.items()):
        return None
    return holders if {names[0] for names in holders.values()} == {n.instance for n in live} else None


def _gone(*nodes: Node) -> str | None:
    return next((why for node in nodes if (why := node.exited())), None)


def test_a_killed_owner_is_taken_over_within_10_s_and_stations_spread_again(nodes: Nodes, fleet_url: str):
    doubles: list[object] = []
    a, b = nodes.start("A", STATIONS), nodes.start("B", STATIONS)
    holders = wait_for_sync(
        lambda: _settled(fleet_url, [a, b], doubles),
        30,
        0.05,
        "three stations spread over A and B",
        give_up=lambda: _gone(a, b),
    )
    assert holders is not None
    counts = collections.Counter(names[0] for names in holders.values())
    assert sorted(counts.values()) == [1, 2]  # fair share: ceil(3 / 2) = 2
    victim, survivor = (a, b) if counts["A"] == 2 else (b, a)

    killed_at = victim.kill()
    wait_for_sync(
        lambda: _settled(fleet_url, [survivor], doubles),
        10,
        0.02,
        f"{survivor.instance} owning every station after kill -9 of {victim.instance}",
        give_up=lambda: _gone(survivor),
    )
    taken = [e["t"] for e in survivor.events("acquired") if e["t"] > killed_at]
    takeover_s = max(taken) - killed_at
    print(f"takeover after kill -9: {takeover_s:.2f} s for {len(taken)} station(s)")
    assert len(taken) == 2 and takeover_s < 10

    back = nodes.start("C", STATIONS)  # the killed one restarted: a new instance
    holders = wait_for_sync(
        lambda: _settled(fleet_url, [survivor, back], doubles),
        30,
        0.05,
        f"stations spread over {survivor.instance} and C",
        give_up=lambda: _gone(survivor, back),
    )
    assert holders is not None
    assert sorted(collections.Counter(n[0] for n in holders.values()).values()) == [1, 2]
    assert not doubles
    runtimes = runtime_intervals([a, b, back], {victim.instance: killed_at})
    assert not overlaps(runtimes)
    assert sum(len(spans) for spans in runtimes.values()) >= 3 + 2 + 1  # start, takeover, spread again


async def test_a_lease_session_the_server_ends_loses_every_station_then_competes_again(fleet_url: str):
    journal = Journal()
    leases = PgLeases(
        fleet_url, lambda: STATIONS, journal.acquired, journal.lost, instance=Instance("T", "h", 1)
    )
    journal.leases = leases
    await leases.start()
    try:
        await wait_for(lambda: leases.owned == set(STATIONS), 10, what="every station owned")
        pid, mark = leases.backend_pid, len(journal.events)
        with psycopg.connect(fleet_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", [pid])
        await wait_for(
            lambda: journal.since(mark, "lost") == set(STATIONS), 5, what="on_lost for every station"
        )
        assert leases.owned == frozenset()
        await wait_for(
            lambda: leases.owned == set(STATIONS) and leases.backend_pid not in (None, pid),
            15,
            what="every station owned again on a new session",
        )
        assert journal.since(mark, "acquired") == set(STATIONS)
    finally:
        await leases.close()
    assert journal.events[-3:] == [("lost", code) for code in reversed(STATIONS)]
    assert journal.fencing == [True, True, True, False, False, False]  # the failed session, then close()
    assert journal.owned_when_lost == [False] * 6


async def test_a_lease_server_that_stops_answering_stops_every_station_within_the_deadline(fleet_url: str):
    journal = Journal()
    leases = PgLeases(
        fleet_url, lambda: STATIONS, journal.acquired, journal.lost, instance=Instance("T", "h", 1)
    )
    await leases.start()
    stopped: int | None = None
    try:
        await wait_for(lambda: leases.owned == set(STATIONS), 10, what="every station owned")
        stopped, mark = leases.backend_pid, len(journal.events)
        assert stopped is not None
        os.kill(stopped, signal.SIGSTOP)  # the session's server process answers nothing any more
        at = time.monotonic()
        await wait_for(
            lambda: journal.since(mark, "lost") == set(STATIONS), 6, what="on_lost for every station"
        )
        fenced_s = time.monotonic() - at
        print(f"stations stopped {fenced_s:.2f} s after the lease session stopped answering")
        assert fenced_s <= leases.timing.check_interval_s + leases.timing.check_deadline_s + 1.0
        os.kill(stopped, signal.SIGCONT)  # it sees its client gone and ends: the locks go with it
        stopped = None
        await wait_for(lambda: leases.owned == set(STATIONS), 15, what="every station owned again")
    finally:
        if stopped is not None:
            os.kill(stopped, signal.SIGCONT)
        await leases.close()


async def test_a_closed_instance_hands_its_stations_over_at_once_and_a_new_one_gets_its_share(fleet_url: str):
    first, second = Journal(), Journal()
    a = PgLeases(fleet_url, lambda: STATIONS, first.acquired, first.lost, instance=Instance("A", "h", 1))
    b = PgLeases(fleet_url, lambda: STATIONS, second.acquired, second.lost, instance=Instance("B", "h", 2))
    await a.start()
    try:
        await wait_for(lambda: a.owned == set(STATIONS), 10, what="A owning every station")
        await b.start()
        await wait_for(lambda: len(b.owned) == 1 and len(a.owned) == 2, 15, what="B taking its share from A")
        assert first.events[-1] == ("lost", next(iter(b.owned)))  # A stopped it before B started it
        await a.close()
        closed_at = time.monotonic()
        await wait_for(lambda: b.owned == set(STATIONS), 5, what="B owning every station")
        assert time.monotonic() - closed_at < 3  # no waiting for A's heartbeat to go stale
        with psycopg.connect(fleet_url) as conn:
            rows = conn.execute("SELECT id FROM central_instances ORDER BY id").fetchall()
        assert rows == [("B",)]
    finally:
        await a.close()
        await b.close()


async def test_a_station_whose_start_fails_is_released_and_tried_again(fleet_url: str):
    attempts: list[str] = []
    stops: list[str] = []

    async def flaky_start(code: str) -> None:
        attempts.append(code)
        if len(attempts) == 1:
            raise RuntimeError("restore failed")

    async def stop(code: str) -> None:
        stops.append(code)

    leases = PgLeases(fleet_url, lambda: ["S1"], flaky_start, stop, instance=Instance("T", "h", 1))
    await leases.start()
    try:
        await wait_for(
            lambda: leases.owns("S1") and len(attempts) == 2, 10, what="S1 started on a second try"
        )
        assert stops == ["S1"]  # the failed start was stopped before the retry
        assert lease_holders(fleet_url, ["S1"]) == {"S1": ["T"]}
    finally:
        await leases.close()


async def test_on_sqlite_one_instance_owns_every_station_of_the_set(tmp_path: Path):
    journal = Journal()
    codes = {"S1", "S2"}
    leases = station_leases(
        f"sqlite:///{tmp_path / 'central.db'}", lambda: codes, journal.acquired, journal.lost
    )
    assert isinstance(leases, SingleLeases)
    await leases.start()  # every station is owned once start returns
    try:
        assert leases.owned == {"S1", "S2"}
        codes.add("S3")
        codes.discard("S1")
        await wait_for(lambda: leases.owned == {"S2", "S3"}, 5, what="the set followed")
    finally:
        await leases.close()
    assert journal.events == [
        ("acquired", "S1"),
        ("acquired", "S2"),
        ("lost", "S1"),
        ("acquired", "S3"),
        ("lost", "S2"),
        ("lost", "S3"),
    ]
    assert isinstance(
        station_leases("postgresql://x@127.0.0.1:1/none", lambda: [], journal.acquired, journal.lost),
        PgLeases,
    )


async def test_the_station_set_may_be_read_from_the_database(fleet_url: str):
    journal = Journal()

    async def stations() -> list[str]:
        await asyncio.sleep(0)
        return ["S9"]

    leases = PgLeases(fleet_url, stations, journal.acquired, journal.lost, instance=Instance("T", "h", 1))
    await leases.start()
    try:
        await wait_for(lambda: leases.owned == {"S9"}, 10, what="S9 owned")
    finally:
        await leases.close()


async def test_an_instance_that_cannot_serve_hands_its_stations_to_one_that_can(fleet_url: str):
    first, second = Journal(), Journal()
    broker_up = {"A": True}
    a = PgLeases(
        fleet_url,
        lambda: STATIONS,
        first.acquired,
        first.lost,
        instance=Instance("A", "h", 1),
        serving=lambda: broker_up["A"],
    )
    b = PgLeases(fleet_url, lambda: STATIONS, second.acquired, second.lost, instance=Instance("B", "h", 2))
    await a.start()
    await b.start()
    try:
        await wait_for(lambda: len(a.owned) >= 1 and len(b.owned) >= 1, 20, what="the stations spread")
        broker_up["A"] = False  # A's broker connection is gone: its stations hear and command nothing
        mark = len(first.events)
        await wait_for(lambda: b.owned == set(STATIONS), 10, what="B serving every station")
        assert a.owned == frozenset()
        assert first.since(mark, "lost") and not first.since(mark, "acquired")
        assert lease_holders(fleet_url, list(STATIONS)) == {s: ["B"] for s in STATIONS}

        broker_up["A"] = True  # back: it counts in the fair share again and gets its share back
        await wait_for(lambda: len(a.owned) >= 1, 20, what="A taking its share again")
    finally:
        await a.close()
        await b.close()


async def test_an_instance_that_cannot_serve_keeps_its_stations_when_nobody_else_can(fleet_url: str):
    journal = Journal()
    alone = PgLeases(
        fleet_url,
        lambda: STATIONS,
        journal.acquired,
        journal.lost,
        instance=Instance("A", "h", 1),
        serving=lambda: False,
    )
    await alone.start()
    try:
        await wait_for(lambda: alone.owned == set(STATIONS), 10, what="every station owned")
        await alone.refresh()  # a further round: still nobody better to hand them to
        assert alone.owned == set(STATIONS) and not journal.since(0, "lost")
    finally:
        await alone.close()
