"""Token revocation: the Redis blocklist of tokens (a logout, a spent refresh token) and of
whole logins (a token family), and the check every authenticated request makes.

Used by the auth blueprint (api/auth.py) and by long-lived streams (api/sse.py), which
recheck their token while they run. Entries live until the longest token they cover would
have expired anyway.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from flask import g

from api.extensions import redis_client, settings

log = logging.getLogger(__name__)

_REVOKED_PREFIX = "dockyard:revoked:"
_FAMILY_PREFIX = "dockyard:revoked-family:"
_ROTATED = b"rotated"  # the blocklist value of a refresh token spent by a refresh


def revoke(claims: dict[str, Any]) -> None:
    """Blocklist a token's jti until it would have expired anyway."""
    remaining = int(claims["exp"] - datetime.now(UTC).timestamp())
    if remaining > 0:
        redis_client().set(_REVOKED_PREFIX + claims["jti"], "1", ex=remaining)


def revoke_family(family: str | None) -> None:
    """Refuse every token of one login, for as long as the newest of them can live."""
    if not family:
        return
    config = settings()
    lifetime = max(config.jwt_refresh_token_expires, config.jwt_access_token_expires)
    redis_client().set(_FAMILY_PREFIX + family, "1", ex=lifetime)


def spend_refresh_token(claims: dict[str, Any]) -> bool:
    """Mark a refresh token used, atomically; False if it already was (a second use)."""
    remaining = max(1, int(claims["exp"] - datetime.now(UTC).timestamp()))
    key = _REVOKED_PREFIX + claims["jti"]
    return bool(redis_client().set(key, _ROTATED, nx=True, ex=remaining))


def token_revoked(claims: dict[str, Any]) -> bool:
    """Whether a token was revoked: itself (logout, or spent by a refresh) or its whole
    login. One Redis round trip; raises if Redis is down.

    A refresh token presented again after a refresh spent it is a reuse: its family is
    revoked here, whichever endpoint it was presented to."""
    family = claims.get("fam")
    keys = [_REVOKED_PREFIX + claims["jti"]] + ([_FAMILY_PREFIX + family] if family else [])
    values = redis_client().mget(keys)
    if len(values) > 1 and values[1]:
        return True
    if values[0] == _ROTATED and claims.get("type") == "refresh":
        revoke_family(family)
        g.refresh_token_reused = True
        log.warning(
            "refresh token reused; its login revoked",
            extra={"event": "refresh_token_reused", "user_id": claims.get("sub")},
        )
    return values[0] is not None
