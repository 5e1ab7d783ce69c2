"""One central instance's fleet primitives in a process of its own, for the tests that kill it.

``python -m tests.integration.fleet_node --url URL --instance ID --stations S1,S2,S3 --log FILE``
competes for the stations (:class:`central.adapters.lease.PgLeases`) and serves the calls of the
ones it owns (:class:`central.adapters.station_calls.PgStationCalls`). Every step goes to ``FILE``
as one JSON line, flushed at once (``t`` is ``time.monotonic()``, one clock for every process of
the machine): ``acquired`` when ``on_acquired`` starts, ``lost`` when ``on_lost`` has finished (so
the runtime of a station runs between the two), ``applying``/``applied`` around each call.

The handler answers ``echo`` with its payload and the order it applied it in, raises
:class:`~central.domain.errors.QueueFullError` for ``full``, and never returns from ``hang`` (the
process is killed while applying). SIGTERM closes everything cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from central.adapters.lease import Instance, PgLeases
from central.adapters.station_calls import PgStationCalls
from central.domain.errors import QueueFullError


class Journal:
    """JSON lines, each flushed and synced before the next step (the process may die any moment)."""

    def __init__(self, path: Path, instance: str) -> None:
        self._file = path.open("a", encoding="utf-8")
        self.instance = instance

    def write(self, event: str, **fields: Any) -> None:
        line = {
            "t": time.monotonic(),
            "event": event,
            "instance": self.instance,
            "pid": os.getpid(),
            **fields,
        }
        self._file.write(json.dumps(line) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())


async def run(url: str, instance_id: str, stations: list[str], journal: Journal) -> None:
    applied = 0

    async def handler(station: str, kind: str, payload: Any) -> Any:
        nonlocal applied
        journal.write("applying", station=station, kind=kind, payload=payload)
        if kind == "hang":
            await asyncio.Event().wait()
        if kind == "full":
            raise QueueFullError(f"waiting area of {station} is full")
        applied += 1
        journal.write("applied", station=station, kind=kind, payload=payload, order=applied)
        return {"echo": payload, "order": applied, "by": instance_id}

    instance = Instance(instance_id, "test-host", os.getpid())
    calls = PgStationCalls(url, handler, instance_id=instance_id)

    async def on_acquired(code: str) -> None:
        journal.write("acquired", station=code)
        await calls.serve(code)

    async def on_lost(code: str) -> None:
        await calls.unserve(code, drain=not leases.fencing)
        journal.write("lost", station=code)

    leases: PgLeases = PgLeases(url, lambda: stations, on_acquired, on_lost, instance=instance)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await calls.start()
    await leases.start()
    journal.write("started")
    await stop.wait()
    await leases.close()
    await calls.close()
    journal.write("stopped")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--instance", required=True)
    parser.add_argument("--stations", required=True, help="comma-separated station codes")
    parser.add_argument("--log", required=True, type=Path)
    args = parser.parse_args()
    journal = Journal(args.log, args.instance)
    asyncio.run(run(args.url, args.instance, args.stations.split(","), journal))


if __name__ == "__main__":
    main()
