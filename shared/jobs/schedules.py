"""Recurring schedules: when their occurrences fall, and the job each occurrence makes.

The API validates and stores a schedule (`api/schedules.py`); the tick makes its jobs
(`workers/schedules.py`); both need the same answers to "is this recurrence valid", "when is
the next occurrence" and "what job does an occurrence submit", so they live here.

A recurrence is either a five-field `cron` read in the schedule's IANA `timezone` (croniter
does the arithmetic, so a time skipped or repeated by a DST change is handled as croniter
handles it), or `every_seconds`, counted from the previous occurrence (a timezone does not
change it).
"""

from __future__ import annotations

import enum
import functools
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from croniter import croniter
from sqlalchemy.orm import Session

from shared.config import Settings
from shared.deploy.jobs import DeployRequest, deploy_job
from shared.jobs.status import ACTIVE, WAITING, JobStatus
from shared.jobs.submission import NewJob, Quotas, Submission
from shared.models import Schedule
from shared.processors import Processor, kind_of
from shared.processors.deploy import NAME as DEPLOY_PROCESSOR

MIN_EVERY_SECONDS = 10
MAX_EVERY_SECONDS = 366 * 24 * 3600  # a year and a day: keeps the arithmetic in range
CRON_FIELDS = 5

#: The statuses of a previous run that make `overlap: skip` leave an occurrence out: the
#: run has not ended (waiting for its `run_at`, queued, running or between attempts).
UNFINISHED: frozenset[JobStatus] = ACTIVE | WAITING


class Overlap(enum.StrEnum):
    SKIP = "skip"  # no new run while the previous one has not ended
    ALLOW = "allow"


class Misfire(enum.StrEnum):
    RUN_ONCE = "run_once"  # after downtime: one run for the latest missed occurrence
    SKIP = "skip"  # after downtime: missed occurrences make no run


