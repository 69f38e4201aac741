"""`Client`: the Dockyard API over HTTP, with the chores every caller would otherwise
repeat: the `/api/v1` prefix, the bearer token and its refresh, idempotency keys on
submissions, bounded retries after 429/503 `Retry-After`, cursor pagination as iterators,
the error shape as exceptions, live events as iterators, and streamed uploads and
downloads."""

from __future__ import annotations

import json
import mimetypes
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from dockyard_client import sse
from dockyard_client.errors import (
    APIConnectionError,
    AuthenticationError,
    error_from_response,
)

__all__ = ["TERMINAL_EVENTS", "TERMINAL_STATUSES", "Client"]

API_PREFIX = "/api/v1"
#: A job in one of these statuses has finished (wait() returns it).
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "dead", "cancelled"})
#: The event types that end a job's event stream.
TERMINAL_EVENTS = frozenset({"succeeded", "failed", "dead_lettered", "cancelled"})
MAX_RETRY_WAIT = 30.0  # seconds: the longest one Retry-After wait the SDK honours
DEFAULT_RETRY_WAIT = 1.0  # when a 429/503 carries no Retry-After
_RETRIED_STATUSES = frozenset({429, 503})
_CHUNK = 64 * 1024

#: `on_tokens(access_token, refresh_token)`: told of every new pair, e.g. to save it.
TokensCallback = Callable[[str, "str | None"], None]
#: A JSON object as the API answers it.
Json = dict[str, Any]


def _pause(seconds: float) -> None:
    """Wait before a retry (one place, so tests can observe the waits)."""
    time.sleep(seconds)


def _api_root(base_url: str) -> str:
    root = base_url.rstrip("/")
    return root if root.endswith(API_PREFIX) else root + API_PREFIX


def _drop_none(values: Mapping[str, Any]) -> Json:
    return {key: value for key, value in values.items() if value is not None}


def _job_options(
    *,
    max_attempts: int | None,
    priority: str | None,
    labels: Mapping[str, str] | None,
    run_at: str | None,
    delay_seconds: int | None,
) -> Json:
    return _drop_none(
        {
            "max_attempts": max_attempts,
            "priority": priority,
            "labels": dict(labels) if labels is not None else None,
            "run_at": run_at,
            "delay_seconds": delay_seconds,
        }
    )


