"""Deploys and deployments: POST /jobs/deploy's body (whose fields an app's settings
reuse: api/schemas/apps.py), the list and the logs. A deployment's own body is
shared/schemas/responses.py's DeploymentSchema."""

from __future__ import annotations

from typing import Any

from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, post_load, validate

from api.schemas.jobs import JobLogSchema, JobOptionsSchema
from shared.apps.names import InvalidAppName, check_name
from shared.schemas.responses import DeploymentSchema

_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"


HEALTH_PATH = r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/?-]{0,499}$"


def ENV_FIELD(**kwargs: Any) -> fields.Dict:  # a field factory, used like a class
    return fields.Dict(
        keys=fields.String(validate=validate.Regexp(_ENV_NAME)),
        values=fields.String(validate=validate.Length(max=4096)),
        allow_none=True,
        validate=validate.Length(max=100),
        **kwargs,
    )


def _check_app_name(name: str) -> None:
    try:
        check_name(name)
    except InvalidAppName as error:
        raise ValidationError(str(error)) from None


def APP_NAME_FIELD(**kwargs: Any) -> fields.String:
    kwargs.setdefault("metadata", {}).setdefault("example", "hello-api")
    return fields.String(allow_none=True, validate=_check_app_name, **kwargs)


def ACCESS_TOKEN_FIELD(**kwargs: Any) -> fields.String:
    return fields.String(
        allow_none=True,
        load_only=True,
        validate=validate.Length(max=500),
        metadata={
            "description": "Write-only: a token (GitHub: a fine-grained token with read "
            "access to the repository's contents) the clone of a private repository uses; "
            "stored encrypted on the app, never shown. Empty string: remove it."
        },
        **kwargs,
    )


class DeploySubmitSchema(JobOptionsSchema):
    class Meta:
        unknown = RAISE

    repo_url = fields.String(
        required=True,
        validate=validate.Length(min=1, max=300),
        metadata={
            "description": "https://HOST/OWNER/REPO on a host DEPLOY_ALLOWED_HOSTS allows.",
            "example": "https://github.com/octo/hello",
        },
    )
    ref = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.Length(max=200),
        metadata={
            "description": "Branch, tag or full commit id; default: the app's branch (else "
            "the repository's default branch). A branch or tag is remembered by the app."
        },
    )
    branch = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.Length(max=200),
        metadata={"description": "Another name for `ref`."},
    )
    container_port = fields.Integer(
        load_default=None, allow_none=True, validate=validate.Range(min=1, max=65535)
    )
    health_path = fields.String(
        load_default=None,
        validate=validate.Regexp(HEALTH_PATH),
        metadata={
            "description": "Path (and query) the health check GETs; starts with /. Default: "
            "the app's (a new app: /)."
        },
    )
    env = ENV_FIELD(
        load_default=None,
        metadata={
            "description": "Variables for the app: secrets, never returned or logged. "
            "Default: the app's."
        },
    )
    app = APP_NAME_FIELD(
        load_default=None,
        metadata={
            "description": "The app this deploy is a release of, created on first use "
            "(a platform-wide name). Default: derived from the repository and you."
        },
    )
    access_token = ACCESS_TOKEN_FIELD(load_default=None)
    max_attempts = fields.Integer(load_default=None, validate=validate.Range(min=1))

    @post_load
    def _one_ref(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        branch = data.pop("branch", None)
        if branch is not None and data.get("ref") not in (None, branch):
            raise ValidationError("Give `ref` or `branch`, not both.", "branch")
        if branch is not None:
            data["ref"] = branch
        return data


class DeploymentListQuerySchema(Schema):
    class Meta:
        unknown = EXCLUDE

    status = fields.String(validate=validate.Length(max=16))
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))
    cursor = fields.String(validate=validate.Length(max=200))


class DeploymentListSchema(Schema):
    items = fields.List(fields.Nested(DeploymentSchema), required=True)
    next_cursor = fields.String(allow_none=True)


class DeploymentLogsSchema(Schema):
    build = fields.List(fields.Nested(JobLogSchema))
    app = fields.String(allow_none=True, metadata={"description": "Recent container output."})
    app_captured_at = fields.DateTime(allow_none=True)
