"""One error shape for every 4xx/5xx answer, whatever raised it.

{"error": {"code", "message", "details", "request_id"}}
"""

from __future__ import annotations

import logging
import traceback
from typing import Any

from flask import Flask, Response, g, jsonify
from kombu.exceptions import OperationalError as BrokerError
from marshmallow import ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError
from werkzeug.exceptions import HTTPException

from shared.deploy.jobs import TooManyDeployments
from shared.errors import DomainError
from shared.storage.base import StorageError

log = logging.getLogger(__name__)
_REDIS_DOWN = (BrokerError, RedisConnectionError, RedisTimeoutError)

_HTTP_CODES = {
    400: ("bad_request", "The request could not be understood."),
    401: ("authentication_required", "Authentication is required."),
    403: ("forbidden", "You are not allowed to do this."),
    404: ("not_found", "The requested resource does not exist."),
    405: ("method_not_allowed", "This method is not allowed on this URL."),
    409: ("conflict", "The request conflicts with the current state."),
    413: ("payload_too_large", "The request body is larger than the configured maximum."),
    415: ("unsupported_media_type", "This content type is not supported here."),
    422: ("validation_error", "The request is not valid."),
    429: ("rate_limited", "Too many requests."),
    500: ("internal_error", "An internal error occurred."),
    503: ("service_unavailable", "A dependency is unavailable; try again shortly."),
}


class ApiError(DomainError):
    """A refusal the API itself decides (a bad header, a rate limit, a missing resource),
    raised anywhere in a request; answered like every DomainError."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, code=code, status=status, details=details, headers=headers)


def not_found(what: str = "resource") -> ApiError:
    return ApiError(404, "not_found", f"The requested {what} does not exist.")


def error_response(
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body = {
        "error": {
            "code": code,
            "message": message,
            "details": details or {},
            "request_id": getattr(g, "request_id", None),
        }
    }
    response = jsonify(body)
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(Exception)
    def handle_any(error: Exception) -> Response:
        for answer in (_refusal, _database_error, _dependency_down, _http_error):
            response = answer(error)
            if response is not None:
                return response
        if isinstance(error, DBAPIError):
            _log_database_error(error, logging.ERROR, "unhandled_error")
        else:
            log.exception("unhandled error", extra={"event": "unhandled_error"})
        return error_response(500, *_HTTP_CODES[500])


def _refusal(error: Exception) -> Response | None:
    """A rule refused the request: its own status and code."""
    if isinstance(error, DomainError):  # ApiError, JobConflict, IllegalTransition, AppNameTaken...
        return error_response(error.status, error.code, error.message, error.details, error.headers)
    if isinstance(error, TooManyDeployments):  # shared/deploy/ (not a DomainError yet)
        return error_response(
            429, error.code, error.message, {"limit": error.limit, "active": error.active}
        )
    if isinstance(error, ValidationError):
        return error_response(
            422,
            "validation_error",
            "The request is not valid.",
            {"fields": error.normalized_messages()},
        )
    return None


def _database_error(error: Exception) -> Response | None:
    """PostgreSQL down (503), a value it refuses (422), a row changed under the request (409)."""
    if (
        isinstance(error, DBAPIError)
        and error.connection_invalidated
        or isinstance(error, OperationalError)
    ):
        log.warning("database unavailable", exc_info=True, extra={"event": "db_unavailable"})
        return error_response(
            503,
            "service_unavailable",
            "The database is unavailable; try again shortly.",
            {"component": "postgres"},
        )
    if isinstance(error, DataError) or _is_nul_literal(error):
        # A value PostgreSQL refuses (out of range, NUL, bad escape): the request's fault.
        _log_database_error(error, logging.INFO, "database_data_error")
        return error_response(
            422,
            "invalid_request",
            "A value in the request cannot be stored (out of range or not valid text).",
        )
    if isinstance(error, IntegrityError):
        # A row the request refers to vanished (a deleted account's token) or a unique
        # value was taken by a concurrent request: the state changed under the request.
        _log_database_error(error, logging.WARNING, "database_integrity_error")
        return error_response(
            409, "conflict", "The request conflicts with the current state; try again."
        )
    return None


def _dependency_down(error: Exception) -> Response | None:
    """Redis, the broker or file storage unreachable where a view did not handle it itself."""
    if isinstance(error, _REDIS_DOWN):
        log.warning("redis unavailable", exc_info=True, extra={"event": "redis_unavailable"})
        return error_response(
            503,
            "service_unavailable",
            "A dependency is unavailable; try again shortly.",
            {"component": "redis"},
        )
    if isinstance(error, StorageError):
        log.warning("storage unavailable", exc_info=True, extra={"event": "storage_error"})
        return error_response(
            503,
            "storage_unavailable",
            "File storage is unavailable; try again shortly.",
            {"component": "storage"},
        )
    return None


def _http_error(error: Exception) -> Response | None:
    """Werkzeug's own (404 for an unknown URL, 405, 413...): one of our codes for its status."""
    if not isinstance(error, HTTPException):
        return None
    status = error.code or 500
    code, message = _HTTP_CODES.get(status, ("http_error", error.description or ""))
    headers = {}
    if status == 405 and error.valid_methods:  # type: ignore[attr-defined]
        headers["Allow"] = ", ".join(error.valid_methods)  # type: ignore[attr-defined]
    return error_response(status, code, message, headers=headers)


def _is_nul_literal(error: Exception) -> bool:
    """psycopg2 refuses a NUL in a text parameter with a plain ValueError before sending it."""
    return type(error) is ValueError and "NUL (0x00)" in str(error)


def _log_database_error(error: Exception, level: int, event: str) -> None:
    """Log a database error without the values in it.

    Engines hide bound parameters (hide_parameters=True), but PostgreSQL's own message and
    DETAIL quote values too ("Key (email)=(...) already exists", "invalid input syntax for
    type uuid: ..."). So the log keeps the error class, SQLSTATE and the stack, never the
    message: a deploy `env` value or a password hash must not reach the logs this way.
    """
    original = getattr(error, "orig", None) or error
    log.log(
        level,
        "database error %s",
        type(original).__name__,
        extra={
            "event": event,
            "error_class": f"{type(original).__module__}.{type(original).__name__}",
            "sqlstate": getattr(original, "pgcode", None),
            "stack": "".join(traceback.format_tb(error.__traceback__)),
        },
    )
