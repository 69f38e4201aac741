"""The two families of errors the domain raises.

- DomainError: a request the domain's rules refuse (a job in the wrong state, a name taken,
  a quota reached). It carries the HTTP status and stable code the API answers with, so the
  API's error handler (api/errors.py) answers every one the same way, without knowing it.
- JobError: how a job's attempt failed; the worker decides retry vs fail from the class.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class DomainError(Exception):
    """A refusal with a stable snake_case `code` and the HTTP `status` it is answered with.

    A subclass sets its `status` and `code` as class attributes (a constructor argument
    overrides them); `details` (JSON) and `headers` (e.g. Retry-After) go into the answer."""

    status: int = 400
    code: str = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        details: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.details: dict[str, Any] = dict(details or {})
        self.headers: dict[str, str] = dict(headers or {})


class JobError(Exception):
    """An attempt failed. `code` is a stable snake_case identifier shown to users."""

    retryable: bool = False

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class RetryableJobError(JobError):
    """A transient failure (a dependency down): the attempt is retried with backoff."""

    retryable = True


class PermanentJobError(JobError):
    """The input or the request is at fault: retrying cannot help, the job fails at once."""

    retryable = False


class JobCancelled(Exception):
    """Raised inside a running job when its owner asked for cancellation."""


class JobConflict(DomainError):
    """The job's current state does not allow the operation (HTTP 409)."""

    status = 409

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code=code)
