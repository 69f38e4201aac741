"""Per-user quotas: submissions per minute (Redis fixed window) and active jobs (database)."""

from __future__ import annotations

import hashlib
import time
import uuid

from sqlalchemy.orm import Session

from api.errors import ApiError
from api.extensions import redis_client
from shared.config import Settings
from shared.jobs import count_active_jobs

_WINDOW = 60


def check_submit_rate(settings: Settings, user_id: uuid.UUID) -> None:
    """Count this submission in the user's current minute; 429 with Retry-After past the limit."""
    limit = settings.quota_submits_per_minute
    if limit == 0:
        return
    now = time.time()
    window = int(now // _WINDOW)
    key = f"dockyard:quota:submits:{user_id}:{window}"
    try:
        pipe = redis_client().pipeline()
        pipe.incr(key)
        pipe.expire(key, _WINDOW + 5)
        count, _ = pipe.execute()
    except Exception as error:
        raise ApiError(
            503,
            "service_unavailable",
            "Quotas cannot be checked right now.",
            {"component": "redis"},
        ) from error
    if count > limit:
        retry_after = max(1, int((window + 1) * _WINDOW - now) + 1)
        raise ApiError(
            429,
            "rate_limited",
            f"At most {limit} submissions per minute; try again in {retry_after} s.",
            {"limit": limit, "window_seconds": _WINDOW, "retry_after": retry_after},
            headers={"Retry-After": str(retry_after)},
        )


def check_active_jobs(settings: Settings, session: Session, user_id: uuid.UUID) -> None:
    limit = settings.quota_active_jobs
    if limit == 0:
        return
    active = count_active_jobs(session, user_id)
    if active >= limit:
        raise ApiError(
            429,
            "too_many_active_jobs",
            f"You already have {active} active jobs (limit {limit}); wait for some to finish.",
            {"limit": limit, "active": active},
        )


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
    except Exception as error:
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
