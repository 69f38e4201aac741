"""Apps and their releases: show, list, change, roll back, delete."""

from __future__ import annotations

from marshmallow import RAISE, Schema, fields, validate

from api.schemas.deployments import ACCESS_TOKEN_FIELD, ENV_FIELD, HEALTH_PATH
from shared.apps.releases import image_kept
from shared.schemas.responses import DEPLOYMENT_STATUSES, ComputedBoolean, ComputedString


class ReleaseSchema(Schema):
    """Dumps a Deployment row as a release of its app."""

    release = fields.Integer(required=True, metadata={"example": 3})
    version = ComputedString(compute=lambda row: f"v{row.release}", metadata={"example": "v3"})
    commit = fields.String(allow_none=True, attribute="commit_sha")
    image = fields.String(allow_none=True)
    created_at = fields.DateTime()
    deployment_id = fields.UUID(attribute="id")
    job_id = fields.UUID()
    status = fields.String(validate=validate.OneOf(DEPLOYMENT_STATUSES))
    rollback_of = fields.Integer(
        allow_none=True, metadata={"description": "The release whose image this one runs."}
    )
    image_kept = ComputedBoolean(
        compute=image_kept,
        metadata={"description": "Whether a rollback to this release can run its image."},
    )


class ReleaseListSchema(Schema):
    items = fields.List(fields.Nested(ReleaseSchema), required=True)
    next_cursor = fields.String(allow_none=True)


class AppSchema(Schema):
    """Dumps an AppWithReleases (api/apps.py): the app with its current and recent releases."""

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
