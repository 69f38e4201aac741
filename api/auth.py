"""Authentication: registration, login, refresh, logout (revocation) and the caller's profile.

Every token of one login shares a family id (the `fam` claim). A refresh rotates: it answers
a new refresh token and marks the presented one used. Presenting a used refresh token again
means two parties hold it (one of them stole it), so the whole family is revoked: every
access and refresh token of that login is refused from then on. Revocations (tokens and
families) live in Redis until the longest token they cover would have expired anyway.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from flask import Blueprint, Response, g, jsonify
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
from redis.exceptions import RedisError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from api.errors import ApiError, error_response
from api.extensions import jwt, settings
from api.operation import doc
from api.quotas import (
    check_login_allowed,
    clear_login_failures,
    limit_request_body,
    password_hashing,
    record_login_failure,
)
from api.revocation import revoke, revoke_family, spend_refresh_token, token_revoked
from api.schemas.auth import LoginSchema, LogoutSchema, RegisterSchema, TokenSchema, UserSchema
from api.session import db_session, json_body
from shared.models import User
from shared.security.passwords import hash_password, verify_password

log = logging.getLogger(__name__)
bp = Blueprint("auth", __name__, url_prefix="/auth")
# Every request's body (but an upload's) is held to MAX_JSON_BYTES before the view runs.
bp.before_app_request(limit_request_body)

_BAD_CREDENTIALS = "Email or password is incorrect."
_REUSED = "This refresh token was already used; every token of this login is now revoked."


def issue_tokens(user: User, family: str | None = None) -> dict[str, Any]:
    """Access and refresh tokens carrying the user's role and the login's family id."""
    claims = {"role": user.role, "fam": family or uuid.uuid4().hex}
    return {
        "access_token": create_access_token(identity=str(user.id), additional_claims=claims),
        "refresh_token": create_refresh_token(identity=str(user.id), additional_claims=claims),
        "token_type": "Bearer",
        "expires_in": settings().jwt_access_token_expires,
    }


@jwt.token_in_blocklist_loader
def _is_revoked(_header: dict[str, Any], payload: dict[str, Any]) -> bool:
    try:
        return token_revoked(payload)
    except RedisError as error:  # fail closed: an unverifiable token is not accepted
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
    if g.pop("refresh_token_reused", False):
        return error_response(401, "token_revoked", _REUSED, {"reason": "refresh_token_reused"})
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
    errors=(409, 413, 429),
)
def register() -> tuple[Response, int]:
    data = RegisterSchema().load(json_body())
    with password_hashing(settings()):
        password_hash = hash_password(data["password"])
    session = db_session()
    user = User(id=uuid.uuid4(), email=data["email"], password_hash=password_hash, role="user")
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
    errors=(401, 413, 429),
)
def login() -> Response:
    data = LoginSchema().load(json_body())
    email = data["email"].strip().lower()
    config = settings()
    check_login_allowed(config, email)
    user = db_session().scalar(select(User).where(User.email == email))
    with password_hashing(config):
        verified = verify_password(user.password_hash if user else None, data["password"])
    if not verified:
        record_login_failure(config, email)
        log.info("login refused", extra={"event": "login_failed"})
        raise ApiError(401, "invalid_credentials", _BAD_CREDENTIALS)
    assert user is not None
    clear_login_failures(config, email)
    g.user_id = str(user.id)
    return jsonify(TokenSchema().dump(issue_tokens(user)))


@bp.post("/refresh")
@jwt_required(refresh=True)
@doc(
    summary="Rotate: a new access and refresh token; the presented refresh token is spent",
    tags=["auth"],
    response=TokenSchema,
    auth="refresh",
    errors=(401, 429),
)
def refresh() -> Response:
    claims = get_jwt()
    try:
        spent = spend_refresh_token(claims)
        if not spent:  # a concurrent refresh with the same token got there first
            revoke_family(claims.get("fam"))
    except RedisError as error:
        raise ApiError(
            503,
            "service_unavailable",
            "Tokens cannot be issued right now; try again shortly.",
            {"component": "redis"},
        ) from error
    if not spent:
        raise ApiError(401, "token_revoked", _REUSED, {"reason": "refresh_token_reused"})
    # The role comes from the database, not the old token: a demoted admin's refresh is a
    # user's token, a deleted user's refresh is refused.
    user = db_session().get(User, uuid.UUID(get_jwt_identity()))
    if user is None:
        raise ApiError(401, "invalid_token", "The token's user no longer exists.")
    g.user_id = str(user.id)
    return jsonify(TokenSchema().dump(issue_tokens(user, claims.get("fam"))))


@bp.post("/logout")
@jwt_required(verify_type=False)
@doc(
    summary="End the login: revoke the presented token, the given refresh token, and every "
    "other token of their login",
    tags=["auth"],
    body=LogoutSchema,
    status=204,
)
def logout() -> tuple[str, int]:
    revoke(get_jwt())
    revoke_family(get_jwt().get("fam"))
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
        revoke_family(other.get("fam"))
    return "", 204


@bp.get("/me")
@jwt_required()
@doc(summary="The authenticated user", tags=["auth"], response=UserSchema)
def me() -> Response:
    user = db_session().get(User, uuid.UUID(get_jwt_identity()))
    if user is None:
        raise ApiError(401, "invalid_token", "The token's user no longer exists.")
    return jsonify(UserSchema().dump(user))
