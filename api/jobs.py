"""Jobs: submit, list, inspect, follow, cancel and retry."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request, url_for
from flask_jwt_extended import jwt_required
from marshmallow import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.auth import current_user_id, is_admin
from api.errors import ApiError, not_found
from api.extensions import publisher
from api.middleware import check_json
from api.openapi import doc
from api.pagination import page, paginate
from api.quotas import check_active_jobs, check_submit_rate
from api.schemas import (
    JobEventListSchema,
    JobListQuerySchema,
    JobListSchema,
    JobSchema,
    JobSubmitSchema,
)
from api.session import db_session, json_body
from shared import live, logging_setup, metrics
from shared.config import Settings
from shared.dispatch import Dispatch, publish_job, publish_new_job
from shared.jobs import (
    IDEMPOTENCY_WINDOW,
    cancel_job,
    check_same_request,
    find_by_idempotency_key,
    retry_job,
    submit_job,
)
from shared.jobs import now as utcnow
from shared.models import Job, JobEvent
from shared.processors import Processor, get_processor, kind_of
from shared.status import RETRYABLE_BY_USER, JobStatus

log = logging.getLogger(__name__)
bp = Blueprint("jobs", __name__, url_prefix="/jobs")

_MAX_KEY_LENGTH = 255
# Schema instances are reusable and thread-safe for load/dump; building one per request
# costs more than the database insert.
JOB_SCHEMA = JobSchema()
SUBMIT_SCHEMA = JobSubmitSchema()


def settings() -> Settings:
    return current_app.config["DOCKYARD_SETTINGS"]


def job_to_dict(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "owner_id": job.owner_id,
        "kind": job.kind,
        "processor": job.processor,
        "queue": job.queue,
        "params": job.params,
        "status": job.status,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "progress": {
            "current": job.progress_current,
            "total": job.progress_total,
            "message": job.progress_message,
        },
        "error": (
            {"code": job.error_code, "message": job.error_message} if job.error_code else None
        ),
        "result": job.result,
        "input": _file_info(job.input_file, job.input_deleted_at),
        "output": _file_info(job.result_file, job.result_deleted_at, job.result_expires_at),
        "idempotency_key": job.idempotency_key,
        "cancel_requested": job.cancel_requested,
        "next_attempt_at": job.next_attempt_at,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "links": {
            "self": url_for("v1.jobs.get_job", job_id=job.id),
            "events": url_for("v1.jobs.job_events", job_id=job.id),
            "logs": url_for("v1.file_jobs.job_logs", job_id=job.id),
            **(
                {"download": url_for("v1.file_jobs.download", job_id=job.id)}
                if kind_of(job.kind).downloadable
                else {}
            ),
        },
    }


def _file_info(
    stored: dict[str, Any] | None, deleted_at: Any, expires_at: Any = None
) -> dict[str, Any] | None:
    """What a user may see of a stored file: never its storage key."""
    if not stored:
        return None
    return {
        "filename": stored.get("filename"),
        "content_type": stored.get("content_type"),
        "size": stored.get("size"),
        "deleted": deleted_at is not None,
        "expires_at": expires_at,
    }


def job_response(job: Job, status: int) -> Response:
    response = jsonify(JOB_SCHEMA.dump(job_to_dict(job)))
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


StageInput = Callable[[uuid.UUID], dict[str, Any]]
DiscardInput = Callable[[dict[str, Any]], None]


def accept_submission(
    processor: Processor,
    params: dict[str, Any],
    max_attempts: int | None = None,
    queue: str | None = None,
    stage_input: tuple[StageInput, DiscardInput] | None = None,
    with_job: Callable[[Session, Any], None] | None = None,
    check_quota: Callable[[Session], None] | None = None,
) -> Response:
    """The submit path every kind of job shares: idempotency, quotas, row, commit, publish.

    `stage_input` (store, discard) runs the upload stage once the request is known to be
    new and within quota; if a later stage fails, `discard` undoes it, so no object is left
    without its job and no job is committed without its input. `with_job` adds rows that
    belong to the new job (a deployment) in the same transaction. `check_quota` is a kind's
    own quota (active deployments): checked after a replay is answered and under the same
    per-user lock as the active-jobs quota, so concurrent submits cannot race past it.
    """
    user_id = current_user_id()
    key = idempotency_key()
    session = db_session()
    if key:
        existing = find_by_idempotency_key(session, user_id, key)
        if existing is not None and existing.created_at >= utcnow() - IDEMPOTENCY_WINDOW:
            # A replay: answer with the original job before any quota is spent.
            check_same_request(existing, processor, params)
            return job_response(existing, 200)
    attempts = resolve_max_attempts(processor, max_attempts)
    check_submit_rate(settings(), user_id)
    if settings().quota_active_jobs or check_quota is not None:
        # Serialise this user's submissions so the active counts cannot be raced past.
        session.execute(select(func.pg_advisory_xact_lock(_lock_key(user_id))))
        check_active_jobs(settings(), session, user_id)
        if check_quota is not None:
            check_quota(session)
    job_id = uuid.uuid4()
    staged = stage_input[0](job_id) if stage_input else None
    try:
        result = submit_job(
            session,
            owner_id=user_id,
            processor=processor,
            params=params,
            max_attempts=attempts,
            queue=queue,
            idempotency_key=key,
            request_id=g.request_id,
            job_id=job_id,
            input_file=staged,
        )
        job = result.job
        if not result.created:
            session.commit()
            if stage_input and staged is not None:
                stage_input[1](staged)  # a concurrent request with this key won
            return job_response(job, 200)
        if with_job is not None:
            with_job(session, job)
        publish_new_job(session, job, processor.task_name, publisher())
        session.commit()
    except BaseException:
        session.rollback()
        if stage_input and staged is not None:
            stage_input[1](staged)
        raise
    logging_setup.bind(job_id=str(job.id), user_id=str(user_id))
    log.info("job submitted", extra={"event": "job_submitted", "processor": processor.name})
    metrics.job_submitted(settings().redis_url, processor.kind, processor.name)
    live.broadcast(
        [
            live.message(
                job.submitted_event_id, job.id, "submitted", None, {"processor": processor.name},
                owner_id=user_id,
            )
        ]
    )  # fmt: skip
    return job_response(job, 202)


def check_retry_quotas(job: Job) -> None:
    """A retry queues work like a submit, so it obeys the same quotas, with the same 429s:
    it counts in the caller's submissions per minute, and the job's owner (whose active
    jobs it adds to) must be under QUOTA_ACTIVE_JOBS, checked under the same per-user lock
    as a submit's so the two cannot race past it together."""
    check_submit_rate(settings(), current_user_id())
    if settings().quota_active_jobs:
        db_session().execute(select(func.pg_advisory_xact_lock(_lock_key(job.owner_id))))
        check_active_jobs(settings(), db_session(), job.owner_id)


