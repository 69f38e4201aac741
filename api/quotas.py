"""Abuse limits and quotas.

Per user: submissions per minute (Redis fixed window), active jobs (database), open
Server-Sent Events streams (Redis, slots that expire unless their stream refreshes them).
Per client address: password hashing per minute (Redis); per process: password hashes at
once (a semaphore that never waits). Per account: failed logins. Per request: the size of
a non-upload body (MAX_JSON_BYTES).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from flask import request
from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.errors import ApiError
from api.extensions import redis_client, settings
from shared.config import Settings
from shared.jobs.counts import count_active_jobs, count_scheduled_jobs
from shared.models import Schedule, Webhook

log = logging.getLogger(__name__)
_WINDOW = 60


def _redis_unavailable(what: str) -> ApiError:
    return ApiError(
        503, "service_unavailable", f"{what} cannot be checked right now.", {"component": "redis"}
    )


def _count_in_window(key: str, *, count: bool = True, by: int = 1) -> tuple[int, int]:
    """(requests in the current minute including these `by`, seconds until the next minute).

    With count=False the window is only read: a pre-check that must not spend the quota.
    """
    now = time.time()
    window = int(now // _WINDOW)
    try:
        if count:
            pipe = redis_client().pipeline()
            pipe.incrby(f"{key}:{window}", by)
            pipe.expire(f"{key}:{window}", _WINDOW + 5)
            value, _ = pipe.execute()
        else:
            value = int(redis_client().get(f"{key}:{window}") or 0) + by
    except RedisError as error:
        raise _redis_unavailable("Quotas") from error
    return int(value), max(1, int((window + 1) * _WINDOW - now) + 1)


def _rate_limited(limit: int, retry_after: int) -> ApiError:
    return ApiError(
        429,
        "rate_limited",
        f"At most {limit} submissions per minute; try again in {retry_after} s.",
        {"limit": limit, "window_seconds": _WINDOW, "retry_after": retry_after},
        headers={"Retry-After": str(retry_after)},
    )


def check_submit_rate(
    settings: Settings, user_id: uuid.UUID, *, count: bool = True, jobs: int = 1
) -> None:
    """Count this submission in the user's current minute; 429 with Retry-After past the limit.

    A retry (POST /jobs/{id}/retry) counts like a submit; a batch counts each of its `jobs`."""
    limit = settings.quota_submits_per_minute
    if limit == 0:
        return
    used, retry_after = _count_in_window(f"dockyard:quota:submits:{user_id}", count=count, by=jobs)
    if used > limit:
        raise _rate_limited(limit, retry_after)


def check_active_jobs(
    settings: Settings, session: Session, user_id: uuid.UUID, jobs: int = 1
) -> None:
    """Refuse (429) if `jobs` more active jobs would pass QUOTA_ACTIVE_JOBS: a batch is
    refused whole."""
    limit = settings.quota_active_jobs
    if limit == 0:
        return
    active = count_active_jobs(session, user_id)
    if active + jobs > limit:
        raise ApiError(
            429,
            "too_many_active_jobs",
            f"You already have {active} active jobs (limit {limit}); wait for some to finish.",
            {"limit": limit, "active": active},
        )


def check_scheduled_jobs(
    settings: Settings, session: Session, user_id: uuid.UUID, jobs: int = 1
) -> None:
    """Refuse (429) if `jobs` more delayed jobs would pass QUOTA_SCHEDULED_JOBS: waiting jobs
    cost nothing to run but each is a row every release looks past, so they are capped."""
    limit = settings.quota_scheduled_jobs
    if limit == 0:
        return
    scheduled = count_scheduled_jobs(session, user_id)
    if scheduled + jobs > limit:
        raise ApiError(
            429,
            "too_many_scheduled_jobs",
            f"You already have {scheduled} scheduled jobs (limit {limit}); wait for some to "
            "run or cancel them.",
            {"limit": limit, "scheduled": scheduled},
        )


def precheck_submit_quotas(settings: Settings, session: Session, user_id: uuid.UUID) -> None:
    """Refuse an upload before its body is read when the submit would be refused anyway.

    Reads the quotas without spending them: the submit itself counts and checks again
    (under the per-user lock), after the body is stored."""
    check_submit_rate(settings, user_id, count=False)
    check_active_jobs(settings, session, user_id)


@dataclass(frozen=True)
class SubmitQuotas:
    """A submit's quotas, as shared.jobs.submission asks them (its `Quotas`): the user's
    submissions per minute, then, under the per-user lock, their active jobs and the kind's
    own quota (`kind_quota`: active deployments)."""

    settings: Settings
    user_id: uuid.UUID
    kind_quota: Callable[[Session], None] | None = None

    def count_submission(self, jobs: int = 1) -> None:
        check_submit_rate(self.settings, self.user_id, jobs=jobs)

    def checks_active_work(self, scheduled: int = 0) -> bool:
        return (
            bool(self.settings.quota_active_jobs)
            or self.kind_quota is not None
            or bool(scheduled and self.settings.quota_scheduled_jobs)
        )

    def check_active_work(self, session: Session, jobs: int = 1, scheduled: int = 0) -> None:
        if jobs:
            check_active_jobs(self.settings, session, self.user_id, jobs)
        if scheduled:
            check_scheduled_jobs(self.settings, session, self.user_id, scheduled)
        if self.kind_quota is not None:
            self.kind_quota(session)


# --- Password hashing: per client address, and per process -------------------------------


def client_address() -> str:
    """The address limits are counted against: the peer of the connection
    (`request.remote_addr`). Behind a reverse proxy that is the proxy's address for every
    client, unless the app is wrapped in Werkzeug's ProxyFix, which rewrites remote_addr
    from X-Forwarded-For (see the README)."""
    return request.remote_addr or "unknown"


def _too_many_requests(message: str, retry_after: int, details: dict[str, Any]) -> ApiError:
    return ApiError(
        429,
        "too_many_requests",
        message,
        {**details, "retry_after": retry_after},
        headers={"Retry-After": str(retry_after)},
    )


def check_auth_rate(settings: Settings) -> None:
    """Count one password hash against the caller's address this minute (AUTH_RATE_PER_MINUTE).

    Redis holds the count, so every API process and replica shares it."""
    limit = settings.auth_rate_per_minute
    if limit == 0:
        return
    digest = hashlib.sha256(client_address().encode()).hexdigest()[:32]
    used, retry_after = _count_in_window(f"dockyard:quota:auth:{digest}")
    if used > limit:
        raise _too_many_requests(
            f"At most {limit} logins and registrations per minute from one address; "
            f"try again in {retry_after} s.",
            retry_after,
            {"reason": "address_rate", "limit": limit, "window_seconds": _WINDOW},
        )


_HASH_SLOTS: dict[int, threading.BoundedSemaphore] = {}
_HASH_SLOTS_LOCK = threading.Lock()


def hash_slots(limit: int) -> threading.BoundedSemaphore:
    """The process-wide semaphore for a concurrency limit (one per limit value)."""
    with _HASH_SLOTS_LOCK:
        return _HASH_SLOTS.setdefault(limit, threading.BoundedSemaphore(limit))


@contextmanager
def hashing_slot(settings: Settings) -> Iterator[None]:
    """Run a password hash in one of AUTH_HASH_CONCURRENCY slots of this process, or answer
    429 at once: waiting would hold a server thread per queued request, which is the very
    exhaustion the cap prevents."""
    limit = settings.auth_hash_concurrency
    if limit == 0:
        yield
        return
    slots = hash_slots(limit)
    if not slots.acquire(blocking=False):
        raise _too_many_requests(
            "The server is busy checking passwords; try again in a second.",
            1,
            {"reason": "hash_concurrency", "limit": limit},
        )
    try:
        yield
    finally:
        slots.release()


@contextmanager
def password_hashing(settings: Settings) -> Iterator[None]:
    """Both password-hashing limits: the address's rate, then a process slot."""
    check_auth_rate(settings)
    with hashing_slot(settings):
        yield


