"""The notifications table as both APIs read and change it: one user's notifications,
read marks, deletion, and the notifications operators send (which the driver API lists too).

``type`` is the operator API's 1..4; ``kind`` (the driver API's type) follows from it by
:data:`KIND_OF_TYPE`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from central.adapters.database import Db
from central.adapters.query import Resource

KIND_OF_TYPE = {1: "system", 2: "order", 3: "activity", 4: "recharge"}
NOTIFICATION_ROWS = Resource(
    "通知",
    "SELECT id, user_id, title, content, type, related_id, is_read, read_time, create_time"
    " FROM notifications",
    "id",
    "julianday(create_time) DESC, id DESC",
)
_MARK_READ = "UPDATE notifications SET is_read = 1, read_time = ? WHERE is_read = 0 AND "


def insert_notification(
    db: Db,
    user_id: int,
    *,
    title: str,
    content: str,
    type_code: int,
    related_id: str | None,
    stamp: str,
) -> int:
    """One unread notification row, visible to both APIs; its id."""
    cursor = db.execute(
        "INSERT INTO notifications (user_id, kind, type, title, content, related_id, is_read, create_time)"
        " VALUES (?, ?, ?, ?, ?, ?, 0, ?) RETURNING id",
        [user_id, KIND_OF_TYPE[type_code], type_code, title, content, related_id, stamp],
    )
    return int(cursor.fetchone()[0])


def notifications_of_user(db: Db, user_id: int, *, unread_only: bool) -> list[dict[str, Any]]:
    """The user's notifications (only the unread ones when asked), newest first."""
    unread = " AND is_read = 0" if unread_only else ""
    return NOTIFICATION_ROWS.rows(db, f"user_id = ?{unread}", [user_id])


def newest_of_user(db: Db, user_id: int, limit: int) -> list[dict[str, Any]]:
    """The user's newest notifications."""
    return list(
        db.query(
            "SELECT id, kind, content, create_time, is_read FROM notifications WHERE user_id = ? "
            "ORDER BY julianday(create_time) DESC, id DESC LIMIT ?",
            [user_id, limit],
        )
    )


def mark_read_if_owner(db: Db, user_id: int, notification_id: int, now: datetime) -> bool:
    """Mark one of the user's notifications read (the first read time is kept); False if not theirs."""
    cursor = db.execute(
        "UPDATE notifications SET is_read = 1, read_time = COALESCE(read_time, ?)"
        " WHERE id = ? AND user_id = ?",
        [now.astimezone(UTC).isoformat(), notification_id, user_id],
    )
    return bool(cursor.rowcount)


def owner_of(db: Db, notification_id: int) -> int | None:
    """The user a notification belongs to, or None when there is no such notification."""
    row = db.execute("SELECT user_id FROM notifications WHERE id = ?", [notification_id]).fetchone()
    return None if row is None else int(row[0])


def mark_read(db: Db, notification_id: int, stamp: str) -> int:
    """Mark one notification read (1) unless it already was (0)."""
    return int(db.execute(_MARK_READ + "id = ?", [stamp, notification_id]).rowcount)


def mark_all_read(db: Db, user_id: int, stamp: str) -> int:
    """Mark every unread notification of the user read; how many."""
    return int(db.execute(_MARK_READ + "user_id = ?", [stamp, user_id]).rowcount)


def delete_notification(db: Db, notification_id: int) -> None:
    """Delete one notification."""
    db.execute("DELETE FROM notifications WHERE id = ?", [notification_id])


def unread_count(db: Db, user_id: int) -> int:
    """How many notifications of the user are unread."""
    row = db.execute("SELECT COUNT(*) FROM notifications WHERE user_id = ? AND is_read = 0", [user_id])
    return int(row.fetchone()[0])
