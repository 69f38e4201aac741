"""Jobs: submit, list, inspect, follow, cancel and retry."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, g, jsonify, request, url_for
from flask_jwt_extended import jwt_required
from marshmallow import ValidationError
from sqlalchemy import ColumnElement, false, select, type_coerce
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from api.auth import current_user_id, is_admin
from api.errors import ApiError, not_found
from api.extensions import publisher, settings
from api.job_options import JobOptions, job_options
from api.middleware import check_json
from api.openapi import doc
from api.pagination import page, paginate
from api.quotas import SubmitQuotas, check_active_jobs, check_submit_rate
from api.schemas.jobs import JobEventListSchema, JobListQuerySchema, JobListSchema, JobSubmitSchema
from api.session import db_session, json_body
from shared.jobs import transitions
from shared.jobs.status import RETRYABLE_BY_USER, JobStatus
from shared.jobs.submission import InputStager, NewJob, Submission, lock_owner, submit_job
from shared.models import Job, JobEvent
from shared.processors import Processor, get_processor, kind_of
from shared.schemas.responses import JobSchema

log = logging.getLogger(__name__)
bp = Blueprint("jobs", __name__, url_prefix="/jobs")

_MAX_KEY_LENGTH = 255
# Schema instances are reusable and thread-safe for load/dump; building one per request
# costs more than the database insert.
JOB_SCHEMA = JobSchema()
JOB_LIST_SCHEMA = JobListSchema()
SUBMIT_SCHEMA = JobSubmitSchema()


def job_response(job: Job, status: int) -> Response:
    response = jsonify(JOB_SCHEMA.dump(job))
    response.status_code = status
    response.headers["Location"] = url_for("v1.jobs.get_job", job_id=job.id)
    return response


def load_job(job_id: uuid.UUID, *, for_update: bool = False) -> Job:
    """The caller's job (any job for an admin); someone else's answers 404 like a missing one."""
    job = db_session().get(Job, job_id, with_for_update=for_update)
    if job is None or (job.owner_id != current_user_id() and not is_admin()):
        raise not_found("job")
    return job


def idempotency_key() -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > _MAX_KEY_LENGTH or not key.isprintable():
        raise ApiError(
            422,
            "invalid_idempotency_key",
            f"Idempotency-Key must be 1-{_MAX_KEY_LENGTH} printable characters.",
        )
    return key


def resolve_max_attempts(processor: Processor, requested: int | None) -> int:
    limit = settings().job_max_attempts_limit
    if requested is not None and requested > limit:
        raise ApiError(
            422,
            "validation_error",
            "The request is not valid.",
            {"fields": {"max_attempts": [f"Must be at most {limit}."]}},
        )
    return requested or processor.max_attempts or settings().job_max_attempts


def new_submission(
    processor: Processor,
    params: dict[str, Any],
    max_attempts: int | None = None,
    *,
    queue: str | None = None,
    stager: InputStager | None = None,
    with_job: Callable[[Session, NewJob], None] | None = None,
    kind_quota: Callable[[Session], None] | None = None,
    options: JobOptions | None = None,
) -> Submission:
    """The submission this request makes: its user, Idempotency-Key and request id, and the
    user's quotas with the kind's own (`kind_quota`, e.g. active deployments)."""
    owner = current_user_id()
    key = idempotency_key()
    return Submission(
        owner_id=owner,
        processor=processor,
        params=params,
        max_attempts=resolve_max_attempts(processor, max_attempts),
        queue=queue,
        idempotency_key=key,
        request_id=g.request_id,
        quotas=SubmitQuotas(settings(), owner, kind_quota),
        stager=stager,
        with_job=with_job,
        **(options or JobOptions()).submission_fields(),
    )


def answer_submission(submission: Submission) -> Response:
    """Submit (shared/jobs/submission.py) and answer: 202 with a new job, 200 with a replayed one."""
    result = submit_job(
        db_session(), submission, celery=publisher(), redis_url=settings().redis_url
    )
    return job_response(result.job, 202 if result.created else 200)


def check_retry_quotas(job: Job) -> None:
    """A retry queues work like a submit, so it obeys the same quotas, with the same 429s:
    it counts in the caller's submissions per minute, and the job's owner (whose active
    jobs it adds to) must be under QUOTA_ACTIVE_JOBS, checked under the same per-user lock
    as a submit's so the two cannot race past it together."""
    check_submit_rate(settings(), current_user_id())
    if settings().quota_active_jobs:
        lock_owner(db_session(), job.owner_id)
        check_active_jobs(settings(), db_session(), job.owner_id)


def processor_or_422(name: str, kind: str | None = None) -> Processor:
    processor = get_processor(name)
    if processor is None or (kind is not None and processor.kind != kind):
        raise ApiError(
            422,
            "unknown_processor",
            f"There is no processor named {name!r}.",
            {"fields": {"processor": ["Unknown processor."]}},
        )
    return processor


def load_params(processor: Processor, raw: dict[str, Any]) -> dict[str, Any]:
    check_json(raw, "params")  # multipart params arrive as JSON text: NUL/surrogates -> 422
    try:
        return processor.load_params(raw)
    except ValidationError as error:
        raise ApiError(
            422,
            "invalid_params",
            "The processor's parameters are not valid.",
            {"fields": {"params": error.normalized_messages()}},
        ) from None


@bp.post("")
@jwt_required()
@doc(
    summary="Submit a job that needs no upload (diagnostics)",
    tags=["jobs"],
    body=JobSubmitSchema,
    response=JobSchema,
    status=202,
    errors=(409, 429, 503),
)
def submit() -> Response:
    data = SUBMIT_SCHEMA.load(json_body())
    processor, params, queue = plain_job(data)
    options = job_options(data)
    return answer_submission(
        new_submission(processor, params, data["max_attempts"], queue=queue, options=options)
    )


def plain_job(data: dict[str, Any]) -> tuple[Processor, dict[str, Any], str | None]:
    """A loaded JobSubmitSchema's processor (one that needs no upload: 422 `wrong_endpoint`
    otherwise), its loaded params and the queue they pick (POST /jobs and each job of
    POST /jobs/batch)."""
    processor = processor_or_422(data["processor"])
    kind = kind_of(processor.kind)
    if processor.input != "none":
        raise ApiError(
            422,
            "wrong_endpoint",
            f"{processor.name} takes {processor.input} input; use POST /api/v1{kind.submit_path}.",
            {"endpoint": f"/api/v1{kind.submit_path}"},
        )
    params = load_params(processor, data["params"])
    return processor, params, params.get("fleet") if kind.fleet_param else None


@bp.get("")
@jwt_required()
@doc(
    summary="List jobs (yours; all for an admin)",
    tags=["jobs"],
    query=JobListQuerySchema,
    response=JobListSchema,
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
@doc(summary="One job", tags=["jobs"], response=JobSchema, errors=(404,))
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