# --- Request bodies ------------------------------------------------------------------------

_TOO_LARGE = "The request body is larger than {} bytes (MAX_JSON_BYTES)."
#: Endpoints whose body is an upload: they keep MAX_CONTENT_LENGTH.
UPLOAD_ENDPOINTS = frozenset({"v1.file_jobs.submit_file"})


def limit_request_body() -> None:
    """Every body but an upload is held to MAX_JSON_BYTES: refused from Content-Length before
    anything is read, and (chunked, no length) cut off with 413 once it passes the limit."""
    if request.endpoint in UPLOAD_ENDPOINTS:
        return
    config = settings()
    limit = min(config.max_json_bytes, config.max_content_length)
    length = request.content_length
    if length is not None and length > limit:
        raise ApiError(
            413,
            "payload_too_large",
            _TOO_LARGE.format(limit),
            {"limit": limit, "content_length": length},
        )
    if length is None and "chunked" in request.headers.get("Transfer-Encoding", "").lower():
        # No length to judge: read at most one byte past the limit (Werkzeug's own limit
        # would silently truncate at it) and keep what was read as the request's body.
        request.max_content_length = limit + 1
        if len(request.get_data(cache=True)) > limit:
            raise ApiError(413, "payload_too_large", _TOO_LARGE.format(limit), {"limit": limit})
    request.max_content_length = limit


