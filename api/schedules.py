"""Recurring schedules: create, list, inspect, change, delete, run one now, list its runs.

The rules of a recurrence and the job an occurrence makes are shared/jobs/schedules.py; the jobs
themselves are made by the schedule tick (workers/schedules.py), or here by a trigger.
Schedules run processors that take no input: diagnostics, and deploy (a nightly redeploy
of a branch). A deploy schedule's params are a POST /jobs/deploy body, checked the same way
(api/deployments.py); its env is stored encrypted (shared/deploy/jobs.py) and only its
names are shown.
"""

from __future__ import annotations

import uuid
from typing import Any

from flask import Blueprint, Response, g, jsonify, request, url_for
from flask_jwt_extended import jwt_required
from marshmallow import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api import links
from api.deploy_requests import deploy_request, refuse_repository
from api.errors import ApiError, not_found
from api.extensions import publisher, settings
from api.identity import current_user_id, is_admin
from api.operation import doc
from api.pagination import page, paginate
from api.quotas import SubmitQuotas, check_schedules
from api.schemas.common import PageQuerySchema
from api.schemas.deployments import DeploySubmitSchema
from api.schemas.jobs import JobListSchema
from api.schemas.schedules import (
    ScheduleCreateSchema,
    ScheduleListSchema,
    SchedulePatchSchema,
    ScheduleSchema,
)
from api.session import db_session, json_body
from api.submission import job_response, load_params, processor_or_422, resolve_max_attempts
from shared.clock import now
from shared.deploy.repo_urls import InvalidRepository
from shared.jobs import schedules
from shared.jobs.submission import lock_owner, submit_job
from shared.models import Job, Schedule
from shared.processors import Processor
from shared.processors.deploy import NAME as DEPLOY_PROCESSOR
from shared.schemas.responses import JobSchema

bp = Blueprint("schedules", __name__, url_prefix="/schedules")

SCHEDULE_SCHEMA = ScheduleSchema()
SCHEDULE_LIST_SCHEMA = ScheduleListSchema()
CREATE_SCHEMA = ScheduleCreateSchema()
PATCH_SCHEMA = SchedulePatchSchema()
LIST_QUERY_SCHEMA = PageQuerySchema()
RUNS_SCHEMA = JobListSchema()
#: A deploy schedule's params: the fields of a POST /jobs/deploy body that say what to deploy.
DEPLOY_PARAMS_SCHEMA = DeploySubmitSchema(
    only=("repo_url", "ref", "container_port", "health_path", "env", "app")
)
#: Fields a PATCH copies as they are (the others are checked together below).
_PLAIN_FIELDS = ("name", "priority", "labels", "enabled", "overlap", "misfire")


def _invalid(field: str, reason: str) -> ApiError:
    return ApiError(422, "invalid_schedule", reason, {"fields": {field: [reason]}})


def _processor(name: str) -> Processor:
    processor = processor_or_422(name)
    if processor.input != "none" and processor.name != DEPLOY_PROCESSOR:
        raise _invalid(
            "processor",
            f"{processor.name} takes {processor.input} input; schedules run processors that "
            "take none (diagnostics) and deploy.",
        )
    return processor


def _params(processor: Processor, raw: dict[str, Any]) -> dict[str, Any]:
    """The params to store. A deploy schedule's are checked like a POST /jobs/deploy body
    (same error codes, under `params`) and keep the env only as its encrypted token."""
    if processor.name != DEPLOY_PROCESSOR:
        return load_params(processor, raw)
    try:
        data = DEPLOY_PARAMS_SCHEMA.load(raw)
    except ValidationError as error:
        raise ValidationError({"params": error.normalized_messages()}) from None
    return deploy_request(data, within="params").stored_params()


def _recurrence(cron: str | None, every_seconds: int | None, timezone: str) -> schedules.Recurrence:
    try:
        return schedules.recurrence(cron, every_seconds, timezone)
    except schedules.InvalidSchedule as error:
        raise _invalid(error.field, error.reason) from None


