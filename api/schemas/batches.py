"""POST /jobs/batch: many jobs, all or none."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from api.schemas.jobs import JobSubmitSchema
from shared.schemas.responses import JobSchema


class BatchSubmitSchema(Schema):
    """POST /jobs/batch (documentation: the view validates each job on its own, so that
    every invalid one is reported with its index)."""

    jobs = fields.List(
        fields.Nested(JobSubmitSchema),
        required=True,
        validate=validate.Length(min=1),
        metadata={"description": "At most BATCH_MAX_JOBS (default 500) jobs, all or none."},
    )


class BatchSchema(Schema):
    items = fields.List(
        fields.Nested(JobSchema),
        required=True,
        metadata={"description": "The batch's jobs, in submission order."},
    )
