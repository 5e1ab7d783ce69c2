"""Request and response shapes declared once, as msgspec Structs, for validation and the OpenAPI document.

A request body is a Struct: :func:`decode` checks a decoded JSON object against it field by field
(msgspec itself stops at the first error, and clients are owed every bad field at once), words one
message per bad field from the field's declared type and ``msgspec.Meta`` constraints, and builds
the Struct when nothing is wrong. A response ``data`` is a Struct too (or a list of them): handlers
build it and the JSON renderer encodes it. :func:`schemas` turns the same types into the OpenAPI
document's schemas (``msgspec.json.schema_components``), so each rule is stated only once.

Field options beyond msgspec's constraints go in ``Meta(extra=...)``: ``blank_is_none`` reads ``""``
as absent, ``hint`` replaces the message of a failed constraint, ``codes`` (a code -> text table,
see :func:`codes`) limits an integer to the table's codes, ``fullmatch`` (see :func:`whole`) holds a
text to a pattern from its first character to its last. Each API words its problems in its own
:class:`Dialect`: the driver API says ``"required"`` in a flat ``details`` map (:data:`DRIVER`), the
operator platform says ``"is required"`` in the problem details' ``errors`` lists and reads blank
text as absent (:data:`PLATFORM`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any, TypeVar, get_type_hints

import msgspec
from aiohttp import web
from msgspec import inspect

from central.application import auth
from central.domain.limits import MAX_KWH, MIN_KWH
from central.web.errors import VALIDATION_ERROR, ApiError, validation_error

S = TypeVar("S", bound=msgspec.Struct)
COMPONENTS_REF = "#/components/schemas/{name}"

Kwh = Annotated[float, msgspec.Meta(ge=MIN_KWH, le=MAX_KWH, description="kWh")]
"""An energy a driver asks for or a battery holds: piles meter whole Wh, and more is a typo."""
OptionalText = Annotated[str, msgspec.Meta(extra={"blank_is_none": True})] | None
"""A text field where ``""`` means the same as leaving it out."""
Username = Annotated[str, msgspec.Meta(extra_json_schema={"pattern": f"^{auth.USERNAME_RE.pattern}$"})]
"""A new account's name; the account rules themselves are checked by :mod:`central.auth`."""
Password = Annotated[
    str,
    msgspec.Meta(
        extra_json_schema={"minLength": auth.PASSWORD_LENGTH[0], "maxLength": auth.PASSWORD_LENGTH[1]}
    ),
]
"""A new password; :func:`central.application.auth.password_problem` says why one is refused."""
LocalTime = Annotated[str, msgspec.Meta(extra_json_schema={"format": "date-time"})] | None
"""An ISO 8601 instant with the station's UTC offset, or null."""

_JSON_TYPES = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}


def json_type(value: object) -> str:
    """The JSON name of a decoded value's type (for error messages)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "number"
    return _JSON_TYPES.get(type(value), type(value).__name__)


async def json_object(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object; 400 naming the problem otherwise."""
    raw = await request.read()
    if not raw.strip():
        raise validation_error({"body": "required: a JSON object"})
    try:
        data = json.loads(raw)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, integers of over 4300 digits
        raise validation_error({"body": f"not valid JSON: {str(exc)[:200]}"}) from None
    except RecursionError:  # nesting deeper than the parser's stack
        raise validation_error({"body": "not valid JSON: nested too deeply"}) from None
    if not isinstance(data, dict):
        raise validation_error({"body": f"must be a JSON object, got {json_type(data)}"})
    return data


EARLIEST_DAY, LATEST_DAY = date(2000, 1, 1), date(2099, 12, 31)
"""The dates a query may name: the station's records all fall between them, and days far outside
overflow the date arithmetic of reports and ranges."""


def calendar_day(text: str) -> date:
    """A ``YYYY-MM-DD`` date from :data:`EARLIEST_DAY` to :data:`LATEST_DAY`; ValueError saying the rule."""
    try:
        if len(text) != 10:
            raise ValueError
        day = date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"must be a date YYYY-MM-DD, got {text[:40]!r}") from None
    if not EARLIEST_DAY <= day <= LATEST_DAY:
        raise ValueError(f"must be a date from {EARLIEST_DAY} to {LATEST_DAY}, got {text!r}")
    return day


