"""deployments: `env` encrypted at rest (Fernet token in a text column), `env_names` kept

The migration encrypts every existing plaintext row itself (with DEPLOY_SECRETS_KEY, or the
development key derived from JWT_SECRET_KEY), so the code never has to read legacy
plaintext: after it, the column holds only Fernet tokens or NULL. Rows are rewritten in
batches of 500. The names move to `env_names`, which stays when the values are deleted.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26 16:30:00
"""

import json

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

BATCH = 500


def upgrade() -> None:
    from shared.security.crypto import encrypt_env

    op.add_column(
        "deployments",
        sa.Column(
            "env_names",
            postgresql.JSONB(),
            nullable=False,
            server_default=sa.text("'[]'::jsonb"),
        ),
    )
    op.execute(
        "UPDATE deployments SET env_names = COALESCE("
        "(SELECT jsonb_agg(k ORDER BY k) FROM jsonb_object_keys(env) AS k), '[]'::jsonb)"
    )
    op.alter_column(
        "deployments",
        "env",
        type_=sa.Text(),
        nullable=True,
        postgresql_using="env::text",
    )
    connection = op.get_bind()
    while True:
        # Plaintext rows are JSON objects; Fernet tokens start with "gAAAAA".
        rows = connection.execute(
            sa.text("SELECT id, env FROM deployments WHERE env LIKE '{%' LIMIT :n"),
            {"n": BATCH},
        ).all()
        if not rows:
            break
        for row in rows:
            connection.execute(
                sa.text("UPDATE deployments SET env = :token WHERE id = :id"),
                {"token": encrypt_env(json.loads(row.env)), "id": row.id},
            )
    op.create_index(
        "ix_deployments_env_held",
        "deployments",
        ["stopped_at"],
        postgresql_where=sa.text("status = 'stopped' AND env IS NOT NULL"),
    )


def downgrade() -> None:
    from shared.security.crypto import decrypt_env

    op.drop_index("ix_deployments_env_held", table_name="deployments")
    connection = op.get_bind()
    while True:
        rows = connection.execute(
            sa.text("SELECT id, env FROM deployments WHERE env NOT LIKE '{%' LIMIT :n"),
            {"n": BATCH},
        ).all()
        if not rows:
            break
        for row in rows:
            connection.execute(
                sa.text("UPDATE deployments SET env = :plain WHERE id = :id"),
                {"plain": json.dumps(decrypt_env(row.env)), "id": row.id},
            )
    op.execute("UPDATE deployments SET env = '{}' WHERE env IS NULL")
    op.alter_column(
        "deployments",
        "env",
        type_=postgresql.JSONB(),
        nullable=False,
        postgresql_using="env::jsonb",
    )
    op.drop_column("deployments", "env_names")
