"""Helpers shared by the tests: accounts, tokens, waiting on conditions (never sleeps), free
ports, and the API's error shape."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from flask.testing import FlaskClient

T = TypeVar("T")
PASSWORD = "correct horse battery"


def wait_for(
    condition: Callable[[], T],
    timeout: float = 20.0,
    interval: float = 0.05,
    message: str = "condition",
) -> T:
    """Poll until condition() is truthy; fail with the last value after `timeout`."""
    deadline = time.monotonic() + timeout
    value = condition()
    while not value:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}: {value!r}")
        time.sleep(interval)
        value = condition()
    return value


def free_port() -> int:
    """A loopback port free right now, for a server a test starts (the kernel picks it; the
    server binds it a moment later, a race no test here has lost)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def api_error(response: Any, status: int | None = None, code: str | None = None) -> dict[str, Any]:
    """The error of an API answer (a Flask test response or a `requests` one), after checking
    it has the one documented shape (api/errors.py): a body of only `{"error": {...}}` with a
    string `code` and `message`, a `details` object, and the `request_id` the X-Request-ID
    header carries; and, when given, the status and the code."""
    body = response.get_json() if hasattr(response, "get_json") else response.json()
    if status is not None:
        assert response.status_code == status, body
    assert isinstance(body, dict), body
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "message", "details", "request_id"}, body
    assert isinstance(error["code"], str), body
    assert isinstance(error["message"], str), body
    assert isinstance(error["details"], dict), body
    assert error["request_id"] == response.headers["X-Request-ID"], body
    if code is not None:
        assert error["code"] == code, body
    return error


def register(
    client: FlaskClient, email: str | None = None, password: str = PASSWORD
) -> dict[str, Any]:
    email = email or f"user-{uuid.uuid4().hex[:12]}@example.com"
    response = client.post("/api/v1/auth/register", json={"email": email, "password": password})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def login(client: FlaskClient, email: str, password: str = PASSWORD) -> dict[str, Any]:
    response = client.post("/api/v1/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


class User:
    """A registered, logged-in user and a client that sends their token."""

    def __init__(self, client: FlaskClient, role: str = "user") -> None:
        self.client = client
        self.profile = register(client)
        self.email = self.profile["email"]
        if role == "admin":
            from api.cli import ensure_admin

            ensure_admin(self.email, None)
        self.tokens = login(client, self.email)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens['access_token']}"}

    def get(self, path: str, **kwargs: Any):
        return self.client.get(
            path, headers={**self.headers, **kwargs.pop("headers", {})}, **kwargs
        )

    def post(self, path: str, **kwargs: Any):
        return self.client.post(
            path, headers={**self.headers, **kwargs.pop("headers", {})}, **kwargs
        )

    def delete(self, path: str, **kwargs: Any):
        return self.client.delete(
            path, headers={**self.headers, **kwargs.pop("headers", {})}, **kwargs
        )

    def submit(
        self, processor: str, params: dict[str, Any] | None = None, expect: int = 202, **extra: Any
    ) -> dict[str, Any]:
        headers = extra.pop("headers", {})
        response = self.post(
            "/api/v1/jobs",
            json={"processor": processor, "params": params or {}, **extra},
            headers=headers,
        )
        assert response.status_code == expect, response.get_json()
        return response.get_json()

    def upload(
        self,
        processor: str,
        data: bytes,
        params: dict[str, Any] | None = None,
        filename: str = "input.bin",
        **extra: Any,
    ):
        """POST /jobs/files as multipart; returns the raw response."""
        import io
        import json

        form: dict[str, Any] = {"processor": processor, "file": (io.BytesIO(data), filename)}
        if params is not None:
            form["params"] = json.dumps(params)
        headers = extra.pop("headers", {})
        form.update({name: str(value) for name, value in extra.items()})
        return self.post(
            "/api/v1/jobs/files", data=form, content_type="multipart/form-data", headers=headers
        )

    def submit_file(
        self, processor: str, data: bytes, params: dict[str, Any] | None = None, **extra: Any
    ) -> dict[str, Any]:
        response = self.upload(processor, data, params, **extra)
        assert response.status_code == 202, response.get_json()
        return response.get_json()

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.get(f"/api/v1/jobs/{job_id}")
        assert response.status_code == 200, response.get_json()
        return response.get_json()

    def events(self, job_id: str) -> list[dict[str, Any]]:
        response = self.get(f"/api/v1/jobs/{job_id}/events")
        assert response.status_code == 200, response.get_json()
        return response.get_json()["items"]

    def wait_status(self, job_id: str, *statuses: str, timeout: float = 30.0) -> dict[str, Any]:
        return wait_for(
            lambda: (job := self.job(job_id))["status"] in statuses and job,
            timeout=timeout,
            message=f"job {job_id} to reach {statuses}",
        )


def direct_url(deployed: dict) -> str:
    """A deployment's app straight at its leased port (a deploy job's result or a
    deployment), bypassing the reverse proxy: `url` is the app's routed URL."""
    return f"http://127.0.0.1:{deployed['port']}"
