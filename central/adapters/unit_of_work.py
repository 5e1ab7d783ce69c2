"""The application's unit of work over the :class:`~central.adapters.storage.Store` (SQLite or
PostgreSQL; the ``Sqlite`` in the class names is their history): each write runs on the store's
writer thread in ONE transaction with repositories bound to it; reads run on a reader connection.
A unit of work is one station's (its code): its repositories read and write that station's rows."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from central.adapters.charging import ChargingRows
from central.adapters.database import Db
from central.adapters.orders import NoticeRows, OrderRows
from central.adapters.reports import ReportRows
from central.adapters.storage import Store
from central.application.ports import Repositories

T = TypeVar("T")


class SqliteRepositories:
    """The repositories of one connection (the application's ``Repositories``)."""

    def __init__(self, db: Db, station: str) -> None:
        self.db = db
        self._charging = ChargingRows(db, station)
        self._orders = OrderRows(db, station)
        self._notices = NoticeRows(db)
        self._reports = ReportRows(db, station)

    @property
    def charging(self) -> ChargingRows:
        return self._charging

    @property
    def orders(self) -> OrderRows:
        return self._orders

    @property
    def notices(self) -> NoticeRows:
        return self._notices

    @property
    def reports(self) -> ReportRows:
        return self._reports


class SqliteUnitOfWork:
    """The application's ``UnitOfWork`` over one store, for the station ``station`` (its code)."""

    def __init__(self, store: Store, station: str) -> None:
        self.store, self.station = store, station

    async def write(self, fn: Callable[[Repositories], T]) -> T:
        return await self.store.write(lambda db: fn(SqliteRepositories(db, self.station)))

    async def read(self, fn: Callable[[Repositories], T]) -> T:
        return await self.store.read(lambda db: fn(SqliteRepositories(db, self.station)))
