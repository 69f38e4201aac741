"""How a job and a deployment look from outside: the body of `GET /jobs/{id}` and
`GET /deployments/{id}`, and the `data` of a webhook delivery (shared/webhooks/payloads.py).

One definition for both, here rather than in api/ because the webhooks worker renders
deliveries and workers never import Flask or api/. The API's schemas (api/schemas/) use
these classes, so its answers and its OpenAPI document describe exactly what a webhook
receiver gets. Links are plain paths under API_PREFIX, the same as Flask's `url_for` builds
for the API's routes (a test compares a rendered job with the API's answer).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from marshmallow import Schema, fields, validate
from marshmallow.utils import missing

from shared.deploy.status import DeploymentStatus
from shared.dispatch.priorities import Priority
from shared.jobs.status import JobStatus
from shared.processors import kind_of

#: Where the API's routes live (api/__init__.py mounts its blueprints here).
API_PREFIX = "/api/v1"

JOB_STATUSES = [s.value for s in JobStatus]
PRIORITIES = [p.value for p in Priority]
DEPLOYMENT_STATUSES = [status.value for status in DeploymentStatus]


class Computed(fields.Field):
    """A response field whose value is computed from the whole object being dumped (columns
    grouped into one JSON object, values derived from several columns, links).

    Mixed into a typed field (below) so the OpenAPI document still describes the value: a
    `fields.Method` or `fields.Function` would be documented as an untyped property.
    """

    def __init__(self, *args: Any, compute: Callable[[Any], Any], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.compute = compute

    def get_value(self, obj: Any, attr: str, accessor: Any = None, default: Any = missing) -> Any:
        return self.compute(obj)


class ComputedNested(Computed, fields.Nested):
    pass


class ComputedDict(Computed, fields.Dict):
    pass


class ComputedList(Computed, fields.List):
    pass


class ComputedString(Computed, fields.String):
    pass


class ComputedBoolean(Computed, fields.Boolean):
    pass


class ComputedDateTime(Computed, fields.DateTime):
    pass


def own_columns(obj: Any) -> Any:
    """For a nested schema that reads its fields from the parent's own columns."""
    return obj


def error_if_any(row: Any) -> Any:
    """A job's or deployment's `error`: null unless it has an error code."""
    return row if row.error_code else None


def _file_info(stored: dict[str, Any] | None, deleted_at: Any, expires_at: Any = None) -> Any:
    """What a user may see of a stored file: never its storage key."""
    if not stored:
        return None
    return {
        "filename": stored.get("filename"),
        "content_type": stored.get("content_type"),
        "size": stored.get("size"),
        "deleted": deleted_at is not None,
        "expires_at": expires_at,
    }


def _input_info(job: Any) -> Any:
    return _file_info(job.input_file, job.input_deleted_at)


def _output_info(job: Any) -> Any:
    return _file_info(job.result_file, job.result_deleted_at, job.result_expires_at)


def _job_links(job: Any) -> dict[str, str]:
    path = f"{API_PREFIX}/jobs/{job.id}"
    links = {"self": path, "events": f"{path}/events", "logs": f"{path}/logs"}
    if kind_of(job.kind).downloadable:
        links["download"] = f"{path}/download"
    return links


def _deployment_links(deployment: Any) -> dict[str, str]:
    path = f"{API_PREFIX}/deployments/{deployment.id}"
    return {
        "self": path,
        "job": f"{API_PREFIX}/jobs/{deployment.job_id}",
        "logs": f"{path}/logs",
    }


class ProgressSchema(Schema):
    """Dumped from the job's own progress columns."""

    current = fields.Integer(allow_none=True, attribute="progress_current")
    total = fields.Integer(allow_none=True, attribute="progress_total")
    message = fields.String(allow_none=True, attribute="progress_message")


class JobErrorSchema(Schema):
    """Dumped from the error columns of a job, a deployment or a dead letter."""

    code = fields.String(attribute="error_code")
    message = fields.String(attribute="error_message")


