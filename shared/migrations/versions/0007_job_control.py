"""job control: scheduled jobs, priorities, labels, batches, recurring schedules, paused queues

- jobs: `priority` (high/normal/low), `run_at` (a delayed job waits as `scheduled` until it),
  `labels` (jsonb, GIN-indexed with jsonb_path_ops for `labels @> {...}` filters),
  `schedule_id` + `scheduled_for` (a unique pair: exactly one job per occurrence of a
  schedule, whichever beat process makes it), `batch_id`.
- job_batches: one row per accepted batch (its Idempotency-Key covers the whole batch).
- schedules: recurring jobs; `next_run_at` is what the schedule tick looks for.
- queue_states: a paused queue is stored, so restarted or newly scaled workers obey it.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26 18:40:00
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "schedules",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column(
            "owner_id",
            postgresql.UUID(as_uuid=True),
            sa.ForeignKey("users.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("processor", sa.String(64), nullable=False),
        sa.Column("params", postgresql.JSONB(), nullable=False, server_default="{}"),
        sa.Column("cron", sa.String(200)),
        sa.Column("every_seconds", sa.Integer()),
        sa.Column("timezone", sa.String(64), nullable=False, server_default="UTC"),
        sa.Column("priority", sa.String(8), nullable=False, server_default="normal"),
        sa.Column("labels", postgresql.JSONB(), nullable=False, server_default="{}"),
        sa.Column("max_attempts", sa.Integer()),
        sa.Column("enabled", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("overlap", sa.String(8), nullable=False, server_default="skip"),
        sa.Column("misfire", sa.String(16), nullable=False, server_default="run_once"),
        sa.Column("next_run_at", sa.DateTime(timezone=True)),
        sa.Column("last_run_at", sa.DateTime(timezone=True)),
        sa.Column("last_job_id", postgresql.UUID(as_uuid=True)),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.UniqueConstraint("owner_id", "name", name="uq_schedules_owner_name"),
    )
    op.create_index("ix_schedules_owner_created", "schedules", ["owner_id", "created_at", "id"])
    op.create_index("ix_schedules_created", "schedules", ["created_at", "id"])
    op.create_index(
        "ix_schedules_due", "schedules", ["next_run_at"], postgresql_where=sa.text("enabled")
    )
    op.create_table(
        "job_batches",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column(
            "owner_id",
            postgresql.UUID(as_uuid=True),
            sa.ForeignKey("users.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("idempotency_key", sa.String(255)),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.UniqueConstraint("owner_id", "idempotency_key", name="uq_job_batches_owner_key"),
    )
    op.create_table(
        "queue_states",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("paused", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("changed_by", postgresql.UUID(as_uuid=True)),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )
    op.add_column(
        "jobs", sa.Column("priority", sa.String(8), nullable=False, server_default="normal")
    )
    op.add_column("jobs", sa.Column("run_at", sa.DateTime(timezone=True)))
    op.add_column(
        "jobs", sa.Column("labels", postgresql.JSONB(), nullable=False, server_default="{}")
    )
    op.add_column(
        "jobs",
        sa.Column(
            "schedule_id",
            postgresql.UUID(as_uuid=True),
            sa.ForeignKey("schedules.id", ondelete="SET NULL"),
        ),
    )
    op.add_column("jobs", sa.Column("scheduled_for", sa.DateTime(timezone=True)))
    op.add_column(
        "jobs",
        sa.Column(
            "batch_id",
            postgresql.UUID(as_uuid=True),
            sa.ForeignKey("job_batches.id", ondelete="SET NULL"),
        ),
    )
    op.create_unique_constraint(
        "uq_jobs_schedule_occurrence", "jobs", ["schedule_id", "scheduled_for"]
    )
    op.create_index(
        "ix_jobs_labels",
        "jobs",
        ["labels"],
        postgresql_using="gin",
        postgresql_ops={"labels": "jsonb_path_ops"},
    )
    op.create_index(
        "ix_jobs_due", "jobs", ["run_at", "id"], postgresql_where=sa.text("status = 'scheduled'")
    )
    op.create_index("ix_jobs_schedule_created", "jobs", ["schedule_id", "created_at", "id"])
    op.create_index("ix_jobs_batch", "jobs", ["batch_id"])
    op.create_index(
        "ix_jobs_waiting_by_queue",
        "jobs",
        ["queue", "priority", "created_at"],
        postgresql_where=sa.text("status = 'queued'"),
    )


def downgrade() -> None:
    for index in (
        "ix_jobs_waiting_by_queue",
        "ix_jobs_batch",
        "ix_jobs_schedule_created",
        "ix_jobs_due",
        "ix_jobs_labels",
    ):
        op.drop_index(index, table_name="jobs")
    op.drop_constraint("uq_jobs_schedule_occurrence", "jobs")
    for column in ("batch_id", "scheduled_for", "schedule_id", "labels", "run_at", "priority"):
        op.drop_column("jobs", column)
    op.drop_table("queue_states")
    op.drop_table("job_batches")
    op.drop_table("schedules")
