"""The SDK's exceptions: one class per HTTP error class, each carrying the API's error
shape (`{"error": {"code", "message", "details", "request_id"}}`), so callers can branch
on the class and still read the stable `code`."""

from __future__ import annotations

from datetime import UTC
from typing import Any

import httpx

__all__ = [
    "APIConnectionError",
    "AuthenticationError",
    "BadRequest",
    "ClientError",
    "Conflict",
    "DockyardError",
    "Gone",
    "JobFailed",
    "NotFound",
    "PayloadTooLarge",
    "PermissionDenied",
    "RateLimited",
    "ServerError",
    "ServiceUnavailable",
    "UnsupportedMediaType",
    "ValidationError",
    "error_from_response",
]


class DockyardError(Exception):
    """Base of every error the SDK raises: the API's error fields, whatever the class."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str = "error",
        details: dict[str, Any] | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details: dict[str, Any] = details or {}
        self.request_id = request_id
        self.retry_after = retry_after

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status={self.status!r}, code={self.code!r}, "
            f"message={self.message!r}, request_id={self.request_id!r})"
        )


class ClientError(DockyardError):
    """A 4xx answer: the request must change before it can succeed."""


class BadRequest(ClientError):
    """400: the request could not be understood (malformed JSON, bad header)."""


class AuthenticationError(ClientError):
    """401: no token, a bad, expired or revoked one, or wrong credentials."""


class PermissionDenied(ClientError):
    """403: authenticated, but not allowed (e.g. an admin endpoint as a user)."""


class NotFound(ClientError):
    """404: no such resource, or not one of yours."""


class Conflict(ClientError):
    """409: the resource's state forbids this now (cancel a finished job, a taken name)."""


class Gone(ClientError):
    """410: it existed but was removed (an expired job result)."""


class PayloadTooLarge(ClientError):
    """413: the body is larger than the server's MAX_CONTENT_LENGTH."""


class UnsupportedMediaType(ClientError):
    """415: the uploaded file's type is not one the processor accepts."""


class ValidationError(ClientError):
    """422: the request is well-formed but invalid; `details["fields"]` names the fields."""


class RateLimited(ClientError):
    """429: a quota or rate limit; `retry_after` says when to try again (already retried
    up to the client's `max_retries` when this reaches the caller)."""


class ServerError(DockyardError):
    """5xx: the server failed; the request may succeed later."""


class ServiceUnavailable(ServerError):
    """503: a dependency of the server is down; retried after Retry-After like 429."""


class APIConnectionError(DockyardError):
    """The server could not be reached, or did not answer in time (no HTTP status)."""


class JobFailed(DockyardError):
    """A job ended without succeeding. Raised only where a method documents it; `wait()`
    returns the finished job whatever its outcome."""


_BY_STATUS: dict[int, type[DockyardError]] = {
    400: BadRequest,
    401: AuthenticationError,
    403: PermissionDenied,
    404: NotFound,
    409: Conflict,
    410: Gone,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    422: ValidationError,
    429: RateLimited,
    503: ServiceUnavailable,
}


def error_class(status: int) -> type[DockyardError]:
    """The exception class for an HTTP error status."""
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    if 400 <= status < 500:
        return ClientError
    if status >= 500:
        return ServerError
    return DockyardError


def retry_after_seconds(response: httpx.Response) -> float | None:
    """The Retry-After header in seconds (delta-seconds or an HTTP date), or None."""
    raw = response.headers.get("Retry-After")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    from datetime import datetime
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def error_from_response(response: httpx.Response) -> DockyardError:
    """The exception for an error answer, from the API's JSON error shape; a non-JSON
    body (a proxy's error page) still gives the right class with the body as message."""
    code, message, details, request_id = "http_error", "", {}, None
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code = str(error.get("code") or code)
        message = str(error.get("message") or "")
        raw_details = error.get("details")
        details = raw_details if isinstance(raw_details, dict) else {}
        request_id = error.get("request_id")
    else:
        message = response.text[:500].strip()
    request_id = request_id or response.headers.get("X-Request-ID")
    cls = error_class(response.status_code)
    return cls(
        message or response.reason_phrase or f"HTTP {response.status_code}",
        status=response.status_code,
        code=code,
        details=details,
        request_id=request_id,
        retry_after=retry_after_seconds(response),
    )
