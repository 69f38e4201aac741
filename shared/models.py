"""SQLAlchemy 2 models: users, jobs, job events, dead letters, deployments, schedules,
batches and queue states."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from shared.deploy.status import DeploymentStatus
from shared.webhooks.status import DeliveryStatus

_STOPPED = DeploymentStatus.STOPPED.value  # in the partial indexes' conditions
_PENDING = DeliveryStatus.PENDING.value
JsonType = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    pass


def _uuid() -> uuid.UUID:
    return uuid.uuid4()


class User(Base):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=_uuid)
    email: Mapped[str] = mapped_column(String(254), unique=True, nullable=False)
    password_hash: Mapped[str] = mapped_column(String(255), nullable=False)
    role: Mapped[str] = mapped_column(String(16), nullable=False, default="user")
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class Job(Base):
    """One unit of user work and its whole lifecycle.

    `dispatch_id` names the current delivery: every (re)publish gets a new one, and a
    worker only runs a message whose dispatch id is still current, which is how a late
    or duplicated delivery of a superseded attempt is recognised and dropped.
    """

    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("owner_id", "idempotency_key", name="uq_jobs_owner_idempotency_key"),
        Index("ix_jobs_owner_created", "owner_id", "created_at", "id"),
        Index("ix_jobs_created", "created_at", "id"),
        Index("ix_jobs_status", "status"),
        Index(
            "ix_jobs_unpublished",
            "created_at",
            postgresql_where="published_at IS NULL AND status = 'queued'",
        ),
        Index(
            "ix_jobs_awaiting_delivery",
            "published_at",
            "id",
            postgresql_where="status IN ('queued', 'retrying') AND published_at IS NOT NULL",
        ),
        Index(
            "ix_jobs_inputs_to_delete",
            "finished_at",
            postgresql_where=(
                "input_file IS NOT NULL AND input_deleted_at IS NULL AND finished_at IS NOT NULL"
            ),
        ),
        Index(
            "ix_jobs_results_to_expire",
            "result_expires_at",
            postgresql_where="result_file IS NOT NULL AND result_deleted_at IS NULL",
        ),
        # Exactly one job per occurrence of a schedule, whichever beat process makes it.
        UniqueConstraint("schedule_id", "scheduled_for", name="uq_jobs_schedule_occurrence"),
        Index(
            "ix_jobs_labels",
            "labels",
            postgresql_using="gin",
            postgresql_ops={"labels": "jsonb_path_ops"},
        ),
        Index("ix_jobs_due", "run_at", "id", postgresql_where="status = 'scheduled'"),
        Index("ix_jobs_schedule_created", "schedule_id", "created_at", "id"),
        Index("ix_jobs_batch", "batch_id"),
        Index(
            "ix_jobs_waiting_by_queue",
            "queue",
            "priority",
            "created_at",
            postgresql_where="status = 'queued'",
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=_uuid)
    owner_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    )
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    processor: Mapped[str] = mapped_column(String(64), nullable=False)
    queue: Mapped[str] = mapped_column(String(64), nullable=False)
    params: Mapped[dict[str, Any]] = mapped_column(JsonType, nullable=False, default=dict)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="queued")
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=3)
    progress_current: Mapped[int | None] = mapped_column(Integer)
    progress_total: Mapped[int | None] = mapped_column(Integer)
    progress_message: Mapped[str | None] = mapped_column(String(500))
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_id: Mapped[str | None] = mapped_column(String(128))
    dispatch_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    worker_host: Mapped[str | None] = mapped_column(String(255))
    worker_pid: Mapped[int | None] = mapped_column(Integer)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    # File jobs: {key, filename, content_type, size} of the uploaded input and of the result.
    input_file: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    input_deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    result_file: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    result_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    result_deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now(), onupdate=func.now()
    )
    # Job control: `high`/`normal`/`low` (shared/dispatch/priorities.py); a `scheduled` job
    # waits for `run_at`; labels are user key/value pairs; jobs made by a schedule name it and
    # the occurrence they are for; jobs of one batch share its id.
    priority: Mapped[str] = mapped_column(String(8), nullable=False, default="normal")
    run_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    labels: Mapped[dict[str, str]] = mapped_column(JsonType, nullable=False, default=dict)
    schedule_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("schedules.id", ondelete="SET NULL")
    )
    scheduled_for: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    batch_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("job_batches.id", ondelete="SET NULL")
    )

    owner: Mapped[User] = relationship(lazy="raise")


class Schedule(Base):
    """A recurring job: `cron` (five fields, in `timezone`) or `every_seconds`.

    `next_run_at` is the next occurrence the schedule tick will make a job for; the job
    carries `scheduled_for` = that occurrence, unique per schedule, so two ticks racing (two
    beat processes, a restart mid-tick) make it once.
    """

    __tablename__ = "schedules"
    __table_args__ = (
        UniqueConstraint("owner_id", "name", name="uq_schedules_owner_name"),
        Index("ix_schedules_owner_created", "owner_id", "created_at", "id"),
        Index("ix_schedules_created", "created_at", "id"),
        Index("ix_schedules_due", "next_run_at", postgresql_where="enabled"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=_uuid)
    owner_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    )
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    processor: Mapped[str] = mapped_column(String(64), nullable=False)
    params: Mapped[dict[str, Any]] = mapped_column(JsonType, nullable=False, default=dict)
    cron: Mapped[str | None] = mapped_column(String(200))
    every_seconds: Mapped[int | None] = mapped_column(Integer)
    timezone: Mapped[str] = mapped_column(String(64), nullable=False, default="UTC")
    priority: Mapped[str] = mapped_column(String(8), nullable=False, default="normal")
    labels: Mapped[dict[str, str]] = mapped_column(JsonType, nullable=False, default=dict)
    max_attempts: Mapped[int | None] = mapped_column(Integer)
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    overlap: Mapped[str] = mapped_column(String(8), nullable=False, default="skip")
    misfire: Mapped[str] = mapped_column(String(16), nullable=False, default="run_once")
    next_run_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_run_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_job_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now(), onupdate=func.now()
    )


class JobBatch(Base):
    """An accepted `POST /jobs/batch`: its Idempotency-Key covers the whole batch."""

    __tablename__ = "job_batches"
    __table_args__ = (
        UniqueConstraint("owner_id", "idempotency_key", name="uq_job_batches_owner_key"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=_uuid)
    owner_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    )
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    size: Mapped[int] = mapped_column(Integer, nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class QueueState(Base):
    """An operator's pause of a queue, stored so every worker, even one started later,
    obeys it (no row: the queue runs)."""

    __tablename__ = "queue_states"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    paused: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    changed_by: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now(), onupdate=func.now()
    )


class Webhook(Base):
    """A user's endpoint for notifications (README, Webhooks). `secret` and
    `previous_secret` are Fernet tokens (shared/security/crypto.py), never plaintext."""

    __tablename__ = "webhooks"
    __table_args__ = (
        Index("ix_webhooks_owner_created", "owner_id", "created_at", "id"),
        Index("ix_webhooks_created", "created_at", "id"),
        Index("ix_webhooks_owner_enabled", "owner_id", postgresql_where="enabled"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=_uuid)
    owner_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    )
    url: Mapped[str] = mapped_column(String(2048), nullable=False)
    events: Mapped[list[str]] = mapped_column(JsonType, nullable=False, default=list)
    labels: Mapped[dict[str, str]] = mapped_column(JsonType, nullable=False, default=dict)
    description: Mapped[str | None] = mapped_column(String(500))
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    disabled_reason: Mapped[str | None] = mapped_column(String(500))
    secret: Mapped[str] = mapped_column(Text, nullable=False)
    previous_secret: Mapped[str | None] = mapped_column(Text)
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    failing_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_success_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now(), onupdate=func.now()
    )


class WebhookDelivery(Base):
    """One notification to one webhook, recorded with the state change that causes it."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_webhook_created", "webhook_id", "created_at", "id"),
        Index(
            "ix_webhook_deliveries_due",
            "next_attempt_at",
            postgresql_where=f"status = '{_PENDING}'",
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=_uuid)
    webhook_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("webhooks.id", ondelete="CASCADE"), nullable=False
    )
    event_type: Mapped[str] = mapped_column(String(64), nullable=False)
    job_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("jobs.id", ondelete="SET NULL")
    )
    deployment_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("deployments.id", ondelete="SET NULL")
    )
    body: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default=_PENDING)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now(), onupdate=func.now()
    )


