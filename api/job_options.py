"""The options every submit shares (priority, labels, when it runs), turned into the
Submission's fields: one place for the rules the three submit endpoints, batches and
schedules all follow."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import request

from api.errors import ApiError
from api.extensions import settings
from api.schemas.jobs import JobOptionsSchema
from shared.clock import now
from shared.dispatch.priorities import Priority

OPTIONS_SCHEMA = JobOptionsSchema()
EARLIEST_RUN_AT = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class JobOptions:
    priority: str = Priority.NORMAL.value
    labels: dict[str, str] = field(default_factory=dict)
    run_at: datetime | None = None

    def submission_fields(self) -> dict[str, Any]:
        return {"priority": self.priority, "labels": self.labels, "run_at": self.run_at}


def _invalid_params(message: str, field_name: str) -> ApiError:
    return ApiError(422, "invalid_params", message, {"fields": {field_name: [message]}})


def job_options(data: dict[str, Any]) -> JobOptions:
    """From a loaded JobOptionsSchema: `run_at` and `delay_seconds` exclude each other, and
    neither may be further away than MAX_DELAY_SECONDS (422 `invalid_params`)."""
    run_at, delay = data.get("run_at"), data.get("delay_seconds")
    if run_at is not None and delay is not None:
        raise _invalid_params("Give run_at or delay_seconds, not both.", "delay_seconds")
    limit = settings().max_delay_seconds
    if delay is not None:
        if delay > limit:
            raise _invalid_params(f"delay_seconds must be at most {limit}.", "delay_seconds")
        run_at = now() + timedelta(seconds=delay) if delay else None
    elif run_at is not None and run_at > now() + timedelta(seconds=limit):
        raise _invalid_params(f"run_at must be within {limit} seconds from now.", "run_at")
    elif run_at is not None and run_at < EARLIEST_RUN_AT:
        # A past run_at runs at once; one before the epoch is a mistake (and a year before 1
        # could be stored by PostgreSQL but not read back).
        raise _invalid_params("run_at must be after 1970-01-01T00:00:00Z.", "run_at")
    return JobOptions(data["priority"], dict(data["labels"]), run_at)


def form_job_options() -> JobOptions:
    """The same options from a multipart form (labels as a JSON object, like params)."""
    raw: dict[str, Any] = {}
    for name in ("priority", "run_at", "delay_seconds"):
        value = request.form.get(name)
        if value not in (None, ""):
            raw[name] = value
    labels = request.form.get("labels")
    if labels not in (None, ""):
        try:
            raw["labels"] = json.loads(labels)
        except (ValueError, RecursionError):
            raise _invalid_params("labels must be a JSON object.", "labels") from None
    return job_options(OPTIONS_SCHEMA.load(raw))  # a ValidationError answers 422
