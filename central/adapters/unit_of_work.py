"""The application's unit of work over the :class:`~central.adapters.storage.Store` (SQLite or
PostgreSQL; the ``Sqlite`` in the class names is their history): each write runs on the store's
writer thread in ONE transaction with repositories bound to it; reads run on a reader connection.
A unit of work is one station's (its code): its repositories read and write that station's rows."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from central.adapters.charging import ChargingRows
from central.adapters.database import Db
from central.adapters.fleet_schema import bump_station_version
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
    """The application's ``UnitOfWork`` over one store, for the station ``station`` (its code).
    ``versioned``: every write also moves the station's version in its transaction
    (``central/adapters/fleet_schema.py: station_versions``), for the read views of the other
    centrals on the database."""

    def __init__(self, store: Store, station: str, *, versioned: bool = False) -> None:
        self.store, self.station, self.versioned = store, station, versioned

    async def write(self, fn: Callable[[Repositories], T]) -> T:
        if not self.versioned:
            return await self.store.write(lambda db: fn(SqliteRepositories(db, self.station)))

        def versioned(db: Db) -> T:
            result = fn(SqliteRepositories(db, self.station))
            bump_station_version(db, self.station)
            return result

        return await self.store.write(versioned)

    async def read(self, fn: Callable[[Repositories], T]) -> T:
        return await self.store.read(lambda db: fn(SqliteRepositories(db, self.station)))
