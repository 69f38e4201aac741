"""The schedule tick: make the job of every due occurrence of an enabled schedule.

Celery beat sends the tick every SCHEDULE_TICK_INTERVAL to the maintenance queue. Each due
schedule (`enabled` and `next_run_at <= now`, the partial index ix_schedules_due) is taken
in a transaction of its own with FOR UPDATE SKIP LOCKED, so two ticks running at once (two
beat processes, or a slow tick overlapping the next) never handle the same schedule together;
the job insert, the new `next_run_at` and `last_job_id` commit together, so a tick killed
half way leaves the occurrence due for the next one. The unique (schedule_id, scheduled_for)
on jobs is the last guard: an occurrence inserted twice (a `next_run_at` moved back by hand)
makes no second job (shared.jobs.submission answers the existing one).

What an occurrence makes:

- `misfire: run_once`: one job for the latest occurrence that is due (after downtime, the
  missed ones collapse into that one catch-up run).
- `misfire: skip`: the same, unless that occurrence is older than MISFIRE_GRACE: then no job.
- `overlap: skip`: no job while the schedule's previous job (`last_job_id`) has not ended.
- a deploy schedule: no job while QUOTA_ACTIVE_DEPLOYMENTS refuses it (or when its stored
  repository's host is no longer allowed); otherwise a job and its Deployment row, which
  the deploy fleet treats as a redeploy of the same repository.

Either way `next_run_at` moves to the first occurrence after now. A schedule's runs are not
held to the submit quotas (those answer an HTTP caller); QUOTA_SCHEDULES and the minimum
period bound them. The active-deployments quota is the exception: it bounds what runs.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.clock import now
from shared.config import Settings
from shared.db import new_session
from shared.deploy.jobs import TooManyDeployments
from shared.deploy.repo_urls import InvalidRepository
from shared.jobs import schedules
from shared.jobs.submission import submit_job
from shared.models import Job, Schedule
from shared.processors import get_processor

log = logging.getLogger(__name__)

#: At most this many schedules per tick. Bounded so that one tick stays short after an
#: outage left many schedules due at once (the next tick, a second later, takes the rest)
#: and never holds the maintenance worker the sweeps also need for long.
TICK_BATCH = 100

#: How late an occurrence may be reached and still count as on time for `misfire: skip`.
#: A tick normally reaches an occurrence within one SCHEDULE_TICK_INTERVAL; its message may
#: also wait a few seconds behind a sweep on the maintenance queue. Anything later means
#: beat or the maintenance fleet was down, which is what `misfire` decides about.
MISFIRE_GRACE_MIN = timedelta(seconds=5)
MISFIRE_GRACE_TICKS = 5


def misfire_grace(settings: Settings) -> timedelta:
    ticks = timedelta(seconds=settings.schedule_tick_interval * MISFIRE_GRACE_TICKS)
    return max(MISFIRE_GRACE_MIN, ticks)


def run_schedule_tick(settings: Settings) -> dict[str, int]:
    """Handle up to TICK_BATCH due schedules; counts of what each occurrence made."""
    outcomes: Counter[str] = Counter()
    failed: set[uuid.UUID] = set()
    for _ in range(TICK_BATCH):
        outcome = _tick_one(settings, failed)
        if outcome is None:
            break
        outcomes[outcome] += 1
    return dict(outcomes)


def _tick_one(settings: Settings, failed: set[uuid.UUID]) -> str | None:
    """Take one due schedule (SKIP LOCKED) and handle it; None when none is due.

    A schedule whose occurrence raises (a bug, a time zone gone from tzdata) is rolled back,
    logged and left out for the rest of the tick (`failed`), so it cannot hold up the others;
    it stays due and is tried again next tick."""
    session = new_session(settings.database_url)
    try:
        query = select(Schedule).where(Schedule.enabled, Schedule.next_run_at <= now())
        if failed:
            query = query.where(Schedule.id.not_in(failed))
        schedule = session.scalars(
            query.order_by(Schedule.next_run_at).limit(1).with_for_update(skip_locked=True)
        ).first()
        if schedule is None:
            session.rollback()
            return None
        schedule_id = schedule.id
        try:
            return _handle_due(session, schedule, settings)
        except Exception:
            session.rollback()
            failed.add(schedule_id)
            log.exception(
                "schedule occurrence failed; the schedule stays due",
                extra={"event": "schedule_failed", "schedule_id": str(schedule_id)},
            )
            return "failed"
    finally:
        session.close()


def _handle_due(session: Session, schedule: Schedule, settings: Settings) -> str:
    """Make (or skip) the job of the schedule's latest due occurrence; commits."""
    moment = now()
    assert schedule.next_run_at is not None
    latest, following = schedules.Recurrence.of(schedule).due(schedule.next_run_at, moment)
    schedule.next_run_at = following
    processor = get_processor(schedule.processor)
    reason = _skip_reason(session, schedule, latest, moment, settings)
    if processor is None or reason is not None:
        session.commit()
        reason = reason or "unknown_processor"  # unregistered since the schedule was stored
        log.info(
            "schedule occurrence skipped (%s)",
            reason,
            extra={"event": "schedule_skipped", "schedule_id": str(schedule.id)},
        )
        return f"skipped_{reason}"
    try:
        submission = schedules.submission(schedule, processor, latest, settings=settings)
        result = submit_job(session, submission, celery=None, redis_url=settings.redis_url)
    except (TooManyDeployments, InvalidRepository) as error:
        # Refused before any row was written: the schedule's new next_run_at still commits.
        reason = "deployment_quota" if isinstance(error, TooManyDeployments) else "repo_url"
        session.commit()
        log.warning(
            "schedule occurrence skipped (%s): %s",
            reason,
            error,
            extra={"event": "schedule_skipped", "schedule_id": str(schedule.id)},
        )
        return f"skipped_{reason}"
    log.info(
        "schedule occurrence %s",
        "made a job" if result.created else "already had its job",
        extra={
            "event": "schedule_run",
            "schedule_id": str(schedule.id),
            "job_id": str(result.job.id),
            "scheduled_for": latest.isoformat(),
        },
    )
    return "made" if result.created else "existed"


def _skip_reason(
    session: Session,
    schedule: Schedule,
    occurrence: datetime,
    moment: datetime,
    settings: Settings,
) -> str | None:
    """Why this occurrence makes no job (misfired, overlap), or None."""
    late = moment - occurrence
    if schedule.misfire == schedules.Misfire.SKIP and late > misfire_grace(settings):
        return "misfired"
    if schedule.overlap == schedules.Overlap.SKIP and schedule.last_job_id is not None:
        status = session.scalar(select(Job.status).where(Job.id == schedule.last_job_id))
        if schedules.is_unfinished(status):
            return "overlap"
    return None