class InvalidSchedule(ValueError):
    """A recurrence that cannot be used; `field` names the request field at fault."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


@functools.cache
def _timezone_names() -> frozenset[str]:
    # `localtime` is the host's own zone file where a system has one, not an IANA name.
    return frozenset(zoneinfo.available_timezones() - {"localtime"}) | {"UTC"}


def check_timezone(name: str) -> zoneinfo.ZoneInfo:
    """The zone for an IANA name. Only names the zone database lists are accepted, so a
    path-like or host-specific name (`localtime`, `../x`) never reaches the file lookup."""
    if name not in _timezone_names():
        raise InvalidSchedule("timezone", f"{name!r} is not an IANA time zone name.")
    return zoneinfo.ZoneInfo(name)


@dataclass(frozen=True)
class Recurrence:
    """When a schedule's occurrences fall. Build it with `recurrence` (validated)."""

    cron: str | None
    every_seconds: int | None
    zone: zoneinfo.ZoneInfo

    @classmethod
    def of(cls, schedule: Schedule) -> Recurrence:
        """A stored schedule's recurrence (validated when it was stored)."""
        return cls(schedule.cron, schedule.every_seconds, zoneinfo.ZoneInfo(schedule.timezone))

    def next_after(self, moment: datetime) -> datetime:
        """The first occurrence strictly after `moment` (every_seconds: `moment` + period)."""
        if self.every_seconds is not None:
            return moment + timedelta(seconds=self.every_seconds)
        assert self.cron is not None
        following: datetime = croniter(self.cron, moment.astimezone(self.zone)).get_next(datetime)
        return following.astimezone(UTC)

    def due(self, occurrence: datetime, moment: datetime) -> tuple[datetime, datetime]:
        """For a schedule whose next occurrence `occurrence` is due at `moment` (not later):
        (the latest occurrence at or before `moment`, the first one after it). Equal to
        (`occurrence`, its successor) unless occurrences were missed (downtime)."""
        if self.every_seconds is not None:
            period = timedelta(seconds=self.every_seconds)
            latest = occurrence + period * ((moment - occurrence) // period)
            return latest, latest + period
        assert self.cron is not None
        local = moment.astimezone(self.zone)
        previous: datetime = croniter(self.cron, local).get_prev(datetime)  # strictly before
        latest = max(occurrence, previous.astimezone(UTC))
        return latest, self.next_after(moment)


def recurrence(cron: str | None, every_seconds: int | None, timezone: str) -> Recurrence:
    """Validate a recurrence (InvalidSchedule says why it is refused)."""
    zone = check_timezone(timezone)
    if (cron is None) == (every_seconds is None):
        raise InvalidSchedule("cron", "Give exactly one of cron and every_seconds.")
    if every_seconds is not None:
        if not MIN_EVERY_SECONDS <= every_seconds <= MAX_EVERY_SECONDS:
            raise InvalidSchedule(
                "every_seconds",
                f"every_seconds must be between {MIN_EVERY_SECONDS} and {MAX_EVERY_SECONDS}.",
            )
        return Recurrence(None, every_seconds, zone)
    assert cron is not None
    if len(cron.split()) != CRON_FIELDS:
        raise InvalidSchedule(
            "cron", "cron must have five fields: minute hour day-of-month month day-of-week."
        )
    result = Recurrence(cron, None, zone)
    try:
        # Parses the expression and proves it has an occurrence (`0 0 30 2 *` has none).
        result.next_after(datetime.now(UTC))
    except Exception as error:  # croniter raises many types for malformed input
        raise InvalidSchedule("cron", f"cron is not valid: {error}") from None
    return result


def is_unfinished(status: str | None) -> bool:
    return status is not None and JobStatus(status) in UNFINISHED


def submission(
    schedule: Schedule,
    processor: Processor,
    occurrence: datetime,
    *,
    settings: Settings,
    quotas: Quotas | None = None,
    request_id: str | None = None,
) -> Submission:
    """The submission of one run of `schedule`: its job carries `schedule_id` and
    `scheduled_for` = `occurrence` (unique per schedule: a second insert of the same
    occurrence is a no-op, see shared.jobs.submission), runs at once, and becomes the schedule's
    `last_job_id` in the same transaction.

    A deploy schedule's run is a deploy job (shared.deploy.jobs): its Deployment row joins
    the same transaction and the active-deployments quota holds even where `quotas` is None
    (the tick), raising TooManyDeployments. A stored repository URL is checked again against
    today's DEPLOY_ALLOWED_HOSTS (InvalidRepository)."""
    params = schedule.params
    extra_rows: Callable[[Session, NewJob], None] | None = None
    if processor.name == DEPLOY_PROCESSOR:
        job = deploy_job(
            settings, schedule.owner_id, DeployRequest.stored(settings, schedule.params)
        )
        params, extra_rows = job.params, job.with_job
        quotas = _WithKindQuota(quotas, job.kind_quota)

    def record_run(session: Session, job: NewJob) -> None:
        if extra_rows is not None:
            extra_rows(session, job)
        schedule.last_job_id = job.id
        schedule.last_run_at = occurrence

    fleet = schedule.params.get("fleet") if kind_of(processor.kind).fleet_param else None
    return Submission(
        owner_id=schedule.owner_id,
        processor=processor,
        params=params,
        max_attempts=schedule.max_attempts or processor.max_attempts or settings.job_max_attempts,
        queue=fleet,
        request_id=request_id,
        quotas=quotas,
        with_job=record_run,
        priority=schedule.priority,
        labels=dict(schedule.labels),
        schedule_id=schedule.id,
        scheduled_for=occurrence,
    )


@dataclass(frozen=True)
class _WithKindQuota:
    """The caller's quotas (None: none, the tick's) plus a kind's own, always checked."""

    quotas: Quotas | None
    kind_quota: Callable[[Session], None]

    def count_submission(self, jobs: int = 1) -> None:
        if self.quotas is not None:
            self.quotas.count_submission(jobs)

    def checks_active_work(self, scheduled: int = 0) -> bool:
        return True

    def check_active_work(self, session: Session, jobs: int = 1, scheduled: int = 0) -> None:
        if self.quotas is not None and self.quotas.checks_active_work(scheduled):
            self.quotas.check_active_work(session, jobs, scheduled)
        self.kind_quota(session)
