"""Liveness and readiness probes (no authentication: orchestrators call them)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify
from sqlalchemy import text

from api.extensions import redis_client, settings
from api.operation import doc
from api.schemas.health import HealthSchema
from shared.db import get_engine

bp = Blueprint("health", __name__)


@bp.get("/healthz")
@doc(summary="The process is alive", tags=["health"], response=HealthSchema, auth=None)
def healthz() -> Response:
    return jsonify({"status": "ok", "checks": {}})


@bp.get("/readyz")
@doc(
    summary="Redis and PostgreSQL answer (503 naming the part that does not)",
    tags=["health"],
    response=HealthSchema,
    auth=None,
    errors=(503,),
)
def readyz() -> Response | tuple[Response, int]:
    checks: dict[str, str] = {}
    try:
        redis_client().ping()
        checks["redis"] = "ok"
    except Exception as error:
        checks["redis"] = f"unavailable: {type(error).__name__}"
    try:
        with get_engine(settings().database_url).connect() as connection:
            connection.execute(text("SELECT 1"))
        checks["postgres"] = "ok"
    except Exception as error:
        checks["postgres"] = f"unavailable: {type(error).__name__}"
    failing = [name for name, state in checks.items() if state != "ok"]
    if failing:
        from api.errors import error_response

        return error_response(
            503,
            "not_ready",
            f"Not ready: {', '.join(failing)} unavailable.",
            {"checks": checks, "failing": failing},
        )
    return jsonify({"status": "ready", "checks": checks})
