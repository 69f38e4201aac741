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
from werkzeug.routing import Rule

from api.schemas.common import ErrorSchema

F = TypeVar("F", bound=Callable[..., Any])
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

# What the views' own declarations leave implicit, kept here so the document stays complete
# wherever the code answers it: other success statuses (an idempotent replay answers 200, a
# cancel of a running job 202, a stop of a stopped deployment 200, a redirect download 302)
# and the rate limits that guard password hashing, token rotation and streams.
_OTHER_SUCCESS = {
    "v1.jobs.submit": (200,),
    "v1.file_jobs.submit_file": (200,),
    "v1.deploy_jobs.submit_deploy": (200,),
    "v1.batches.submit": (200,),
    "v1.jobs.cancel": (202,),
    "v1.deployments.stop": (200,),
    "v1.file_jobs.download": (302,),
    "v1.streams.job_stream": (204,),  # an ended job, nothing left to send
    "v1.deployment_logs_stream.deployment_log_stream": (204,),  # a finished log, all seen
    "v1.github_hooks.github_push": (200,),  # a ping's pong
}
_OTHER_ERRORS = {
    "v1.auth.register": (429,),
    "v1.auth.login": (401, 429),
    "v1.auth.refresh": (429,),
    "v1.jobs.retry": (429,),
    "v1.streams.job_stream": (429,),
    "v1.streams.my_stream": (429,),
}
_HEADERS = {
    "Idempotency-Key": {
        "in": "header",
        "name": "Idempotency-Key",
        "required": False,
        "description": "Same user and key within 24 h: the original job (200).",
        "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": r"^\S(.*\S)?$"},
    },
    "Last-Event-ID": {
        "in": "header",
        "name": "Last-Event-ID",
        "required": False,
        "description": "Replay the events after this id first.",
        "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"},
    },
    # GitHub's push hook (POST /hooks/github/{app}): a missing or wrong signature answers 401.
    "X-Hub-Signature-256": {
        "in": "header",
        "name": "X-Hub-Signature-256",
        "required": False,
        "description": "sha256=<HMAC-SHA256 of the raw body with the app's webhook secret>",
        "schema": {"type": "string", "maxLength": 71},
    },
    "X-GitHub-Event": {
        "in": "header",
        "name": "X-GitHub-Event",
        "required": False,
        "description": "push deploys; ping answers pong; any other is ignored.",
        "schema": {"type": "string", "maxLength": 64},
    },
    "X-GitHub-Delivery": {
        "in": "header",
        "name": "X-GitHub-Delivery",
        "required": False,
        "description": "The delivery's id: a repeated one never deploys twice.",
        "schema": {"type": "string", "maxLength": 100},
    },
}
_OPERATION_HEADERS = {
    "v1.jobs.submit": ("Idempotency-Key",),
    "v1.file_jobs.submit_file": ("Idempotency-Key",),
    "v1.deploy_jobs.submit_deploy": ("Idempotency-Key",),
    "v1.batches.submit": ("Idempotency-Key",),
    "v1.streams.job_stream": ("Last-Event-ID",),
    "v1.streams.my_stream": ("Last-Event-ID",),
    "v1.deployment_logs_stream.deployment_log_stream": ("Last-Event-ID",),
    "v1.github_hooks.github_push": ("X-Hub-Signature-256", "X-GitHub-Event", "X-GitHub-Delivery"),
}
# Query parameters of views that read request.args without a schema.
_OTHER_QUERY = {
    "v1.files.download": [
        {"in": "query", "name": name, "required": False, "schema": {"type": "string", **extra}}
        for name, extra in (
            ("filename", {"maxLength": 200}),
            ("expires", {"pattern": "^[0-9]{1,12}$"}),
            ("signature", {"pattern": "^[0-9a-f]{64}$"}),
        )
    ],
    "v1.streams.job_stream": [
        {
            "in": "query",
            "name": "last_event_id",
            "required": False,
            "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"},
        }
    ],
}
_OTHER_QUERY["v1.streams.my_stream"] = _OTHER_QUERY["v1.streams.job_stream"]
_OTHER_QUERY["v1.deployment_logs_stream.deployment_log_stream"] = _OTHER_QUERY[
    "v1.streams.job_stream"
]

