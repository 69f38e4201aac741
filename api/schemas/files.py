"""File jobs: the upload form of POST /jobs/files and the download of a result."""

from __future__ import annotations

from marshmallow import EXCLUDE, Schema, fields, validate

from shared.processors import all_processors
from shared.schemas.responses import PRIORITIES

FILE_PROCESSORS = [p.name for p in all_processors() if p.kind == "file"]


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
