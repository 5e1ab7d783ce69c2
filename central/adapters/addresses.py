"""The user_addresses table: a user's addresses, at most one of them the default."""

from __future__ import annotations

from typing import Any

from central.adapters.database import Db
from central.adapters.query import Resource

ADDRESS_ROWS = Resource("地址", "SELECT * FROM user_addresses", "id", "is_default DESC, id")


def addresses_of_user(db: Db, user_id: int) -> list[dict[str, Any]]:
    """The user's addresses, the default first."""
    return ADDRESS_ROWS.rows(db, "user_id = ?", [user_id])


def default_address(db: Db, user_id: int) -> dict[str, Any] | None:
    """The user's default address, or None."""
    rows = list(db.query("SELECT * FROM user_addresses WHERE user_id = ? AND is_default = 1", [user_id]))
    return rows[0] if rows else None


def count_addresses(db: Db, user_id: int) -> int:
    """How many addresses the user has."""
    return int(db.execute("SELECT COUNT(*) FROM user_addresses WHERE user_id = ?", [user_id]).fetchone()[0])


def insert_address(db: Db, user_id: int, columns: dict[str, Any], stamp: str) -> int:
    """A new, not default, address of the user; its id."""
    row = {**columns, "user_id": user_id, "is_default": 0, "create_time": stamp, "update_time": stamp}
    return int(db.table("user_addresses").insert(row).last_rowid or 0)


def update_address(db: Db, address_id: int, columns: dict[str, Any], stamp: str) -> None:
    """Replace the given columns of an address."""
    db.table("user_addresses").update(address_id, {**columns, "update_time": stamp})


def make_default(db: Db, user_id: int, address_id: int) -> None:
    """The one default address of the user (inside the caller's transaction)."""
    db.execute(
        "UPDATE user_addresses SET is_default = CASE WHEN id = ? THEN 1 ELSE 0 END WHERE user_id = ?",
        [address_id, user_id],
    )


def touch_address(db: Db, address_id: int, stamp: str) -> None:
    """Stamp the address's update time."""
    db.execute("UPDATE user_addresses SET update_time = ? WHERE id = ?", [stamp, address_id])


def delete_address(db: Db, address_id: int, user_id: int, was_default: bool) -> None:
    """Delete an address; when it was the default, the user's newest remaining one becomes it."""
    db.execute("DELETE FROM user_addresses WHERE id = ?", [address_id])
    if was_default:
        newest = db.execute(
            "SELECT id FROM user_addresses WHERE user_id = ? ORDER BY id DESC LIMIT 1", [user_id]
        ).fetchone()
        if newest is not None:
            make_default(db, user_id, int(newest[0]))
