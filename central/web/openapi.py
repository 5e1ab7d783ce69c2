"""The route table and the OpenAPI 3.1 document built from it.

A route exists only as a :class:`RouteSpec`: :func:`register_routes` adds it to the router (with its
slash-less alias), records its access policy for the middleware, and keeps the spec for the
document served at ``GET /api/openapi.json``. Another API (the operator platform API) calls
:func:`register_routes` with its own specs and :class:`~central.web.errors.ApiStyle`; hand-written
path items can be merged with :func:`merge_paths`. Request and response shapes given as msgspec
types are turned into schemas once per document (:func:`central.web.shapes.schemas`) and shared
through ``components/schemas``.

Every operation lists every status it can answer: 401 unless public, 403 for staff routes, 400 for
input, 404 for a path id that names nothing, 413 for a body over the size limit, 500, and the
route's own refusals (``errors``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from central.web.errors import (
    AUTH_INVALID,
    AUTH_REQUIRED,
    MESSAGES,
    PERMISSION_DENIED,
    RESOURCE_NOT_FOUND,
    SYSTEM_ERROR,
    USER_STYLE,
    VALIDATION_ERROR,
    ApiStyle,
)
from central.web.middleware import POLICIES_KEY, Handler, RoutePolicy, install_middlewares
from central.web.permissions import Access
from central.web.shapes import schemas

OPENAPI_PATH = "/api/openapi.json"
SPECS_KEY = web.AppKey("pilegate_route_specs", list["RouteSpec"])
EXTRA_PATHS_KEY = web.AppKey("pilegate_extra_paths", dict[str, dict[str, Any]])
_PATH_PARAM = re.compile(r"\{(\w+)(?::[^}]*)?\}")

AUTH_NOTE = (
    "Every endpoint except register, login and this document requires `Authorization: Token <t>` "
    "(or `Bearer <t>`); the original document lists no header for queue/status, piles/status and "
    "config/parameters, but pilegate requires a token there too."
)


@dataclass(frozen=True)
class RouteSpec:
    """One route: how it is served, who may call it, and how the OpenAPI document describes it.

    ``request_body`` and ``response`` (the success payload, inside the style's envelope) are shapes:
    a msgspec Struct or any type msgspec describes (``list[Item]``, ``Item | None``), or a
    hand-written JSON Schema mapping. ``errors`` lists (status, code) pairs beyond those implied by
    access and input.
    """

    method: str
    path: str
    handler: Handler
    summary: str
    access: Access = Access.USER
    tag: str = "charging"
    style: ApiStyle = USER_STYLE
    parameters: tuple[Mapping[str, Any], ...] = ()
    request_body: Any = None
    response: Any = None
    status: int = 200
    errors: tuple[tuple[int, str], ...] = ()
    description: str = ""
    slashless_alias: bool = True
    enveloped: bool = True  # False: the success body is ``response`` itself (this document)


def register_routes(app: web.Application, specs: Iterable[RouteSpec]) -> None:
    """Add every spec's route (and its slash-less alias) with its policy, and remember the spec."""
    install_middlewares(app)
    policies = app.setdefault(POLICIES_KEY, {})
    registered = app.setdefault(SPECS_KEY, [])
    known = {(s.method, s.path) for s in registered}
    for spec in specs:
        if (spec.method, spec.path) in known:
            raise ValueError(f"route {spec.method} {spec.path} registered twice")
        known.add((spec.method, spec.path))
        paths = [spec.path]
        if spec.slashless_alias and spec.path.endswith("/") and spec.path != "/":
            paths.append(spec.path.rstrip("/"))
        for path in paths:
            route = app.router.add_route(spec.method, path, spec.handler)
            policies[route] = RoutePolicy(spec.access, spec.style)
        registered.append(spec)


def documented_path(canonical: str) -> str:
    """The documented path of a registered route path (aliases map to the slashed form)."""
    return canonical if canonical.endswith("/") or canonical.endswith(".json") else canonical + "/"


# --- the document --------------------------------------------------------------------------------


def _path_parameters(spec: RouteSpec) -> list[dict[str, Any]]:
    given = {p["name"] for p in spec.parameters if p.get("in") == "path"}
    return [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _PATH_PARAM.findall(spec.path)
        if name not in given
    ]


def _error_codes(spec: RouteSpec) -> dict[int, list[str]]:
    pairs: list[tuple[int, str]] = []
    if spec.access is not Access.PUBLIC:
        pairs += [(401, AUTH_REQUIRED), (401, AUTH_INVALID)]
    if spec.access is Access.STAFF:
        pairs.append((403, PERMISSION_DENIED))
    if spec.request_body is not None or spec.parameters or "{" in spec.path:
        pairs.append((400, VALIDATION_ERROR))
    if "{" in spec.path:  # a path id that names nothing
        pairs.append((404, RESOURCE_NOT_FOUND))
    if spec.request_body is not None:  # a body over the server's size limit
        pairs.append((413, VALIDATION_ERROR))
    pairs += [*spec.errors, (500, SYSTEM_ERROR)]
    by_status: dict[int, list[str]] = {}
    for status, code in pairs:
        codes = by_status.setdefault(status, [])
        if code not in codes:
            codes.append(code)
    return dict(sorted(by_status.items()))


SchemaOf = Callable[[Any], dict[str, Any]]


def _hand_written(shape: Any) -> dict[str, Any]:
    if not isinstance(shape, Mapping):
        raise TypeError(f"{shape!r} needs the document's generated schemas: use build_document")
    return dict(shape)


def _success_schema(spec: RouteSpec, schema_of: SchemaOf) -> dict[str, Any]:
    data = schema_of(spec.response) if spec.response is not None else None
    if spec.enveloped:
        return spec.style.success_schema(data)
    return data or {}


def _responses(spec: RouteSpec, error_ref: str, schema_of: SchemaOf) -> dict[str, Any]:
    success: dict[str, Any] = {"description": "success"}
    if spec.status != 204:  # 204 No Content has no body to describe
        success["content"] = {"application/json": {"schema": _success_schema(spec, schema_of)}}
    responses: dict[str, Any] = {str(spec.status): success}
    for status, codes in _error_codes(spec).items():
        text = ", ".join(f"{code} ({MESSAGES.get(code, code)})" for code in codes)
        responses[str(status)] = {
            "description": f"error codes: {text}",
            "content": {"application/json": {"schema": {"$ref": error_ref}}},
        }
    return responses


def operation(spec: RouteSpec, schema_of: SchemaOf = _hand_written) -> dict[str, Any]:
    """The OpenAPI operation object of one route; ``schema_of`` gives the schema of a shape."""
    slug = re.sub(r"[^A-Za-z0-9]+", "_", spec.path).strip("_")
    op: dict[str, Any] = {
        "operationId": f"{spec.method.lower()}_{slug}",
        "summary": spec.summary,
        "tags": [spec.tag],
        "parameters": [*_path_parameters(spec), *map(dict, spec.parameters)],
        "responses": _responses(spec, f"#/components/schemas/{spec.style.name}_error", schema_of),
    }
    if spec.description:
        op["description"] = spec.description
    if spec.access is Access.PUBLIC:
        op["security"] = []
    if spec.access is Access.STAFF:
        op["x-required-level"] = "staff (permission level >= 3)"
    if spec.request_body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": schema_of(spec.request_body)}},
        }
    return op


