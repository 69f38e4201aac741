"""Jobs: submit, list, inspect, follow, cancel and retry."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from flask import Blueprint, Response, jsonify, request
from flask_jwt_extended import jwt_required
from sqlalchemy import ColumnElement, false, select, type_coerce
from sqlalchemy.dialects.postgresql import JSONB

from api import links
from api.extensions import publisher, settings
from api.identity import current_user_id, is_admin
from api.job_options import job_options
from api.operation import doc
from api.owned import load_job
from api.pagination import page, paginate
from api.quotas import check_active_jobs, check_submit_rate
from api.schemas.jobs import JobEventListSchema, JobListQuerySchema, JobListSchema, JobSubmitSchema
from api.session import db_session, json_body
from api.submission import (
    IDEMPOTENCY_KEY,
    JOB_SCHEMA,
    SUBMIT_SCHEMA,
    answer_submission,
    job_response,
    new_submission,
    plain_job,
    processor_or_422,
)
from shared.jobs import transitions
from shared.jobs.status import RETRYABLE_BY_USER, JobStatus
from shared.jobs.submission import lock_owner
from shared.models import Job, JobEvent
from shared.schemas.responses import JobSchema

log = logging.getLogger(__name__)
bp = Blueprint("jobs", __name__, url_prefix="/jobs")

JOB_LIST_SCHEMA = JobListSchema()


def check_retry_quotas(job: Job) -> None:
    """A retry queues work like a submit, so it obeys the same quotas, with the same 429s:
    it counts in the caller's submissions per minute, and the job's owner (whose active
    jobs it adds to) must be under QUOTA_ACTIVE_JOBS, checked under the same per-user lock
    as a submit's so the two cannot race past it together."""
    check_submit_rate(settings(), current_user_id())
    if settings().quota_active_jobs:
        lock_owner(db_session(), job.owner_id)
        check_active_jobs(settings(), db_session(), job.owner_id)


@bp.post("")
@jwt_required()
@doc(
    summary="Submit a job that needs no upload (diagnostics)",
    tags=["jobs"],
    body=JobSubmitSchema,
    response=JobSchema,
    status=202,
    errors=(409, 429, 503),
    also=(200,),  # an Idempotency-Key replay: the original job
    parameters=(IDEMPOTENCY_KEY,),
    links=links.JOB,
)
def submit() -> Response:
    data = SUBMIT_SCHEMA.load(json_body())
    processor, params, queue = plain_job(data)
    options = job_options(data)
    return answer_submission(
        new_submission(processor, params, data["max_attempts"], queue=queue, options=options)
    )


@bp.get("")
@jwt_required()
@doc(
    summary="List jobs (yours; all for an admin)",
    tags=["jobs"],
    query=JobListQuerySchema,
    response=JobListSchema,
    links=links.FIRST_JOB,
)
def list_jobs() -> Response:
    args = JobListQuerySchema().load(list_query_args())
    query = select(Job)
    if not is_admin():
        query = query.where(Job.owner_id == current_user_id())
    for name in ("status", "kind", "processor"):
        if args.get(name):
            query = query.where(getattr(Job, name) == args[name])
    if args.get("label"):
        query = query.where(labels_match(args["label"]))
    query = paginate(query, Job.created_at, Job.id, args.get("cursor"), args["limit"])
    rows, next_cursor = page(list(db_session().scalars(query)), args["limit"])
    return jsonify(JOB_LIST_SCHEMA.dump({"items": rows, "next_cursor": next_cursor}))


def list_query_args() -> dict[str, Any]:
    """The query string as JobListQuerySchema loads it: `label` may repeat."""
    args: dict[str, Any] = request.args.to_dict()
    if "label" in request.args:
        args["label"] = request.args.getlist("label")
    return args


def labels_match(filters: list[str]) -> ColumnElement[bool]:
    """Jobs carrying every `key:value` label: one `labels @> {...}` containment, which the
    GIN index ix_jobs_labels (jsonb_path_ops) answers. The same key asked with two values
    matches nothing."""
    wanted: dict[str, str] = {}
    for item in filters:
        key, value = item.split(":", 1)
        if wanted.setdefault(key, value) != value:
            return false()
    return type_coerce(Job.labels, JSONB).contains(wanted)


@bp.get("/<uuid:job_id>")
@jwt_required()
@doc(summary="One job", tags=["jobs"], response=JobSchema, errors=(404,), links=links.JOB)
def get_job(job_id: uuid.UUID) -> Response:
    return jsonify(JOB_SCHEMA.dump(load_job(job_id)))


@bp.get("/<uuid:job_id>/events")
@jwt_required()
@doc(
    summary="The job's history, oldest first",
    tags=["jobs"],
    response=JobEventListSchema,
    errors=(404,),
)
def job_events(job_id: uuid.UUID) -> Response:
    job = load_job(job_id)
    rows = (
        db_session()
        .scalars(
            select(JobEvent).where(JobEvent.job_id == job.id).order_by(JobEvent.id).limit(5000)
        )
        .all()
    )
    return jsonify(JobEventListSchema().dump({"items": rows}))


@bp.post("/<uuid:job_id>/cancel")
@jwt_required()
@doc(
    summary="Cancel: queued jobs never start; running ones stop at their next step",
    tags=["jobs"],
    response=JobSchema,
    errors=(404, 409),
    also=(202,),  # a running job: it stops at its next step
    links={"RetryJob": links.JOB["RetryJob"], "GetJob": links.JOB["GetJob"]},
)
def cancel(job_id: uuid.UUID) -> Response:
    job = load_job(job_id, for_update=True)
    done, effects = transitions.cancel(db_session(), job)
    db_session().commit()
    effects.apply(settings().redis_url, publisher(), db_session())
    log.info(
        "job cancel %s",
        "done" if done else "requested",
        extra={"event": "job_cancel", "job_id": str(job.id)},
    )
    return job_response(job, 200 if done else 202)


@bp.post("/<uuid:job_id>/retry")
@jwt_required()
@doc(
    summary="Queue a failed, dead or cancelled job again with a fresh attempt budget",
    tags=["jobs"],
    response=JobSchema,
    status=202,
    errors=(404, 409, 429),
    links={"CancelJob": links.JOB["CancelJob"], "GetJob": links.JOB["GetJob"]},
)
def retry(job_id: uuid.UUID) -> Response:
    job = load_job(job_id, for_update=True)
    processor = processor_or_422(job.processor)
    if JobStatus(job.status) in RETRYABLE_BY_USER:  # else the requeue answers 409
        check_retry_quotas(job)
    effects = transitions.requeue(db_session(), job, processor.task_name, reason="user_retry")
    db_session().commit()
    effects.apply(settings().redis_url, publisher(), db_session())
    return job_response(job, 202)
