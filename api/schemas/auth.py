"""Registration, login, token refresh and logout; the caller's profile."""

from __future__ import annotations

from typing import Any

from marshmallow import EXCLUDE, Schema, fields, post_load, validate


class RegisterSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    email = fields.Email(required=True, validate=validate.Length(max=254))
    password = fields.String(
        required=True, load_only=True, validate=validate.Length(min=8, max=1024)
    )

    @post_load
    def normalise(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        data["email"] = data["email"].strip().lower()
        return data


class LoginSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    email = fields.String(required=True, validate=validate.Length(min=1, max=254))
    password = fields.String(required=True, load_only=True, validate=validate.Length(max=1024))


class LogoutSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    refresh_token = fields.String(
        load_default=None,
        metadata={"description": "Also revoke this refresh token (recommended)."},
    )


class UserSchema(Schema):
    id = fields.UUID(required=True)
    email = fields.String(required=True)
    role = fields.String(required=True, validate=validate.OneOf(["user", "admin"]))
    created_at = fields.DateTime()


class TokenSchema(Schema):
    access_token = fields.String(required=True)
    refresh_token = fields.String(required=True)
    token_type = fields.String(required=True, metadata={"example": "Bearer"})
    expires_in = fields.Integer(required=True, metadata={"description": "Seconds."})
