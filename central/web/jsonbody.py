"""Reading a request's JSON object body, and naming JSON types in error details (both APIs)."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from central.web.errors import validation_error

_JSON_TYPES = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}


def json_type(value: object) -> str:
    """The JSON name of a decoded value's type (for error details)."""
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
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise validation_error({"body": f"not valid JSON: {exc}"}) from None
    if not isinstance(data, dict):
        raise validation_error({"body": f"must be a JSON object, got {json_type(data)}"})
    return data
