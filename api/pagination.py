"""Opaque keyset cursors over (created_at, id), newest first: stable under inserts."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, or_

from api.errors import ApiError


def encode_cursor(created_at: datetime, row_id: uuid.UUID) -> str:
    raw = json.dumps([created_at.isoformat(), str(row_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created, row_id = json.loads(base64.urlsafe_b64decode(padded))
        if not isinstance(created, str) or not isinstance(row_id, str):
            raise TypeError("cursor fields must be strings")  # uuid.UUID(5): AttributeError
        return datetime.fromisoformat(created), uuid.UUID(row_id)
    except (ValueError, TypeError, json.JSONDecodeError):
        raise ApiError(
            422,
            "validation_error",
            "The request is not valid.",
            {"fields": {"cursor": ["Not a valid cursor."]}},
        ) from None


def paginate(
    query: Select[Any], created_col: Any, id_col: Any, cursor: str | None, limit: int
) -> Select[Any]:
    if cursor:
        created, row_id = decode_cursor(cursor)
        query = query.where(
            or_(created_col < created, and_(created_col == created, id_col < row_id))
        )
    return query.order_by(created_col.desc(), id_col.desc()).limit(limit + 1)


def page(rows: list[Any], limit: int) -> tuple[list[Any], str | None]:
    """Trim the extra row fetched to learn whether another page exists."""
    if len(rows) > limit:
        rows = rows[:limit]
        return rows, encode_cursor(rows[-1].created_at, rows[-1].id)
    return rows, None
