"""The bench as a user of the platform's HTTP API: an account, submits, and a cheap poll."""

from __future__ import annotations

import json
import uuid
from typing import Any

import requests

API = "/api/v1"
ECHO_JOB = {"processor": "debug.echo", "params": {"message": "bench"}}
ACTIVE = ("queued", "running", "retrying")
FAILED = ("failed", "dead", "cancelled")
PAGE = 200  # the list endpoint's maximum


class ApiClient:
    """One user of one platform server. Not thread-safe: give each client thread its own."""

    def __init__(self, base: str, token: str | None = None) -> None:
        self.base = base.rstrip("/")
        self.session = requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    @classmethod
    def new_user(cls, base: str) -> ApiClient:
        """Register and log in a fresh user: the bench's jobs are then the user's only jobs,
        so listing them by status counts exactly the jobs being measured."""
        client = cls(base)
        email = f"bench-{uuid.uuid4().hex[:12]}@example.com"
        credentials = {"email": email, "password": "bench password 123"}
        client._call("POST", f"{API}/auth/register", 201, json=credentials)
        token = client._call("POST", f"{API}/auth/login", 200, json=credentials)["access_token"]
        client.session.headers["Authorization"] = f"Bearer {token}"
        return client

    @property
    def token(self) -> str:
        return self.session.headers["Authorization"].removeprefix("Bearer ")

    def _call(self, method: str, path: str, expect: int, **kwargs: Any) -> dict[str, Any]:
        response = self.session.request(method, self.base + path, timeout=30, **kwargs)
        if response.status_code != expect:
            raise RuntimeError(
                f"{method} {path}: expected {expect}, got {response.status_code}: "
                f"{response.text[:300]}"
            )
        return response.json()

    def submit_echo(self, message: str) -> str:
        job = dict(ECHO_JOB, params={"message": message})
        return self._call("POST", f"{API}/jobs", 202, json=job)["id"]

    def submit_echo_batch(self, messages: list[str]) -> list[str]:
        """One POST /jobs/batch of debug.echo jobs; their ids in order."""
        jobs = [dict(ECHO_JOB, params={"message": message}) for message in messages]
        body = self._call("POST", f"{API}/jobs/batch", 202, json={"jobs": jobs})
        return [job["id"] for job in body["items"]]

    def submit_file(self, processor: str, data: bytes, params: dict[str, Any]) -> str:
        form = {"processor": processor, "params": json.dumps(params)}
        files = {"file": ("sample.txt", data)}
        return self._call("POST", f"{API}/jobs/files", 202, data=form, files=files)["id"]

    def any_with_status(self, status: str) -> bool:
        """One small request: is at least one of the user's jobs in `status`?"""
        page = self._call("GET", f"{API}/jobs", 200, params={"status": status, "limit": 1})
        return bool(page["items"])

    def count_with_status(self, status: str, stop_at: int | None = None) -> int:
        """Count the user's jobs in `status` by walking the pages (200 jobs each)."""
        count, cursor = 0, None
        while True:
            params: dict[str, Any] = {"status": status, "limit": PAGE}
            if cursor:
                params["cursor"] = cursor
            page = self._call("GET", f"{API}/jobs", 200, params=params)
            count += len(page["items"])
            cursor = page["next_cursor"]
            if not cursor or (stop_at is not None and count >= stop_at):
                return count

    def close(self) -> None:
        self.session.close()
