"""Recurring schedules: create, change, show and list them."""

from __future__ import annotations

from typing import Any

from flask import url_for
from marshmallow import Schema, fields, validate

from api.schemas.common import labels_field
from api.schemas.jobs import PLAIN_PROCESSORS
from shared.deploy.jobs import public_params
from shared.dispatch.priorities import Priority
from shared.jobs import schedules
from shared.schemas.responses import PRIORITIES, ComputedDict


def _schedule_links(schedule: Any) -> dict[str, str]:
    return {
        "self": url_for("v1.schedules.get_schedule", schedule_id=schedule.id),
        "runs": url_for("v1.schedules.schedule_runs", schedule_id=schedule.id),
        "trigger": url_for("v1.schedules.trigger", schedule_id=schedule.id),
    }


def _schedule_params(schedule: Any) -> dict[str, Any]:
    """Never the encrypted env a deploy schedule keeps."""
    return public_params(schedule.params)


OVERLAPS = [o.value for o in schedules.Overlap]


MISFIRES = [m.value for m in schedules.Misfire]


_SCHEDULE_DOCS: dict[str, dict[str, Any]] = {
    "processor": {"enum": PLAIN_PROCESSORS, "example": "debug.echo"},
    "params": {"example": {"message": "hello"}},
    "cron": {
        "description": "Five fields (minute hour day-of-month month day-of-week), read in "
        "`timezone`; not with every_seconds.",
        "example": "0 3 * * *",
    },
    "every_seconds": {
        "description": f"Period, {schedules.MIN_EVERY_SECONDS} to "
        f"{schedules.MAX_EVERY_SECONDS} seconds; not with cron.",
    },
    "timezone": {"description": "IANA time zone name the cron is read in.", "example": "UTC"},
    "overlap": {"description": "skip: no new run while the previous one has not ended."},
    "misfire": {"description": "run_once: after downtime one catch-up run; skip: none."},
}


def _schedule_fields(create: bool) -> dict[str, fields.Field]:
    """The fields POST /schedules takes (required ones and defaults) or PATCH does (any
    subset, no defaults): one definition for both."""

    def default(value: Any) -> dict[str, Any]:
        return {"load_default": value} if create else {}

    docs = _SCHEDULE_DOCS
    return {
        "name": fields.String(required=create, validate=validate.Length(min=1, max=100)),
        "processor": fields.String(
            required=create, validate=validate.Length(min=1, max=64), metadata=docs["processor"]
        ),
        "params": fields.Dict(keys=fields.String(), metadata=docs["params"], **default(dict)),
        "cron": fields.String(
            allow_none=True,
            validate=validate.Length(max=200),
            metadata=docs["cron"],
            **default(None),
        ),
        "every_seconds": fields.Integer(
            allow_none=True, metadata=docs["every_seconds"], **default(None)
        ),
        "timezone": fields.String(
            validate=validate.Length(min=1, max=64), metadata=docs["timezone"], **default("UTC")
        ),
        "priority": fields.String(
            validate=validate.OneOf(PRIORITIES), **default(Priority.NORMAL.value)
        ),
        "labels": labels_field(**default(dict)),
        "enabled": fields.Boolean(**default(True)),
        "overlap": fields.String(
            validate=validate.OneOf(OVERLAPS),
            metadata=docs["overlap"],
            **default(schedules.Overlap.SKIP.value),
        ),
        "misfire": fields.String(
            validate=validate.OneOf(MISFIRES),
            metadata=docs["misfire"],
            **default(schedules.Misfire.RUN_ONCE.value),
        ),
        "max_attempts": fields.Integer(
            allow_none=True, validate=validate.Range(min=1), **default(None)
        ),
    }


#: POST /schedules. (Unknown fields are refused: marshmallow's default, RAISE.)
ScheduleCreateSchema = Schema.from_dict(_schedule_fields(create=True), name="ScheduleCreateSchema")


#: PATCH /schedules/{id}: any subset of the fields POST takes. Giving `cron` or
#: `every_seconds` replaces the recurrence (the other is cleared).
SchedulePatchSchema = Schema.from_dict(_schedule_fields(create=False), name="SchedulePatchSchema")


class ScheduleSchema(Schema):
    """Dumps a Schedule row."""

    id = fields.UUID(required=True)
    owner_id = fields.UUID()
    name = fields.String()
    processor = fields.String()
    params = ComputedDict(
        compute=_schedule_params,
        metadata={"description": "A deploy schedule's env shows as env_names only."},
    )
    cron = fields.String(allow_none=True)
    every_seconds = fields.Integer(allow_none=True)
    timezone = fields.String()
    priority = fields.String(validate=validate.OneOf(PRIORITIES))
    labels = fields.Dict(keys=fields.String(), values=fields.String())
    enabled = fields.Boolean()
    overlap = fields.String(validate=validate.OneOf(OVERLAPS))
    misfire = fields.String(validate=validate.OneOf(MISFIRES))
    max_attempts = fields.Integer(allow_none=True)
    next_run_at = fields.DateTime(allow_none=True)
    last_run_at = fields.DateTime(allow_none=True)
    last_job_id = fields.UUID(allow_none=True)
    created_at = fields.DateTime()
    updated_at = fields.DateTime()
    links = ComputedDict(keys=fields.String(), values=fields.String(), compute=_schedule_links)


class ScheduleListSchema(Schema):
    items = fields.List(fields.Nested(ScheduleSchema), required=True)
    next_cursor = fields.String(allow_none=True)