MULTILINE = msgspec.Meta(extra={"multiline": True})
"""A text that may hold tabs and line breaks (every other control character is still refused)."""
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_IN_MULTILINE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def control_problem(value: object, multiline: bool = False) -> str | None:
    """Why a text (or a list of texts) is refused for its control characters, or None.

    One rule for every text field of both APIs: control characters (NUL, escape, ...) are never
    part of a name, an address, an e-mail or a password, and break logs, exports and C libraries
    downstream; a :data:`MULTILINE` text may hold tab, line feed and carriage return.
    """
    texts = value if isinstance(value, list) else [value]
    refused = _CONTROL_IN_MULTILINE if multiline else _CONTROL
    for text in texts:
        if isinstance(text, str) and (found := refused.search(text)) is not None:
            allowed = " (tab and line breaks are allowed)" if multiline else ""
            return f"must not contain control characters{allowed}: found U+{ord(found.group()):04X}"
    return None


def codes(table: Mapping[int, str]) -> msgspec.Meta:
    """The ``Meta`` of an integer that must be one of ``table``'s codes (each code's text described)."""
    text = ", ".join(f"{code}={name}" for code, name in table.items())
    return msgspec.Meta(
        description=text, extra={"codes": dict(table)}, extra_json_schema={"enum": list(table)}
    )


def whole(pattern: re.Pattern[str], hint: str) -> msgspec.Meta:
    """The ``Meta`` of a text that ``pattern`` must match whole (``hint``: the message otherwise).

    msgspec's own ``pattern`` searches, and its ``$`` also matches before a final newline, so the
    check is a ``fullmatch`` of its own; the document still shows the pattern, anchored.
    """
    return msgspec.Meta(
        extra={"fullmatch": pattern, "hint": hint},
        extra_json_schema={"pattern": f"^(?:{pattern.pattern})$"},
    )


@dataclass(frozen=True)
class Dialect:
    """How one API words and raises request problems."""

    required: str
    blank_is_none: bool  # a blank (whitespace-only) value of every text field reads as absent
    error: Callable[[dict[str, str]], Exception]


def _platform_error(problems: dict[str, str]) -> ApiError:
    summary = "; ".join(f"{name}: {text}" for name, text in problems.items())
    return ApiError(400, VALIDATION_ERROR, summary, {name: [text] for name, text in problems.items()})


DRIVER = Dialect("required", False, validation_error)
PLATFORM = Dialect("is required", True, _platform_error)


def _unwrap(info: inspect.Type) -> tuple[inspect.Type, Mapping[str, Any]]:
    """The declared type without ``None`` and ``Metadata`` wrappers, and the wrappers' ``extra``."""
    extra: dict[str, Any] = {}
    while True:
        if isinstance(info, inspect.Metadata):
            extra.update(info.extra or {})
            info = info.type
        elif isinstance(info, inspect.UnionType):
            options = [t for t in info.types if not isinstance(t, inspect.NoneType)]
            if len(options) != 1:
                return info, extra
            info = options[0]
        else:
            return info, extra


def _number_rule(info: inspect.FloatType | inspect.IntType) -> str:
    """What a number declared as ``info`` must be: ``an integer from 1 to 9``, ``a number > 0``."""
    noun = "an integer" if isinstance(info, inspect.IntType) else "a number"
    bounds = _bounds(info)
    return f"{noun} {bounds}" if bounds else noun


_ITEM_NOUNS = {
    inspect.IntType: " of integers",
    inspect.FloatType: " of numbers",
    inspect.StrType: " of strings",
}


def _list_problem(info: inspect.ListType, value: object, error: Exception | None) -> str:
    """What an array declared as ``info`` must be, for a client who sent ``value``."""
    item = _unwrap(info.item_type)[0]
    if not isinstance(value, list):
        return f"must be an array{_ITEM_NOUNS.get(type(item), '')}, got {json_type(value)}"
    low, high = info.min_length, info.max_length
    if high is not None and len(value) > high:
        return f"must have at most {high} items (got {len(value)})"
    if low is not None and len(value) < low:
        return "must not be empty" if low == 1 else f"must have at least {low} items (got {len(value)})"
    if isinstance(item, inspect.FloatType | inspect.IntType):
        return f"every item must be {_number_rule(item)}"
    return str(error)


def _bounds(info: inspect.FloatType | inspect.IntType) -> str:
    if isinstance(info, inspect.IntType) and info.ge is not None and info.le is not None:
        return f"from {info.ge} to {info.le}"
    parts = [
        f"{sign} {bound:g}"
        for sign, bound in ((">", info.gt), (">=", info.ge), ("<", info.lt), ("<=", info.le))
        if bound is not None
    ]
    return " and ".join(parts)


