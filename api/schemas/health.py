"""GET /healthz and /readyz."""

from __future__ import annotations

from marshmallow import Schema, fields


class HealthSchema(Schema):
    status = fields.String()
    checks = fields.Dict()
