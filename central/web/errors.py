"""The one place that turns exceptions into API errors, and the two error styles that render them.

Handlers and the domain raise plain exceptions (domain errors carry no HTTP); :func:`api_error_for`
maps each to an :class:`ApiError` (status, error code, message, details), and an
:class:`ApiStyle` renders it. Two styles: the user API's envelope
``{"success": true, "message"?, "data"?}`` / ``{"success": false, "error": {"code", "message",
"details"}}`` (:data:`USER_STYLE`), and the operator platform's RFC 7807 problem details as ASP.NET
Core renders them (:data:`PLATFORM_STYLE`: ``type``, ``title``, ``status``, ``detail``, and for
validation an ``errors`` map of field -> messages; success bodies are the resource itself).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any

import msgspec
import structlog
from aiohttp import web

from central.adapters.query import RowNotFound
from central.adapters.station_calls import StationCallError, StationCallFailed, StationCallTimeout
from central.application.auth import (
    AccountValidationError,
    AuthError,
    InvalidCredentials,
    InvalidToken,
    LoginThrottled,
    RegistrationThrottled,
)
from central.domain import errors as domain
from central.domain.params import StationParamsError
from central.domain.units import display_number

log = structlog.get_logger(__name__)

AUTH_REQUIRED = "AUTH_REQUIRED"
AUTH_INVALID = "AUTH_INVALID"
PERMISSION_DENIED = "PERMISSION_DENIED"
VALIDATION_ERROR = "VALIDATION_ERROR"
RESOURCE_NOT_FOUND = "RESOURCE_NOT_FOUND"
QUEUE_FULL = "QUEUE_FULL"
DUPLICATE_REQUEST = "DUPLICATE_REQUEST"
SYSTEM_ERROR = "SYSTEM_ERROR"
CONFLICT = "CONFLICT"  # the operator platform's refusals (not one of the driver API's codes)
STATION_NOT_RUNNING = "STATION_NOT_RUNNING"  # a known station no instance runs, or its owner is unreachable
STATION_TIMEOUT = "STATION_TIMEOUT"  # the station's owner took a change but gave no answer in time

MESSAGES = {  # the common error codes (常见错误码) and their messages
    AUTH_REQUIRED: "需要认证",
    AUTH_INVALID: "认证无效",
    PERMISSION_DENIED: "权限不足",
    VALIDATION_ERROR: "参数验证失败",
    RESOURCE_NOT_FOUND: "资源不存在",
    QUEUE_FULL: "等候区已满",
    DUPLICATE_REQUEST: "重复请求",
    SYSTEM_ERROR: "系统错误",
}


class ApiError(Exception):
    """An error as the API shows it: HTTP status, error code, message, details (or None)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str | None = None,
        details: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.status, self.code = status, code
        self.message = message or MESSAGES.get(code, code)
        self.details = dict(details) if details is not None else None
        self.headers = dict(headers or {})
        super().__init__(f"{status} {code}: {self.message}")


def validation_error(details: Mapping[str, Any], message: str | None = None) -> ApiError:
    """400 VALIDATION_ERROR naming each bad field in ``details``."""
    return ApiError(400, VALIDATION_ERROR, message, details)


def not_found(message: str = "资源不存在") -> ApiError:
    """404 RESOURCE_NOT_FOUND (also for another user's resources: they must look absent)."""
    return ApiError(404, RESOURCE_NOT_FOUND, message)


def conflict(message: str) -> ApiError:
    """409 CONFLICT: the request is understood, but the change would break a rule."""
    return ApiError(409, CONFLICT, message)


# --- the mapping ---------------------------------------------------------------------------------

_CONFLICTS = (domain.ChangeNotAllowedError, domain.NotChargingError, domain.PileStateError)
_DOMAIN: tuple[tuple[type[domain.DomainError], int, str, str], ...] = (
    (domain.QueueFullError, 409, QUEUE_FULL, "等候区已满"),
    (domain.DuplicateRequestError, 409, DUPLICATE_REQUEST, "已有进行中的充电请求"),
    (domain.UnknownRequestError, 404, RESOURCE_NOT_FOUND, "充电请求不存在"),
    (domain.UnknownPileError, 404, RESOURCE_NOT_FOUND, "充电桩不存在"),
    (domain.InvalidRequestError, 400, VALIDATION_ERROR, "参数验证失败"),
    (domain.ChangeNotAllowedError, 409, VALIDATION_ERROR, "充电区的请求只能取消，不能修改"),
    (domain.NotChargingError, 409, VALIDATION_ERROR, "当前没有正在充电的请求"),
    (domain.PileStateError, 409, VALIDATION_ERROR, "充电桩已处于该状态"),
)
_HTTP_CODES = {400: VALIDATION_ERROR, 401: AUTH_REQUIRED, 403: PERMISSION_DENIED, 404: RESOURCE_NOT_FOUND}


