"""Where GitHub sends an app's push events: shown by GET /apps/{app} and by the answer that
sets the app's hook secret."""

from __future__ import annotations

from api.extensions import settings
from shared.schemas.responses import API_PREFIX


def webhook_url(name: str) -> str:
    """Where GitHub sends the app's push events (the payload URL of its webhook)."""
    return f"{settings().public_base_url.rstrip('/')}{API_PREFIX}/hooks/github/{name}"