class FileInfoSchema(Schema):
    filename = fields.String()
    content_type = fields.String()
    size = fields.Integer()
    deleted = fields.Boolean(metadata={"description": "Removed from storage (ended/expired)."})
    expires_at = fields.DateTime(allow_none=True)


class JobSchema(Schema):
    """Dumps a Job row or a just-submitted NewJob (attribute access either way)."""

    id = fields.UUID(required=True)
    owner_id = fields.UUID()
    kind = fields.String()
    processor = fields.String()
    queue = fields.String()
    params = fields.Dict()
    status = fields.String(validate=validate.OneOf(JOB_STATUSES))
    attempts = fields.Integer()
    max_attempts = fields.Integer()
    progress = ComputedNested(ProgressSchema, compute=own_columns)
    error = ComputedNested(JobErrorSchema, allow_none=True, compute=error_if_any)
    result = fields.Dict(allow_none=True)
    input = ComputedNested(lambda: FileInfoSchema(), allow_none=True, compute=_input_info)
    output = ComputedNested(lambda: FileInfoSchema(), allow_none=True, compute=_output_info)
    idempotency_key = fields.String(allow_none=True)
    cancel_requested = fields.Boolean()
    next_attempt_at = fields.DateTime(allow_none=True)
    priority = fields.String(validate=validate.OneOf(PRIORITIES))
    labels = fields.Dict(keys=fields.String(), values=fields.String())
    run_at = fields.DateTime(allow_none=True)
    schedule_id = fields.UUID(allow_none=True)
    created_at = fields.DateTime()
    started_at = fields.DateTime(allow_none=True)
    finished_at = fields.DateTime(allow_none=True)
    links = ComputedDict(keys=fields.String(), values=fields.String(), compute=_job_links)


class DeploymentSchema(Schema):
    """Dumps a Deployment row."""

    id = fields.UUID(required=True)
    job_id = fields.UUID()
    owner_id = fields.UUID()
    repo_url = fields.String()
    ref = fields.String(allow_none=True)
    commit = fields.String(allow_none=True, attribute="commit_sha")
    status = fields.String(validate=validate.OneOf(DEPLOYMENT_STATUSES))
    url = fields.String(
        allow_none=True,
        metadata={
            "description": "The app's routed URL, http://<app>.<DEPLOY_DOMAIN>:<PROXY_PORT>/"
        },
    )
    port = fields.Integer(
        allow_none=True,
        attribute="host_port",
        metadata={"description": "The leased host port the proxy dials (an internal detail)."},
    )
    container_port = fields.Integer(allow_none=True)
    image = fields.String(allow_none=True)
    health_path = fields.String()
    # Names only: the values are secrets.
    env_names = ComputedList(fields.String(), compute=lambda row: row.env_names or [])
    error = ComputedNested(JobErrorSchema, allow_none=True, compute=error_if_any)
    app_id = fields.UUID(allow_none=True, metadata={"description": "The app (GET /apps)."})
    release = fields.Integer(allow_none=True, metadata={"description": "N of the app's vN."})
    rollback_of = fields.Integer(
        allow_none=True, metadata={"description": "The release whose image a rollback runs."}
    )
    replaced_by = fields.UUID(allow_none=True)
    retire_at = fields.DateTime(allow_none=True)
    checked_at = fields.DateTime(allow_none=True)
    created_at = fields.DateTime()
    healthy_at = fields.DateTime(allow_none=True)
    stopped_at = fields.DateTime(allow_none=True)
    # Set once the image of a stopped deployment is no longer kept (DEPLOY_IMAGE_RETENTION):
    # a redeploy of the commit is then a full build.
    image_released_at = fields.DateTime(allow_none=True)
    links = ComputedDict(keys=fields.String(), values=fields.String(), compute=_deployment_links)