def _with_reason(text: str, exc: BaseException) -> str:
    return f"{text}: {exc}" if str(exc) else text


def _domain_error(exc: domain.DomainError) -> ApiError | None:
    for cls, status, code, text in _DOMAIN:
        if isinstance(exc, cls):
            details = {"reason": exc.code} if isinstance(exc, _CONFLICTS) else None
            return ApiError(status, code, _with_reason(text, exc), details)
    return None


def _auth_error(exc: AuthError) -> ApiError | None:
    if isinstance(exc, LoginThrottled):
        wait_s = max(1, math.ceil(exc.retry_after_s))
        what = "注册过于频繁" if isinstance(exc, RegistrationThrottled) else "登录失败次数过多"
        return ApiError(
            429,
            AUTH_INVALID,
            f"{what}，请在 {wait_s} 秒后重试",
            {"retry_after_s": wait_s},
            {"Retry-After": str(wait_s)},
        )
    if isinstance(exc, InvalidCredentials):
        return ApiError(401, AUTH_INVALID, "用户名或密码错误")
    if isinstance(exc, InvalidToken):
        return ApiError(401, AUTH_INVALID, _with_reason("认证无效", exc))
    if isinstance(exc, AccountValidationError):
        return validation_error(exc.problems)
    return None


def _http_error(exc: web.HTTPException) -> ApiError:
    if exc.status == 405:
        allowed = sorted(getattr(exc, "allowed_methods", ()) or ())
        return ApiError(
            405,
            VALIDATION_ERROR,
            "不支持的请求方法",
            {"method": f"{getattr(exc, 'method', '?')} not allowed; allowed: {', '.join(allowed)}"},
            {"Allow": ", ".join(allowed)},
        )
    if exc.status == 413:
        return ApiError(413, VALIDATION_ERROR, "请求体过大", {"body": "too large"})
    code = _HTTP_CODES.get(exc.status, VALIDATION_ERROR if exc.status < 500 else SYSTEM_ERROR)
    return ApiError(exc.status, code)


def station_params_details(exc: StationParamsError) -> dict[str, str]:
    """Problems of a parameters update by key (several problems of one key joined)."""
    details: dict[str, str] = {}
    for key, what in exc.problems:
        details[key] = f"{details[key]}; {what}" if key in details else what
    return details


def _station_call_error(exc: StationCallError) -> ApiError:
    """A change forwarded to the station's owner (another central instance): the owner's own
    answer, or 503 (not applied) / 504 (outcome unknown) saying so."""
    if isinstance(exc, StationCallFailed):
        status = exc.status if exc.status is not None else 503
        if exc.error.kind.startswith("api:"):  # the owner's API error, as it would have answered
            return ApiError(status, exc.code, str(exc), exc.details)
        code = {500: SYSTEM_ERROR, 504: STATION_TIMEOUT}.get(status, STATION_NOT_RUNNING)
        return ApiError(status, code, str(exc))
    if isinstance(exc, StationCallTimeout) and exc.applied is None:
        return ApiError(504, STATION_TIMEOUT, f"{exc} (the change may have been applied)")
    return ApiError(503, STATION_NOT_RUNNING, str(exc))


def api_error_for(exc: BaseException) -> ApiError:
    """THE mapping from any exception to the error the API shows; unknown ones become SYSTEM_ERROR."""
    mapped: ApiError | None = None
    if isinstance(exc, ApiError):
        mapped = exc
    elif isinstance(exc, domain.DomainError):
        mapped = _domain_error(exc)
    elif isinstance(exc, AuthError):
        mapped = _auth_error(exc)
    elif isinstance(exc, RowNotFound):
        mapped = ApiError(404, RESOURCE_NOT_FOUND, str(exc))
    elif isinstance(exc, StationParamsError):
        mapped = validation_error(station_params_details(exc), "参数验证失败")
    elif isinstance(exc, web.HTTPException):
        mapped = _http_error(exc)
    elif isinstance(exc, StationCallError):
        mapped = _station_call_error(exc)
    if mapped is None:
        log.error("unexpected error", exc_info=exc)
        mapped = ApiError(500, SYSTEM_ERROR)
    return mapped


