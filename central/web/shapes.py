"""Request and response shapes declared once, as msgspec Structs, for validation and the OpenAPI document.

A request body is a Struct: :func:`decode` checks a decoded JSON object against it field by field
(msgspec itself stops at the first error, and clients are owed every bad field at once), words one
message per bad field from the field's declared type and ``msgspec.Meta`` constraints, and builds
the Struct when nothing is wrong. A response ``data`` is a Struct too (or a list of them): handlers
build it and the JSON renderer encodes it. :func:`schemas` turns the same types into the OpenAPI
document's schemas (``msgspec.json.schema_components``), so each rule is stated only once.

Field options beyond msgspec's constraints go in ``Meta(extra=...)``: ``blank_is_none`` reads ``""``
as absent, ``hint`` replaces the message of a failed constraint.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Annotated, Any, TypeVar, get_type_hints

import msgspec
from msgspec import inspect

from central import auth
from central.domain.limits import MAX_KWH, MIN_KWH

S = TypeVar("S", bound=msgspec.Struct)
COMPONENTS_REF = "#/components/schemas/{name}"
REQUIRED = "required"

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
"""A new password; :func:`central.auth.password_problem` says why one is refused."""
LocalTime = Annotated[str, msgspec.Meta(extra_json_schema={"format": "date-time"})] | None
"""An ISO 8601 instant with the station's UTC offset, or null."""

_JSON_TYPES = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}


def json_type(value: object) -> str:
    """The JSON name of a decoded value's type (for error messages)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "number"
    return _JSON_TYPES.get(type(value), type(value).__name__)


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


def _bounds(info: inspect.FloatType | inspect.IntType) -> str:
    parts = [
        f"{sign} {bound:g}"
        for sign, bound in ((">", info.gt), (">=", info.ge), ("<", info.lt), ("<=", info.le))
        if bound is not None
    ]
    return " and ".join(parts)


def problem_text(info: inspect.Type, value: object, error: msgspec.ValidationError) -> str:
    """What a field declared as ``info`` must be, worded for a client who sent ``value``."""
    info, extra = _unwrap(info)
    hint: str | None = extra.get("hint")
    got = f"got {json_type(value)}"
    if isinstance(info, inspect.StrType | inspect.LiteralType) and not isinstance(value, str):
        return f"must be a string, {got}"
    if isinstance(info, inspect.StrType):
        low, high = info.min_length, info.max_length
        if hint is None and (low is not None or high is not None):
            hint = (
                f"must be {low or 0} to {high} characters"
                if high is not None
                else f"must be >= {low} characters"
            )
        return hint or f"must match {info.pattern}"
    if isinstance(info, inspect.LiteralType):
        return hint or f"must be one of {' | '.join(map(str, info.values))}, got {value!r}"
    if isinstance(info, inspect.FloatType | inspect.IntType):
        noun = "an integer" if isinstance(info, inspect.IntType) else "a number"
        numeric = int if isinstance(info, inspect.IntType) else int | float
        if isinstance(value, bool) or not isinstance(value, numeric):
            return f"must be {noun}, {got}"
        return hint or f"must be {noun} {_bounds(info)}, got {value!r}"
    if isinstance(info, inspect.BoolType):
        return f"must be true or false, {got}"
    return hint or str(error)


def field_problems(data: Mapping[str, Any], shape: type[S]) -> tuple[dict[str, str], dict[str, Any]]:
    """Check every field of ``shape`` in ``data``: (problems by the field's JSON name, the values of
    the fields that are fine by attribute name).

    A field that is absent or null is left out of both unless it is required (then the problem is
    ``"required"``); unknown keys are ignored.
    """
    info = inspect.type_info(shape)
    assert isinstance(info, inspect.StructType)
    hints = get_type_hints(shape, include_extras=True)
    problems: dict[str, str] = {}
    values: dict[str, Any] = {}
    for field in info.fields:
        value = data.get(field.encode_name)
        if value == "" and _unwrap(field.type)[1].get("blank_is_none"):
            value = None
        if value is None:
            if field.required:
                problems[field.encode_name] = REQUIRED
            continue
        try:
            values[field.name] = msgspec.convert(value, hints[field.name])
        except msgspec.ValidationError as exc:
            problems[field.encode_name] = problem_text(field.type, value, exc)
    return problems, values


def decode(
    data: Mapping[str, Any],
    shape: type[S],
    on_problems: Callable[[dict[str, str]], Exception],
    rules: Callable[[Mapping[str, Any]], Mapping[str, str]] | None = None,
) -> S:
    """``data`` as a ``shape``, or ``on_problems(every problem by field)`` raised.

    ``rules`` sees the fields that passed their own checks and names problems across fields (or
    rules kept elsewhere); a field's own problem wins over a rule's for the same field.
    """
    problems, values = field_problems(data, shape)
    if rules is not None:
        problems = {**rules(values), **problems}
    if problems:
        raise on_problems(problems)
    return shape(**values)


def schemas(types: Iterable[Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The JSON Schemas of ``types`` (Structs referenced into the components) and those components."""
    generated, components = msgspec.json.schema_components(list(types), ref_template=COMPONENTS_REF)
    return list(generated), dict(components)
