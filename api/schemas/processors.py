"""The processor catalogue (GET /processors)."""

from __future__ import annotations

from marshmallow import Schema, fields


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