# --- rendering -----------------------------------------------------------------------------------


def _json_default(value: object) -> object:
    if isinstance(value, msgspec.Struct):  # a response shape
        return msgspec.to_builtins(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Fraction):
        return display_number(value)
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dumps(value: object) -> str:
    """JSON text of a response body (UTF-8 kept readable; datetimes ISO; exact numbers rounded)."""
    return json.dumps(value, ensure_ascii=False, default=_json_default, allow_nan=False)


def json_response(body: object, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    """A JSON response rendered with :func:`dumps`."""
    return web.json_response(body, status=status, headers=headers, dumps=dumps)


def envelope_error_body(error: ApiError) -> dict[str, Any]:
    """The user API's error body: ``{"success": false, "error": {"code", "message", "details"}}``."""
    return {
        "success": False,
        "error": {"code": error.code, "message": error.message, "details": error.details},
    }


def ok(
    data: Any = None, message: str | None = None, *, status: int = 200, with_data: bool = True
) -> web.Response:
    """The user API's success body: ``{"success": true, "message"?, "data"?}``."""
    body: dict[str, Any] = {"success": True}
    if message is not None:
        body["message"] = message
    if with_data:
        body["data"] = data
    return json_response(body, status)


ENVELOPE_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["success", "error"],
    "properties": {
        "success": {"const": False},
        "error": {
            "type": "object",
            "required": ["code", "message", "details"],
            "properties": {
                "code": {"type": "string", "enum": list(MESSAGES)},
                "message": {"type": "string"},
                "details": {"type": ["object", "null"]},
            },
        },
    },
}


def envelope_success_schema(data_schema: Mapping[str, Any] | None) -> dict[str, Any]:
    """OpenAPI schema of a user-API success body around ``data_schema`` (None: no data)."""
    properties: dict[str, Any] = {"success": {"const": True}, "message": {"type": "string"}}
    if data_schema is not None:
        properties["data"] = dict(data_schema)
    return {"type": "object", "required": ["success"], "properties": properties}


@dataclass(frozen=True)
class ApiStyle:
    """How one API renders errors and wraps its success schemas (the user API: the envelope)."""

    name: str
    error_body: Callable[[ApiError], Any]
    error_schema: Mapping[str, Any]
    success_schema: Callable[[Mapping[str, Any] | None], dict[str, Any]]

    def render(self, error: ApiError) -> web.Response:
        """The HTTP response of an error in this style."""
        return json_response(self.error_body(error), error.status, error.headers)


USER_STYLE = ApiStyle("user", envelope_error_body, ENVELOPE_ERROR_SCHEMA, envelope_success_schema)


# --- the operator platform's problem details -----------------------------------------------------

_PROBLEM_TYPES = {
    400: ("https://tools.ietf.org/html/rfc9110#section-15.5.1", "One or more validation errors occurred."),
    401: ("https://tools.ietf.org/html/rfc9110#section-15.5.2", "Unauthorized"),
    403: ("https://tools.ietf.org/html/rfc9110#section-15.5.4", "Forbidden"),
    404: ("https://tools.ietf.org/html/rfc9110#section-15.5.5", "Not Found"),
    405: ("https://tools.ietf.org/html/rfc9110#section-15.5.6", "Method Not Allowed"),
    409: ("https://tools.ietf.org/html/rfc9110#section-15.5.10", "Conflict"),
    429: ("https://tools.ietf.org/html/rfc6585#section-4", "Too Many Requests"),
    500: (
        "https://tools.ietf.org/html/rfc9110#section-15.6.1",
        "An error occurred while processing your request.",
    ),
}


def problem_body(error: ApiError) -> dict[str, Any]:
    """RFC 7807 problem details of an API error; validation details become ``errors``."""
    kind, title = _PROBLEM_TYPES.get(error.status, ("about:blank", "Error"))
    body: dict[str, Any] = {"type": kind, "title": title, "status": error.status}
    details = error.details or {}
    if error.status == 400 and error.code == VALIDATION_ERROR:
        body["errors"] = {
            field: value if isinstance(value, list) else [str(value)] for field, value in details.items()
        } or {"$": [error.message]}
    else:
        body["detail"] = error.message
    return body


PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}},
    },
}


def _plain_success(schema: Mapping[str, Any] | None) -> dict[str, Any]:
    return dict(schema) if schema is not None else {}


PLATFORM_STYLE = ApiStyle("platform", problem_body, PROBLEM_SCHEMA, _plain_success)
