"""What every route of the operator platform API shares: paging, enums, request input, responses
and the pieces of its OpenAPI schemas.

Errors are RFC 7807 problem details (:data:`central.web.errors.PLATFORM_STYLE`). Success bodies are
the resource itself, not wrapped. Paging follows the platform's paging object; enum codes carry the
``...Description`` texts verbatim from the data dictionary. Datetimes are ISO 8601 UTC with ``Z``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, TypeVar

import msgspec
from aiohttp import web

from central.adapters.database import Db
from central.adapters.query import Resource
from central.web.errors import (
    PERMISSION_DENIED,
    RESOURCE_NOT_FOUND,
    VALIDATION_ERROR,
    ApiError,
    json_response,
)
from central.web.middleware import auth_settings, store_of
from central.web.shapes import PLATFORM, S, decode, json_object

PAGE_SIZE_DEFAULT = 10
PAGE_SIZE_MAX = 100
MAX_ID = 2**63 - 1  # SQLite's INTEGER range: a larger id names nothing
MAX_KEY = 64  # a text path id (station, pile, port, order) longer than this names nothing
MAX_BATCH = 1000
KEYWORD_MAX = 100
INT_TEXT = re.compile(r"[+-]?\d{1,40}")
T = TypeVar("T")


def invalid(field: str, message: str) -> ApiError:
    """A 400 naming ``field`` (camelCase, as the request spelled it)."""
    return ApiError(400, VALIDATION_ERROR, f"{field}: {message}", {field: [message]})


def not_found(what: str, key: object) -> ApiError:
    return ApiError(404, "RESOURCE_NOT_FOUND", f"{what} {key} 不存在")


# --- paging ----------------------------------------------------------------------------------------

PAGE_NUMBER_MAX = 10**9  # far past any last page, and OFFSET stays inside SQLite's integers


def paging(request: web.Request) -> tuple[int, int]:
    """(pageNumber, pageSize) from the query: defaults 1 and 10; clamped to 10**9 and 100."""
    page = _positive_int(request, "pageNumber", 1)
    size = _positive_int(request, "pageSize", PAGE_SIZE_DEFAULT)
    return min(page, PAGE_NUMBER_MAX), min(size, PAGE_SIZE_MAX)


def _positive_int(request: web.Request, name: str, default: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise invalid(name, f"must be an integer, got {raw!r}") from None
    if value < 1:
        raise invalid(name, "must be at least 1")
    return value


def page_offset(page: int, size: int) -> int:
    """The row offset of a page, bounded so a page far past the end cannot overflow SQLite."""
    return min((page - 1) * size, MAX_ID // 2)


def page_object(page: int, size: int, total: int, items: Sequence[Any]) -> dict[str, Any]:
    """The spec's paging object."""
    pages = math.ceil(total / size) if total else 0
    return {
        "pageNumber": page,
        "pageSize": size,
        "totalCount": total,
        "totalPages": pages,
        "hasPrevious": page > 1,
        "hasNext": page < pages,
        "items": list(items),
    }


class Page(msgspec.Struct, Generic[T], rename="camel"):
    """The platform's paging object: one page of items and where it lies among all of them."""

    page_number: int
    page_size: int
    total_count: int
    total_pages: int
    has_previous: bool
    has_next: bool
    items: list[T]

    @classmethod
    def of(cls, page: int, size: int, total: int, items: Sequence[T]) -> Page[T]:
        """Page ``page`` of ``size`` items, ``items`` being that page of ``total`` in all."""
        pages = math.ceil(total / size) if total else 0
        return cls(page, size, total, pages, page > 1, page < pages, list(items))


PAGE_PARAMETERS: tuple[dict[str, Any], ...] = (
    {"name": "pageNumber", "in": "query", "schema": {"type": "integer", "minimum": 1, "default": 1}},
    {"name": "pageSize", "in": "query", "schema": {"type": "integer", "minimum": 1, "default": 10}},
    {"name": "keyword", "in": "query", "schema": {"type": "string"}},
)


def page_schema(item: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "pageNumber": {"type": "integer"},
            "pageSize": {"type": "integer"},
            "totalCount": {"type": "integer"},
            "totalPages": {"type": "integer"},
            "hasPrevious": {"type": "boolean"},
            "hasNext": {"type": "boolean"},
            "items": {"type": "array", "items": dict(item)},
        },
    }


# --- the spec's data dictionary (数据字典), verbatim ---------------------------------------------------

