"""Generic reads the operator API shares: one row by key, filtered lists, counted pages, and the
WHERE clauses of its filters and keyword searches. A missing row raises :class:`RowNotFound`,
which the web layer shows as a 404 naming the resource."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from central.adapters.database import Db

RowShape = Callable[[Mapping[str, Any]], dict[str, Any]]


class RowNotFound(LookupError):
    """No row of ``what`` (a resource name such as 用户) has the key ``key``."""

    def __init__(self, what: str, key: object) -> None:
        self.what, self.key = what, key
        super().__init__(f"{what} {key} 不存在")


@dataclass(frozen=True)
class Resource:
    """How the API reads one resource: its name in a 404, its SELECT (joins included), its id column,
    its list order, its JSON shape (rows as they are until :meth:`shaped`), and the FROM clause a
    paged list counts over."""

    what: str
    select: str
    key: str
    order: str
    shape: RowShape = dict
    count_from: str = ""

    def shaped(self, shape: RowShape) -> Resource:
        """The same reads, shaping each row with ``shape``."""
        return replace(self, shape=shape)

    def row(self, db: Db, key: object) -> dict[str, Any]:
        """The row of ``key`` (:class:`RowNotFound` naming the resource when there is none)."""
        rows = list(db.query(f"{self.select} WHERE {self.key} = ?", [key]))
        if not rows:
            raise RowNotFound(self.what, key)
        return rows[0]

    def rows(self, db: Db, where: str = "", args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """The rows matching ``where`` (every row when empty), in list order."""
        condition = f" WHERE {where}" if where else ""
        return list(db.query(f"{self.select}{condition} ORDER BY {self.order}", list(args)))

    def page(
        self, db: Db, where: tuple[str, list[Any]], size: int, offset: int
    ) -> tuple[int, list[dict[str, Any]]]:
        """(how many rows match, the shaped rows of one page)."""
        clause, args = where
        count = f"SELECT COUNT(*) FROM {self.count_from} WHERE {clause}"  # noqa: S608
        total = db.execute(count, args).fetchone()[0]
        rows = db.query(
            f"{self.select} WHERE {clause} ORDER BY {self.order} LIMIT ? OFFSET ?", [*args, size, offset]
        )
        return int(total), [self.shape(row) for row in rows]


def row_exists(db: Db, table: str, row_id: object) -> bool:
    """Whether ``table`` has a row with this id."""
    return db.execute(f"SELECT 1 FROM {table} WHERE id = ?", [row_id]).fetchone() is not None  # noqa: S608


def require_row(db: Db, table: str, row_id: object, what: str) -> None:
    """:class:`RowNotFound` naming ``what`` unless ``table`` has the id."""
    if not row_exists(db, table, row_id):
        raise RowNotFound(what, row_id)


def require_user(db: Db, user_id: int) -> None:
    """:class:`RowNotFound` (用户) unless the user exists."""
    require_row(db, "users", user_id, "用户")


def like_pattern(keyword: str) -> str:
    """A LIKE pattern (ESCAPE '\\') matching ``keyword`` anywhere."""
    escaped = keyword.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def where_clause(
    filters: Iterable[tuple[str, Any]], keyword: str | None = None, columns: tuple[str, ...] = ()
) -> tuple[str, list[Any]]:
    """A WHERE clause of ``column = ?`` filters (None skipped) and a keyword over ``columns``."""
    sql, args = ["1 = 1"], list[Any]()
    for clause, value in filters:
        if value is not None:
            sql.append(clause)
            args.append(value)
    if keyword is not None:
        sql.append("(" + " OR ".join(f"{c} LIKE ? ESCAPE '\\'" for c in columns) + ")")
        args += [like_pattern(keyword)] * len(columns)
    return " AND ".join(sql), args
