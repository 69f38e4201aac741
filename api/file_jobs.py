"""File jobs: upload a file for a processor, download the result, read the container's log."""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, jsonify, redirect, request
from flask_jwt_extended import jwt_required
from sqlalchemy import select
from werkzeug.datastructures import FileStorage

from api import links
from api.errors import ApiError
from api.extensions import settings, storage
from api.identity import current_user_id
from api.job_options import form_job_options
from api.operation import doc
from api.owned import load_job
from api.quotas import precheck_submit_quotas
from api.schemas.files import DownloadQuerySchema, DownloadSchema, FileSubmitSchema
from api.schemas.jobs import JobLogListSchema
from api.session import db_session
from api.submission import (
    IDEMPOTENCY_KEY,
    answer_submission,
    idempotency_key,
    load_params,
    new_submission,
    processor_or_422,
)
from shared.jobs.status import JobStatus
from shared.jobs.submission import recent_job
from shared.models import JobLog
from shared.processors import Processor
from shared.processors.files import accepts
from shared.schemas.responses import JobSchema
from shared.storage.base import object_key, safe_filename
from shared.storage.content_types import SNIFF_BYTES, detect

log = logging.getLogger(__name__)
bp = Blueprint("file_jobs", __name__, url_prefix="/jobs")

_MAX_LOG_ROWS = 50


def _form_error(code: str, message: str, field: str, problem: str) -> ApiError:
    return ApiError(422, code, message, {"fields": {field: [problem]}})


def _form_params(processor: Processor) -> dict[str, Any]:
    raw = request.form.get("params") or "{}"
    try:
        decoded = json.loads(raw)
    except (ValueError, RecursionError):  # nested too deeply: was a 500
        decoded = None
    if not isinstance(decoded, dict):
        raise _form_error(
            "invalid_params", "params must be a JSON object.", "params", "Not a JSON object."
        )
    return load_params(processor, decoded)


def _form_max_attempts() -> int | None:
    raw = request.form.get("max_attempts")
    if raw in (None, ""):
        return None
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise _form_error(
            "validation_error", "The request is not valid.", "max_attempts", "Not a positive int."
        )
    return value


def _refuse_before_reading() -> None:
    """Answer a caller the quotas already refuse (429) before the upload is read: reading
    and spooling up to MAX_CONTENT_LENGTH only to refuse it is the cost an abuser wants.
    A replay of an Idempotency-Key is exempt (it answers the original job, as on POST /jobs)."""
    user_id = current_user_id()
    key = idempotency_key()
    if key and recent_job(db_session(), user_id, key) is not None:
        return
    precheck_submit_quotas(settings(), db_session(), user_id)


@dataclass(frozen=True)
class UploadStager:
    """Stores the upload under the new job's id (shared.jobs.submission's `InputStager`)."""

    upload: FileStorage
    owner: uuid.UUID
    filename: str
    content_type: str

    def stage(self, job_id: uuid.UUID) -> dict[str, Any]:
        key = object_key(self.owner, job_id, "input", self.filename)
        stored = storage().put(key, self.upload.stream, self.content_type)
        return {
            "key": stored.key,
            "filename": self.filename,
            "content_type": self.content_type,
            "size": stored.size,
        }

    def discard(self, stored: dict[str, Any]) -> None:
        try:
            storage().delete(stored["key"])
        except Exception:  # the input sweep cannot see it; say so loudly
            log.error(
                "could not remove an upload after a failed submit",
                exc_info=True,
                extra={"event": "upload_rollback_failed", "key": stored["key"]},
            )


def _sniff(upload: FileStorage) -> tuple[str, bool]:
    """(content type judged from the first bytes, whether the file is empty)."""
    head = upload.stream.read(SNIFF_BYTES)
    upload.stream.seek(0)
    return detect(head), not head


@bp.post("/files")
@jwt_required()
@doc(
    summary="Upload a file and submit a file job",
    tags=["jobs"],
    body=FileSubmitSchema,
    body_content_type="multipart/form-data",
    response=JobSchema,
    status=202,
    errors=(409, 413, 415, 429, 503),
    also=(200,),  # an Idempotency-Key replay: the original job
    parameters=(IDEMPOTENCY_KEY,),
    links=links.JOB,
)
def submit_file() -> Response:
    # Werkzeug's form parser spools the upload to a temporary file past 500 KB: the API
    # streams it from there to storage and never holds a large file in memory. A body over
    # MAX_CONTENT_LENGTH is refused with 413 while it is read. Nothing reads the body
    # before the quotas are checked.
    _refuse_before_reading()
    processor = processor_or_422(request.form.get("processor", ""), kind="file")
    upload = request.files.get("file")
    if upload is None:
        raise _form_error("missing_file", "Attach the file as `file`.", "file", "Missing.")
    params = _form_params(processor)
    max_attempts = _form_max_attempts()
    options = form_job_options()
    content_type, empty = _sniff(upload)
    if empty:
        raise _form_error("empty_file", "The uploaded file is empty.", "file", "Empty file.")
    if not accepts(processor, content_type):
        raise ApiError(
            415,
            "unsupported_media_type",
            f"{processor.name} does not accept {content_type} files.",
            {"detected": content_type, "accepted": list(processor.accepts)},
        )
    filename = safe_filename(upload.filename, default="upload")
    stager = UploadStager(upload, current_user_id(), filename, content_type)
    return answer_submission(
        new_submission(processor, params, max_attempts, stager=stager, options=options)
    )


@bp.get("/<uuid:job_id>/download")
@jwt_required()
@doc(
    summary="A short-lived download URL for the job's result (?redirect=true: 302 to it)",
    tags=["jobs"],
    query=DownloadQuerySchema,
    response=DownloadSchema,
    errors=(404, 409, 410),
    also=(302,),  # redirect=true: to the download URL
)
def download(job_id: uuid.UUID) -> Response:
    args = DownloadQuerySchema().load(request.args)
    job = load_job(job_id)
    if job.status != JobStatus.SUCCEEDED.value or not job.result_file:
        raise ApiError(
            409,
            "result_not_ready",
            f"The job is {job.status}; a result exists only once it has succeeded.",
            {"status": job.status},
        )
    if job.result_deleted_at is not None:
        raise ApiError(410, "result_expired", "The result was removed after its retention.")
    config = settings()
    expires_in = min(args.get("expires_in") or config.download_url_ttl, config.download_url_max_ttl)
    stored = job.result_file
    url = storage().download_url(stored["key"], stored["filename"], expires_in)
    if args["redirect"]:
        response = redirect(url, code=302)
        response.headers["Cache-Control"] = "no-store"
        return response
    response = jsonify(
        DownloadSchema().dump(
            {
                "url": url,
                "expires_in": expires_in,
                "filename": stored["filename"],
                "content_type": stored.get("content_type"),
                "size": stored.get("size"),
            }
        )
    )
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/<uuid:job_id>/logs")
@jwt_required()
@doc(
    summary="The job's logs: each attempt's container output (stdout and stderr)",
    tags=["jobs"],
    response=JobLogListSchema,
    errors=(404,),
)
def job_logs(job_id: uuid.UUID) -> Response:
    job = load_job(job_id)
    rows = db_session().scalars(
        select(JobLog).where(JobLog.job_id == job.id).order_by(JobLog.id).limit(_MAX_LOG_ROWS)
    )
    return jsonify(JobLogListSchema().dump({"items": list(rows)}))
