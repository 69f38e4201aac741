"""The Dockyard HTTP API (Flask app factory)."""

from __future__ import annotations

import logging

from flask import Blueprint, Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from api import (
    admin,
    apps,
    auth,
    batches,
    deployment_logs_stream,
    deployments,
    docs,
    file_jobs,
    files,
    github_hooks,
    health,
    jobs,
    metrics,
    processors,
    schedules,
    streams,
    webhooks,
)
from api.cli import register_cli
from api.errors import register_error_handlers
from api.extensions import jwt
from api.middleware import register_middleware
from api.session import register_session_teardown
from shared import logging_setup
from shared import redis as shared_redis
from shared.celery_app import app as celery_app
from shared.celery_app import make_celery
from shared.config import Settings, get_settings
from shared.schemas.responses import API_PREFIX  # links in job and deployment bodies use it too
from shared.storage import StorageError, build_storage


def create_app(config: Settings | None = None) -> Flask:
    """Build the API. `config` defaults to settings read from the environment."""
    settings = config or get_settings()
    app = Flask(__name__, static_folder=None)
    app.config.update(
        DOCKYARD_SETTINGS=settings,
        JWT_SECRET_KEY=settings.jwt_secret_key,
        JWT_ACCESS_TOKEN_EXPIRES=settings.jwt_access_token_expires,
        JWT_REFRESH_TOKEN_EXPIRES=settings.jwt_refresh_token_expires,
        JWT_TOKEN_LOCATION=["headers"],
        JWT_ERROR_MESSAGE_KEY="message",
        MAX_CONTENT_LENGTH=settings.max_content_length,
        JSON_SORT_KEYS=False,
        PROPAGATE_EXCEPTIONS=False,
    )
    logging_setup.configure_logging(
        settings.service_name or "api", settings.log_level, settings.log_json
    )
    jwt.init_app(app)
    app.extensions["dockyard_redis"] = shared_redis.api_state(settings.redis_url)
    app.extensions["dockyard_celery"] = (
        celery_app
        if settings.broker_url == celery_app.conf.broker_url
        else make_celery(settings.broker_url)
    )
    storage = build_storage(settings)
    if settings.storage_backend == "local" or settings.s3_create_bucket:
        try:
            storage.ensure_ready()  # a directory, or a bucket in development
        except StorageError:
            logging.getLogger(__name__).warning("storage not ready at start-up", exc_info=True)
    app.extensions["dockyard_storage"] = storage
    register_middleware(app)
    metrics.init_metrics(app, settings)
    register_error_handlers(app)
    register_session_teardown(app)
    register_cli(app)

    v1 = Blueprint("v1", __name__, url_prefix=API_PREFIX)
    for module in (
        auth, jobs, file_jobs, streams, processors, admin, files, deployments, schedules,
    ):  # fmt: skip
        v1.register_blueprint(module.bp)
    v1.register_blueprint(batches.bp)
    v1.register_blueprint(webhooks.bp)
    v1.register_blueprint(apps.bp)
    v1.register_blueprint(github_hooks.bp)
    v1.register_blueprint(github_hooks.apps_bp)
    v1.register_blueprint(deployments.submit_bp)
    v1.register_blueprint(deployment_logs_stream.bp)
    v1.register_blueprint(health.bp, name="v1_health")
    v1.register_blueprint(docs.bp)
    app.register_blueprint(v1)
    app.register_blueprint(health.bp)  # /healthz and /readyz at the root for probes too
    app.register_blueprint(metrics.bp)  # /metrics at the root, where scrapers look
    if settings.trusted_proxies:
        # Behind N proxies of the operator's own, the client's address is the Nth
        # X-Forwarded-For entry from the right (earlier entries are the client's to forge):
        # the per-address hashing limit then holds per client, not per proxy.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxies)  # type: ignore[method-assign]
    return app
