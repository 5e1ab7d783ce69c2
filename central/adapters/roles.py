"""The roles and user_roles tables: roles, and which users hold them."""

from __future__ import annotations

from typing import Any

from central.adapters.database import Db
from central.adapters.query import Resource

_ROLE_COLUMNS = "id, name, description, permission_level, is_system"
ROLE_ROWS = Resource("角色", f"SELECT {_ROLE_COLUMNS} FROM roles", "id", "id")  # noqa: S608


def name_taken(db: Db, name: str, role_id: int = 0) -> bool:
    """Whether a role other than ``role_id`` has this name."""
    row = db.execute("SELECT 1 FROM roles WHERE name = ? AND id != ?", [name, role_id]).fetchone()
    return row is not None


def insert_role(db: Db, name: str, description: str | None, level: int, stamp: str) -> int:
    """A new (non-system) role; its id."""
    cursor = db.execute(
        "INSERT INTO roles (name, description, permission_level, is_system, create_time, update_time)"
        " VALUES (?, ?, ?, 0, ?, ?) RETURNING id",
        [name, description, level, stamp, stamp],
    )
    return int(cursor.fetchone()[0])


def update_role(db: Db, role_id: int, name: str, description: str | None, level: int, stamp: str) -> None:
    """Set every field of a role."""
    db.execute(
        "UPDATE roles SET name = ?, description = ?, permission_level = ?, update_time = ? WHERE id = ?",
        [name, description, level, stamp, role_id],
    )


def delete_role(db: Db, role_id: int) -> None:
    """Delete a role (its holders lose it)."""
    db.execute("DELETE FROM roles WHERE id = ?", [role_id])


def roles_of_user(db: Db, user_id: int) -> list[dict[str, Any]]:
    """The roles a user holds, by id."""
    return list(
        db.query(
            "SELECT r.id, r.name, r.description, r.permission_level, r.is_system FROM roles r"
            " JOIN user_roles ur ON ur.role_id = r.id WHERE ur.user_id = ? ORDER BY r.id",
            [user_id],
        )
    )


def assign_role(db: Db, user_id: int, role_id: int, stamp: str) -> None:
    """Give the user the role (a role already held is kept as it is)."""
    db.execute(
        "INSERT OR IGNORE INTO user_roles (user_id, role_id, assigned_time) VALUES (?, ?, ?)",
        [user_id, role_id, stamp],
    )


def remove_role(db: Db, user_id: int, role_id: int) -> bool:
    """Take the role from the user; whether the user held it."""
    cursor = db.execute("DELETE FROM user_roles WHERE user_id = ? AND role_id = ?", [user_id, role_id])
    return cursor.rowcount > 0


def holds_role(db: Db, user_id: int, role_id: int) -> bool:
    """Whether the user holds the role."""
    row = db.execute("SELECT 1 FROM user_roles WHERE user_id = ? AND role_id = ?", [user_id, role_id])
    return row.fetchone() is not None
