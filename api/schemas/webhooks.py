"""Webhooks: subscriptions, their secrets, and their deliveries with each attempt."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import url_for
from marshmallow import Schema, fields, validate

from api.schemas.common import PageQuerySchema, labels_field
from shared.schemas.responses import ComputedDateTime, ComputedDict
from shared.webhooks import outbox as webhook_outbox

#: The events a webhook may subscribe to (README, Webhooks); "*" is every one of them.
WEBHOOK_EVENTS = list(webhook_outbox.EVENTS)


WEBHOOK_ALL_EVENTS = "*"


DELIVERY_STATUSES = ["pending", "delivered", "failed"]


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
        "labels": labels_field(**default(dict)),
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
    previous_secret_expires_at = ComputedDateTime(
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
    """Dumps a delivery with its attempts (api/webhooks.py DeliveryWithAttempts), oldest attempt
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


class WebhookDeliveryQuerySchema(PageQuerySchema):
    status = fields.String(validate=validate.OneOf(DELIVERY_STATUSES))


class WebhookDeliveryListSchema(Schema):
    items = fields.List(fields.Nested(WebhookDeliverySchema), required=True)
    next_cursor = fields.String(allow_none=True)