def _max_attempts(processor: Processor, requested: int | None) -> int | None:
    """The stored budget: None means the processor's default when each run is made."""
    return None if requested is None else resolve_max_attempts(processor, requested)


def _commit(session: Session) -> None:
    """Commit; a name the owner already uses answers 409 `schedule_name_taken`."""
    try:
        session.commit()
    except IntegrityError as error:
        session.rollback()
        if getattr(getattr(error.orig, "diag", None), "constraint_name", None) == (
            "uq_schedules_owner_name"
        ):
            raise ApiError(
                409, "schedule_name_taken", "You already have a schedule with this name."
            ) from None
        raise


def load_schedule(schedule_id: uuid.UUID, *, for_update: bool = False) -> Schedule:
    """The caller's schedule (any for an admin); someone else's answers 404 like a missing one."""
    schedule = db_session().get(Schedule, schedule_id, with_for_update=for_update)
    if schedule is None or (schedule.owner_id != current_user_id() and not is_admin()):
        raise not_found("schedule")
    return schedule


def schedule_response(schedule: Schedule, status: int = 200) -> Response:
    response = jsonify(SCHEDULE_SCHEMA.dump(schedule))
    response.status_code = status
    if status == 201:
        response.headers["Location"] = url_for("v1.schedules.get_schedule", schedule_id=schedule.id)
    return response


@bp.post("")
@jwt_required()
@doc(
    summary="Create a recurring schedule (cron or every_seconds) of a processor without input",
    tags=["schedules"],
    body=ScheduleCreateSchema,
    response=ScheduleSchema,
    status=201,
    errors=(409, 429),
    links=links.SCHEDULE,
)
def create_schedule() -> Response:
    data = CREATE_SCHEMA.load(json_body())
    processor = _processor(data["processor"])
    params = _params(processor, data["params"])
    recurrence = _recurrence(data["cron"], data["every_seconds"], data["timezone"])
    owner = current_user_id()
    session = db_session()
    if settings().quota_schedules:
        lock_owner(session, owner)  # concurrent creates cannot pass the cap together
        check_schedules(settings(), session, owner)
    schedule = Schedule(
        id=uuid.uuid4(),
        owner_id=owner,
        processor=processor.name,
        params=params,
        cron=recurrence.cron,
        every_seconds=recurrence.every_seconds,
        timezone=data["timezone"],
        max_attempts=_max_attempts(processor, data["max_attempts"]),
        next_run_at=recurrence.next_after(now()),
        **{name: data[name] for name in _PLAIN_FIELDS},
    )
    session.add(schedule)
    _commit(session)
    return schedule_response(schedule, 201)


@bp.get("")
@jwt_required()
@doc(
    summary="List schedules (yours; all for an admin), newest first",
    tags=["schedules"],
    query=PageQuerySchema,
    response=ScheduleListSchema,
    links={
        "GetFirstSchedule": ("v1.schedules.get_schedule", {"schedule_id": links.FIRST_ITEM}),
    },
)
def list_schedules() -> Response:
    args = LIST_QUERY_SCHEMA.load(request.args)
    query = select(Schedule)
    if not is_admin():
        query = query.where(Schedule.owner_id == current_user_id())
    query = paginate(query, Schedule.created_at, Schedule.id, args.get("cursor"), args["limit"])
    rows, next_cursor = page(list(db_session().scalars(query)), args["limit"])
    return jsonify(SCHEDULE_LIST_SCHEMA.dump({"items": rows, "next_cursor": next_cursor}))


@bp.get("/<uuid:schedule_id>")
@jwt_required()
@doc(
    summary="One schedule",
    tags=["schedules"],
    response=ScheduleSchema,
    errors=(404,),
    links=links.SCHEDULE,
)
def get_schedule(schedule_id: uuid.UUID) -> Response:
    return schedule_response(load_schedule(schedule_id))


