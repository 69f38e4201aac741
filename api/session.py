"""Request-scoped database session and JSON body parsing."""

from __future__ import annotations

from typing import Any

from flask import Flask, g, request
from sqlalchemy.orm import Session

from api.errors import ApiError
from api.extensions import settings
from shared.db import new_session


def db_session() -> Session:
    """One session per request, closed (rolled back if uncommitted) at teardown."""
    if "db" not in g:
        g.db = new_session(settings().database_url)
    return g.db


def json_body(optional: bool = False) -> dict[str, Any]:
    """The request's JSON object, or a 400/415 in the standard error shape."""
    if not request.data and optional:
        return {}
    if not request.is_json:
        raise ApiError(
            415, "unsupported_media_type", "Send a JSON body (Content-Type: application/json)."
        )
    data = request.get_json(silent=True)
    if data is None:
        raise ApiError(400, "invalid_json", "The request body is not valid JSON.")
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_json", "The request body must be a JSON object.")
    return data


def register_session_teardown(app: Flask) -> None:
    @app.teardown_appcontext
    def close_session(_exc: BaseException | None) -> None:
        session = g.pop("db", None)
        if session is not None:
            session.close()
