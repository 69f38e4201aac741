"""Broker-loss recovery: a job the broker no longer holds a message for is published again.

PostgreSQL is the source of truth; Redis is not durable (see shared.dispatch.broker_marks for how a
lost message is told from a waiting one). Each maintenance sweep looks at published, unclaimed
jobs (`queued`, and `retrying` ones whose backoff message may be waiting) and:

- a job whose current dispatch has no mark in the broker lost its message (`broker_lost`);
- a queued job whose mark names a worker node whose liveness key has expired was taken by a
  worker that died before claiming it (`worker_lost_before_claim`; workers/liveness.py).

Either gets a new `dispatch_id` (a late original is then dropped by the claim) and a
`redispatched` event, and its message is sent again; a retry keeps what is left of its
backoff. Bounds, so that a long healthy backlog never costs more than a few milliseconds per
run and a large loss is drained steadily instead of in one huge transaction: each run reads at
most ten `SWEEP_BATCH_SIZE` of candidate rows (two columns, from a partial index), walking the
backlog with a cursor kept in Redis across runs, checks their marks with one MGET per 500,
and redispatches at most `SWEEP_BATCH_SIZE` jobs, rows locked with SKIP LOCKED.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from redis import Redis
from sqlalchemy import select, tuple_

from shared import redis as shared_redis
from shared.celery_app import app as celery_app
from shared.clock import now
from shared.config import Settings
from shared.db import session_scope
from shared.dispatch import broker_marks, fast_publish
from shared.jobs import transitions
from shared.jobs.status import JobStatus
from shared.jobs.transitions import Effects
from shared.models import Job
from shared.processors import get_processor

log = logging.getLogger(__name__)

CURSOR_KEY = "dockyard:sweep:delivery-cursor"
BROKER_LOST = "broker_lost"
WORKER_LOST_BEFORE_CLAIM = "worker_lost_before_claim"
_WAITING = (JobStatus.QUEUED.value, JobStatus.RETRYING.value)
#: A message and its mark are written before `published_at`; the margin only keeps clock
#: skew between API hosts and the database from mattering.
_PUBLISHED_MARGIN = timedelta(seconds=1)


@dataclass(frozen=True)
class Lost:
    job_id: uuid.UUID
    dispatch_id: uuid.UUID
    status: str
    published_at: datetime
    reason: str


def recover_lost_messages(settings: Settings) -> int:
    """Find lost messages and publish their jobs again; the number redispatched.

    One pass reads a window of candidates and redispatches at most `SWEEP_BATCH_SIZE` of
    them in one transaction; passes repeat while they find a full batch, for up to half a
    `SWEEP_INTERVAL`, so a large loss drains at thousands of jobs a run while every
    transaction stays small."""
    if not fast_publish.supports(celery_app):
        return 0  # marks exist only on a Redis broker
    broker = fast_publish.broker_client(celery_app)
    state = shared_redis.events(settings.redis_url)
    budget = time.monotonic() + max(settings.sweep_interval / 2, 1.0)
    total = 0
    while True:
        handled = _one_pass(settings, broker, state)
        total += handled
        if handled < settings.sweep_batch_size or time.monotonic() > budget:
            return total


def _one_pass(settings: Settings, broker: Redis, state: Redis) -> int:
    """The cursor moves past a full window of candidates, or only up to the last job handled
    when more were lost than one pass redispatches, so a large loss is drained in order."""
    window = settings.sweep_batch_size * 10
    rows = _candidates(window, _read_cursor(state))
    lost = find_lost(settings, broker, rows)
    handled = lost[: settings.sweep_batch_size]
    if len(lost) > len(handled):
        _write_cursor(state, (handled[-1].published_at, handled[-1].job_id))
    elif len(rows) == window:
        _write_cursor(state, (rows[-1].published_at, rows[-1].id))
    else:
        _write_cursor(state, None)
    return redispatch(settings, handled) if handled else 0


def find_lost(settings: Settings, broker: Redis, rows: list[Any]) -> list[Lost]:
    """Those of `rows` (candidates in cursor order) whose message the broker no longer holds
    or a worker that is gone took, in the same order."""
    if not rows:
        return []
    held = broker_marks.marked(broker, [row.dispatch_id for row in rows])
    takers = {
        value.decode()
        for row in rows
        if row.status == JobStatus.QUEUED.value
        and (value := held.get(str(row.dispatch_id))) not in (None, broker_marks.WAITING)
    }
    gone = broker_marks.dead_nodes(broker, takers)
    lost: list[Lost] = []
    for row in rows:
        value = held.get(str(row.dispatch_id))
        if value is None:
            reason = BROKER_LOST
        elif row.status == JobStatus.QUEUED.value and value.decode() in gone:
            reason = WORKER_LOST_BEFORE_CLAIM
        else:
            continue  # waiting in its queue, or held by a live worker
        lost.append(Lost(row.id, row.dispatch_id, row.status, row.published_at, reason))
    return lost


def _candidates(limit: int, cursor: tuple[datetime, uuid.UUID] | None) -> list[Any]:
    query = select(Job.id, Job.dispatch_id, Job.status, Job.published_at).where(
        Job.status.in_(_WAITING),
        Job.published_at.is_not(None),
        Job.published_at <= now() - _PUBLISHED_MARGIN,
    )
    if cursor is not None:
        query = query.where(tuple_(Job.published_at, Job.id) > tuple_(*cursor))
    with session_scope() as session:
        return list(session.execute(query.order_by(Job.published_at, Job.id).limit(limit)))


def _read_cursor(state: Redis) -> tuple[datetime, uuid.UUID] | None:
    try:
        # redis-py types its commands for the asyncio client too (`Awaitable[Any] | Any`);
        # this sync client answers the stored bytes or None.
        raw = cast("bytes | None", state.get(CURSOR_KEY))
        if raw is None:
            return None
        stamp, job_id = raw.decode().split("|")
        return datetime.fromisoformat(stamp), uuid.UUID(job_id)
    except Exception:
        log.debug("delivery cursor unreadable; starting from the oldest", exc_info=True)
        return None


def _write_cursor(state: Redis, position: tuple[datetime, uuid.UUID] | None) -> None:
    """Where the next run starts (None: from the oldest again)."""
    try:
        if position is None:
            state.delete(CURSOR_KEY)
        else:
            state.set(CURSOR_KEY, f"{position[0].isoformat()}|{position[1]}", ex=3600)
    except Exception:
        log.debug("delivery cursor not saved", exc_info=True)


def redispatch(settings: Settings, lost: list[Lost]) -> int:
    """New dispatch ids and events, committed; then the messages (a refused publish leaves
    the row unpublished for the outbox and retry sweeps)."""
    effects: list[Effects] = []
    superseded: list[uuid.UUID] = []
    by_id = {item.job_id: item for item in lost}
    with session_scope() as session:
        jobs = session.scalars(
            select(Job).where(Job.id.in_(by_id)).with_for_update(skip_locked=True)
        ).all()
        for job in jobs:
            seen = by_id[job.id]
            if job.dispatch_id != seen.dispatch_id or job.status != seen.status:
                continue  # claimed, cancelled or redispatched since it was looked at
            processor = get_processor(job.processor)
            if processor is None:
                continue
            superseded.append(job.dispatch_id)
            effects.append(transitions.redispatch(session, job, processor.task_name, seen.reason))
    broker = fast_publish.broker_client(celery_app)
    for previous in superseded:
        broker_marks.unmark(broker, previous)  # nothing will claim that dispatch now
    for effect in effects:
        effect.apply(settings.redis_url)
        assert effect.dispatch is not None
        log.warning(
            "job message lost; published again",
            extra={
                "event": "redispatched",
                "job_id": str(effect.dispatch.job_id),
                "reason": effect.requeued,
            },
        )
    return len(effects)
