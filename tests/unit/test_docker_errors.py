"""The one mapping from an engine failure to a job error (workers/docker_errors.py)."""

from __future__ import annotations

import pytest
import requests
from docker.errors import APIError, DockerException, ImageNotFound

from shared.errors import PermanentJobError, RetryableJobError
from workers.docker_errors import engine_failure


def api_error(status: int, cls: type[APIError] = APIError) -> APIError:
    response = requests.Response()
    response.status_code = status
    return cls("engine said no", response=response)


@pytest.mark.parametrize(
    "error",
    [
        api_error(500),
        api_error(503),
        requests.ConnectionError("connection refused"),
        DockerException("socket gone"),
    ],
)
def test_an_unreachable_or_failing_engine_is_retryable(error: Exception) -> None:
    mapped = engine_failure(error, "build_failed", "Docker refused the build")
    assert isinstance(mapped, RetryableJobError) and mapped.code == "docker_unavailable"


def test_a_refusal_is_permanent_with_the_callers_code() -> None:
    mapped = engine_failure(api_error(400), "run_failed", "Docker refused to run the app")
    assert isinstance(mapped, PermanentJobError) and mapped.code == "run_failed"
    assert mapped.message.startswith("Docker refused to run the app: ")


def test_without_a_refusal_code_every_failure_is_retryable() -> None:
    assert isinstance(engine_failure(api_error(409)), RetryableJobError)


def test_a_missing_image_is_retryable_only_where_it_may_still_arrive() -> None:
    missing = api_error(404, ImageNotFound)
    assert isinstance(engine_failure(missing, "sandbox_error"), PermanentJobError)
    retried = engine_failure(missing, "sandbox_error", missing_image_is_retryable=True)
    assert isinstance(retried, RetryableJobError)
