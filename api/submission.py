"""What every submit endpoint does with a request: check the processor and its params, read
the Idempotency-Key, build the Submission (user, quotas, options) and answer with the job.

Shared by POST /jobs, /jobs/files, /jobs/batch, /jobs/deploy, schedules, app rollbacks and
push hooks; the submission itself is shared/jobs/submission.py's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Response, g, jsonify, request, url_for
from marshmallow import ValidationError
from sqlalchemy.orm import Session

from api.errors import ApiError
from api.extensions import publisher, settings
from api.identity import current_user_id
from api.job_options import JobOptions
from api.middleware import check_json
from api.operation import header
from api.quotas import SubmitQuotas
from api.schemas.jobs import JobSubmitSchema
from api.session import db_session
from shared.jobs.submission import InputStager, NewJob, Submission, submit_job
from shared.models import Job
from shared.processors import Processor, get_processor, kind_of
from shared.schemas.responses import JobSchema

_MAX_KEY_LENGTH = 255
# Schema instances are reusable and thread-safe for load/dump; building one per request
# costs more than the database insert.
JOB_SCHEMA = JobSchema()
SUBMIT_SCHEMA = JobSubmitSchema()

#: The header every submit endpoint reads (`idempotency_key`), as the OpenAPI document shows it.
IDEMPOTENCY_KEY = header(
    "Idempotency-Key",
    "Same user and key within 24 h: the original job (200).",
    {"type": "string", "minLength": 1, "maxLength": 255, "pattern": r"^\S(.*\S)?$"},
)


def job_response(job: Job | NewJob, status: int) -> Response:
    response = jsonify(JOB_SCHEMA.dump(job))
    response.status_code = status
    response.headers["Location"] = url_for("v1.jobs.get_job", job_id=job.id)
    return response


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
    """Submit (shared/jobs/submission.py) and answer: 202 with a new job, 200 with a replayed
    one."""
    result = submit_job(
        db_session(), submission, celery=publisher(), redis_url=settings().redis_url
    )
    return job_response(result.job, 202 if result.created else 200)


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
