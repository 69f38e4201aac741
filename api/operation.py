"""What a view declares about itself for the OpenAPI document (api/openapi.py builds it).

`@doc(...)` attaches an Operation to the view function: its summary, schemas and statuses,
and what the view answers or reads beyond them (another success status, a header, a query
parameter read without a schema, the links its answer gives). Declared on the view, next to
the code that answers it, so the document cannot drift from the code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from marshmallow import Schema

F = TypeVar("F", bound=Callable[..., Any])

#: An OpenAPI parameter object (a header or a query parameter a view reads itself).
Parameter = dict[str, Any]
#: Link name -> (the endpoint it leads to, its parameters as runtime expressions).
Links = Mapping[str, tuple[str, Mapping[str, str]]]

_ATTRIBUTE = "_openapi_operation"


@dataclass(frozen=True)
class Operation:
    """One view's contract as the document shows it."""

    summary: str
    tags: list[str]
    response: type[Schema] | None = None
    status: int = 200
    body: type[Schema] | None = None
    query: type[Schema] | None = None
    auth: str | None = "access"
    errors: tuple[int, ...] = ()
    content_type: str = "application/json"
    body_content_type: str = "application/json"
    #: Success statuses besides `status` (an idempotent replay's 200, a redirect's 302...).
    also: tuple[int, ...] = ()
    #: Headers and query parameters the view reads itself, in the document's order.
    parameters: tuple[Parameter, ...] = ()
    links: Links = field(default_factory=dict)


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
    also: tuple[int, ...] = (),
    parameters: tuple[Parameter, ...] = (),
    links: Links | None = None,
) -> Callable[[F], F]:
    """Attach the view's Operation (see Operation for each argument)."""
    operation = Operation(
        summary=summary,
        tags=tags,
        response=response,
        status=status,
        body=body,
        query=query,
        auth=auth,
        errors=errors,
        content_type=content_type,
        body_content_type=body_content_type,
        also=also,
        parameters=parameters,
        links=links or {},
    )

    def decorate(view: F) -> F:
        setattr(view, _ATTRIBUTE, operation)
        return view

    return decorate


def operation_of(view: Callable[..., Any] | None) -> Operation | None:
    """The Operation `@doc` attached to a view; None for an undocumented one."""
    found = getattr(view, _ATTRIBUTE, None)
    return found if isinstance(found, Operation) else None


def header(name: str, description: str, schema: dict[str, Any]) -> Parameter:
    """An optional request header a view reads."""
    return {
        "in": "header",
        "name": name,
        "required": False,
        "description": description,
        "schema": schema,
    }


def query_parameter(name: str, schema: dict[str, Any]) -> Parameter:
    """An optional query parameter a view reads without a query schema."""
    return {"in": "query", "name": name, "required": False, "schema": schema}
