"""One change of the driver queue as a unit: the rows it writes and the commands it sends.

:meth:`Changes.commit` writes every row together with the scheduler's new state and the touched
live sessions in ONE transaction; the caller sends the commands only after that commit, so a kill -9
at any instant restores a queue that matches every record and no command is sent for a change that
was not stored.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from central.application.ports import Notice, Op, Repositories, UnitOfWork
from central.application.sessions import LiveSession

Write = Callable[[Repositories], object]


@dataclass(frozen=True)
class Command:
    """A command to send to a port once the change is committed."""

    pile_no: str
    port: int
    op: Op
    params: Mapping[str, int]
    car: str | None


@dataclass
class Changes:
    """Rows one operation writes, and the commands to send once they are committed."""

    writes: list[Write] = field(default_factory=list)
    commands: list[Command] = field(default_factory=list)

    def write(self, fn: Write) -> None:
        self.writes.append(fn)

    def notify(self, notice: Notice) -> None:
        self.writes.append(lambda repos: repos.notices.add(notice))

    def command(
        self, pile_no: str, port: int, op: Op, params: Mapping[str, int] | None = None, car: str | None = None
    ) -> None:
        self.commands.append(Command(pile_no, port, op, dict(params or {}), car))

    async def commit(
        self,
        uow: UnitOfWork,
        state: Mapping[str, Any],
        sessions: Sequence[LiveSession],
        gone: Sequence[str],
        at: datetime,
    ) -> None:
        """The rows, the scheduler ``state``, the touched ``sessions`` and the ended ones
        (``gone``, by car) in one transaction."""

        def write(repos: Repositories) -> None:
            for fn in self.writes:
                fn(repos)
            repos.charging.save_scheduler_state(state, at)
            for session in sessions:
                repos.charging.save_live_session(session)
            for car in gone:
                repos.charging.delete_live_session(car)

        await uow.write(write)