class WebhookAttempt(Base):
    """One try of a delivery: what the endpoint answered (body cut to 1 KB), or the error."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (Index("ix_webhook_attempts_delivery", "delivery_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    delivery_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), nullable=False
    )
    attempt: Mapped[int] = mapped_column(Integer, nullable=False)
    response_code: Mapped[int | None] = mapped_column(Integer)
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(500))
    response_body: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class JobEvent(Base):
    """An append-only history line of a job; also the resume log for live updates."""

    __tablename__ = "job_events"
    __table_args__ = (Index("ix_job_events_job", "job_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    job_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False
    )
    type: Mapped[str] = mapped_column(String(32), nullable=False)
    attempt: Mapped[int | None] = mapped_column(Integer)
    data: Mapped[dict[str, Any]] = mapped_column(JsonType, nullable=False, default=dict)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class JobLog(Base):
    """Output of one attempt of a job: a processor container's stdout/stderr, a build log."""

    __tablename__ = "job_logs"
    __table_args__ = (Index("ix_job_logs_job", "job_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    job_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False
    )
    attempt: Mapped[int | None] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(32), nullable=False)
    content: Mapped[str] = mapped_column(Text, nullable=False)
    truncated: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class DeadLetter(Base):
    """Work that exhausted its retries, recorded by the dead-letter queue's own worker."""

    __tablename__ = "dead_letters"
    __table_args__ = (
        UniqueConstraint("dispatch_id", name="uq_dead_letters_dispatch"),
        Index("ix_dead_letters_created", "created_at", "id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=_uuid)
    job_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False
    )
    dispatch_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    task_name: Mapped[str] = mapped_column(String(128), nullable=False)
    processor: Mapped[str] = mapped_column(String(64), nullable=False)
    args: Mapped[dict[str, Any]] = mapped_column(JsonType, nullable=False, default=dict)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    traceback: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False)
    failed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    requeued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class Deployment(Base):
    """A repository built and running on a leased host port, from one deploy job.

    `env` holds the user's variables for the app, encrypted (one Fernet token of the JSON
    object, shared/security/crypto.py). They are secrets: the API never returns them and
    nothing logs them; only the worker that starts the container decrypts them. The column
    is emptied (NULL) once the deployment has been stopped past DEPLOY_IMAGE_RETENTION, or at
    once when it failed; `env_names` keeps the names the API shows.
    """

    __tablename__ = "deployments"
    __table_args__ = (
        Index("ix_deployments_owner_created", "owner_id", "created_at", "id"),
        Index("ix_deployments_created", "created_at", "id"),
        Index("ix_deployments_repo", "owner_id", "repo_key", "status"),
        Index("ix_deployments_status", "status"),
        Index("ix_deployments_image", "image"),
        # The image-retention sweep reads only stopped deployments still holding an image.
        Index(
            "ix_deployments_image_unreleased",
            "stopped_at",
            postgresql_where=f"status = '{_STOPPED}' AND image_released_at IS NULL",
        ),
        # The env-retention sweep reads only stopped deployments still holding their env.
        Index(
            "ix_deployments_env_held",
            "stopped_at",
            postgresql_where=f"status = '{_STOPPED}' AND env IS NOT NULL",
        ),
        UniqueConstraint("job_id", name="uq_deployments_job"),
        UniqueConstraint("app_id", "release", name="uq_deployments_app_release"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=_uuid)
    owner_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    )
    job_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    repo_url: Mapped[str] = mapped_column(String(300), nullable=False)
    repo_key: Mapped[str] = mapped_column(String(300), nullable=False)
    ref: Mapped[str | None] = mapped_column(String(200))
    commit_sha: Mapped[str | None] = mapped_column(String(64))
    image: Mapped[str | None] = mapped_column(String(300))
    container_id: Mapped[str | None] = mapped_column(String(80))
    container_port: Mapped[int | None] = mapped_column(Integer)
    host_port: Mapped[int | None] = mapped_column(Integer)
    health_path: Mapped[str] = mapped_column(String(500), nullable=False, default="/")
    url: Mapped[str | None] = mapped_column(String(300))
    status: Mapped[str] = mapped_column(
        String(16), nullable=False, default=DeploymentStatus.STARTING.value
    )
    env: Mapped[str | None] = mapped_column(Text)
    env_names: Mapped[list[str]] = mapped_column(JsonType, nullable=False, default=list)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    runtime_log: Mapped[str | None] = mapped_column(Text)
    runtime_log_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    replaced_by: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    retire_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    checked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    healthy_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    stopped_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # When this stopped deployment stopped holding its image tag (DEPLOY_IMAGE_RETENTION).
    image_released_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The app this deployment is release `release` of (NULL once the app is deleted);
    # a rollback names the release whose image it runs.
    app_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("apps.id", ondelete="SET NULL")
    )
    release: Mapped[int | None] = mapped_column(Integer)
    rollback_of: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now(), onupdate=func.now()
    )


