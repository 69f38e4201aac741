"""Per-user quotas: submissions per minute (Redis fixed window) and active jobs (database)."""

from __future__ import annotations

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
