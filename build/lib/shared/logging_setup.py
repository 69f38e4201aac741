"""Structured logging: one JSON object a line, carrying request_id and job_id where known.

The request id travels from the HTTP request into the job row and the Celery message, so
a job can be followed across the API and every worker by grepping one id.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

_context: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar(
    "dockyard_log_context",
    default={},  # noqa: B039 - never mutated, only replaced
)

_STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}
_SECRET_KEYS = frozenset({"password", "token", "access_token", "refresh_token", "secret"})


@contextmanager
def log_context(**values: Any) -> Iterator[None]:
    """Add fields (request_id, job_id, user_id...) to every log line inside the block."""
    merged = {**_context.get(), **{k: v for k, v in values.items() if v is not None}}
    token = _context.set(merged)
    try:
        yield
    finally:
        _context.reset(token)


def bind(**values: Any) -> None:
    """Add fields for the rest of the current context (e.g. one HTTP request)."""
    _context.set({**_context.get(), **{k: v for k, v in values.items() if v is not None}})


def clear() -> None:
    _context.set({})


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "event": getattr(record, "event", None) or record.getMessage(),
            "message": record.getMessage(),
        }
        entry.update(_context.get())
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and key != "event":
                entry[key] = "[redacted]" if key in _SECRET_KEYS else value
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        context = " ".join(f"{k}={v}" for k, v in _context.get().items())
        base = super().format(record)
        return f"{base} {context}".rstrip()


def configure_logging(service: str, level: str = "INFO", json_lines: bool = True) -> None:
    """Install one stdout handler on the root logger (idempotent)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_dockyard", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stdout)
    handler._dockyard = True  # type: ignore[attr-defined]
    handler.setFormatter(
        JsonFormatter(service)
        if json_lines
        else TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root.addHandler(handler)
    root.setLevel(level)