class PortLease(Base):
    """A host port held by one deployment until it is stopped (the primary key makes two
    leases of one port impossible, whatever races)."""

    __tablename__ = "port_leases"

    port: Mapped[int] = mapped_column(Integer, primary_key=True)
    deployment_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True),
        ForeignKey("deployments.id", ondelete="CASCADE"),
        nullable=False,
        unique=True,
    )
    leased_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class App(Base):
    """A name on the platform (routed as `<name>.<DEPLOY_DOMAIN>` by the reverse proxy), the
    repository it deploys and what every release inherits. Its releases are its deployments
    (`Deployment.app_id`, numbered from `last_release`); `current_deployment_id` is the one
    the proxy routes to, switched only after a release's health check.

    `env`, `access_token` and `webhook_secret` are Fernet tokens (shared/security/crypto.py), never
    returned by the API: env only by its names, the secret once when it is set.
    """

    __tablename__ = "apps"
    __table_args__ = (
        UniqueConstraint("name", name="uq_apps_name"),
        Index("ix_apps_owner_created", "owner_id", "created_at", "id"),
        Index("ix_apps_created", "created_at", "id"),
        Index("ix_apps_owner_repo", "owner_id", "repo_key"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=_uuid)
    name: Mapped[str] = mapped_column(String(31), nullable=False)
    owner_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    )
    repo_url: Mapped[str] = mapped_column(String(300), nullable=False)
    repo_key: Mapped[str] = mapped_column(String(300), nullable=False)
    branch: Mapped[str | None] = mapped_column(String(200))
    auto_deploy: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    health_path: Mapped[str] = mapped_column(String(500), nullable=False, default="/")
    container_port: Mapped[int | None] = mapped_column(Integer)
    env: Mapped[str | None] = mapped_column(Text)
    env_names: Mapped[list[str]] = mapped_column(JsonType, nullable=False, default=list)
    access_token: Mapped[str | None] = mapped_column(Text)
    webhook_secret: Mapped[str | None] = mapped_column(Text)
    last_release: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    current_deployment_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now(), onupdate=func.now()
    )


