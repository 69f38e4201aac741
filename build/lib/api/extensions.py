"""Extensions created once here and bound to the app in `create_app`."""

from __future__ import annotations

from celery import Celery
from flask import current_app
from flask_jwt_extended import JWTManager
from redis import Redis

jwt = JWTManager()


def redis_client() -> Redis:
    """The app's Redis client (blocklist, quotas); one connection pool per app."""
    return current_app.extensions["dockyard_redis"]


def publisher() -> Celery:
    """The Celery app this API publishes with (its settings' broker)."""
    return current_app.extensions["dockyard_celery"]
