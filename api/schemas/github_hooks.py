"""GitHub push hooks: the hook's body and answer, an app's hook secret, its deliveries."""

from __future__ import annotations

from typing import Any

from marshmallow import EXCLUDE, RAISE, Schema, fields, post_load, validate

from shared.schemas.responses import JobSchema


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