class AppHookDelivery(Base):
    """One request GitHub sent to an app's push hook and what it did: `deployed` (a release
    started; at most once per delivery id), `ignored` (with the reason), `pong` or
    `rejected` (bad signature)."""

    __tablename__ = "app_hook_deliveries"
    __table_args__ = (
        Index("ix_app_hook_deliveries_app_received", "app_id", "received_at", "id"),
        Index(
            "uq_app_hook_deliveries_deployed",
            "app_id",
            "delivery_id",
            unique=True,
            postgresql_where="outcome = 'deployed'",
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=_uuid)
    app_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("apps.id", ondelete="CASCADE"), nullable=False
    )
    delivery_id: Mapped[str | None] = mapped_column(String(100))
    event: Mapped[str] = mapped_column(String(64), nullable=False)
    ref: Mapped[str | None] = mapped_column(String(300))
    commit_sha: Mapped[str | None] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16), nullable=False)
    reason: Mapped[str | None] = mapped_column(String(500))
    job_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    deployment_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    received_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class DeploymentLogLine(Base):
    """A piece of a deployment's clone, build or start output (`kind` output), a step marker
    (`step`) or the outcome (`outcome`), in the order produced: the id is the live build
    stream's event id, so a reconnecting client resumes after the last one it saw."""

    __tablename__ = "deployment_log_lines"
    __table_args__ = (Index("ix_deployment_log_lines_deployment", "deployment_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    deployment_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("deployments.id", ondelete="CASCADE"), nullable=False
    )
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    step: Mapped[str | None] = mapped_column(String(32))
    text: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
