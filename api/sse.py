"""What every Server-Sent Events stream of the API shares (the jobs' events, api/streams.py;
a deployment's live log, api/deployment_logs_stream.py): the Last-Event-ID it resumes
after, the token it lives no longer than, the Redis subscription and stream slot it holds,
and the response that carries it.

A stream lives no longer than the token it was opened with: when the token expires, or is
revoked by a logout (checked every AUTH_RECHECK_SECONDS), the stream sends a last
`token_expired` / `token_revoked` event and ends; the client reconnects with a fresh token.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

from flask import Response, request, stream_with_context
from redis.client import PubSub

from api.errors import ApiError
from api.extensions import settings
from api.operation import header, query_parameter
from api.quotas import StreamSlot
from api.revocation import token_revoked
from shared import redis as shared_redis

log = logging.getLogger(__name__)
KEEPALIVE_SECONDS = 15.0
AUTH_RECHECK_SECONDS = 5.0  # a revoked token's stream ends within this (one Redis EXISTS)
KEEPALIVE = ": keep-alive\n\n"
RETRY = "retry: 2000\n\n"
_EVENT_ID = {"type": "string", "pattern": "^[0-9]{1,18}$"}
#: Where a stream view reads the id it resumes after (`last_event_id`), for the document.
LAST_EVENT_ID = (
    header("Last-Event-ID", "Replay the events after this id first.", _EVENT_ID),
    query_parameter("last_event_id", _EVENT_ID),
)


def last_event_id() -> int | None:
    """The `Last-Event-ID` header (or `?last_event_id=`), 422 when it is not an event id."""
    raw = request.headers.get("Last-Event-ID") or request.args.get("last_event_id")
    if raw is None or raw == "":
        return None
    # isascii: str.isdigit() also accepts digits int() refuses ("²"), which answered 500.
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise ApiError(422, "invalid_last_event_id", "Last-Event-ID must be an event id.")
    return int(raw)


def ending(reason: str) -> str:
    """The last frame of a stream whose token ended. No id: the client's Last-Event-ID
    stays that of the last real event."""
    return f"event: {reason}\ndata: {json.dumps({'reason': reason})}\n\n"


class Credential:
    """The token a stream was opened with, checked while the stream lasts."""

    def __init__(self, claims: dict[str, Any]) -> None:
        self.claims = dict(claims)
        self.expires_at = float(claims["exp"])
        self.checked_at = time.monotonic()

    def ended(self) -> str | None:
        """Why the stream must end now (an event type), or None."""
        if time.time() >= self.expires_at:
            return "token_expired"
        if time.monotonic() - self.checked_at < AUTH_RECHECK_SECONDS:
            return None
        self.checked_at = time.monotonic()
        try:
            return "token_revoked" if token_revoked(self.claims) else None
        except Exception:  # fail closed, like every request: unverifiable ends the stream
            log.warning("stream token check failed", exc_info=True, extra={"event": "stream"})
            return "token_unverifiable"

    def wait(self) -> float:
        """How long to wait for a message before the token must be looked at again."""
        until_expiry = max(0.05, self.expires_at - time.time())
        return min(AUTH_RECHECK_SECONDS, KEEPALIVE_SECONDS, until_expiry)


class Subscription:
    """What one open stream holds (a Redis subscription and a stream slot), released once."""

    def __init__(self, slot: StreamSlot | None) -> None:
        self.slot = slot
        self.pubsub: PubSub = shared_redis.events(settings().redis_url).pubsub(
            ignore_subscribe_messages=True
        )

    def close(self) -> None:
        self.pubsub.close()
        if self.slot is not None:
            self.slot.release()
            self.slot = None


def response(events: Iterator[str]) -> Response:
    """The streaming response; unbuffered on the way out."""
    answer = Response(stream_with_context(events), mimetype="text/event-stream")
    answer.headers["Cache-Control"] = "no-store"
    answer.headers["X-Accel-Buffering"] = "no"  # proxies must not buffer the stream
    return answer
