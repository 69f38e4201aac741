"""The platform's clock: every timestamp Dockyard writes is timezone-aware UTC from here, so
tests and code never mix naive and aware datetimes."""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    return datetime.now(UTC)
