"""Operators' endpoints: dead letters, queues and platform statistics."""

from __future__ import annotations

from datetime import datetime, timedelta

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

from shared.schemas.responses import ComputedNested, JobErrorSchema, own_columns


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
    error = ComputedNested(JobErrorSchema, compute=own_columns)
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
