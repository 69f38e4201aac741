"""The one mapping from a Docker engine failure to a job error.

An engine that is unreachable, restarting or failing inside (5xx) is the platform's problem:
the attempt is retried with backoff (`docker_unavailable`). An engine that understood the
request and refused it (4xx) refuses it again next time: the job fails at once with the
caller's code (`run_failed`, `build_failed`, ...). The sandbox, the deploy build and run, the
user networks and stops all decide the same way, here.
"""

from __future__ import annotations

from docker.errors import APIError, DockerException, ImageNotFound
from requests.exceptions import ConnectionError as RequestsConnectionError

from shared.errors import JobError, PermanentJobError, RetryableJobError

#: What a call to the engine raises when it fails (catch these, then call `engine_failure`).
ENGINE_ERRORS: tuple[type[Exception], ...] = (APIError, RequestsConnectionError, DockerException)


def engine_failure(
    error: Exception,
    refused_code: str | None = None,
    refused_message: str = "Docker refused the request",
    *,
    missing_image_is_retryable: bool = False,
) -> JobError:
    """The job error for `error`: permanent `refused_code` when the engine refused (4xx) and
    the caller names a code for that, else retryable `docker_unavailable`. A missing image is
    retryable where an image may still arrive (the processor image is built by the operator)."""
    refused = (
        refused_code is not None
        and isinstance(error, APIError)
        and error.status_code is not None
        and error.status_code < 500
        and not (missing_image_is_retryable and isinstance(error, ImageNotFound))
    )
    if refused:
        assert refused_code is not None
        return PermanentJobError(refused_code, f"{refused_message}: {error}")
    return RetryableJobError("docker_unavailable", f"Docker engine error: {error}")
