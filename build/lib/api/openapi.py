"""The OpenAPI 3 document, built from the live URL map and the marshmallow schemas.

Views declare their contract with `@doc(...)`; the document is generated from the routes that
exist and the schemas the code validates with, so it cannot drift from the code.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Flask
from marshmallow import Schema

from api.schemas import ErrorSchema

F = TypeVar("F", bound=Callable[..., Any])
_PATH_PARAM = re.compile(r"<(?:[a-z_]+:)?([a-z_]+)>")
_ERROR_STATUSES = {
    "400": "Malformed request",
    "401": "Missing, expired, revoked or invalid token",
    "403": "Forbidden",
    "404": "Not found",
    "409": "Conflict with the current state",
    "422": "Validation error",
    "429": "Quota exceeded",
    "503": "A dependency is down",
}


def doc(
    *,
    summary: str,
    tags: list[str],
    response: type[Schema] | None = None,
    status: int = 200,
    body: type[Schema] | None = None,
    query: type[Schema] | None = None,
    auth: str | None = "access",
    errors: tuple[int, ...] = (),
    content_type: str = "application/json",
    body_content_type: str = "application/json",
) -> Callable[[F], F]:
    """Attach OpenAPI metadata to a view function."""

    def decorate(view: F) -> F:
        view._openapi = {  # type: ignore[attr-defined]
            "summary": summary,
            "tags": tags,
            "response": response,
            "status": status,
            "body": body,
            "query": query,
            "auth": auth,
            "errors": errors,
            "content_type": content_type,
            "body_content_type": body_content_type,
        }
        return view

    return decorate


def build_spec(app: Flask) -> dict[str, Any]:
    spec = APISpec(
        title="Dockyard API",
        version="1.0.0",
        openapi_version="3.0.3",
        plugins=[MarshmallowPlugin()],
        info={"description": "Submit file and deploy jobs; follow them; fetch results."},
        servers=[{"url": "/"}],
    )
    spec.components.security_scheme(
        "bearerAuth", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    )
    spec.components.schema("Error", schema=ErrorSchema)
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        view = app.view_functions.get(rule.endpoint)
        meta = getattr(view, "_openapi", None)
        if meta is None:
            continue
        path = _PATH_PARAM.sub(r"{\1}", rule.rule)
        operations = {}
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            operations[method.lower()] = _operation(rule.endpoint, rule.arguments, meta)
        spec.path(path=path, operations=operations)
    return spec.to_dict()


def _operation(endpoint: str, arguments: set[str], meta: dict[str, Any]) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    success: dict[str, Any] = {"description": "Success"}
    if meta["response"] is not None:
        success["content"] = {meta["content_type"]: {"schema": meta["response"]}}
    responses[str(meta["status"])] = success
    statuses = set(meta["errors"]) | ({401} if meta["auth"] else set())
    if meta["body"] is not None or meta["query"] is not None:
        statuses.add(422)
    for status in sorted(statuses):
        responses[str(status)] = {
            "description": _ERROR_STATUSES.get(str(status), "Error"),
            "content": {"application/json": {"schema": "Error"}},
        }
    operation: dict[str, Any] = {
        "operationId": endpoint.replace(".", "_"),
        "summary": meta["summary"],
        "tags": meta["tags"],
        "responses": responses,
        "parameters": [
            {"in": "path", "name": name, "required": True, "schema": {"type": "string"}}
            for name in sorted(arguments)
        ],
    }
    if meta["query"] is not None:
        operation["parameters"].append({"in": "query", "schema": meta["query"]})
    if meta["body"] is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {meta["body_content_type"]: {"schema": meta["body"]}},
        }
    if meta["auth"]:
        operation["security"] = [{"bearerAuth": []}]
    return operation


def params_json_schema(schema: type[Schema]) -> dict[str, Any]:
    """JSON Schema of a processor's parameters, for the catalogue."""
    spec = APISpec(title="p", version="1", openapi_version="3.0.3", plugins=[MarshmallowPlugin()])
    plugin = spec.plugins[0]
    assert isinstance(plugin, MarshmallowPlugin) and plugin.converter is not None
    return plugin.converter.schema2jsonschema(schema)