def problem_text(info: inspect.Type, value: object, error: Exception | None = None) -> str:
    """What a field declared as ``info`` must be, worded for a client who sent ``value``."""
    info, extra = _unwrap(info)
    hint: str | None = extra.get("hint")
    got = f"got {json_type(value)}"
    if isinstance(info, inspect.StrType | inspect.LiteralType) and not isinstance(value, str):
        return f"must be a string, {got}"
    if isinstance(info, inspect.StrType) and isinstance(value, str):
        low, high = info.min_length, info.max_length
        if high is not None and len(value) > high:
            return f"must be at most {high} characters (got {len(value)})"
        if low is not None and len(value) < low:
            return f"must be at least {low} characters (got {len(value)})"
        return hint or f"must match {info.pattern}"
    if isinstance(info, inspect.LiteralType):
        return hint or f"must be one of {' | '.join(map(str, info.values))}, got {value!r}"
    if isinstance(info, inspect.FloatType | inspect.IntType):
        noun = "an integer" if isinstance(info, inspect.IntType) else "a number"
        numeric = int if isinstance(info, inspect.IntType) else int | float
        if isinstance(value, bool) or not isinstance(value, numeric):
            return f"must be {noun}, {got}"
        if (table := extra.get("codes")) is not None:
            return hint or f"must be one of {', '.join(f'{c}={t}' for c, t in table.items())}; got {value}"
        return hint or f"must be {_number_rule(info)}, got {value!r}"
    if isinstance(info, inspect.BoolType):
        return f"must be true or false, {got}"
    if isinstance(info, inspect.ListType):
        return hint or _list_problem(info, value, error)
    return hint or str(error)


def _encodable(value: object) -> bool:
    """Whether every string in ``value`` can be stored (no lone surrogates)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
    return True


def _refused(extra: Mapping[str, Any], value: Any) -> bool:
    """Whether the field's ``fullmatch`` pattern or ``codes`` table refuses a converted value."""
    pattern, table = extra.get("fullmatch"), extra.get("codes")
    return (pattern is not None and not pattern.fullmatch(value)) or (
        table is not None and value not in table
    )


def field_problems(
    data: Mapping[str, Any], shape: type[S], dialect: Dialect = DRIVER
) -> tuple[dict[str, str], dict[str, Any]]:
    """Check every field of ``shape`` in ``data``: (problems by the field's JSON name, the values of
    the fields that are fine by attribute name).

    A field that is absent or null is left out of both unless it is required (then its problem is
    the dialect's ``required``); unknown keys are ignored.
    """
    info = inspect.type_info(shape)
    assert isinstance(info, inspect.StructType)
    hints = get_type_hints(shape, include_extras=True)
    problems: dict[str, str] = {}
    values: dict[str, Any] = {}
    for field in info.fields:
        value = data.get(field.encode_name)
        declared, extra = _unwrap(field.type)
        text = isinstance(declared, inspect.StrType)
        if isinstance(value, str) and (
            (dialect.blank_is_none and text and not value.strip())
            or (value == "" and extra.get("blank_is_none"))
        ):
            value = None
        if value is None:
            if field.required:
                problems[field.encode_name] = dialect.required
            continue
        try:
            converted = msgspec.convert(value, hints[field.name])
        except (msgspec.ValidationError, UnicodeEncodeError) as exc:  # msgspec cannot word a lone surrogate
            problems[field.encode_name] = problem_text(field.type, value, exc)
            continue
        if not _encodable(converted):
            problems[field.encode_name] = "must be valid Unicode text"
        elif _refused(extra, converted):
            problems[field.encode_name] = problem_text(field.type, value)
        elif (why := control_problem(converted, extra.get("multiline", False))) is not None:
            problems[field.encode_name] = why
        else:
            values[field.name] = converted
    return problems, values


def decode(
    data: Mapping[str, Any],
    shape: type[S],
    dialect: Dialect = DRIVER,
    rules: Callable[[Mapping[str, Any]], Mapping[str, str]] | None = None,
) -> S:
    """``data`` as a ``shape``, or the dialect's error naming every problem by field raised.

    ``rules`` sees the fields that passed their own checks (by attribute name) and names problems
    across fields (or rules kept elsewhere); a field's own problem wins over a rule's.
    """
    problems, values = field_problems(data, shape, dialect)
    if rules is not None:
        problems = {**rules(values), **problems}
    if problems:
        raise dialect.error(problems)
    return shape(**values)


def schemas(types: Iterable[Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The JSON Schemas of ``types`` (Structs referenced into the components) and those components."""
    generated, components = msgspec.json.schema_components(list(types), ref_template=COMPONENTS_REF)
    return list(generated), dict(components)