def _lock_key(user_id: uuid.UUID) -> int:
    return int.from_bytes(user_id.bytes[:8], "big", signed=True)


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
    queue = params.get("fleet") if kind.fleet_param else None
    return accept_submission(processor, params, data["max_attempts"], queue=queue)


@bp.get("")
@jwt_required()
@doc(
    summary="List jobs (yours; all for an admin)",
    tags=["jobs"],
    query=JobListQuerySchema,
    response=JobListSchema,
)
def list_jobs() -> Response:
    args = JobListQuerySchema().load(request.args)
    query = select(Job)
    if not is_admin():
        query = query.where(Job.owner_id == current_user_id())
    for name in ("status", "kind", "processor"):
        if args.get(name):
            query = query.where(getattr(Job, name) == args[name])
    query = paginate(query, Job.created_at, Job.id, args.get("cursor"), args["limit"])
    rows, next_cursor = page(list(db_session().scalars(query)), args["limit"])
    return jsonify(
        JobListSchema().dump(
            {"items": [job_to_dict(job) for job in rows], "next_cursor": next_cursor}
        )
    )


@bp.get("/<uuid:job_id>")
@jwt_required()
@doc(summary="One job", tags=["jobs"], response=JobSchema, errors=(404,))
def get_job(job_id: uuid.UUID) -> Response:
    return jsonify(JOB_SCHEMA.dump(job_to_dict(load_job(job_id))))


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
    done = cancel_job(db_session(), job)
    db_session().commit()
    if done:
        metrics.job_ended(settings().redis_url, job.kind, job.processor, "cancelled")
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
    if JobStatus(job.status) in RETRYABLE_BY_USER:  # else retry_job answers 409
        check_retry_quotas(job)
    retry_job(db_session(), job, reason="user_retry")
    db_session().commit()
    publish_job(Dispatch.for_job(job, processor.task_name), publisher(), db_session())
    metrics.job_requeued(settings().redis_url, processor.kind, processor.name, "user_retry")
    return job_response(job, 202)
