"""Webhook signatures: `Dockyard-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>` of
"<t>.<body>" with the webhook's secret (one `v1=` per valid secret during a rotation's
overlap). The README shows the receiver's side of this recipe; keep the two in step."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterable, Mapping

SIGNATURE_HEADER = "Dockyard-Signature"
EVENT_HEADER = "Dockyard-Event"
DELIVERY_HEADER = "Dockyard-Delivery"


def signature(secret: str, timestamp: int, body: bytes) -> str:
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature_header(secrets: Iterable[str], body: bytes, timestamp: int | None = None) -> str:
    """The header value signing `body` with every secret given (current first)."""
    t = int(time.time()) if timestamp is None else timestamp
    return ",".join([f"t={t}", *(f"v1={signature(s, t, body)}" for s in secrets)])


def verify(secret: str, headers: Mapping[str, str], body: bytes, tolerance: float = 300.0) -> bool:
    """True if one `v1=` of the header is `body` signed with `secret` within `tolerance`
    seconds of now (the receiver's check; constant-time comparison)."""
    parts = [part.split("=", 1) for part in headers.get(SIGNATURE_HEADER, "").split(",")]
    values = [(key.strip(), value.strip()) for key, value in (p for p in parts if len(p) == 2)]
    stamps = [value for key, value in values if key == "t"]
    if len(stamps) != 1 or not stamps[0].isdigit():
        return False
    timestamp = int(stamps[0])
    if abs(time.time() - timestamp) > tolerance:
        return False
    expected = signature(secret, timestamp, body)
    return any(hmac.compare_digest(expected, value) for key, value in values if key == "v1")
