"""Who is calling: the authenticated user of the request and whether they are an admin.

Read from the verified access token's claims (api/auth.py issues the tokens); every
blueprint asks these, so they live here rather than in the auth blueprint.
"""

from __future__ import annotations

import uuid

from flask_jwt_extended import get_jwt, get_jwt_identity

from api.errors import ApiError


def current_user_id() -> uuid.UUID:
    return uuid.UUID(get_jwt_identity())


def is_admin() -> bool:
    return get_jwt().get("role") == "admin"


def require_admin() -> None:
    if not is_admin():
        raise ApiError(403, "forbidden", "This endpoint is for administrators.")
