"""Authentication: registration, login, refresh, logout (revocation) and the caller's profile."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify
from flask_jwt_extended import (
    create_access_token,
    create_refresh_token,
    decode_token,
    get_jwt,
    get_jwt_identity,
    jwt_required,
)
from flask_jwt_extended.exceptions import JWTExtendedException
from jwt import PyJWTError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from api.errors import ApiError, error_response
from api.extensions import jwt, redis_client
from api.openapi import doc
from api.quotas import check_login_allowed, clear_login_failures, record_login_failure
from api.schemas import (
    AccessTokenSchema,
    LoginSchema,
    LogoutSchema,
    RegisterSchema,
    TokenSchema,
    UserSchema,
)
from api.session import db_session, json_body
from shared.models import User
from shared.passwords import hash_password, verify_password

log = logging.getLogger(__name__)
bp = Blueprint("auth", __name__, url_prefix="/auth")

_REVOKED_PREFIX = "dockyard:revoked:"
_BAD_CREDENTIALS = "Email or password is incorrect."


def issue_tokens(user: User) -> dict[str, Any]:
    claims = {"role": user.role}
    return {
        "access_token": create_access_token(identity=str(user.id), additional_claims=claims),
        "refresh_token": create_refresh_token(identity=str(user.id), additional_claims=claims),
        "token_type": "Bearer",
        "expires_in": current_app.config["DOCKYARD_SETTINGS"].jwt_access_token_expires,
    }


def revoke(claims: dict[str, Any]) -> None:
    """Blocklist a token's jti until it would have expired anyway."""
    remaining = int(claims["exp"] - datetime.now(UTC).timestamp())
    if remaining > 0:
        redis_client().set(_REVOKED_PREFIX + claims["jti"], "1", ex=remaining)


def current_user_id() -> uuid.UUID:
    return uuid.UUID(get_jwt_identity())


def is_admin() -> bool:
    return get_jwt().get("role") == "admin"


def require_admin() -> None:
    if not is_admin():
        raise ApiError(403, "forbidden", "This endpoint is for administrators.")


def token_revoked(jti: str) -> bool:
    """Whether the token with this jti was revoked (logout); raises if Redis is down."""
    return bool(redis_client().exists(_REVOKED_PREFIX + jti))


@jwt.token_in_blocklist_loader
def _is_revoked(_header: dict[str, Any], payload: dict[str, Any]) -> bool:
    try:
        return token_revoked(payload["jti"])
    except Exception as error:  # fail closed: an unverifiable token is not accepted
        raise ApiError(
            503,
            "service_unavailable",
            "Token revocation cannot be checked right now; try again shortly.",
            {"component": "redis"},
        ) from error


@jwt.additional_claims_loader
def _no_extra(_identity: Any) -> dict[str, Any]:
    return {}


# Flask-JWT-Extended calls these from its own error handler, so they must return the
# response (raising here would turn into a 500).
@jwt.expired_token_loader
def _expired(_header: dict[str, Any], _payload: dict[str, Any]) -> Response:
    return error_response(
        401, "token_expired", "The token has expired; refresh it or log in again."
    )


@jwt.invalid_token_loader
def _invalid(reason: str) -> Response:
    return error_response(401, "invalid_token", "The token is invalid.", {"reason": reason})


@jwt.unauthorized_loader
def _missing(reason: str) -> Response:
    return error_response(
        401,
        "authentication_required",
        "A bearer token is required (Authorization: Bearer <token>).",
    )


@jwt.revoked_token_loader
def _revoked(_header: dict[str, Any], _payload: dict[str, Any]) -> Response:
    return error_response(401, "token_revoked", "The token has been revoked; log in again.")


@jwt.needs_fresh_token_loader
def _not_fresh(_header: dict[str, Any], _payload: dict[str, Any]) -> Response:
    return error_response(401, "fresh_token_required", "A fresh token is required.")


@jwt.token_verification_failed_loader
def _verification_failed(_header: dict[str, Any], _payload: dict[str, Any]) -> Response:
    return error_response(401, "invalid_token", "The token is invalid.")


@jwt.user_lookup_error_loader
def _user_gone(_header: dict[str, Any], _payload: dict[str, Any]) -> Response:
    return error_response(401, "invalid_token", "The token's user no longer exists.")


@bp.post("/register")
@doc(
    summary="Create an account",
    tags=["auth"],
    body=RegisterSchema,
    response=UserSchema,
    status=201,
    auth=None,
    errors=(409,),
)
def register() -> tuple[Response, int]:
    data = RegisterSchema().load(json_body())
    session = db_session()
    user = User(
        id=uuid.uuid4(),
        email=data["email"],
        password_hash=hash_password(data["password"]),
        role="user",
    )
    session.add(user)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise ApiError(409, "email_taken", "An account with this email already exists.") from None
    log.info("user registered", extra={"event": "user_registered", "user_id": str(user.id)})
    return jsonify(UserSchema().dump(user)), 201


@bp.post("/login")
@doc(
    summary="Exchange email and password for tokens",
    tags=["auth"],
    body=LoginSchema,
    response=TokenSchema,
    auth=None,
)
def login() -> Response:
    data = LoginSchema().load(json_body())
    email = data["email"].strip().lower()
    settings = current_app.config["DOCKYARD_SETTINGS"]
    check_login_allowed(settings, email)
    user = db_session().scalar(select(User).where(User.email == email))
    if not verify_password(user.password_hash if user else None, data["password"]):
        record_login_failure(settings, email)
        log.info("login refused", extra={"event": "login_failed"})
        raise ApiError(401, "invalid_credentials", _BAD_CREDENTIALS)
    assert user is not None
    clear_login_failures(settings, email)
    g.user_id = str(user.id)
    return jsonify(TokenSchema().dump(issue_tokens(user)))


@bp.post("/refresh")
@jwt_required(refresh=True)
@doc(
    summary="Get a new access token with a refresh token",
    tags=["auth"],
    response=AccessTokenSchema,
    auth="refresh",
)
def refresh() -> Response:
    claims = get_jwt()
    token = create_access_token(
        identity=get_jwt_identity(), additional_claims={"role": claims.get("role", "user")}
    )
    return jsonify(
        {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": current_app.config["DOCKYARD_SETTINGS"].jwt_access_token_expires,
        }
    )


@bp.post("/logout")
@jwt_required(verify_type=False)
@doc(
    summary="Revoke the presented token (and optionally a refresh token)",
    tags=["auth"],
    body=LogoutSchema,
    status=204,
)
def logout() -> tuple[str, int]:
    revoke(get_jwt())
    data = LogoutSchema().load(json_body(optional=True))
    if data.get("refresh_token"):
        try:
            other = decode_token(data["refresh_token"], allow_expired=True)
        except (JWTExtendedException, PyJWTError):
            raise ApiError(
                422,
                "validation_error",
                "The request is not valid.",
                {"fields": {"refresh_token": ["Not a valid token."]}},
            ) from None
        if other.get("sub") != get_jwt_identity():
            raise ApiError(
                422,
                "validation_error",
                "The request is not valid.",
                {"fields": {"refresh_token": ["Belongs to another user."]}},
            )
        revoke(other)
    return "", 204


@bp.get("/me")
@jwt_required()
@doc(summary="The authenticated user", tags=["auth"], response=UserSchema)
def me() -> Response:
    user = db_session().get(User, uuid.UUID(get_jwt_identity()))
    if user is None:
        raise ApiError(401, "invalid_token", "The token's user no longer exists.")
    return jsonify(UserSchema().dump(user))