# --- Server-Sent Events streams ------------------------------------------------------------

STREAM_SLOT_TTL = 30.0  # a slot its stream stopped refreshing (process died) frees after this
STREAM_SLOT_REFRESH = 10.0

# Drop expired slots, then take one if fewer than the limit are open; atomic, so concurrent
# opens cannot pass the limit. Returns {1, 0} (taken) or {0, seconds until a slot expires}.
_TAKE_SLOT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, math.ceil(tonumber(oldest[2]) - tonumber(ARGV[1]))}
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return {1, 0}
"""


class StreamSlot:
    """One of a user's MAX_STREAMS_PER_USER open streams, held in a Redis sorted set
    (member: the slot, score: when it expires). The stream refreshes it while it runs and
    removes it when it ends; a slot whose process died expires after STREAM_SLOT_TTL."""

    def __init__(self, redis: Redis, user_id: uuid.UUID) -> None:
        self.redis = redis
        self.key = f"dockyard:streams:{user_id}"
        self.member = uuid.uuid4().hex
        self.refreshed_at = time.monotonic()

    @classmethod
    def take(cls, settings: Settings, redis: Redis, user_id: uuid.UUID) -> StreamSlot | None:
        """A slot, or 429 too_many_streams; None when the limit is off."""
        limit = settings.max_streams_per_user
        if limit == 0:
            return None
        slot = cls(redis, user_id)
        now = time.time()
        try:
            taken, wait = redis.eval(
                _TAKE_SLOT, 1, slot.key, now, now + STREAM_SLOT_TTL, limit, slot.member,
                int(STREAM_SLOT_TTL) + 5,
            )  # fmt: skip
        except RedisError as error:
            raise _redis_unavailable("Open streams") from error
        if not taken:
            retry_after = max(1, min(int(wait), int(STREAM_SLOT_TTL)))
            raise ApiError(
                429,
                "too_many_streams",
                f"You already have {limit} open streams; close one first.",
                {"limit": limit, "retry_after": retry_after},
                headers={"Retry-After": str(retry_after)},
            )
        return slot

    def refresh(self) -> None:
        """Push the slot's expiry forward (every STREAM_SLOT_REFRESH; cheap to call often)."""
        if time.monotonic() - self.refreshed_at < STREAM_SLOT_REFRESH:
            return
        self.refreshed_at = time.monotonic()
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.zadd(self.key, {self.member: time.time() + STREAM_SLOT_TTL})
            pipe.expire(self.key, int(STREAM_SLOT_TTL) + 5)
            pipe.execute()
        except Exception:  # the token check ends the stream if Redis stays down
            log.warning("stream slot refresh failed", exc_info=True, extra={"event": "stream"})

    def release(self) -> None:
        try:
            self.redis.zrem(self.key, self.member)
        except Exception:  # it expires on its own after STREAM_SLOT_TTL
            log.warning("stream slot release failed", exc_info=True, extra={"event": "stream"})


