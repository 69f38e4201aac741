"""apps: stable names behind the reverse proxy, releases, GitHub push hooks, live build logs

- apps: a platform-wide name (routed as <name>.<DEPLOY_DOMAIN>), its owner, the repository and
  branch it deploys, what every release inherits (health_path, container_port, env as a
  Fernet token), the write-only secrets (access_token for private clones, webhook_secret for
  GitHub's signatures; both Fernet tokens), `last_release` (the counter releases are numbered
  from) and `current_deployment_id` (what the proxy routes to).
- deployments gain app_id, release (v1..vN within the app) and rollback_of (the release
  whose image a rollback runs).
- app_hook_deliveries: what GitHub sent to an app's push hook and what it did.
- deployment_log_lines: the clone, build and start output of a deployment as it is produced
  (the live build log stream reads it; the id orders and resumes it).

Existing deployments get an app each (one per owner and repository, named as a deploy without
`app` names it) and release numbers in creation order.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26 21:20:00
"""

import hashlib
import re
import uuid
from datetime import datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def _derived_name(owner_id: uuid.UUID, repo_key: str) -> str:
    """Frozen copy of shared/app_names.derived_name as of this migration."""
    repo = repo_key.rsplit("/", 1)[-1]
    base = re.sub(r"[^a-z0-9]+", "-", repo.lower()).strip("-")
    if not base or not base[0].isalpha():
        base = f"app-{base}".rstrip("-")
    base = base[:24].rstrip("-")
    digest = hashlib.sha256(f"{owner_id}:{repo_key}".encode()).hexdigest()[:6]
    return f"{base}-{digest}"


def _timestamps() -> list[sa.Column[datetime]]:
    return [
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    ]


def upgrade() -> None:
    op.create_table(
        "apps",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("name", sa.String(31), nullable=False),
        sa.Column(
            "owner_id",
            postgresql.UUID(as_uuid=True),
            sa.ForeignKey("users.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("repo_url", sa.String(300), nullable=False),
        sa.Column("repo_key", sa.String(300), nullable=False),
        sa.Column("branch", sa.String(200)),
        sa.Column("auto_deploy", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("health_path", sa.String(500), nullable=False, server_default="/"),
        sa.Column("container_port", sa.Integer()),
        sa.Column("env", sa.Text()),
        sa.Column("env_names", postgresql.JSONB(), nullable=False, server_default="[]"),
        sa.Column("access_token", sa.Text()),
        sa.Column("webhook_secret", sa.Text()),
        sa.Column("last_release", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("current_deployment_id", postgresql.UUID(as_uuid=True)),
        *_timestamps(),
        sa.UniqueConstraint("name", name="uq_apps_name"),
    )
    op.create_index("ix_apps_owner_created", "apps", ["owner_id", "created_at", "id"])
    op.create_index("ix_apps_created", "apps", ["created_at", "id"])
    op.create_index("ix_apps_owner_repo", "apps", ["owner_id", "repo_key"])

    op.add_column(
        "deployments",
        sa.Column(
            "app_id",
            postgresql.UUID(as_uuid=True),
            sa.ForeignKey("apps.id", ondelete="SET NULL"),
        ),
    )
    op.add_column("deployments", sa.Column("release", sa.Integer()))
    op.add_column("deployments", sa.Column("rollback_of", sa.Integer()))
    op.create_unique_constraint("uq_deployments_app_release", "deployments", ["app_id", "release"])

    op.create_table(
        "app_hook_deliveries",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column(
            "app_id",
            postgresql.UUID(as_uuid=True),
            sa.ForeignKey("apps.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("delivery_id", sa.String(100)),
        sa.Column("event", sa.String(64), nullable=False),
        sa.Column("ref", sa.String(300)),
        sa.Column("commit_sha", sa.String(64)),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(500)),
        sa.Column("job_id", postgresql.UUID(as_uuid=True)),
        sa.Column("deployment_id", postgresql.UUID(as_uuid=True)),
        sa.Column(
            "received_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )
    op.create_index(
        "ix_app_hook_deliveries_app_received",
        "app_hook_deliveries",
        ["app_id", "received_at", "id"],
    )
    # A GitHub delivery id starts at most one release of an app (a redelivery is a no-op).
    op.create_index(
        "uq_app_hook_deliveries_deployed",
        "app_hook_deliveries",
        ["app_id", "delivery_id"],
        unique=True,
        postgresql_where=sa.text("outcome = 'deployed'"),
    )

    op.create_table(
        "deployment_log_lines",
        sa.Column("id", sa.BigInteger(), primary_key=True, autoincrement=True),
        sa.Column(
            "deployment_id",
            postgresql.UUID(as_uuid=True),
            sa.ForeignKey("deployments.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("step", sa.String(32)),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )
    op.create_index(
        "ix_deployment_log_lines_deployment", "deployment_log_lines", ["deployment_id", "id"]
    )
    _backfill_apps()


def _backfill_apps() -> None:
    bind = op.get_bind()
    pairs = bind.execute(
        sa.text(
            "SELECT DISTINCT ON (owner_id, repo_key) owner_id, repo_key, repo_url, ref,"
            " health_path, container_port FROM deployments"
            " ORDER BY owner_id, repo_key, created_at DESC"
        )
    ).fetchall()
    for owner_id, repo_key, repo_url, ref, health_path, container_port in pairs:
        app_id = uuid.uuid4()
        bind.execute(
            sa.text(
                "INSERT INTO apps (id, name, owner_id, repo_url, repo_key, branch, health_path,"
                " container_port) VALUES (:id, :name, :owner, :url, :key, :branch, :health,"
                " :port) ON CONFLICT (name) DO NOTHING"
            ),
            {
                "id": app_id,
                "name": _derived_name(owner_id, repo_key),
                "owner": owner_id,
                "url": repo_url,
                "key": repo_key,
                "branch": ref,
                "health": health_path,
                "port": container_port,
            },
        )
    bind.execute(
        sa.text(
            "UPDATE deployments d SET app_id = a.id FROM apps a"
            " WHERE a.owner_id = d.owner_id AND a.repo_key = d.repo_key"
        )
    )
    bind.execute(
        sa.text(
            "UPDATE deployments d SET release = n.release FROM (SELECT id, row_number() OVER"
            " (PARTITION BY app_id ORDER BY created_at, id) AS release FROM deployments"
            " WHERE app_id IS NOT NULL) n WHERE d.id = n.id"
        )
    )
    bind.execute(
        sa.text(
            "UPDATE apps a SET last_release = coalesce((SELECT max(release) FROM deployments d"
            " WHERE d.app_id = a.id), 0), current_deployment_id = (SELECT d.id FROM deployments d"
            " WHERE d.app_id = a.id AND d.status IN ('healthy', 'unhealthy')"
            " AND d.replaced_by IS NULL"
            " ORDER BY d.release DESC LIMIT 1)"
        )
    )


def downgrade() -> None:
    op.drop_table("deployment_log_lines")
    op.drop_table("app_hook_deliveries")
    op.drop_constraint("uq_deployments_app_release", "deployments")
    op.drop_column("deployments", "rollback_of")
    op.drop_column("deployments", "release")
    op.drop_column("deployments", "app_id")
    op.drop_table("apps")