def merge_paths(document: dict[str, Any], paths: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Merge path items into ``document["paths"]``; a (path, method) defined twice is an error."""
    target = document.setdefault("paths", {})
    for path, item in paths.items():
        existing = target.setdefault(path, {})
        for method, op in item.items():
            if method in existing:
                raise ValueError(f"OpenAPI path {method.upper()} {path} defined twice")
            existing[method] = op
    return document


SECURITY_SCHEMES: dict[str, Any] = {
    "TokenAuth": {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": "`Authorization: Token <token>` (token from /api/auth/login/)",
    },
    "BearerAuth": {
        "type": "http",
        "scheme": "bearer",
        "description": "the same token as `Authorization: Bearer <token>`",
    },
}


def build_document(
    specs: Sequence[RouteSpec], extra_paths: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, Any]:
    """The whole OpenAPI 3.1 document of ``specs`` (plus hand-written ``extra_paths``); the schemas of
    Struct shapes are generated once into the components."""
    typed = [
        shape
        for spec in specs
        for shape in (spec.request_body, spec.response)
        if shape is not None and not isinstance(shape, Mapping)
    ]
    generated, components = schemas(typed)
    by_shape = dict(zip(typed, generated, strict=True))

    def schema_of(shape: Any) -> dict[str, Any]:
        return dict(shape) if isinstance(shape, Mapping) else by_shape[shape]

    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "pilegate central service", "version": "1", "description": AUTH_NOTE},
        "servers": [{"url": "http://127.0.0.1:5045"}],
        "security": [{"TokenAuth": []}, {"BearerAuth": []}],
        "paths": {},
        "components": {"securitySchemes": SECURITY_SCHEMES, "schemas": components},
    }
    for spec in specs:
        components[f"{spec.style.name}_error"] = dict(spec.style.error_schema)
        merge_paths(document, {spec.path: {spec.method.lower(): operation(spec, schema_of)}})
    return merge_paths(document, extra_paths or {})


async def openapi_document(request: web.Request) -> web.StreamResponse:
    """GET /api/openapi.json: the document of every registered route (plain JSON, no envelope)."""
    specs: list[RouteSpec] = request.app.get(SPECS_KEY, [])
    document = build_document(specs, request.app.get(EXTRA_PATHS_KEY))
    return web.json_response(document)


OPENAPI_SPEC = RouteSpec(
    "GET",
    OPENAPI_PATH,
    openapi_document,
    "This OpenAPI 3.1 document",
    access=Access.PUBLIC,
    tag="meta",
    response={"type": "object", "description": "the OpenAPI document (not enveloped)"},
    slashless_alias=False,
    enveloped=False,
)
