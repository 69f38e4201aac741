"""Extensions created once here and bound to the app in `create_app`."""

from __future__ import annotations

from celery import Celery
from flask import current_app
from flask_jwt_extended import JWTManager
from prometheus_client import CollectorRegistry
from redis import Redis

from shared.config import Settings
from shared.storage import Storage

jwt = JWTManager()


def settings() -> Settings:
    """The validated settings the app was created with (shared/config.py)."""
    return current_app.config["DOCKYARD_SETTINGS"]  # type: ignore[no-any-return]


def redis_client() -> Redis:
    """The app's Redis client (blocklist, quotas); one connection pool per app."""
    return current_app.extensions["dockyard_redis"]


def publisher() -> Celery:
    """The Celery app this API publishes with (its settings' broker)."""
    return current_app.extensions["dockyard_celery"]


def storage() -> Storage:
    """Where uploads and results are kept (S3 or a local directory)."""
    return current_app.extensions["dockyard_storage"]


def metrics_registry() -> CollectorRegistry:
    """What GET /metrics exposes (bound by `api.metrics.init_metrics`)."""
    return current_app.extensions["dockyard_metrics"]