STATION_STATUS = {0: "离线", 1: "在线", 2: "维护中", 3: "故障"}
PILE_TYPE = {1: "直流快充", 2: "交流慢充"}
PILE_STATUS = {0: "离线", 1: "空闲", 2: "使用中", 3: "故障"}
ONLINE_STATUS = {0: "离线", 1: "在线"}
PORT_TYPE = {1: "国标", 2: "欧标", 3: "美标"}
USER_STATUS = {0: "禁用", 1: "正常"}
GENDER = {0: "未知", 1: "男", 2: "女"}
ORDER_STATUS = {0: "待支付", 1: "充电中", 2: "已完成", 3: "已取消", 4: "异常"}
BILLING_MODE = {0: "按时间", 1: "电量+电量服务费", 2: "电量+时间服务费"}
PAYMENT_STATUS = {0: "未支付", 1: "已支付", 2: "已退款"}
PAYMENT_METHOD = {1: "微信", 2: "支付宝", 3: "余额"}
NOTIFICATION_TYPE = {1: "系统通知", 2: "订单通知", 3: "活动通知", 4: "充值通知"}
# Not in the spec's dictionary: port fault types (codes follow the piles' fault registers).
FAULT_TYPE = {
    0: "无故障",
    1: "过温",
    2: "电表故障",
    3: "接触器故障",
    4: "通信故障",
    5: "漏电",
    6: "过流",
    7: "欠压",
    8: "过压",
    9: "接地故障",
    10: "车辆故障",
    11: "线缆故障",
    12: "内部故障",
    13: "其他故障",
}


def described(code: int | None, table: Mapping[int, str]) -> str | None:
    """The description of ``code`` in ``table`` (None for a code the table lacks)."""
    return table.get(code) if code is not None else None


# --- request input ---------------------------------------------------------------------------------


def _unicode_ok(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates cannot be stored
        return False
    return True


async def read_shape(
    request: web.Request,
    shape: type[S],
    rules: Callable[[Mapping[str, Any]], Mapping[str, str]] | None = None,
) -> S:
    """The request's JSON object body as ``shape``: 400 problem details naming every bad field
    (``rules``: see :func:`central.web.shapes.decode`)."""
    return decode(await json_object(request), shape, PLATFORM, rules)


async def read_shape_given(
    request: web.Request,
    shape: type[S],
    rules: Callable[[Mapping[str, Any]], Mapping[str, str]] | None = None,
) -> tuple[S, frozenset[str]]:
    """:func:`read_shape`, and the JSON names the body gave (even as null or blank): an update sets a
    field sent as null or ``""`` to nothing, and keeps one left out."""
    data = await json_object(request)
    return decode(data, shape, PLATFORM, rules), frozenset(data)


def path_id(request: web.Request, name: str, what: str) -> int:
    """An integer path parameter: not an integer → 400 naming it; out of id range → 404."""
    text = request.match_info[name]
    if not INT_TEXT.fullmatch(text):
        raise invalid(name, f"must be an integer, got {text[:40]!r}")
    value = int(text)
    if not 1 <= value <= MAX_ID:
        raise not_found(what, value)
    return value


def path_key(request: web.Request, name: str, what: str) -> str:
    """A text path id (station, pile, port, order ids are hex strings); too long → 404."""
    key = request.match_info[name]
    if not 1 <= len(key) <= MAX_KEY:
        raise not_found(what, key[:MAX_KEY])
    return key


def query_key(request: web.Request, name: str) -> str | None:
    """An optional text id in the query (400 naming it when too long)."""
    raw = request.query.get(name, "").strip()
    if not raw:
        return None
    if len(raw) > MAX_KEY:
        raise invalid(name, f"must be an id of at most {MAX_KEY} characters")
    return raw


def query_code(request: web.Request, name: str, table: Mapping[int, str]) -> int | None:
    """An optional enum code in the query (400 naming it unless one of ``table``)."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    if not INT_TEXT.fullmatch(raw) or int(raw) not in table:
        codes = ", ".join(f"{code}={text}" for code, text in table.items())
        raise invalid(name, f"must be one of {codes}; got {raw[:40]!r}")
    return int(raw)


def query_keyword(request: web.Request) -> str | None:
    """The optional ``keyword`` (at most KEYWORD_MAX characters)."""
    raw = request.query.get("keyword", "").strip()
    if not raw:
        return None
    if len(raw) > KEYWORD_MAX or not _unicode_ok(raw):
        raise invalid("keyword", f"must be valid text of at most {KEYWORD_MAX} characters")
    return raw


# --- responses and stored values -------------------------------------------------------------------


def utc_z(text: str | None) -> str | None:
    """A stored time as ISO 8601 UTC with ``Z`` (naive values are UTC)."""
    if not text:
        return None
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        return text
    at = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_iso(request: web.Request) -> str:
    """Now (the app's account clock) as a stored ISO 8601 UTC string."""
    return auth_settings(request.app).clock().astimezone(UTC).isoformat()


def no_content() -> web.Response:
    return web.Response(status=204)


def created(new_id: int | str) -> web.Response:
    return json_response({"id": new_id}, 201)


# --- reading rows ----------------------------------------------------------------------------------


async def read(request: web.Request, fn: Callable[[Db], Any]) -> Any:
    """Run ``fn(db)`` on one of the store's reader connections."""
    return await store_of(request).read(fn)


async def write(request: web.Request, fn: Callable[[Db], Any]) -> Any:
    """Run ``fn(db)`` in one write transaction of the store."""
    return await store_of(request).write(fn)


async def list_response(
    request: web.Request,
    resource: Resource,
    fetch: Callable[[Db], list[dict[str, Any]]] | None = None,
) -> web.Response:
    """The JSON array of the rows ``fetch`` reads (default: every row of the resource)."""
    rows = await read(request, fetch or resource.rows)
    return json_response([resource.shape(row) for row in rows])


async def children_response(
    request: web.Request, parent: Resource, parent_key: object, children: Resource, column: str
) -> web.Response:
    """The JSON array of the ``children`` rows whose ``column`` is ``parent_key`` (404 naming the
    parent when it does not exist)."""

    def rows(db: Db) -> list[dict[str, Any]]:
        parent.row(db, parent_key)
        return children.rows(db, f"{column} = ?", [parent_key])

    return await list_response(request, children, rows)


async def item_response(request: web.Request, resource: Resource, key: object) -> web.Response:
    """The JSON of the resource's row ``key`` (404 when there is none)."""
    return json_response(resource.shape(await read(request, lambda db: resource.row(db, key))))


async def page_response(
    request: web.Request, resource: Resource, where: tuple[str, list[Any]], page_size: tuple[int, int]
) -> web.Response:
    """The spec's paging object of the rows matching ``where`` (``page_size``: :func:`paging`'s)."""
    page, size = page_size
    offset = page_offset(page, size)
    total, items = await read(request, lambda db: resource.page(db, where, size, offset))
    return json_response(page_object(page, size, total, items))


# --- pieces of the OpenAPI schemas -----------------------------------------------------------------

STR, INT, NUM, BOOL = {"type": "string"}, {"type": "integer"}, {"type": "number"}, {"type": "boolean"}
NSTR, NNUM, NINT = {"type": ["string", "null"]}, {"type": ["number", "null"]}, {"type": ["integer", "null"]}
DATETIME = {"type": ["string", "null"], "format": "date-time"}
ID_SCHEMA = {"type": "integer", "minimum": 1}
KEY_SCHEMA = {"type": "string", "minLength": 1, "maxLength": MAX_KEY}
Id = Annotated[int, msgspec.Meta(ge=1, le=MAX_ID)]
"""A row id in a request body."""
Key = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_KEY)]
"""A text id (station, pile, port, order) in a request body."""
UtcTime = Annotated[str, msgspec.Meta(extra_json_schema={"format": "date-time"})] | None
"""A stored time in a response, as ISO 8601 UTC with ``Z`` (:func:`utc_z`), or null."""
DENIED_403 = (403, PERMISSION_DENIED)
MISSING_404 = (404, RESOURCE_NOT_FOUND)
CONFLICT_409 = (409, "CONFLICT")


