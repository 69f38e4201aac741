"""A deployment's live log: the clone, build and start output, step markers and the outcome,
appended to deployment_log_lines as they are produced, for the live build stream
(api/deployment_logs_stream.py).

Lines are buffered and written in one INSERT per flush: at most every FLUSH_SECONDS, or as
soon as FLUSH_LINES lines or FLUSH_BYTES wait, and at the end. After each flush a tiny
message on the deployment's pub/sub channel (shared/deploy/log.py) wakes the streams; the
table stays the record. The log is a courtesy to the user, never a reason for a deploy to
fail: a database or Redis error while writing it is logged and the lines are dropped. A
deployment stores at most LIMIT_BYTES of output (all its attempts together), then one
"… truncated" line: a chatty build cannot fill the database. Step markers and the outcome
are always written (a few per attempt).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import docker
from sqlalchemy import delete, func, insert, select

from shared import redis as shared_redis
from shared.clock import now
from shared.config import Settings, get_settings
from shared.db import session_scope
from shared.deploy import log as deploy_log
from shared.deploy.status import ENDED
from shared.models import Deployment, DeploymentLogLine

log = logging.getLogger(__name__)

LIMIT_BYTES = 2 * 1024 * 1024
FLUSH_SECONDS = 0.2
FLUSH_LINES = 100
FLUSH_BYTES = 64 * 1024
#: An unterminated line is stored anyway once it is this long or has waited this long (a
#: progress message without a newline still shows while the step runs).
PARTIAL_BYTES = 4096
PARTIAL_SECONDS = 1.0
#: How long the end of a health check waits for the container-log follower to stop.
FOLLOW_JOIN_SECONDS = 2.0


def _clean(text: str) -> str:
    """PostgreSQL text takes neither NUL nor lone surrogates (which a decoded engine stream
    may hold); either would lose the whole batch."""
    return text.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")


def _announce(redis_url: str, deployment_id: uuid.UUID, last_id: int) -> None:
    try:
        shared_redis.events(redis_url).publish(deploy_log.channel(deployment_id), str(last_id))
    except Exception:  # the streams re-read the table every second anyway
        log.debug("deploy log wake-up not published", exc_info=True)


class LiveLog:
    """The live log of one deployment, written by one deploy attempt (its main thread and
    the container-log follower). `close` flushes what is left and stops the flusher."""

    def __init__(self, deployment_id: uuid.UUID, redis_url: str) -> None:
        self.deployment_id = deployment_id
        self.redis_url = redis_url
        self.step: str | None = None  # the step running now: its output lines name it
        self._lock = threading.Lock()  # the buffer
        self._flush_lock = threading.Lock()  # one flush at a time: ids in commit order
        self._pending: list[dict[str, Any]] = []
        self._pending_bytes = 0
        self._partial = ""
        self._partial_since = 0.0
        self._warned = False
        self._stored = self._stored_bytes()
        self._truncated = self._stored >= LIMIT_BYTES  # an earlier attempt reached the cap
        self._due = threading.Event()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._flusher, name="dockyard-live-log", daemon=True)
        self._thread.start()

    def begin(self, step: str) -> None:
        """A step starts: its marker, and the output that follows is the step's."""
        self._flush_partial()
        self.step = step
        self._add(deploy_log.STEP, step, step)

    def end(self, step: str, text: str) -> None:
        """A step ended (`text` says how): its unterminated output first, then the marker."""
        self._flush_partial()
        self._add(deploy_log.STEP, step, text)
        self.step = None

    def output(self, text: str) -> None:
        """A chunk of output: stored line by line, an unterminated end kept for the next."""
        with self._lock:
            if not self._partial:
                self._partial_since = time.monotonic()
            lines = (self._partial + text).split("\n")
            self._partial = lines.pop()
            if len(self._partial) >= PARTIAL_BYTES:
                lines.append(self._partial)
                self._partial = ""
        for line in lines:
            self._add(deploy_log.OUTPUT, self.step, line.rstrip("\r"))

    def close(self) -> None:
        """Flush everything and stop the flusher (the attempt is over)."""
        self._flush_partial()
        self._closed.set()
        self._due.set()
        self._thread.join(timeout=10)
        self._flush()

    def _add(self, kind: str, step: str | None, text: str) -> None:
        text = _clean(text)
        with self._lock:
            if kind == deploy_log.OUTPUT:
                if self._truncated:
                    return
                if self._stored + len(text) > LIMIT_BYTES:
                    self._truncated = True
                    text = (
                        f"… truncated: this deployment's log reached its {LIMIT_BYTES} byte cap;"
                        " the job's build log keeps the end of the build"
                    )
                self._stored += len(text)
            self._pending.append(
                {
                    "deployment_id": self.deployment_id,
                    "kind": kind,
                    "step": step,
                    "text": text,
                    "created_at": datetime.now(UTC),
                }
            )
            self._pending_bytes += len(text)
            full = len(self._pending) >= FLUSH_LINES or self._pending_bytes >= FLUSH_BYTES
        if full:
            self._due.set()

    def _flush_partial(self) -> None:
        with self._lock:
            partial, self._partial = self._partial, ""
        if partial:
            self._add(deploy_log.OUTPUT, self.step, partial.rstrip("\r"))

    def _flusher(self) -> None:
        while not self._closed.is_set():
            self._due.wait(FLUSH_SECONDS)
            self._due.clear()
            with self._lock:
                stale = self._partial and time.monotonic() - self._partial_since >= PARTIAL_SECONDS
            if stale:
                self._flush_partial()
            self._flush()

    def _flush(self) -> None:
        with self._flush_lock:
            with self._lock:
                rows, self._pending, self._pending_bytes = self._pending, [], 0
            if not rows:
                return
            try:
                with session_scope() as session:
                    last_id = max(
                        session.scalars(
                            insert(DeploymentLogLine).values(rows).returning(DeploymentLogLine.id)
                        )
                    )
            except Exception:
                self._warn(len(rows))
                return
        _announce(self.redis_url, self.deployment_id, last_id)

    def _warn(self, dropped: int) -> None:
        level = logging.DEBUG if self._warned else logging.WARNING
        self._warned = True
        log.log(
            level,
            "deploy live log lines not written (%d dropped); the deploy goes on",
            dropped,
            exc_info=True,
            extra={"event": "deploy_log_unwritten", "deployment_id": str(self.deployment_id)},
        )

    def _stored_bytes(self) -> int:
        """What earlier attempts of this deployment stored: the cap is the deployment's."""
        try:
            with session_scope() as session:
                return int(
                    session.scalar(
                        select(func.coalesce(func.sum(func.length(DeploymentLogLine.text)), 0))
                        .where(DeploymentLogLine.deployment_id == self.deployment_id)
                        .where(DeploymentLogLine.kind == deploy_log.OUTPUT)
                    )
                    or 0
                )
        except Exception:
            self._warn(0)
            return 0


