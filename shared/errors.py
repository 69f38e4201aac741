"""Errors a job can end an attempt with; the worker decides retry vs fail from the class."""

from __future__ import annotations


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


class JobConflict(Exception):
    """The job's current state does not allow the operation (HTTP 409)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
