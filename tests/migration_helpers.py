"""Databases as an older central left them, for the tests of a migration that must refuse what it
cannot take: the central's migrations up to one, and a driver holding two active requests."""

from __future__ import annotations

from central.adapters.database import Db, Migrations
from central.adapters.schema import migrations

ONE_ACTIVE = "0005_one_active_request_per_driver"
NOW = "2025-06-02T02:00:00+00:00"


def migrations_before(name: str) -> Migrations:
    """The central's migration set up to (not including) ``name``, recorded under the same set name
    so that the full set later applies only the rest."""
    before = Migrations(migrations.name)
    for step, fn in migrations.steps:
        if step == name:
            return before
        before(name=step, rebuilds=step in migrations.rebuilds)(fn)
    raise ValueError(f"no migration {name!r} in {migrations.name!r}")


def driver_with_two_active_requests(db: Db) -> int:
    """A driver who won the race the one-active-request index forbids: a waiting request ``car1`` at
    north and another, ``car2``, at south. The driver's user id."""
    with db.transaction():
        db.execute("INSERT INTO users (username, password_hash, register_time) VALUES ('ann', 'h', ?)", [NOW])
        user = int(db.execute("SELECT id FROM users WHERE username = 'ann'").fetchone()[0])
        for car, station in (("car1", "north"), ("car2", "south")):
            db.execute(
                "INSERT INTO charging_requests (id, station, user_id, queue_number, charging_mode, "
                "requested_amount, current_status, created_at) VALUES (?, ?, ?, 'F1', 'fast', '10', "
                "'waiting', ?)",
                [car, station, user, NOW],
            )
    return user
