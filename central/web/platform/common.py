"""What every route of the operator platform API shares: its error style, paging and enums.

Errors are RFC 7807 problem details as ASP.NET Core renders them (``type``, ``title``, ``status``,
``detail``, and for validation an ``errors`` map of field -> messages). Success bodies are the
resource itself, not wrapped. Paging follows the spec's object; enum codes carry the spec's
``...Description`` texts verbatim from its data dictionary.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web

from central.web.errors import VALIDATION_ERROR, ApiError, ApiStyle

PAGE_SIZE_DEFAULT = 10
PAGE_SIZE_MAX = 100

_TYPES = {
    400: ("https://tools.ietf.org/html/rfc9110#section-15.5.1",
          "One or more validation errors occurred."),
    401: ("https://tools.ietf.org/html/rfc9110#section-15.5.2", "Unauthorized"),
    403: ("https://tools.ietf.org/html/rfc9110#section-15.5.4", "Forbidden"),
    404: ("https://tools.ietf.org/html/rfc9110#section-15.5.5", "Not Found"),
    405: ("https://tools.ietf.org/html/rfc9110#section-15.5.6", "Method Not Allowed"),
    409: ("https://tools.ietf.org/html/rfc9110#section-15.5.10", "Conflict"),
    429: ("https://tools.ietf.org/html/rfc6585#section-4", "Too Many Requests"),
    500: ("https://tools.ietf.org/html/rfc9110#section-15.6.1",
          "An error occurred while processing your request."),
}


def problem_body(error: ApiError) -> dict[str, Any]:
    """RFC 7807 problem details of an API error; validation details become ``errors``."""
    kind, title = _TYPES.get(error.status, ("about:blank", "Error"))
    body: dict[str, Any] = {"type": kind, "title": title, "status": error.status}
    details = error.details or {}
    if error.status == 400 and error.code == VALIDATION_ERROR:
        body["errors"] = {field: value if isinstance(value, list) else [str(value)]
                          for field, value in details.items()} or {"$": [error.message]}
    else:
        body["detail"] = error.message
    return body


PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["type", "title", "status"],
    "properties": {"type": {"type": "string"}, "title": {"type": "string"},
                   "status": {"type": "integer"}, "detail": {"type": "string"},
                   "errors": {"type": "object",
                              "additionalProperties": {"type": "array",
                                                       "items": {"type": "string"}}}}}


def _plain_success(schema: Mapping[str, Any] | None) -> dict[str, Any]:
    return dict(schema) if schema is not None else {}


PLATFORM_STYLE = ApiStyle("platform", problem_body, PROBLEM_SCHEMA, _plain_success)


def invalid(field: str, message: str) -> ApiError:
    """A 400 naming ``field`` (camelCase, as the request spelled it)."""
    return ApiError(400, VALIDATION_ERROR, f"{field}: {message}", {field: [message]})


def not_found(what: str, key: object) -> ApiError:
    return ApiError(404, "RESOURCE_NOT_FOUND", f"{what} {key} 不存在")


def conflict(message: str) -> ApiError:
    return ApiError(409, "CONFLICT", message)


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


def page_object(page: int, size: int, total: int, items: Sequence[Any]) -> dict[str, Any]:
    """The spec's paging object."""
    pages = math.ceil(total / size) if total else 0
    return {"pageNumber": page, "pageSize": size, "totalCount": total, "totalPages": pages,
            "hasPrevious": page > 1, "hasNext": page < pages, "items": list(items)}


PAGE_PARAMETERS: tuple[dict[str, Any], ...] = (
    {"name": "pageNumber", "in": "query", "schema": {"type": "integer", "minimum": 1,
                                                     "default": 1}},
    {"name": "pageSize", "in": "query", "schema": {"type": "integer", "minimum": 1,
                                                   "default": 10}},
    {"name": "keyword", "in": "query", "schema": {"type": "string"}},
)


def page_schema(item: Mapping[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": {
        "pageNumber": {"type": "integer"}, "pageSize": {"type": "integer"},
        "totalCount": {"type": "integer"}, "totalPages": {"type": "integer"},
        "hasPrevious": {"type": "boolean"}, "hasNext": {"type": "boolean"},
        "items": {"type": "array", "items": dict(item)}}}


# The spec's data dictionary (数据字典), verbatim.
STATION_STATUS = {0: "离线", 1: "在线", 2: "维护中", 3: "故障"}
PILE_TYPE = {1: "直流快充", 2: "交流慢充"}
PILE_STATUS = {0: "离线", 1: "空闲", 2: "使用中", 3: "故障"}
ONLINE_STATUS = {0: "离线", 1: "在线"}
PORT_TYPE = {1: "国标", 2: "欧标", 3: "美标"}
USER_STATUS = {0: "禁用", 1: "正常"}
GENDER = {0: "未知", 1: "男", 2: "女"}
PERMISSION_LEVEL = {1: "普通用户", 2: "VIP用户", 3: "管理员", 4: "超级管理员"}
ORDER_STATUS = {0: "待支付", 1: "充电中", 2: "已完成", 3: "已取消", 4: "异常"}
BILLING_MODE = {0: "按时间", 1: "电量+电量服务费", 2: "电量+时间服务费"}
PAYMENT_STATUS = {0: "未支付", 1: "已支付", 2: "已退款"}
PAYMENT_METHOD = {1: "微信", 2: "支付宝", 3: "余额"}
NOTIFICATION_TYPE = {1: "系统通知", 2: "订单通知", 3: "活动通知", 4: "充值通知"}
# Not in the spec's dictionary: port fault types (codes follow the piles' fault registers).
FAULT_TYPE = {0: "无故障", 1: "过温", 2: "电表故障", 3: "接触器故障", 4: "通信故障"}


def described(code: int | None, table: Mapping[int, str]) -> str | None:
    """The description of ``code`` in ``table`` (None for a code the table lacks)."""
    return table.get(code) if code is not None else None
