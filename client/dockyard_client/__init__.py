"""Dockyard's Python SDK: `Client` for the job, deploy and admin API, the exceptions it
raises, and `verify_webhook_signature` for receivers of Dockyard's webhooks."""

from __future__ import annotations

from dockyard_client.client import TERMINAL_EVENTS, TERMINAL_STATUSES, Client
from dockyard_client.errors import (
    APIConnectionError,
    AuthenticationError,
    BadRequest,
    ClientError,
    Conflict,
    DockyardError,
    Gone,
    JobFailed,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    RateLimited,
    ServerError,
    ServiceUnavailable,
    UnsupportedMediaType,
    ValidationError,
    error_from_response,
)
from dockyard_client.signatures import verify_webhook_signature

__version__ = "0.1.0"

__all__ = [
    "TERMINAL_EVENTS",
    "TERMINAL_STATUSES",
    "APIConnectionError",
    "AuthenticationError",
    "BadRequest",
    "Client",
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
    "__version__",
    "error_from_response",
    "verify_webhook_signature",
]