def obj_schema(properties: Mapping[str, Any], required: Iterable[str] = ()) -> dict[str, Any]:
    return {"type": "object", "properties": dict(properties), "required": list(required)}


def codes_schema(table: Mapping[int, str], *, nullable: bool = False) -> dict[str, Any]:
    """The codes of ``table`` as an enum described ``code=text, ...`` (no JSON type)."""
    codes: list[Any] = list(table)
    text = ", ".join(f"{code}={name}" for code, name in table.items())
    return {"enum": [*codes, None] if nullable else codes, "description": text}


def int_codes_schema(table: Mapping[int, str]) -> dict[str, Any]:
    """:func:`codes_schema` of type integer."""
    return {"type": "integer", **codes_schema(table)}


def path_parameter(name: str, description: str, schema: Mapping[str, Any]) -> dict[str, Any]:
    """A path parameter (without a description when ``description`` is empty)."""
    parameter: dict[str, Any] = {"name": name, "in": "path", "required": True}
    if description:
        parameter["description"] = description
    parameter["schema"] = dict(schema)
    return parameter


def id_path(name: str, description: str) -> dict[str, Any]:
    """An integer id path parameter (users, roles, addresses, notifications)."""
    return path_parameter(name, description, ID_SCHEMA)


def key_path(name: str, description: str) -> dict[str, Any]:
    """A text id path parameter (stations, piles, ports, orders)."""
    return path_parameter(name, description, KEY_SCHEMA)


ID_RESULT = obj_schema({"id": INT}, ("id",))
KEY_RESULT = obj_schema({"id": STR}, ("id",))


# --- response shapes -------------------------------------------------------------------------------

DateText = Annotated[str, msgspec.Meta(extra_json_schema={"format": "date"})] | None
"""A calendar date ``YYYY-MM-DD``, or null."""


class CreatedKey(msgspec.Struct):
    """The text id (station, pile, port, order) of a created resource, as :func:`created` renders it."""

    id: str


def rendered(item: msgspec.Struct) -> dict[str, Any]:
    """A response Struct as the JSON object it renders to (keys are its JSON field names)."""
    data: dict[str, Any] = msgspec.to_builtins(item)
    return data