class Client:
    """A session with one Dockyard server.

    `base_url` is the server's root (`http://127.0.0.1:8000`) or its API root (ending in
    `/api/v1`). Give a `token` you already have, or call `login()`. With a refresh token
    (from `login()` or `refresh_token=`), an expired access token is refreshed once and the
    request repeated; `on_tokens(access, refresh)` is called whenever the tokens change so
    a caller can persist them. 429 and 503 answers of requests that are safe to repeat are
    retried after their Retry-After (at most `max_retries` times, each wait capped at 30 s).
    Use it as a context manager, or call `close()`.
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        refresh_token: str | None = None,
        timeout: float = 30.0,
        max_retries: int = 3,
        on_tokens: TokensCallback | None = None,
    ) -> None:
        self.base_url = _api_root(base_url)
        self.token = token
        self.refresh_token = refresh_token
        self.timeout = timeout
        self.max_retries = max_retries
        self.on_tokens = on_tokens
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout)
        #: How long watch()/follow_build() wait between reconnections and polls (seconds).
        self.reconnect_delay = 0.5

    # --- session ----------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _set_tokens(self, access: str, refresh: str | None) -> None:
        self.token = access
        self.refresh_token = refresh
        if self.on_tokens is not None:
            self.on_tokens(access, refresh)

    def login(self, email: str, password: str) -> Json:
        """Log in with email and password; keeps the access and refresh tokens (the
        refresh token renews the access token when it expires). Returns the token answer."""
        body: Json = self._json("POST", "/auth/login", json={"email": email, "password": password})
        self._set_tokens(body["access_token"], body.get("refresh_token"))
        return body

    def register(self, email: str, password: str) -> Json:
        """Create an account (then `login()`); returns the user."""
        user: Json = self._json(
            "POST", "/auth/register", json={"email": email, "password": password}
        )
        return user

    def refresh(self) -> Json:
        """Trade the refresh token for a new access and refresh token (done automatically
        when a request meets an expired access token)."""
        if not self.refresh_token:
            raise AuthenticationError("No refresh token; log in again.", code="no_refresh_token")
        response = self._send(
            "POST",
            "/auth/refresh",
            headers={"Authorization": f"Bearer {self.refresh_token}"},
            authenticate=False,
        )
        if response.is_error:
            raise error_from_response(response)
        body: Json = response.json()
        self._set_tokens(body["access_token"], body.get("refresh_token"))
        return body

    def logout(self) -> None:
        """End the login on the server (the access and refresh tokens are revoked) and
        forget the tokens."""
        if self.token:
            body = {"refresh_token": self.refresh_token} if self.refresh_token else None
            self._request("POST", "/auth/logout", json=body)
        self.token = None
        self.refresh_token = None

    def whoami(self) -> Json:
        """The authenticated user (GET /auth/me)."""
        user: Json = self._json("GET", "/auth/me")
        return user

    # --- transport --------------------------------------------------------------------------

    def _headers(self, extra: Mapping[str, str] | None, authenticate: bool) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if authenticate and self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        headers.update(extra or {})
        return headers

    def _send(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        authenticate: bool = True,
        stream: bool = False,
        **kwargs: Any,
    ) -> httpx.Response:
        """One HTTP exchange; connection failures become APIConnectionError."""
        request = self._http.build_request(
            method, path, headers=self._headers(headers, authenticate), **kwargs
        )
        try:
            return self._http.send(request, stream=stream)
        except httpx.TimeoutException as error:
            raise APIConnectionError(
                f"{method} {path}: no answer within {self.timeout} s", code="timeout"
            ) from error
        except httpx.TransportError as error:
            raise APIConnectionError(
                f"{method} {path}: {error}", code="connection_error"
            ) from error

    def _request(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        retry: bool | None = None,
        rewind: Callable[[], None] | None = None,
        stream: bool = False,
        **kwargs: Any,
    ) -> httpx.Response:
        """A request with the token refresh and the bounded 429/503 retries; raises the
        DockyardError of an error answer. `retry`: whether repeating it is safe (default:
        GETs, and anything carrying an Idempotency-Key); `rewind` readies a streamed body
        to be sent again."""
        if retry is None:
            retry = method == "GET" or bool(headers and "Idempotency-Key" in headers)
        refreshed = False
        retries = 0
        while True:
            response = self._send(method, path, headers=headers, stream=stream, **kwargs)
            if not response.is_error:
                return response
            if stream:
                response.read()
            error = error_from_response(response)
            if (
                response.status_code == 401
                and error.code == "token_expired"
                and self.refresh_token
                and not refreshed
            ):
                refreshed = True
                self.refresh()
            elif retry and response.status_code in _RETRIED_STATUSES and retries < self.max_retries:
                retries += 1
                wait = error.retry_after if error.retry_after is not None else DEFAULT_RETRY_WAIT
                _pause(min(wait, MAX_RETRY_WAIT))
            else:
                raise error
            if rewind is not None:
                rewind()

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._request(method, path, **kwargs)
        if response.status_code == 204 or not response.content:
            return {}
        return response.json()

    def _pages(self, path: str, params: Mapping[str, Any] | None = None) -> Iterator[Json]:
        """Every item of a cursor-paginated list, fetching the next page only when the
        caller gets that far."""
        query: dict[str, Any] = _drop_none(params or {})
        while True:
            body = self._json("GET", path, params=query)
            yield from body.get("items", [])
            cursor = body.get("next_cursor")
            if not cursor:
                return
            query["cursor"] = cursor

    # --- jobs -------------------------------------------------------------------------------

    def processors(self) -> list[Json]:
        """The processors jobs can name (name, kind, input, accepted content types...)."""
        body = self._json("GET", "/processors")
        return list(body["items"]) if isinstance(body, dict) else list(body)

    def submit(
        self,
        processor: str,
        params: Mapping[str, Any] | None = None,
        *,
        max_attempts: int | None = None,
        priority: str | None = None,
        labels: Mapping[str, str] | None = None,
        run_at: str | None = None,
        delay_seconds: int | None = None,
        idempotency_key: str | None = None,
    ) -> Json:
        """Submit a job that needs no upload (e.g. diagnostics); returns the job. An
        Idempotency-Key is generated unless given, so a retried submission creates one job."""
        body = {
            "processor": processor,
            "params": dict(params or {}),
            **_job_options(
                max_attempts=max_attempts,
                priority=priority,
                labels=labels,
                run_at=run_at,
                delay_seconds=delay_seconds,
            ),
        }
        headers = {"Idempotency-Key": idempotency_key or str(uuid.uuid4())}
        result: Json = self._json("POST", "/jobs", json=body, headers=headers)
        return result

    def submit_file(
        self,
        path: str | Path,
        processor: str,
        params: Mapping[str, Any] | None = None,
        *,
        max_attempts: int | None = None,
        priority: str | None = None,
        labels: Mapping[str, str] | None = None,
        run_at: str | None = None,
        delay_seconds: int | None = None,
        idempotency_key: str | None = None,
        content_type: str | None = None,
    ) -> Json:
        """Upload a file and submit a file job; returns the job. The file is streamed from
        disk in chunks as the request is sent, never read whole into memory, so files
        larger than the caller's memory upload."""
        source = Path(path)
        options = _job_options(
            max_attempts=max_attempts,
            priority=priority,
            labels=labels,
            run_at=run_at,
            delay_seconds=delay_seconds,
        )
        form: dict[str, str] = {"processor": processor, "params": json.dumps(dict(params or {}))}
        for name, value in options.items():
            form[name] = json.dumps(value) if name == "labels" else str(value)
        kind = content_type or mimetypes.guess_type(source.name)[0] or "application/octet-stream"
        headers = {"Idempotency-Key": idempotency_key or str(uuid.uuid4())}
        with source.open("rb") as handle:
            files = {"file": (source.name, handle, kind)}
            result: Json = self._json(
                "POST",
                "/jobs/files",
                data=form,
                files=files,
                headers=headers,
                rewind=lambda: handle.seek(0),
            )
        return result

    def submit_batch(
        self, jobs: list[Mapping[str, Any]], *, idempotency_key: str | None = None
    ) -> list[Json]:
        """Submit many upload-less jobs at once: all are created, or none (422
        `invalid_batch` with each bad job's index in `details["errors"]`). Each item is a
        `submit()` body: {"processor", "params", "priority", "labels", ...}."""
        headers = {"Idempotency-Key": idempotency_key or str(uuid.uuid4())}
        body = self._json("POST", "/jobs/batch", json={"jobs": list(jobs)}, headers=headers)
        return list(body["items"])

    def job(self, job_id: str) -> Json:
        """One job (its status, attempts, result...)."""
        result: Json = self._json("GET", f"/jobs/{job_id}")
        return result

    def jobs(
        self,
        *,
        status: str | None = None,
        kind: str | None = None,
        processor: str | None = None,
        label: str | list[str] | None = None,
        limit: int | None = None,
    ) -> Iterator[Json]:
        """Your jobs (every job for an admin), newest first, across all pages: the next
        page is fetched as the iteration reaches it. `label` is "key:value" (a list: all
        of them); `limit` is the page size."""
        params: dict[str, Any] = {
            "status": status,
            "kind": kind,
            "processor": processor,
            "label": [label] if isinstance(label, str) else label,
            "limit": limit,
        }
        return self._pages("/jobs", params)

    def events(self, job_id: str) -> list[Json]:
        """The job's history so far, oldest first."""
        return list(self._json("GET", f"/jobs/{job_id}/events")["items"])

    def logs(self, job_id: str) -> list[Json]:
        """The job's log lines, oldest first."""
        return list(self._json("GET", f"/jobs/{job_id}/logs")["items"])

    def cancel(self, job_id: str) -> Json:
        """Cancel a job: a queued one never starts, a running one stops at its next step
        (Conflict if it has already finished). Returns the job."""
        result: Json = self._json("POST", f"/jobs/{job_id}/cancel")
        return result

    def retry(self, job_id: str) -> Json:
        """Queue a failed, dead or cancelled job again with a fresh attempt budget."""
        result: Json = self._json("POST", f"/jobs/{job_id}/retry")
        return result

    def wait(
        self, job_id: str, timeout: float | None = None, *, poll_interval: float = 0.5
    ) -> Json:
        """Block until the job has finished (succeeded, failed, dead or cancelled) and
        return it, whatever the outcome; TimeoutError after `timeout` seconds. Follows the
        job's live events, so it returns as soon as the job ends."""
        deadline = None if timeout is None else time.monotonic() + timeout
        job = self.job(job_id)
        while job["status"] not in TERMINAL_STATUSES:
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {job_id} is still {job['status']} after {timeout} s")
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            self._wait_for_end(job_id, remaining, poll_interval)
            job = self.job(job_id)
        return job

    def _wait_for_end(self, job_id: str, timeout: float | None, poll_interval: float) -> None:
        """Return when the job's terminal event has arrived, or after `timeout`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            for event in self.watch(job_id, poll_interval=poll_interval, timeout=timeout):
                if event.get("type") in TERMINAL_EVENTS:
                    return
                if deadline is not None and time.monotonic() >= deadline:
                    return
        except TimeoutError:
            return

    def watch(
        self, job_id: str, *, poll_interval: float = 1.0, timeout: float | None = None
    ) -> Iterator[Json]:
        """The job's events as they happen, from its first one, ending after its terminal
        event. Reads the Server-Sent Events stream and reconnects with Last-Event-ID after
        a dropped connection (no duplicates, no gaps); falls back to polling the events
        list when streaming is unavailable. `timeout` (seconds): TimeoutError past it."""
        return sse.follow(
            self,
            stream_path=f"/jobs/{job_id}/stream",
            make_item=sse.job_event,
            poll=lambda after: [e for e in self.events(job_id) if int(e["id"]) > after],
            is_end=lambda event: event.get("type") in TERMINAL_EVENTS,
            ended=lambda: self.job(job_id)["status"] in TERMINAL_STATUSES,
            poll_interval=poll_interval,
            timeout=timeout,
        )

    def download(self, job_id: str, dest: str | Path, *, overwrite: bool = True) -> Path:
        """Save the job's result file to `dest` (a directory: the result's own file name
        inside it), streamed to disk in chunks; returns the path written. Conflict
        `result_not_ready` unless the job succeeded, Gone once the result expired."""
        info = self._json("GET", f"/jobs/{job_id}/download")
        target = Path(dest)
        if target.is_dir():
            target = target / Path(str(info["filename"])).name
        if target.exists() and not overwrite:
            raise FileExistsError(str(target))
        partial = target.with_name(target.name + ".part")
        url = str(self._http.base_url.join(str(info["url"])))  # absolute, or made so
        # The URL is pre-signed (storage or the API's own file route): no bearer token, which
        # would also confuse S3's signature check.
        try:
            with httpx.stream("GET", url, timeout=self.timeout, follow_redirects=True) as response:
                if response.is_error:
                    response.read()
                    raise error_from_response(response)
                with partial.open("wb") as out:
                    for chunk in response.iter_bytes(_CHUNK):
                        out.write(chunk)
        except httpx.TransportError as error:
            partial.unlink(missing_ok=True)
            raise APIConnectionError(
                f"download of {job_id}: {error}", code="connection_error"
            ) from error
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        partial.replace(target)
        return target

    def open_stream(
        self, path: str, last_event_id: int | None, *, read_timeout: float = 60.0
    ) -> httpx.Response:
        """Open a Server-Sent Events stream (used by watch() and follow_build()); the
        caller closes the response. Refreshes an expired token like any request."""
        headers = {"Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        timeout = httpx.Timeout(self.timeout, read=read_timeout)
        return self._request(
            "GET", path, headers=headers, stream=True, retry=False, timeout=timeout
        )

    # --- deployments and apps -------------------------------------------------------------

    def deploy(
        self,
        repo_url: str,
        *,
        app: str | None = None,
        ref: str | None = None,
        branch: str | None = None,
        env: Mapping[str, str] | None = None,
        health_path: str | None = None,
        container_port: int | None = None,
        access_token: str | None = None,
        max_attempts: int | None = None,
        priority: str | None = None,
        labels: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> Json:
        """Deploy a git repository as a release of the app `app` (created on its first
        deploy; a name derived from the repository when omitted); returns the deploy job,
        whose `params["deployment_id"]` `follow_build()` follows. `access_token` clones a private
        repository (kept encrypted by the server for the app's next deploys)."""
        body = _drop_none(
            {
                "repo_url": repo_url,
                "app": app,
                "ref": ref,
                "branch": branch,
                "env": dict(env) if env is not None else None,
                "health_path": health_path,
                "container_port": container_port,
                "access_token": access_token,
                "max_attempts": max_attempts,
                "priority": priority,
                "labels": dict(labels) if labels is not None else None,
            }
        )
        headers = {"Idempotency-Key": idempotency_key or str(uuid.uuid4())}
        result: Json = self._json("POST", "/jobs/deploy", json=body, headers=headers)
        return result

    def deployments(self, *, status: str | None = None, limit: int | None = None) -> Iterator[Json]:
        """Your deployments (all for an admin), newest first, across all pages."""
        return self._pages("/deployments", {"status": status, "limit": limit})

    def deployment(self, deployment_id: str) -> Json:
        """One deployment (its app, release, status, URL...)."""
        result: Json = self._json("GET", f"/deployments/{deployment_id}")
        return result

    def deployment_logs(self, deployment_id: str) -> Json:
        """A deployment's stored logs: {"build": [lines], "app": recent container output}."""
        result: Json = self._json("GET", f"/deployments/{deployment_id}/logs")
        return result

    def stop_deployment(self, deployment_id: str) -> Json:
        """Stop a running deployment's container (its app's route then answers 503)."""
        result: Json = self._json("POST", f"/deployments/{deployment_id}/stop")
        return result

    def follow_build(self, deployment_id: str, *, timeout: float | None = None) -> Iterator[Json]:
        """A deployment's live build log from its first line, ending with its outcome:
        items {"id", "event": "step"|"output"|"outcome", "data": {"text", "step", "at"}}
        (an outcome's data also has "outcome": {"status", "url" | "error"}). Reconnects
        with Last-Event-ID after a dropped connection, like `watch()`."""
        return sse.follow(
            self,
            stream_path=f"/deployments/{deployment_id}/logs/stream",
            make_item=sse.log_line,
            is_end=lambda item: item.get("event") == "outcome",
            timeout=timeout,
        )

    def apps(self, *, limit: int | None = None) -> Iterator[Json]:
        """Your apps (all for an admin), newest first, across all pages."""
        return self._pages("/apps", {"limit": limit})

    def app(self, name: str) -> Json:
        """One app: its URL, current release, branch and settings."""
        result: Json = self._json("GET", f"/apps/{name}")
        return result

    def update_app(self, name: str, **changes: Any) -> Json:
        """Change an app's settings for its next deploys (branch, auto_deploy, health_path,
        container_port, env, access_token); returns the app."""
        result: Json = self._json("PATCH", f"/apps/{name}", json=changes)
        return result

    def delete_app(self, name: str) -> Json:
        """Delete an app: its deployments are stopped and removed, its route and name
        freed."""
        result: Json = self._json("DELETE", f"/apps/{name}")
        return result

    def releases(self, name: str, *, limit: int | None = None) -> Iterator[Json]:
        """An app's releases, newest first, across all pages."""
        return self._pages(f"/apps/{name}/releases", {"limit": limit})

    def rollback(self, name: str, release: int, *, max_attempts: int | None = None) -> Json:
        """Serve an earlier release of the app again (its kept image: no clone or build);
        returns the rollback's deploy job."""
        body = _drop_none({"release": release, "max_attempts": max_attempts})
        result: Json = self._json("POST", f"/apps/{name}/rollback", json=body)
        return result

    # --- schedules --------------------------------------------------------------------------

    def schedules(self, *, limit: int | None = None) -> Iterator[Json]:
        """Your schedules (all for an admin), across all pages."""
        return self._pages("/schedules", {"limit": limit})

    def schedule(self, schedule_id: str) -> Json:
        """One schedule, with its next run."""
        result: Json = self._json("GET", f"/schedules/{schedule_id}")
        return result

    def create_schedule(self, **body: Any) -> Json:
        """Create a schedule: name, processor, params, and cron (+ timezone) or
        every_seconds; optionally priority, labels, enabled, overlap, misfire,
        max_attempts. Returns the schedule."""
        result: Json = self._json("POST", "/schedules", json=body)
        return result

    def update_schedule(self, schedule_id: str, **changes: Any) -> Json:
        """Change a schedule's fields (e.g. enabled=False pauses it); returns it."""
        result: Json = self._json("PATCH", f"/schedules/{schedule_id}", json=changes)
        return result

    def delete_schedule(self, schedule_id: str) -> None:
        """Delete a schedule (jobs it already submitted are kept)."""
        self._request("DELETE", f"/schedules/{schedule_id}")

    def trigger_schedule(self, schedule_id: str) -> Json:
        """Run a schedule now, outside its timetable; returns the job it submitted."""
        result: Json = self._json("POST", f"/schedules/{schedule_id}/trigger")
        return result

    def schedule_runs(self, schedule_id: str, *, limit: int | None = None) -> Iterator[Json]:
        """The jobs a schedule has submitted, newest first, across all pages."""
        return self._pages(f"/schedules/{schedule_id}/runs", {"limit": limit})

    # --- webhooks ---------------------------------------------------------------------------

    def webhooks(self, *, limit: int | None = None) -> Iterator[Json]:
        """Your webhooks, across all pages."""
        return self._pages("/webhooks", {"limit": limit})

    def webhook(self, webhook_id: str) -> Json:
        """One webhook."""
        result: Json = self._json("GET", f"/webhooks/{webhook_id}")
        return result

    def create_webhook(self, url: str, events: list[str], **opts: Any) -> Json:
        """Subscribe `url` to event types (e.g. ["job.succeeded"], or ["*"]); options:
        labels, description. The answer carries the signing `secret`, shown only here:
        keep it for `verify_webhook_signature()`."""
        result: Json = self._json("POST", "/webhooks", json={"url": url, "events": events, **opts})
        return result

    def update_webhook(self, webhook_id: str, **changes: Any) -> Json:
        """Change a webhook (url, events, labels, description, enabled)."""
        result: Json = self._json("PATCH", f"/webhooks/{webhook_id}", json=changes)
        return result

    def delete_webhook(self, webhook_id: str) -> None:
        """Delete a webhook (no more deliveries)."""
        self._request("DELETE", f"/webhooks/{webhook_id}")

    def rotate_webhook_secret(self, webhook_id: str) -> Json:
        """A new signing secret (the old one keeps signing alongside it for a while, so
        receivers can switch without losing deliveries); returns the webhook with it."""
        result: Json = self._json("POST", f"/webhooks/{webhook_id}/rotate-secret")
        return result

    def ping_webhook(self, webhook_id: str) -> Json:
        """Send a test `ping` delivery to the webhook's URL; returns the delivery."""
        result: Json = self._json("POST", f"/webhooks/{webhook_id}/ping")
        return result

    def webhook_deliveries(self, webhook_id: str, *, limit: int | None = None) -> Iterator[Json]:
        """A webhook's deliveries and their attempts, newest first, across all pages."""
        return self._pages(f"/webhooks/{webhook_id}/deliveries", {"limit": limit})

    # --- admin ------------------------------------------------------------------------------

    def dead_letters(
        self,
        *,
        processor: str | None = None,
        error_code: str | None = None,
        since: str | None = None,
        until: str | None = None,
        state: str | None = None,
        limit: int | None = None,
    ) -> Iterator[Json]:
        """Admin: dead letters (jobs out of attempts), newest first, across all pages;
        `state` is waiting (the server's default), requeued or all."""
        params = {
            "processor": processor,
            "error_code": error_code,
            "since": since,
            "until": until,
            "state": state,
            "limit": limit,
        }
        return self._pages("/admin/dead-letters", params)

    def requeue_dead_letter(self, letter_id: str) -> Json:
        """Admin: queue a dead letter's job again with a fresh attempt budget."""
        result: Json = self._json("POST", f"/admin/dead-letters/{letter_id}/requeue")
        return result

    def delete_dead_letter(self, letter_id: str) -> None:
        """Admin: delete one dead letter (its job stays dead)."""
        self._request("DELETE", f"/admin/dead-letters/{letter_id}")

    def requeue_dead_letters(
        self,
        *,
        processor: str | None = None,
        error_code: str | None = None,
        since: str | None = None,
        until: str | None = None,
    ) -> Json:
        """Admin: requeue every waiting dead letter matching the filters (up to 1000 a
        call); returns {"affected", "skipped", "remaining"}."""
        params = _drop_none(
            {"processor": processor, "error_code": error_code, "since": since, "until": until}
        )
        result: Json = self._json("POST", "/admin/dead-letters/requeue", params=params)
        return result

    def purge_dead_letters(
        self,
        *,
        processor: str | None = None,
        error_code: str | None = None,
        since: str | None = None,
        until: str | None = None,
        state: str | None = None,
    ) -> Json:
        """Admin: delete every dead letter matching the filters (up to 1000 a call);
        returns {"affected", "remaining"}."""
        params = _drop_none(
            {
                "processor": processor,
                "error_code": error_code,
                "since": since,
                "until": until,
                "state": state,
            }
        )
        result: Json = self._json("DELETE", "/admin/dead-letters", params=params)
        return result

    def queues(self) -> list[Json]:
        """Admin: each job queue's depth per priority, paused flag, workers and oldest
        waiting job's age."""
        return list(self._json("GET", "/admin/queues")["items"])

    def pause_queue(self, name: str) -> Json:
        """Admin: stop the queue's workers taking new jobs (running ones finish)."""
        result: Json = self._json("POST", f"/admin/queues/{name}/pause")
        return result

    def resume_queue(self, name: str) -> Json:
        """Admin: let a paused queue's workers take jobs again."""
        result: Json = self._json("POST", f"/admin/queues/{name}/resume")
        return result

    def stats(self) -> Json:
        """Admin: jobs and deployments by status, queue depths, workers online, dead
        letters waiting, paused queues."""
        result: Json = self._json("GET", "/admin/stats")
        return result