_LOGIN_WINDOW = 15 * 60


def _login_key(email: str) -> str:
    digest = hashlib.sha256(email.encode()).hexdigest()[:32]  # no raw emails in Redis keys
    return f"dockyard:login-failures:{digest}"


def check_login_allowed(settings: Settings, email: str) -> None:
    """Refuse (429) after LOGIN_MAX_FAILURES wrong passwords for one email in 15 minutes:
    slows password guessing against one account without locking its owner out for long."""
    limit = settings.login_max_failures
    if limit == 0:
        return
    try:
        failures = int(redis_client().get(_login_key(email)) or 0)
        ttl = redis_client().ttl(_login_key(email))
    except RedisError as error:
        raise ApiError(
            503,
            "service_unavailable",
            "Logins cannot be checked right now.",
            {"component": "redis"},
        ) from error
    if failures >= limit:
        retry_after = max(1, int(ttl))
        raise ApiError(
            429,
            "too_many_login_failures",
            f"Too many failed logins for this account; try again in {retry_after} s.",
            {"retry_after": retry_after},
            headers={"Retry-After": str(retry_after)},
        )


def record_login_failure(settings: Settings, email: str) -> None:
    if settings.login_max_failures == 0:
        return
    pipe = redis_client().pipeline()
    pipe.incr(_login_key(email))
    pipe.expire(_login_key(email), _LOGIN_WINDOW, nx=True)
    pipe.execute()


def clear_login_failures(settings: Settings, email: str) -> None:
    if settings.login_max_failures:
        redis_client().delete(_login_key(email))


# --- Recurring schedules -------------------------------------------------------------------


def check_schedules(settings: Settings, session: Session, user_id: uuid.UUID) -> None:
    """Refuse (429) a new schedule past QUOTA_SCHEDULES. Run under the per-user lock
    (shared.jobs.submission.lock_owner) so concurrent creates cannot pass the limit together."""
    limit = settings.quota_schedules
    if limit == 0:
        return
    count = count_schedules(session, user_id)
    if count >= limit:
        raise ApiError(
            429,
            "too_many_schedules",
            f"You already have {count} schedules (limit {limit}); delete one first.",
            {"limit": limit, "schedules": count},
        )


def count_schedules(session: Session, user_id: uuid.UUID) -> int:
    return session.scalar(select(func.count()).where(Schedule.owner_id == user_id)) or 0


# --- Webhooks ------------------------------------------------------------------------------


def check_webhooks(settings: Settings, session: Session, user_id: uuid.UUID) -> None:
    """Refuse (429) a new webhook past QUOTA_WEBHOOKS: each one multiplies the deliveries
    every job end makes. Run under the per-user lock, like check_schedules."""
    limit = settings.quota_webhooks
    if limit == 0:
        return
    count = session.scalar(select(func.count()).where(Webhook.owner_id == user_id)) or 0
    if count >= limit:
        raise ApiError(
            429,
            "too_many_webhooks",
            f"You already have {count} webhooks (limit {limit}); delete one first.",
            {"limit": limit, "webhooks": count},
        )


# --- GitHub push hooks ---------------------------------------------------------------------


def check_hook_rate(settings: Settings, app_id: uuid.UUID) -> None:
    """Count a request to the app's push hook in its current minute; 429 with Retry-After
    past HOOK_RATE_PER_MINUTE. Counted before the signature is checked, so it also bounds
    the rows that refused requests leave."""
    limit = settings.hook_rate_per_minute
    if limit == 0:
        return
    used, retry_after = _count_in_window(f"dockyard:quota:hooks:{app_id}")
    if used > limit:
        raise ApiError(
            429,
            "rate_limited",
            f"At most {limit} hook requests per minute for this app; try again in {retry_after} s.",
            {"limit": limit, "window_seconds": _WINDOW, "retry_after": retry_after},
            headers={"Retry-After": str(retry_after)},
        )
