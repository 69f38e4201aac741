"""The OpenAPI 3 document, built from the live URL map and the marshmallow schemas.

Views declare their contract with `@doc(...)` (api/operation.py): statuses, headers, query
parameters and links included. The document is generated from the routes that exist, those
declarations and the schemas the code validates with, so it cannot drift from the code.
What every operation answers whatever its view (401 without a token, 413 for a body too
large, 422 for NUL in a header...) is added here, from what the operation takes.
"""

from __future__ import annotations

import re
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Flask
from marshmallow import Schema
from werkzeug.routing import Rule

from api.operation import Operation, operation_of
from api.schemas.common import ErrorSchema

_PATH_PARAM = re.compile(r"<(?:[a-z_]+:)?([a-z_]+)>")
_ERROR_STATUSES = {
    "400": "Malformed request (`invalid_json`: the body is not a JSON object)",
    "401": "Missing, expired, revoked or invalid token (login: `invalid_credentials`)",
    "403": "Forbidden",
    "404": "Not found",
    "409": "Conflict with the current state",
    "410": "Gone",
    "413": "The body is larger than the configured maximum",
    "415": "Unsupported media type",
    "422": (
        "Validation error; `invalid_params` for a declared field's value (NUL, invalid UTF-8),"
        " `invalid_request` for NUL or invalid UTF-8 elsewhere (names, headers, path, body)"
    ),
    "429": "Quota or rate limit exceeded (`Retry-After` where a wait helps)",
    "503": "A dependency (PostgreSQL, Redis, storage) is down",
}


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
        declared = operation_of(app.view_functions.get(rule.endpoint))
        if declared is None:
            continue
        path = _PATH_PARAM.sub(r"{\1}", rule.rule)
        operations = {}
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            operations[method.lower()] = _operation(rule, declared)
        spec.path(path=path, operations=operations)
    return spec.to_dict()


def _operation(rule: Rule, declared: Operation) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status in (declared.status, *declared.also):
        responses[str(status)] = _success(declared, status)
    for status in sorted(_error_statuses(declared)):
        responses[str(status)] = {
            "description": _ERROR_STATUSES.get(str(status), "Error"),
            "content": {"application/json": {"schema": "Error"}},
        }
    operation: dict[str, Any] = {
        "operationId": _operation_id(rule.endpoint),
        "summary": declared.summary,
        "tags": declared.tags,
        "responses": responses,
        "parameters": [
            {"in": "path", "name": name, "required": True, "schema": _path_schema(rule, name)}
            for name in sorted(rule.arguments)
        ]
        + [dict(parameter) for parameter in declared.parameters],
    }
    if declared.query is not None:
        operation["parameters"].append({"in": "query", "schema": declared.query})
    if declared.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {declared.body_content_type: {"schema": declared.body}},
        }
    if declared.auth:
        operation["security"] = [{"bearerAuth": []}]
    return operation


def _operation_id(endpoint: str) -> str:
    return endpoint.replace(".", "_")


def _success(declared: Operation, status: int) -> dict[str, Any]:
    if status == 302:
        return {
            "description": "Redirect to the download URL",
            "headers": {"Location": {"schema": {"type": "string"}}},
        }
    success: dict[str, Any] = {"description": "Success"}
    if declared.response is not None:
        success["content"] = {declared.content_type: {"schema": declared.response}}
    elif declared.content_type != "application/json" and status != 204:
        success["content"] = {declared.content_type: {"schema": {"type": "string"}}}
    if declared.links:
        success["links"] = {
            name: {"operationId": _operation_id(target), "parameters": dict(parameters)}
            for name, (target, parameters) in declared.links.items()
        }
    return success


def _error_statuses(declared: Operation) -> set[int]:
    """Every error status the operation can answer, whatever part of the stack answers it."""
    statuses = set(declared.errors)
    statuses.add(422)  # NUL or invalid UTF-8 in a header, the path or the query: every route
    if declared.auth:
        statuses |= {401, 503}  # no/bad token; Redis (the revocation check) down
    if declared.body is not None:
        statuses |= {413, 415, 503}  # too large; wrong content type; PostgreSQL down
        if declared.body_content_type == "application/json":
            statuses.add(400)  # invalid_json
    if declared.query is not None:
        statuses.add(503)
    return statuses


def _path_schema(rule: Rule, name: str) -> dict[str, Any]:
    converter = type(rule._converters.get(name)).__name__
    if converter == "UUIDConverter":
        return {"type": "string", "format": "uuid"}
    # Bounded so that a conforming request line (up to 12 bytes a character once
    # percent-encoded) stays within gunicorn's limit_request_line (api/gunicorn_conf.py).
    return {"type": "string", "minLength": 1, "maxLength": 256}


def params_json_schema(schema: type[Schema]) -> dict[str, Any]:
    """JSON Schema of a processor's parameters, for the catalogue."""
    spec = APISpec(title="p", version="1", openapi_version="3.0.3", plugins=[MarshmallowPlugin()])
    plugin = spec.plugins[0]
    assert isinstance(plugin, MarshmallowPlugin)
    assert plugin.converter is not None
    return plugin.converter.schema2jsonschema(schema)
