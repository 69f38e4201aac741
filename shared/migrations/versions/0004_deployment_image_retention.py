"""deployments: image retention (image_released_at) and the indexes its sweep reads

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 10:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "deployments", sa.Column("image_released_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.create_index("ix_deployments_image", "deployments", ["image"])
    op.create_index(
        "ix_deployments_image_unreleased",
        "deployments",
        ["stopped_at"],
        postgresql_where=sa.text("status = 'stopped' AND image_released_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_deployments_image_unreleased", table_name="deployments")
    op.drop_index("ix_deployments_image", table_name="deployments")
    op.drop_column("deployments", "image_released_at")
