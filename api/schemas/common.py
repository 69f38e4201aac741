"""Pieces every resource's schemas use: the error body, labels, a page of a list."""

from __future__ import annotations

from typing import Any

from marshmallow import EXCLUDE, Schema, fields, validate


class ErrorBodySchema(Schema):
    code = fields.String(required=True, metadata={"example": "validation_error"})
    message = fields.String(required=True)
    details = fields.Dict(required=True)
    request_id = fields.String(allow_none=True)


class ErrorSchema(Schema):
    error = fields.Nested(ErrorBodySchema, required=True)


LABEL_KEY = r"^[a-z0-9_.-]{1,63}\Z"  # \Z: `$` would let a trailing newline in


MAX_LABELS = 16


# A label filter: key:value, the key as above and the value as a label's (up to 256).
LABEL_FILTER = r"^[a-z0-9_.-]{1,63}:[\s\S]{0,256}$"  # no inline flags: ECMA regex too


LABEL_FILTER_ERROR = "A label filter is key:value: a label key, a value of up to 256."


def labels_field(**kwargs: Any) -> fields.Dict:
    """A `labels` field: the same bounds wherever labels are set (jobs, schedules, webhooks)."""
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


class PageQuerySchema(Schema):
    """The query of a plain list: one page of `limit` rows after the `cursor` of the last
    page (api/pagination.py)."""

    class Meta:
        unknown = EXCLUDE

    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))
    cursor = fields.String(validate=validate.Length(max=200))
