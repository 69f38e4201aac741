"""`flask --app api create-admin EMAIL`: make (or promote) an administrator."""

from __future__ import annotations

import os
import uuid

import click
from flask import Flask
from sqlalchemy import select

from shared.db import session_scope
from shared.models import User
from shared.security.passwords import hash_password


def ensure_admin(
    email: str, password: str | None, database_url: str | None = None
) -> tuple[User, bool]:
    """Create the admin, or promote an existing user; returns (user, created)."""
    email = email.strip().lower()
    with session_scope(database_url) as session:
        user = session.scalar(select(User).where(User.email == email))
        if user is not None:
            user.role = "admin"
            if password:
                user.password_hash = hash_password(password)
            return user, False
        if not password or len(password) < 8:
            raise click.UsageError("a new admin needs a password of at least 8 characters")
        user = User(
            id=uuid.uuid4(), email=email, password_hash=hash_password(password), role="admin"
        )
        session.add(user)
        return user, True


def register_cli(app: Flask) -> None:
    @app.cli.command("create-admin")
    @click.argument("email")
    @click.option(
        "--password",
        envvar="DOCKYARD_ADMIN_PASSWORD",
        default=None,
        help="Defaults to $DOCKYARD_ADMIN_PASSWORD; prompted for when absent.",
    )
    def create_admin(email: str, password: str | None) -> None:
        """Create EMAIL as an admin, or promote the existing account."""
        if password is None and os.isatty(0):
            password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
        user, created = ensure_admin(email, password, app.config["DOCKYARD_SETTINGS"].database_url)
        click.echo(f"{'created' if created else 'promoted'} admin {user.email} ({user.id})")