def step_summary(name: str, outcome: str, seconds: float, data: dict[str, Any]) -> str:
    """A step's end marker: "clone done in 0.4 s (commit 1f2e...)", "build failed: ..."."""
    if outcome == "failed" and "error" in data:
        return f"{name} failed: {data['error']['message']}"
    if outcome != "done":
        return f"{name} {outcome} after {seconds:.1f} s"
    details = ", ".join(f"{key} {value}" for key, value in data.items() if key != "error")
    return f"{name} done in {seconds:.1f} s" + (f" ({details})" if details else "")


@contextlib.contextmanager
def following(client: docker.DockerClient, container_id: str, live: LiveLog) -> Iterator[None]:
    """While the block runs (the health check), the container's output goes to the live
    log: a thread follows the engine's log stream from the container's start, and the
    stream is closed when the block ends."""
    streams: list[Any] = []
    stop = threading.Event()

    def follow() -> None:
        try:
            stream = client.api.logs(container_id, stream=True, follow=True)
            streams.append(stream)
            if stop.is_set():  # the block ended while the stream was being opened
                stream.close()
                return
            for chunk in stream:
                live.output(chunk.decode("utf-8", "replace"))
        except Exception:  # the container went away, or the stream was closed under it
            log.debug("container log follow ended", exc_info=True)

    thread = threading.Thread(target=follow, name="dockyard-app-log", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        for stream in streams:
            with contextlib.suppress(Exception):
                stream.close()
        thread.join(timeout=FOLLOW_JOIN_SECONDS)


def record_outcome(job_id: uuid.UUID) -> None:
    """The last line of a deployment's log, once its deploy job has ended for good (a
    retried attempt has not): healthy with the URL, or failed / cancelled with the error."""
    try:
        with session_scope() as session:
            deployment = session.scalar(select(Deployment).where(Deployment.job_id == job_id))
            if deployment is None:
                return
            body = deploy_log.outcome(
                deployment.status,
                deployment.url,
                deployment.healthy_at,
                deployment.error_code,
                deployment.error_message,
            )
            if body is None:
                return
            deployment_id = deployment.id
            line_id = session.scalar(
                insert(DeploymentLogLine)
                .values(
                    deployment_id=deployment_id,
                    kind=deploy_log.OUTCOME,
                    step=None,
                    text=_clean(json.dumps(body)),
                    created_at=datetime.now(UTC),
                )
                .returning(DeploymentLogLine.id)
            )
    except Exception:
        log.warning(
            "deploy outcome line not written; the stream makes it from the deployment",
            exc_info=True,
            extra={"event": "deploy_log_unwritten", "job_id": str(job_id)},
        )
        return
    if line_id is not None:
        _announce(get_settings().redis_url, deployment_id, line_id)


def delete_expired(settings: Settings, limit: int) -> int:
    """Delete the live logs of deployments stopped or failed longer than
    DEPLOY_IMAGE_RETENTION ago; returns how many deployments' logs went.

    At most `limit` deployments a run: each may hold up to LIMIT_BYTES of lines, so the
    backlog of a first run (or after an outage) deleted at once would be one long
    transaction holding the check and writing a burst of WAL; bounded runs every
    DEPLOY_CHECK_INTERVAL catch up within a few periods, like the rest of the check.
    """
    ended_at = func.coalesce(Deployment.stopped_at, Deployment.updated_at)
    cutoff = now() - timedelta(seconds=settings.deploy_image_retention)
    has_lines = (
        select(DeploymentLogLine.id)
        .where(DeploymentLogLine.deployment_id == Deployment.id)
        .exists()
    )
    with session_scope() as session:
        ids = list(
            session.scalars(
                select(Deployment.id)
                .where(Deployment.status.in_(ENDED), ended_at < cutoff, has_lines)
                .limit(limit)
            )
        )
        if ids:
            session.execute(
                delete(DeploymentLogLine).where(DeploymentLogLine.deployment_id.in_(ids))
            )
    return len(ids)
