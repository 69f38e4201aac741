"""deployments and port leases

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 23:55:00
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deployments",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("owner_id", sa.UUID(), nullable=False),
        sa.Column("job_id", sa.UUID(), nullable=False),
        sa.Column("repo_url", sa.String(length=300), nullable=False),
        sa.Column("repo_key", sa.String(length=300), nullable=False),
        sa.Column("ref", sa.String(length=200), nullable=True),
        sa.Column("commit_sha", sa.String(length=64), nullable=True),
        sa.Column("image", sa.String(length=300), nullable=True),
        sa.Column("container_id", sa.String(length=80), nullable=True),
        sa.Column("container_port", sa.Integer(), nullable=True),
        sa.Column("host_port", sa.Integer(), nullable=True),
        sa.Column("health_path", sa.String(length=500), nullable=False),
        sa.Column("url", sa.String(length=300), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("env", postgresql.JSONB(), nullable=False),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("runtime_log", sa.Text(), nullable=True),
        sa.Column("runtime_log_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("replaced_by", sa.UUID(), nullable=True),
        sa.Column("retire_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("healthy_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("job_id", name="uq_deployments_job"),
    )
    op.create_index("ix_deployments_owner_created", "deployments", ["owner_id", "created_at", "id"])
    op.create_index("ix_deployments_created", "deployments", ["created_at", "id"])
    op.create_index("ix_deployments_repo", "deployments", ["owner_id", "repo_key", "status"])
    op.create_index("ix_deployments_status", "deployments", ["status"])
    op.create_table(
        "port_leases",
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("deployment_id", sa.UUID(), nullable=False),
        sa.Column(
            "leased_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.ForeignKeyConstraint(["deployment_id"], ["deployments.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("port"),
        sa.UniqueConstraint("deployment_id"),
    )


def downgrade() -> None:
    op.drop_table("port_leases")
    op.drop_index("ix_deployments_status", table_name="deployments")
    op.drop_index("ix_deployments_repo", table_name="deployments")
    op.drop_index("ix_deployments_created", table_name="deployments")
    op.drop_index("ix_deployments_owner_created", table_name="deployments")
    op.drop_table("deployments")
