"""Download URLs the API signs and serves itself (`/api/v1/files/...`).

A URL carries its expiry and an HMAC-SHA256 over (key, filename, expiry) made with a server
secret, so a changed key, file name or expiry, or a late request, is refused with 403. The
local backend always downloads this way; the S3 backend does with S3_DOWNLOADS=api, when the
S3 service is not reachable by users (the compose stack's default).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import quote, urlencode


class SignedUrls:
    def __init__(self, signing_key: bytes, url_base: str) -> None:
        self.signing_key = signing_key
        self.url_base = url_base.rstrip("/")

    def signature(self, key: str, filename: str, expires: int) -> str:
        message = f"{key}\n{filename}\n{expires}".encode()
        return hmac.new(self.signing_key, message, hashlib.sha256).hexdigest()

    def url(self, key: str, filename: str, expires_in: int) -> str:
        expires = int(time.time()) + expires_in
        query = urlencode(
            {
                "filename": filename,
                "expires": expires,
                "signature": self.signature(key, filename, expires),
            }
        )
        return f"{self.url_base}/{quote(key)}?{query}"

    def check(self, key: str, filename: str, expires: str, signature: str) -> str | None:
        """None for a valid URL, else why not: "invalid" (altered) or "expired"."""
        try:
            expiry = int(expires)
        except ValueError:
            return "invalid"
        # Bytes: compare_digest raises TypeError on str with non-ASCII characters (a 500).
        if not hmac.compare_digest(
            self.signature(key, filename, expiry).encode(), signature.encode()
        ):
            return "invalid"
        return "expired" if expiry < int(time.time()) else None
