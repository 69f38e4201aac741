"""Checking Dockyard's webhook signatures on the receiving side.

Each delivery carries `Dockyard-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>...]`, where
each v1 is HMAC-SHA256 of "<t>.<raw body>" under one of the webhook's secrets (two during a
secret rotation's overlap, current first). Re-implemented here so receivers need only this
package, not the server."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping

__all__ = ["SIGNATURE_HEADER", "verify_webhook_signature"]

SIGNATURE_HEADER = "Dockyard-Signature"


def _header(headers: Mapping[str, str], name: str) -> str:
    """A header's value whatever the mapping's key case (frameworks differ)."""
    value = headers.get(name)
    if value is None:
        wanted = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == wanted), None)
    return value or ""


def verify_webhook_signature(
    secret: str, headers: Mapping[str, str], body: bytes, tolerance: int = 300
) -> bool:
    """True if the delivery's `Dockyard-Signature` holds a `v1` signature of exactly `body`
    (the raw bytes received, before any JSON parsing) under `secret`, stamped within
    `tolerance` seconds of now (refusing replays of old deliveries). Constant-time."""
    pairs = [part.split("=", 1) for part in _header(headers, SIGNATURE_HEADER).split(",")]
    values = [(key.strip(), value.strip()) for key, value in (p for p in pairs if len(p) == 2)]
    stamps = [value for key, value in values if key == "t"]
    if len(stamps) != 1 or not stamps[0].isascii() or not stamps[0].isdigit():
        return False
    timestamp = int(stamps[0])
    if abs(time.time() - timestamp) > tolerance:
        return False
    message = str(timestamp).encode() + b"." + body
    expected = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, value) for key, value in values if key == "v1")
