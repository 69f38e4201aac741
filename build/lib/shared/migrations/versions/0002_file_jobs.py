"""file jobs: input and result objects, job logs

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 18:00:00
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("input_file", postgresql.JSONB(), nullable=True))
    op.add_column("jobs", sa.Column("input_deleted_at", sa.DateTime(timezone=True)))
    op.add_column("jobs", sa.Column("result_file", postgresql.JSONB(), nullable=True))
    op.add_column("jobs", sa.Column("result_expires_at", sa.DateTime(timezone=True)))
    op.add_column("jobs", sa.Column("result_deleted_at", sa.DateTime(timezone=True)))
    # The sweeps' work lists: small partial indexes, so each bounded run is an index scan.
    op.create_index(
        "ix_jobs_inputs_to_delete",
        "jobs",
        ["finished_at"],
        postgresql_where=sa.text(
            "input_file IS NOT NULL AND input_deleted_at IS NULL AND finished_at IS NOT NULL"
        ),
    )
    op.create_index(
        "ix_jobs_results_to_expire",
        "jobs",
        ["result_expires_at"],
        postgresql_where=sa.text("result_file IS NOT NULL AND result_deleted_at IS NULL"),
    )
    op.create_table(
        "job_logs",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.UUID(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=True),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("truncated", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_job_logs_job", "job_logs", ["job_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_job_logs_job", table_name="job_logs")
    op.drop_table("job_logs")
    op.drop_index("ix_jobs_results_to_expire", table_name="jobs")
    op.drop_index("ix_jobs_inputs_to_delete", table_name="jobs")
    for column in (
        "result_deleted_at",
        "result_expires_at",
        "result_file",
        "input_deleted_at",
        "input_file",
    ):
        op.drop_column("jobs", column)
