"""Jobs: what every submit may add (priority, labels, timing), POST /jobs, the list, the
history and the logs. A job's own body is shared/schemas/responses.py's JobSchema."""

from __future__ import annotations

from marshmallow import EXCLUDE, Schema, fields, validate

from api.schemas.common import LABEL_FILTER, LABEL_FILTER_ERROR, MAX_LABELS, labels_field
from shared.dispatch.priorities import Priority
from shared.processors import all_processors
from shared.schemas.responses import JOB_STATUSES, PRIORITIES, JobSchema

# The processor names each submit endpoint takes, declared as enums in the OpenAPI document
# (the views still answer an unknown name with 422 `unknown_processor`).
PLAIN_PROCESSORS = [p.name for p in all_processors() if p.input == "none"]


class JobOptionsSchema(Schema):
    """What every submit may add to its job: priority, labels, and when it runs."""

    priority = fields.String(
        load_default=Priority.NORMAL.value,
        validate=validate.OneOf(PRIORITIES),
        metadata={"description": "Within a fleet, high before normal before low."},
    )
    labels = labels_field(load_default=dict)
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

    status = fields.String(validate=validate.OneOf(JOB_STATUSES))
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


class JobEventSchema(Schema):
    id = fields.Integer()
    type = fields.String()
    attempt = fields.Integer(allow_none=True)
    data = fields.Dict()
    created_at = fields.DateTime()


class JobEventListSchema(Schema):
    items = fields.List(fields.Nested(JobEventSchema), required=True)
