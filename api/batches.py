"""POST /jobs/batch: many jobs that need no upload, accepted all together or not at all.

Every job is checked first, exactly as POST /jobs checks one (the same schema, processor,
params and options rules); if any is invalid the answer lists each one's index and error and
nothing is created. Otherwise shared/jobs/submission.py `submit_batch` creates them all in one
transaction and publishes them in one broker round trip.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from flask import Blueprint, Response, g, jsonify
from flask_jwt_extended import jwt_required
from marshmallow import ValidationError

from api import links
from api.errors import ApiError
from api.extensions import publisher, settings
from api.identity import current_user_id
from api.job_options import job_options
from api.operation import doc
from api.quotas import SubmitQuotas
from api.schemas.batches import BatchSchema, BatchSubmitSchema
from api.session import db_session, json_body
from api.submission import (
    IDEMPOTENCY_KEY,
    SUBMIT_SCHEMA,
    idempotency_key,
    plain_job,
    resolve_max_attempts,
)
from shared.jobs.submission import BatchSubmission, Submission, submit_batch

bp = Blueprint("batches", __name__, url_prefix="/jobs")
BATCH_SCHEMA = BatchSchema()


@bp.post("/batch")
@jwt_required()
@doc(
    summary="Submit many jobs that need no upload: all are created, or none",
    tags=["jobs"],
    body=BatchSubmitSchema,
    response=BatchSchema,
    status=202,
    errors=(409, 422, 429, 503),
    also=(200,),  # an Idempotency-Key replay: the original jobs
    parameters=(IDEMPOTENCY_KEY,),
    links=links.FIRST_JOB,
)
def submit() -> Response:
    items = _items(json_body())
    submissions, errors = [], []
    for index, raw in enumerate(items):
        try:
            submissions.append(_submission(raw))
        except ApiError as error:
            errors.append(_item_error(index, error.code, error.message, error.details))
        except ValidationError as error:
            fields = {"fields": error.normalized_messages()}
            errors.append(_item_error(index, "validation_error", "The job is not valid.", fields))
    if errors:
        raise ApiError(
            422,
            "invalid_batch",
            f"{len(errors)} of the {len(items)} jobs are not valid; none was created.",
            {"errors": errors},
        )
    owner = current_user_id()
    batch = BatchSubmission(
        owner_id=owner,
        items=submissions,
        request_hash=request_hash(items),
        idempotency_key=idempotency_key(),
        quotas=SubmitQuotas(settings(), owner),
    )
    result = submit_batch(db_session(), batch, celery=publisher(), redis_url=settings().redis_url)
    response = jsonify(BATCH_SCHEMA.dump({"items": result.jobs}))
    response.status_code = 202 if result.created else 200
    return response


def _items(body: dict[str, Any]) -> list[Any]:
    """The body's `jobs`: a list of 1 to BATCH_MAX_JOBS entries (422 otherwise)."""
    items = body.get("jobs")
    if not isinstance(items, list) or not items:
        raise ApiError(
            422,
            "validation_error",
            "The request is not valid.",
            {"fields": {"jobs": ["A non-empty list of jobs is required."]}},
        )
    limit = settings().batch_max_jobs
    if len(items) > limit:
        raise ApiError(
            422,
            "batch_too_large",
            f"A batch holds at most {limit} jobs (BATCH_MAX_JOBS); this one has {len(items)}.",
            {"limit": limit, "size": len(items)},
        )
    return items


def _submission(raw: Any) -> Submission:
    """One job of the batch, checked as POST /jobs checks it (raises its 422 errors)."""
    if not isinstance(raw, dict):
        raise ValidationError({"_schema": ["Each job must be a JSON object."]})
    data = SUBMIT_SCHEMA.load(raw)
    processor, params, queue = plain_job(data)
    return Submission(
        owner_id=current_user_id(),
        processor=processor,
        params=params,
        max_attempts=resolve_max_attempts(processor, data["max_attempts"]),
        queue=queue,
        request_id=g.request_id,
        **job_options(data).submission_fields(),
    )


def _item_error(index: int, code: str, message: str, details: dict[str, Any]) -> dict[str, Any]:
    return {"index": index, "code": code, "message": message, **details}


def request_hash(items: list[Any]) -> str:
    """The canonical request (its jobs as given, keys sorted): the same jobs under the same
    Idempotency-Key replay the batch, different ones are a conflict."""
    canonical = json.dumps(items, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