@bp.patch("/<uuid:schedule_id>")
@jwt_required()
@doc(
    summary="Change a schedule; a new recurrence or a re-enable counts from now",
    tags=["schedules"],
    body=SchedulePatchSchema,
    response=ScheduleSchema,
    errors=(404, 409),
)
def patch_schedule(schedule_id: uuid.UUID) -> Response:
    data = PATCH_SCHEMA.load(json_body())
    schedule = load_schedule(schedule_id, for_update=True)
    processor = _processor(data.get("processor", schedule.processor))
    if "params" in data or processor.name != schedule.processor:
        schedule.params = _params(processor, data.get("params", schedule.params))
        schedule.processor = processor.name
    if "max_attempts" in data:
        schedule.max_attempts = _max_attempts(processor, data["max_attempts"])
    new_recurrence = "cron" in data or "every_seconds" in data
    if new_recurrence or "timezone" in data:
        cron, every = (
            (data.get("cron"), data.get("every_seconds"))
            if new_recurrence
            else (schedule.cron, schedule.every_seconds)
        )
        timezone = data.get("timezone", schedule.timezone)
        recurrence = _recurrence(cron, every, timezone)
        schedule.cron, schedule.every_seconds = recurrence.cron, recurrence.every_seconds
        schedule.timezone = timezone
    else:
        recurrence = schedules.Recurrence.of(schedule)
    re_enabled = data.get("enabled") is True and not schedule.enabled
    for name in _PLAIN_FIELDS:
        if name in data:
            setattr(schedule, name, data[name])
    if new_recurrence or "timezone" in data or re_enabled:
        # No catch-up for the time it was off or for the old recurrence.
        schedule.next_run_at = recurrence.next_after(now())
    _commit(db_session())
    return schedule_response(schedule)


@bp.delete("/<uuid:schedule_id>")
@jwt_required()
@doc(
    summary="Delete a schedule (its jobs stay, without their schedule_id)",
    tags=["schedules"],
    status=204,
    errors=(404,),
)
def delete_schedule(schedule_id: uuid.UUID) -> Response:
    schedule = load_schedule(schedule_id, for_update=True)
    db_session().delete(schedule)
    db_session().commit()
    return Response(status=204)


@bp.post("/<uuid:schedule_id>/trigger")
@jwt_required()
@doc(
    summary="Run the schedule once now (whatever its overlap, enabled or next_run_at)",
    tags=["schedules"],
    response=JobSchema,
    status=202,
    errors=(404, 429),
    links=links.JOB,
)
def trigger(schedule_id: uuid.UUID) -> Response:
    schedule = load_schedule(schedule_id, for_update=True)
    processor = processor_or_422(schedule.processor)
    try:
        submission = schedules.submission(
            schedule,
            processor,
            now(),
            settings=settings(),
            quotas=SubmitQuotas(settings(), schedule.owner_id),
            request_id=g.request_id,
        )
    except InvalidRepository as error:  # its host is no longer in DEPLOY_ALLOWED_HOSTS
        raise refuse_repository(error, "params") from None
    result = submit_job(
        db_session(), submission, celery=publisher(), redis_url=settings().redis_url
    )
    return job_response(result.job, 202)


@bp.get("/<uuid:schedule_id>/runs")
@jwt_required()
@doc(
    summary="The schedule's jobs, newest first",
    tags=["schedules"],
    query=PageQuerySchema,
    response=JobListSchema,
    errors=(404,),
)
def schedule_runs(schedule_id: uuid.UUID) -> Response:
    args = LIST_QUERY_SCHEMA.load(request.args)
    schedule = load_schedule(schedule_id)
    query = select(Job).where(Job.schedule_id == schedule.id)
    query = paginate(query, Job.created_at, Job.id, args.get("cursor"), args["limit"])
    rows, next_cursor = page(list(db_session().scalars(query)), args["limit"])
    return jsonify(RUNS_SCHEMA.dump({"items": rows, "next_cursor": next_cursor}))
