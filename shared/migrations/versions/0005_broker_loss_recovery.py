"""jobs: the index the broker-loss check walks (published jobs waiting for a worker)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 16:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_jobs_awaiting_delivery",
        "jobs",
        ["published_at", "id"],
        postgresql_where=sa.text("status IN ('queued', 'retrying') AND published_at IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_awaiting_delivery", table_name="jobs")
