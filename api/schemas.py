"""Marshmallow schemas: request validation, response shapes, and the OpenAPI document.

The bodies of a job and a deployment are shared/schemas/responses.py's: webhook deliveries, rendered by
a worker without Flask, show them too."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from flask import url_for
from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, post_load, validate

from shared.apps.names import InvalidAppName, check_name
from shared.apps.releases import image_kept
from shared.deploy.jobs import public_params
from shared.dispatch.priorities import Priority
from shared.jobs import schedules
from shared.processors import all_processors
from shared.schemas.responses import (
    DEPLOYMENT_STATUSES,
    PRIORITIES,
    STATUSES,
    ComputedDict,
    ComputedNested,
    DeploymentSchema,
    JobErrorSchema,
    JobSchema,
    same_object,
)
from shared.schemas.responses import Computed as _Computed
from shared.webhooks import outbox as webhook_outbox

# The processor names each submit endpoint takes, declared as enums in the OpenAPI document
# (the views still answer an unknown name with 422 `unknown_processor`).
PLAIN_PROCESSORS = [p.name for p in all_processors() if p.input == "none"]
FILE_PROCESSORS = [p.name for p in all_processors() if p.kind == "file"]


class ErrorBodySchema(Schema):
    code = fields.String(required=True, metadata={"example": "validation_error"})
    message = fields.String(required=True)
    details = fields.Dict(required=True)
    request_id = fields.String(allow_none=True)


class ErrorSchema(Schema):
    error = fields.Nested(ErrorBodySchema, required=True)


class RegisterSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    email = fields.Email(required=True, validate=validate.Length(max=254))
    password = fields.String(
        required=True, load_only=True, validate=validate.Length(min=8, max=1024)
    )

    @post_load
    def normalise(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        data["email"] = data["email"].strip().lower()
        return data


class LoginSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    email = fields.String(required=True, validate=validate.Length(min=1, max=254))
    password = fields.String(required=True, load_only=True, validate=validate.Length(max=1024))


class LogoutSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    refresh_token = fields.String(
        load_default=None,
        metadata={"description": "Also revoke this refresh token (recommended)."},
    )


class UserSchema(Schema):
    id = fields.UUID(required=True)
    email = fields.String(required=True)
    role = fields.String(required=True, validate=validate.OneOf(["user", "admin"]))
    created_at = fields.DateTime()


class TokenSchema(Schema):
    access_token = fields.String(required=True)
    refresh_token = fields.String(required=True)
    token_type = fields.String(required=True, metadata={"example": "Bearer"})
    expires_in = fields.Integer(required=True, metadata={"description": "Seconds."})


class AccessTokenSchema(Schema):
    access_token = fields.String(required=True)
    token_type = fields.String(required=True)
    expires_in = fields.Integer(required=True)


LABEL_KEY = r"^[a-z0-9_.-]{1,63}\Z"  # \Z: `$` would let a trailing newline in
MAX_LABELS = 16
# A label filter: key:value, the key as above and the value as a label's (up to 256).
LABEL_FILTER = r"^[a-z0-9_.-]{1,63}:[\s\S]{0,256}$"  # no inline flags: ECMA regex too
LABEL_FILTER_ERROR = "A label filter is key:value: a label key, a value of up to 256."


def _labels_field(**kwargs: Any) -> fields.Dict:
    return fields.Dict(
        # Regexp's error is a format string: the braces are doubled.
        keys=fields.String(
            validate=validate.Regexp(LABEL_KEY, error="Keys are [a-z0-9_.-]{{1,63}}.")
        ),
        values=fields.String(validate=validate.Length(max=256)),
        validate=validate.Length(max=MAX_LABELS, error=f"At most {MAX_LABELS} labels."),
        metadata={
            "description": f"Up to {MAX_LABELS} key/value pairs; filter with GET /jobs?label=k:v.",
            "example": {"team": "data"},
        },
        **kwargs,
    )


class JobOptionsSchema(Schema):
    """What every submit may add to its job: priority, labels, and when it runs."""

    priority = fields.String(
        load_default=Priority.NORMAL.value,
        validate=validate.OneOf(PRIORITIES),
        metadata={"description": "Within a fleet, high before normal before low."},
    )
    labels = _labels_field(load_default=dict)
    run_at = fields.AwareDateTime(
        load_default=None,
        metadata={"description": "RFC 3339 with offset; the job waits as `scheduled`."},
    )
    delay_seconds = fields.Integer(
        load_default=None,
        validate=validate.Range(min=0),
        metadata={"description": "Run this many seconds from now (not with run_at)."},
    )


class JobSubmitSchema(JobOptionsSchema):
    class Meta:
        unknown = EXCLUDE

    processor = fields.String(
        required=True,
        validate=validate.Length(min=1, max=64),
        metadata={"enum": PLAIN_PROCESSORS, "example": "debug.echo"},
    )
    params = fields.Dict(
        keys=fields.String(),
        load_default=dict,
        metadata={
            "description": "The processor's parameters (GET /processors has their schema).",
            "example": {"message": "hello"},
        },
    )
    max_attempts = fields.Integer(
        load_default=None,
        validate=validate.Range(min=1),
        metadata={"description": "Attempt budget; defaults to the processor's, bounded."},
    )


class BatchSubmitSchema(Schema):
    """POST /jobs/batch (documentation: the view validates each job on its own, so that
    every invalid one is reported with its index)."""

    jobs = fields.List(
        fields.Nested(JobSubmitSchema),
        required=True,
        validate=validate.Length(min=1),
        metadata={"description": "At most BATCH_MAX_JOBS (default 500) jobs, all or none."},
    )


class FileSubmitSchema(Schema):
    """The multipart form of POST /jobs/files (documentation; the view parses the stream)."""

    file = fields.Raw(required=True, metadata={"type": "string", "format": "binary"})
    processor = fields.String(
        required=True, metadata={"enum": FILE_PROCESSORS, "example": "file.checksum"}
    )
    params = fields.String(
        metadata={"description": "The parameters as a JSON object.", "example": "{}"}
    )
    max_attempts = fields.Integer(validate=validate.Range(min=1))
    priority = fields.String(validate=validate.OneOf(PRIORITIES))
    labels = fields.String(metadata={"description": "Labels as a JSON object.", "example": "{}"})
    run_at = fields.String(metadata={"description": "RFC 3339 with offset.", "format": "date-time"})
    delay_seconds = fields.Integer(validate=validate.Range(min=0))


class DownloadSchema(Schema):
    url = fields.String(required=True)
    expires_in = fields.Integer(required=True)
    filename = fields.String(required=True)
    content_type = fields.String()
    size = fields.Integer()


class DownloadQuerySchema(Schema):
    class Meta:
        unknown = EXCLUDE

    redirect = fields.Boolean(load_default=False)
    expires_in = fields.Integer(validate=validate.Range(min=1))


class JobLogSchema(Schema):
    attempt = fields.Integer(allow_none=True)
    source = fields.String()
    content = fields.String()
    truncated = fields.Boolean()
    created_at = fields.DateTime()


class JobLogListSchema(Schema):
    items = fields.List(fields.Nested(JobLogSchema), required=True)


class JobListQuerySchema(Schema):
    class Meta:
        unknown = EXCLUDE

    status = fields.String(validate=validate.OneOf(STATUSES))
    kind = fields.String(validate=validate.Length(max=32))
    processor = fields.String(validate=validate.Length(max=64))
    label = fields.List(
        fields.String(validate=validate.Regexp(LABEL_FILTER, error=LABEL_FILTER_ERROR)),
        validate=validate.Length(max=MAX_LABELS, error=f"At most {MAX_LABELS} label filters."),
        metadata={
            "description": "key:value (repeatable): only jobs with every one of these labels.",
            "example": ["team:data"],
        },
    )
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))
    cursor = fields.String(validate=validate.Length(max=200))


class JobListSchema(Schema):
    items = fields.List(fields.Nested(JobSchema), required=True)
    next_cursor = fields.String(allow_none=True)


class BatchSchema(Schema):
    items = fields.List(
        fields.Nested(JobSchema),
        required=True,
        metadata={"description": "The batch's jobs, in submission order."},
    )


class JobEventSchema(Schema):
    id = fields.Integer()
    type = fields.String()
    attempt = fields.Integer(allow_none=True)
    data = fields.Dict()
    created_at = fields.DateTime()


class JobEventListSchema(Schema):
    items = fields.List(fields.Nested(JobEventSchema), required=True)


class ProcessorSchema(Schema):
    name = fields.String()
    kind = fields.String()
    description = fields.String()
    input = fields.String(metadata={"description": "none, file or repository"})
    accepts = fields.List(fields.String(), metadata={"description": "Accepted content types."})
    queue = fields.String()
    max_attempts = fields.Integer()
    params = fields.Dict(metadata={"description": "JSON Schema of the parameters."})
    image = fields.String(allow_none=True)
    limits = fields.Dict(
        allow_none=True,
        metadata={"description": "memory_bytes, cpus, pids, timeout_seconds, max_output_bytes"},
    )


class ProcessorListSchema(Schema):
    items = fields.List(fields.Nested(ProcessorSchema), required=True)


def _postgres_offset(value: datetime) -> bool:
    """PostgreSQL refuses UTC offsets beyond 15:59 (Python allows up to 23:59)."""
    offset = value.utcoffset()
    if offset is not None and abs(offset) > timedelta(hours=15, minutes=59):
        raise ValidationError("The UTC offset must be within ±15:59.")
    return True


class DeadLetterQuerySchema(Schema):
    class Meta:
        unknown = EXCLUDE

    processor = fields.String(validate=validate.Length(max=64))
    error_code = fields.String(validate=validate.Length(max=64))
    since = fields.AwareDateTime(
        validate=_postgres_offset, metadata={"description": "failed_at >= since (ISO 8601)"}
    )
    until = fields.AwareDateTime(
        validate=_postgres_offset, metadata={"description": "failed_at < until (ISO 8601)"}
    )
    state = fields.String(
        load_default="waiting", validate=validate.OneOf(["waiting", "requeued", "all"])
    )
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))
    cursor = fields.String(validate=validate.Length(max=200))


class DeadLetterSchema(Schema):
    id = fields.UUID()
    job_id = fields.UUID()
    task_name = fields.String()
    processor = fields.String()
    args = fields.Dict()
    error = ComputedNested(JobErrorSchema, compute=same_object)
    traceback = fields.String(allow_none=True)
    attempts = fields.Integer()
    failed_at = fields.DateTime()
    requeued_at = fields.DateTime(allow_none=True)
    created_at = fields.DateTime()


class DeadLetterListSchema(Schema):
    items = fields.List(fields.Nested(DeadLetterSchema), required=True)
    next_cursor = fields.String(allow_none=True)


class AffectedSchema(Schema):
    affected = fields.Integer(required=True)
    job_id = fields.UUID(metadata={"description": "One requeue: the job queued again."})
    skipped = fields.Integer(metadata={"description": "Bulk requeue: letters whose job moved on."})
    remaining = fields.Integer(metadata={"description": "Bulk: matching letters left."})


class HealthSchema(Schema):
    status = fields.String()
    checks = fields.Dict()


_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"


HEALTH_PATH = r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/?-]{0,499}$"


def ENV_FIELD(**kwargs: Any) -> fields.Dict:  # noqa: N802 - a field factory, used like a class
    return fields.Dict(
        keys=fields.String(validate=validate.Regexp(_ENV_NAME)),
        values=fields.String(validate=validate.Length(max=4096)),
        allow_none=True,
        validate=validate.Length(max=100),
        **kwargs,
    )


def _check_app_name(name: str) -> None:
    try:
        check_name(name)
    except InvalidAppName as error:
        raise ValidationError(str(error)) from None


def APP_NAME_FIELD(**kwargs: Any) -> fields.String:  # noqa: N802
    kwargs.setdefault("metadata", {}).setdefault("example", "hello-api")
    return fields.String(allow_none=True, validate=_check_app_name, **kwargs)


def ACCESS_TOKEN_FIELD(**kwargs: Any) -> fields.String:  # noqa: N802
    return fields.String(
        allow_none=True,
        load_only=True,
        validate=validate.Length(max=500),
        metadata={
            "description": "Write-only: a token (GitHub: a fine-grained token with read "
            "access to the repository's contents) the clone of a private repository uses; "
            "stored encrypted on the app, never shown. Empty string: remove it."
        },
        **kwargs,
    )


class DeploySubmitSchema(JobOptionsSchema):
    class Meta:
        unknown = RAISE

    repo_url = fields.String(
        required=True,
        validate=validate.Length(min=1, max=300),
        metadata={
            "description": "https://HOST/OWNER/REPO on a host DEPLOY_ALLOWED_HOSTS allows.",
            "example": "https://github.com/octo/hello",
        },
    )
    ref = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.Length(max=200),
        metadata={
            "description": "Branch, tag or full commit id; default: the app's branch (else "
            "the repository's default branch). A branch or tag is remembered by the app."
        },
    )
    branch = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.Length(max=200),
        metadata={"description": "Another name for `ref`."},
    )
    container_port = fields.Integer(
        load_default=None, allow_none=True, validate=validate.Range(min=1, max=65535)
    )
    health_path = fields.String(
        load_default=None,
        validate=validate.Regexp(HEALTH_PATH),
        metadata={
            "description": "Path (and query) the health check GETs; starts with /. Default: "
            "the app's (a new app: /)."
        },
    )
    env = ENV_FIELD(
        load_default=None,
        metadata={
            "description": "Variables for the app: secrets, never returned or logged. "
            "Default: the app's."
        },
    )
    app = APP_NAME_FIELD(
        load_default=None,
        metadata={
            "description": "The app this deploy is a release of, created on first use "
            "(a platform-wide name). Default: derived from the repository and you."
        },
    )
    access_token = ACCESS_TOKEN_FIELD(load_default=None)
    max_attempts = fields.Integer(load_default=None, validate=validate.Range(min=1))

    @post_load
    def _one_ref(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        branch = data.pop("branch", None)
        if branch is not None and data.get("ref") not in (None, branch):
            raise ValidationError("Give `ref` or `branch`, not both.", "branch")
        if branch is not None:
            data["ref"] = branch
        return data


class DeploymentListQuerySchema(Schema):
    class Meta:
        unknown = EXCLUDE

    status = fields.String(validate=validate.Length(max=16))
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))
    cursor = fields.String(validate=validate.Length(max=200))


class DeploymentListSchema(Schema):
    items = fields.List(fields.Nested(DeploymentSchema), required=True)
    next_cursor = fields.String(allow_none=True)


class DeploymentLogsSchema(Schema):
    build = fields.List(fields.Nested(JobLogSchema))
    app = fields.String(allow_none=True, metadata={"description": "Recent container output."})
    app_captured_at = fields.DateTime(allow_none=True)


class StatsSchema(Schema):
    jobs_by_status = fields.Dict(keys=fields.String(), values=fields.Integer())
    deployments_by_status = fields.Dict(keys=fields.String(), values=fields.Integer())
    queue_depths = fields.Dict(keys=fields.String(), values=fields.Integer())
    workers_online = fields.List(fields.String())
    workers_online_count = fields.Integer()
    dead_letters_waiting = fields.Integer()
    paused_queues = fields.List(
        fields.String(), metadata={"description": "Job queues an operator paused."}
    )


# --- Recurring schedules ------------------------------------------------------------------


def _schedule_links(schedule: Any) -> dict[str, str]:
    return {
        "self": url_for("v1.schedules.get_schedule", schedule_id=schedule.id),
        "runs": url_for("v1.schedules.schedule_runs", schedule_id=schedule.id),
        "trigger": url_for("v1.schedules.trigger", schedule_id=schedule.id),
    }


def _schedule_params(schedule: Any) -> dict[str, Any]:
    """Never the encrypted env a deploy schedule keeps."""
    return public_params(schedule.params)


OVERLAPS = [o.value for o in schedules.Overlap]
MISFIRES = [m.value for m in schedules.Misfire]
_SCHEDULE_DOCS: dict[str, dict[str, Any]] = {
    "processor": {"enum": PLAIN_PROCESSORS, "example": "debug.echo"},
    "params": {"example": {"message": "hello"}},
    "cron": {
        "description": "Five fields (minute hour day-of-month month day-of-week), read in "
        "`timezone`; not with every_seconds.",
        "example": "0 3 * * *",
    },
    "every_seconds": {
        "description": f"Period, {schedules.MIN_EVERY_SECONDS} to "
        f"{schedules.MAX_EVERY_SECONDS} seconds; not with cron.",
    },
    "timezone": {"description": "IANA time zone name the cron is read in.", "example": "UTC"},
    "overlap": {"description": "skip: no new run while the previous one has not ended."},
    "misfire": {"description": "run_once: after downtime one catch-up run; skip: none."},
}


def _schedule_fields(create: bool) -> dict[str, fields.Field]:
    """The fields POST /schedules takes (required ones and defaults) or PATCH does (any
    subset, no defaults): one definition for both."""

    def default(value: Any) -> dict[str, Any]:
        return {"load_default": value} if create else {}

    docs = _SCHEDULE_DOCS
    return {
        "name": fields.String(required=create, validate=validate.Length(min=1, max=100)),
        "processor": fields.String(
            required=create, validate=validate.Length(min=1, max=64), metadata=docs["processor"]
        ),
        "params": fields.Dict(keys=fields.String(), metadata=docs["params"], **default(dict)),
        "cron": fields.String(
            allow_none=True,
            validate=validate.Length(max=200),
            metadata=docs["cron"],
            **default(None),
        ),
        "every_seconds": fields.Integer(
            allow_none=True, metadata=docs["every_seconds"], **default(None)
        ),
        "timezone": fields.String(
            validate=validate.Length(min=1, max=64), metadata=docs["timezone"], **default("UTC")
        ),
        "priority": fields.String(
            validate=validate.OneOf(PRIORITIES), **default(Priority.NORMAL.value)
        ),
        "labels": _labels_field(**default(dict)),
        "enabled": fields.Boolean(**default(True)),
        "overlap": fields.String(
            validate=validate.OneOf(OVERLAPS),
            metadata=docs["overlap"],
            **default(schedules.Overlap.SKIP.value),
        ),
        "misfire": fields.String(
            validate=validate.OneOf(MISFIRES),
            metadata=docs["misfire"],
            **default(schedules.Misfire.RUN_ONCE.value),
        ),
        "max_attempts": fields.Integer(
            allow_none=True, validate=validate.Range(min=1), **default(None)
        ),
    }


#: POST /schedules. (Unknown fields are refused: marshmallow's default, RAISE.)
ScheduleCreateSchema = Schema.from_dict(_schedule_fields(create=True), name="ScheduleCreateSchema")
#: PATCH /schedules/{id}: any subset of the fields POST takes. Giving `cron` or
#: `every_seconds` replaces the recurrence (the other is cleared).
SchedulePatchSchema = Schema.from_dict(_schedule_fields(create=False), name="SchedulePatchSchema")


class ScheduleSchema(Schema):
    """Dumps a Schedule row."""

    id = fields.UUID(required=True)
    owner_id = fields.UUID()
    name = fields.String()
    processor = fields.String()
    params = ComputedDict(
        compute=_schedule_params,
        metadata={"description": "A deploy schedule's env shows as env_names only."},
    )
    cron = fields.String(allow_none=True)
    every_seconds = fields.Integer(allow_none=True)
    timezone = fields.String()
    priority = fields.String(validate=validate.OneOf(PRIORITIES))
    labels = fields.Dict(keys=fields.String(), values=fields.String())
    enabled = fields.Boolean()
    overlap = fields.String(validate=validate.OneOf(OVERLAPS))
    misfire = fields.String(validate=validate.OneOf(MISFIRES))
    max_attempts = fields.Integer(allow_none=True)
    next_run_at = fields.DateTime(allow_none=True)
    last_run_at = fields.DateTime(allow_none=True)
    last_job_id = fields.UUID(allow_none=True)
    created_at = fields.DateTime()
    updated_at = fields.DateTime()
    links = ComputedDict(keys=fields.String(), values=fields.String(), compute=_schedule_links)


class ScheduleListQuerySchema(Schema):
    class Meta:
        unknown = EXCLUDE

    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))
    cursor = fields.String(validate=validate.Length(max=200))


class ScheduleListSchema(Schema):
    items = fields.List(fields.Nested(ScheduleSchema), required=True)
    next_cursor = fields.String(allow_none=True)


class QueueDepthSchema(Schema):
    """Waiting jobs per priority: messages in the broker plus jobs held unpublished."""

    high = fields.Integer()
    normal = fields.Integer()
    low = fields.Integer()


class QueueSchema(Schema):
    name = fields.String()
    depth = fields.Nested(QueueDepthSchema)
    paused = fields.Boolean()
    workers = fields.List(
        fields.String(),
        metadata={"description": "Live worker nodes of its fleet (idle for it while paused)."},
    )
    oldest_waiting_seconds = fields.Float(
        allow_none=True, metadata={"description": "Age of its oldest queued job; null if none."}
    )


class QueueListSchema(Schema):
    items = fields.List(fields.Nested(QueueSchema), required=True)


# --- Webhooks -------------------------------------------------------------------------------

#: The events a webhook may subscribe to (README, Webhooks); "*" is every one of them.
WEBHOOK_EVENTS = list(webhook_outbox.EVENTS)
WEBHOOK_ALL_EVENTS = "*"
DELIVERY_STATUSES = ["pending", "delivered", "failed"]


class _ComputedDateTime(_Computed, fields.DateTime):
    pass


def _webhook_links(webhook: Any) -> dict[str, str]:
    return {
        name: url_for(f"v1.webhooks.{endpoint}", webhook_id=webhook.id)
        for name, endpoint in (
            ("self", "get_webhook"),
            ("deliveries", "list_deliveries"),
            ("ping", "ping"),
            ("rotate_secret", "rotate_secret"),
        )
    }


def _previous_secret_expiry(webhook: Any) -> datetime | None:
    """Until when the secret replaced by a rotation still signs deliveries; None if none."""
    expires = webhook.previous_secret_expires_at
    if webhook.previous_secret is None or expires is None:
        return None
    return expires if expires > datetime.now(expires.tzinfo) else None


def _webhook_fields(create: bool) -> dict[str, fields.Field]:
    """The fields POST /webhooks takes (url and events required) or PATCH does (any subset,
    plus `enabled`): one definition for both."""

    def default(value: Any) -> dict[str, Any]:
        return {"load_default": value} if create else {}

    body: dict[str, fields.Field] = {
        "url": fields.String(
            required=create,
            validate=validate.Length(min=1, max=2048),
            metadata={
                "description": "https (http only with WEBHOOK_ALLOW_HTTP), no credentials; "
                "the host must resolve to public addresses only.",
                "example": "https://hooks.example.com/dockyard",
            },
        ),
        "events": fields.List(
            fields.String(validate=validate.OneOf([*WEBHOOK_EVENTS, WEBHOOK_ALL_EVENTS])),
            required=create,
            validate=validate.Length(min=1, max=len(WEBHOOK_EVENTS) + 1),
            metadata={
                "description": 'Event types to deliver; "*" is all of them.',
                "example": ["job.succeeded", "job.failed"],
            },
        ),
        "labels": _labels_field(**default(dict)),
        "description": fields.String(
            allow_none=True, validate=validate.Length(max=500), **default(None)
        ),
    }
    if not create:
        body["enabled"] = fields.Boolean(
            metadata={"description": "true re-enables (clears disabled_reason); false pauses."}
        )
    return body


#: POST /webhooks. (Unknown fields are refused: marshmallow's default, RAISE.)
WebhookCreateSchema = Schema.from_dict(_webhook_fields(create=True), name="WebhookCreateSchema")
#: PATCH /webhooks/{id}: any subset of url, events, labels, description, enabled.
WebhookPatchSchema = Schema.from_dict(_webhook_fields(create=False), name="WebhookPatchSchema")


class WebhookSchema(Schema):
    """Dumps a Webhook row: never its secret (only create and rotation show it)."""

    id = fields.UUID(required=True)
    owner_id = fields.UUID()
    url = fields.String()
    events = fields.List(fields.String())
    labels = fields.Dict(keys=fields.String(), values=fields.String())
    description = fields.String(allow_none=True)
    enabled = fields.Boolean()
    disabled_reason = fields.String(
        allow_none=True,
        metadata={
            "description": "Why Dockyard disabled it (every delivery failing for "
            "WEBHOOK_DISABLE_AFTER); null otherwise."
        },
    )
    failing_since = fields.DateTime(
        allow_none=True, metadata={"description": "First failed delivery since the last success."}
    )
    last_success_at = fields.DateTime(allow_none=True)
    previous_secret_expires_at = _ComputedDateTime(
        compute=_previous_secret_expiry,
        allow_none=True,
        metadata={
            "description": "After a rotation: until when the previous secret also signs "
            "deliveries (WEBHOOK_SECRET_OVERLAP); null when only the current one does.",
        },
    )
    created_at = fields.DateTime()
    updated_at = fields.DateTime()
    links = ComputedDict(keys=fields.String(), values=fields.String(), compute=_webhook_links)


class WebhookSecretSchema(WebhookSchema):
    """A webhook with its signing secret: the answer of a create or a rotation, the only
    times the secret is shown."""

    secret = fields.String(
        required=True,
        metadata={"description": "Signs every delivery (Dockyard-Signature). Shown only now."},
    )


class WebhookListQuerySchema(Schema):
    class Meta:
        unknown = EXCLUDE

    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))
    cursor = fields.String(validate=validate.Length(max=200))


class WebhookListSchema(Schema):
    items = fields.List(fields.Nested(WebhookSchema), required=True)
    next_cursor = fields.String(allow_none=True)


class WebhookAttemptSchema(Schema):
    attempt = fields.Integer(
        metadata={"description": "1 for the first try of a cycle (a redeliver starts again)."}
    )
    response_code = fields.Integer(allow_none=True)
    duration_ms = fields.Integer(allow_none=True)
    error = fields.String(allow_none=True)
    response_body = fields.String(
        allow_none=True, metadata={"description": "The first 1 KB of the endpoint's answer."}
    )
    created_at = fields.DateTime()


class WebhookDeliverySchema(Schema):
    """Dumps a delivery with its attempts (api/webhooks.py DeliveryView), oldest attempt
    first."""

    id = fields.UUID(required=True, metadata={"description": "Also the Dockyard-Delivery header."})
    webhook_id = fields.UUID()
    event = fields.String(attribute="event_type", metadata={"example": "job.succeeded"})
    job_id = fields.UUID(allow_none=True)
    deployment_id = fields.UUID(allow_none=True)
    status = fields.String(validate=validate.OneOf(DELIVERY_STATUSES))
    attempt_count = fields.Integer(
        metadata={"description": "Attempts of the current cycle (WEBHOOK_MAX_ATTEMPTS)."}
    )
    next_attempt_at = fields.DateTime(allow_none=True)
    delivered_at = fields.DateTime(allow_none=True)
    created_at = fields.DateTime()
    attempts = fields.List(fields.Nested(WebhookAttemptSchema))


class WebhookDeliveryQuerySchema(WebhookListQuerySchema):
    status = fields.String(validate=validate.OneOf(DELIVERY_STATUSES))


class WebhookDeliveryListSchema(Schema):
    items = fields.List(fields.Nested(WebhookDeliverySchema), required=True)
    next_cursor = fields.String(allow_none=True)


class _ComputedString(_Computed, fields.String):
    pass


class _ComputedBoolean(_Computed, fields.Boolean):
    pass


class ReleaseSchema(Schema):
    """Dumps a Deployment row as a release of its app."""

    release = fields.Integer(required=True, metadata={"example": 3})
    version = _ComputedString(compute=lambda row: f"v{row.release}", metadata={"example": "v3"})
    commit = fields.String(allow_none=True, attribute="commit_sha")
    image = fields.String(allow_none=True)
    created_at = fields.DateTime()
    deployment_id = fields.UUID(attribute="id")
    job_id = fields.UUID()
    status = fields.String(validate=validate.OneOf(DEPLOYMENT_STATUSES))
    rollback_of = fields.Integer(
        allow_none=True, metadata={"description": "The release whose image this one runs."}
    )
    image_kept = _ComputedBoolean(
        compute=image_kept,
        metadata={"description": "Whether a rollback to this release can run its image."},
    )


class ReleaseListSchema(Schema):
    items = fields.List(fields.Nested(ReleaseSchema), required=True)
    next_cursor = fields.String(allow_none=True)


class AppSchema(Schema):
    """Dumps an AppView (api/apps.py): the app with its current and recent releases."""

    name = fields.String(required=True, metadata={"example": "hello-api"})
    url = fields.String(metadata={"example": "http://hello-api.localhost:8080/"})
    owner_id = fields.UUID()
    repo_url = fields.String()
    branch = fields.String(allow_none=True)
    auto_deploy = fields.Boolean()
    current_release = fields.Integer(allow_none=True)
    current_deployment = fields.UUID(allow_none=True)
    status = fields.String(
        metadata={"description": "running (the proxy routes to a live release) or stopped."}
    )
    releases = fields.List(
        fields.Nested(ReleaseSchema),
        metadata={"description": "The latest releases (all: GET /apps/{app}/releases)."},
    )
    release_count = fields.Integer()
    health_path = fields.String()
    container_port = fields.Integer(allow_none=True)
    env_names = fields.List(fields.String())
    has_access_token = fields.Boolean()
    has_webhook_secret = fields.Boolean()
    webhook_url = fields.String()
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


class AppListSchema(Schema):
    items = fields.List(fields.Nested(AppSchema), required=True)
    next_cursor = fields.String(allow_none=True)


class AppListQuerySchema(Schema):
    class Meta:
        unknown = EXCLUDE

    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))
    cursor = fields.String(validate=validate.Length(max=200))


class AppPatchSchema(Schema):
    class Meta:
        unknown = RAISE

    branch = fields.String(allow_none=True, validate=validate.Length(min=1, max=200))
    auto_deploy = fields.Boolean()
    health_path = fields.String(validate=validate.Regexp(HEALTH_PATH))
    container_port = fields.Integer(allow_none=True, validate=validate.Range(min=1, max=65535))
    env = ENV_FIELD()
    access_token = ACCESS_TOKEN_FIELD()


class RollbackSchema(Schema):
    class Meta:
        unknown = RAISE

    release = fields.Integer(required=True, strict=True, validate=validate.Range(min=1))
    max_attempts = fields.Integer(load_default=None, validate=validate.Range(min=1))


class AppDeletedSchema(Schema):
    name = fields.String(required=True)
    deleted = fields.Boolean()
    stopping = fields.List(
        fields.UUID(), metadata={"description": "Deployments being stopped and removed."}
    )


class GitHubHookBodySchema(Schema):
    """The push hook's body as the document shows it: any JSON object. It is GitHub's
    payload, read only once its signature is verified (GitHubPushSchema)."""

    class Meta:
        unknown = EXCLUDE


class _GitHubRepositorySchema(Schema):
    class Meta:
        unknown = EXCLUDE

    default_branch = fields.String(load_default=None, allow_none=True)


class GitHubPushSchema(Schema):
    """What a push payload's deploy decision reads; the rest of GitHub's payload is left."""

    class Meta:
        unknown = EXCLUDE

    ref = fields.String(required=True, validate=validate.Length(min=1, max=300))
    after = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=64))
    deleted = fields.Boolean(load_default=False, allow_none=True)
    repository = fields.Nested(_GitHubRepositorySchema, load_default=None, allow_none=True)

    @post_load
    def _flatten(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        repository = data.pop("repository", None) or {}
        data["default_branch"] = repository.get("default_branch")
        data["deleted"] = bool(data["deleted"])
        return data


class GitHubHookAnswerSchema(Schema):
    status = fields.String(
        required=True,
        validate=validate.OneOf(("deployed", "ignored", "pong")),
        metadata={"description": "deployed (202: a release started), ignored (202), pong (200)"},
    )
    reason = fields.String(allow_none=True, metadata={"description": "Why nothing deployed."})
    job = fields.Nested(JobSchema, metadata={"description": "The release's deploy job."})
    deployment_id = fields.UUID()
    release = fields.Integer(allow_none=True)


class AppHookSecretSetSchema(Schema):
    class Meta:
        unknown = RAISE

    secret = fields.String(
        validate=validate.Length(min=16, max=256),
        load_only=True,
        metadata={"description": "The secret to use; default: a generated one."},
    )


class AppHookSecretSchema(Schema):
    """The secret, shown once, and how to configure the GitHub webhook."""

    secret = fields.String(required=True)
    webhook_url = fields.String(required=True, metadata={"description": "GitHub: Payload URL"})
    content_type = fields.String(required=True, metadata={"example": "application/json"})
    events = fields.List(fields.String(), required=True, metadata={"example": ["push"]})


class AppHookDeliverySchema(Schema):
    id = fields.UUID(required=True)
    delivery_id = fields.String(allow_none=True, metadata={"description": "X-GitHub-Delivery"})
    event = fields.String(metadata={"description": "X-GitHub-Event"})
    ref = fields.String(allow_none=True)
    commit = fields.String(allow_none=True, attribute="commit_sha")
    outcome = fields.String(validate=validate.OneOf(("deployed", "ignored", "pong", "rejected")))
    reason = fields.String(allow_none=True)
    job_id = fields.UUID(allow_none=True)
    deployment_id = fields.UUID(allow_none=True)
    received_at = fields.DateTime()


class AppHookDeliveryListSchema(Schema):
    items = fields.List(fields.Nested(AppHookDeliverySchema), required=True)
    next_cursor = fields.String(allow_none=True)