# OpenAPI links: where an operation's response supplies the ids other operations take, so
# clients (and a stateful fuzzer) follow real resources instead of guessing ids.
_ID = "$response.body#/id"  # the id of the resource the response is
_JOB_LINKS = {
    "GetJob": ("v1.jobs.get_job", {"job_id": _ID}),
    "GetJobEvents": ("v1.jobs.job_events", {"job_id": _ID}),
    "GetJobLogs": ("v1.file_jobs.job_logs", {"job_id": _ID}),
    "DownloadResult": ("v1.file_jobs.download", {"job_id": _ID}),
    "CancelJob": ("v1.jobs.cancel", {"job_id": _ID}),
    "RetryJob": ("v1.jobs.retry", {"job_id": _ID}),
}
_DEPLOYMENT_ID = "$response.body#/params/deployment_id"
_SCHEDULE_LINKS = {
    name: (f"v1.schedules.{endpoint}", {"schedule_id": _ID})
    for name, endpoint in (
        ("GetSchedule", "get_schedule"),
        ("PatchSchedule", "patch_schedule"),
        ("TriggerSchedule", "trigger"),
        ("GetScheduleRuns", "schedule_runs"),
        ("DeleteSchedule", "delete_schedule"),
    )
}
_WEBHOOK_LINKS = {
    name: (f"v1.webhooks.{endpoint}", {"webhook_id": _ID})
    for name, endpoint in (
        ("GetWebhook", "get_webhook"),
        ("PatchWebhook", "patch_webhook"),
        ("RotateWebhookSecret", "rotate_secret"),
        ("PingWebhook", "ping"),
        ("GetWebhookDeliveries", "list_deliveries"),
        ("DeleteWebhook", "delete_webhook"),
    )
}
_DELIVERY_LINKS = {
    "Redeliver": (
        "v1.webhooks.redeliver",
        {"webhook_id": "$response.body#/webhook_id", "delivery_id": _ID},
    ),
}
_FIRST_ITEM = "$response.body#/items/0/id"
_LINKS: dict[str, dict[str, tuple[str, dict[str, str]]]] = {
    "v1.jobs.submit": _JOB_LINKS,
    "v1.file_jobs.submit_file": _JOB_LINKS,
    "v1.jobs.get_job": _JOB_LINKS,
    "v1.jobs.cancel": {"RetryJob": _JOB_LINKS["RetryJob"], "GetJob": _JOB_LINKS["GetJob"]},
    "v1.jobs.retry": {"CancelJob": _JOB_LINKS["CancelJob"], "GetJob": _JOB_LINKS["GetJob"]},
    "v1.jobs.list_jobs": {"GetFirstJob": ("v1.jobs.get_job", {"job_id": _FIRST_ITEM})},
    "v1.batches.submit": {"GetFirstJob": ("v1.jobs.get_job", {"job_id": _FIRST_ITEM})},
    "v1.deploy_jobs.submit_deploy": {
        **_JOB_LINKS,
        "GetDeployment": ("v1.deployments.get_deployment", {"deployment_id": _DEPLOYMENT_ID}),
        "GetDeploymentLogs": (
            "v1.deployments.deployment_logs",
            {"deployment_id": _DEPLOYMENT_ID},
        ),
        "StopDeployment": ("v1.deployments.stop", {"deployment_id": _DEPLOYMENT_ID}),
    },
    "v1.deployments.list_deployments": {
        "GetFirstDeployment": ("v1.deployments.get_deployment", {"deployment_id": _FIRST_ITEM}),
        "StopFirstDeployment": ("v1.deployments.stop", {"deployment_id": _FIRST_ITEM}),
    },
    "v1.deployments.get_deployment": {
        "GetDeploymentJob": ("v1.jobs.get_job", {"job_id": "$response.body#/job_id"}),
        "GetDeploymentLogs": ("v1.deployments.deployment_logs", {"deployment_id": _ID}),
        "StopDeployment": ("v1.deployments.stop", {"deployment_id": _ID}),
    },
    "v1.admin.list_dead_letters": {
        "RequeueFirst": ("v1.admin.requeue_dead_letter", {"letter_id": _FIRST_ITEM}),
        "DeleteFirst": ("v1.admin.delete_dead_letter", {"letter_id": _FIRST_ITEM}),
        "GetFirstJob": ("v1.jobs.get_job", {"job_id": "$response.body#/items/0/job_id"}),
    },
    "v1.admin.requeue_dead_letter": {
        "GetRequeuedJob": ("v1.jobs.get_job", {"job_id": "$response.body#/job_id"}),
    },
    "v1.schedules.create_schedule": _SCHEDULE_LINKS,
    "v1.schedules.get_schedule": _SCHEDULE_LINKS,
    "v1.schedules.trigger": _JOB_LINKS,
    "v1.schedules.list_schedules": {
        "GetFirstSchedule": ("v1.schedules.get_schedule", {"schedule_id": _FIRST_ITEM}),
    },
    "v1.webhooks.create_webhook": _WEBHOOK_LINKS,
    "v1.webhooks.get_webhook": _WEBHOOK_LINKS,
    "v1.webhooks.rotate_secret": _WEBHOOK_LINKS,
    "v1.webhooks.list_webhooks": {
        "GetFirstWebhook": ("v1.webhooks.get_webhook", {"webhook_id": _FIRST_ITEM}),
    },
    "v1.webhooks.ping": _DELIVERY_LINKS,
    "v1.webhooks.redeliver": _DELIVERY_LINKS,
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
            operations[method.lower()] = _operation(rule, meta)
        spec.path(path=path, operations=operations)
    return spec.to_dict()


def _operation(rule: Rule, meta: dict[str, Any]) -> dict[str, Any]:
    endpoint = rule.endpoint
    responses: dict[str, Any] = {}
    for status in (meta["status"], *_OTHER_SUCCESS.get(endpoint, ())):
        responses[str(status)] = _success(endpoint, meta, status)
    for status in sorted(_error_statuses(endpoint, meta)):
        responses[str(status)] = {
            "description": _ERROR_STATUSES.get(str(status), "Error"),
            "content": {"application/json": {"schema": "Error"}},
        }
    operation: dict[str, Any] = {
        "operationId": _operation_id(endpoint),
        "summary": meta["summary"],
        "tags": meta["tags"],
        "responses": responses,
        "parameters": [
            {"in": "path", "name": name, "required": True, "schema": _path_schema(rule, name)}
            for name in sorted(rule.arguments)
        ]
        + [_HEADERS[name] for name in _OPERATION_HEADERS.get(endpoint, ())]
        + _OTHER_QUERY.get(endpoint, []),
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


def _operation_id(endpoint: str) -> str:
    return endpoint.replace(".", "_")


def _success(endpoint: str, meta: dict[str, Any], status: int) -> dict[str, Any]:
    if status == 302:
        return {
            "description": "Redirect to the download URL",
            "headers": {"Location": {"schema": {"type": "string"}}},
        }
    success: dict[str, Any] = {"description": "Success"}
    if meta["response"] is not None:
        success["content"] = {meta["content_type"]: {"schema": meta["response"]}}
    elif meta["content_type"] != "application/json" and status != 204:
        success["content"] = {meta["content_type"]: {"schema": {"type": "string"}}}
    links = _LINKS.get(endpoint)
    if links:
        success["links"] = {
            name: {"operationId": _operation_id(target), "parameters": parameters}
            for name, (target, parameters) in links.items()
        }
    return success


def _error_statuses(endpoint: str, meta: dict[str, Any]) -> set[int]:
    """Every error status the operation can answer, whatever part of the stack answers it."""
    statuses = set(meta["errors"]) | set(_OTHER_ERRORS.get(endpoint, ()))
    statuses.add(422)  # NUL or invalid UTF-8 in a header, the path or the query: every route
    if meta["auth"]:
        statuses |= {401, 503}  # no/bad token; Redis (the revocation check) down
    if meta["body"] is not None:
        statuses |= {413, 415, 503}  # too large; wrong content type; PostgreSQL down
        if meta["body_content_type"] == "application/json":
            statuses.add(400)  # invalid_json
    if meta["query"] is not None:
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
    assert isinstance(plugin, MarshmallowPlugin) and plugin.converter is not None
    return plugin.converter.schema2jsonschema(schema)
