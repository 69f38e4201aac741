"""Deploy jobs and deployments: submit a repository, list and inspect what runs, read its
logs, stop it. The API never touches Docker: stopping is a task for the deploy fleet."""

from __future__ import annotations

import uuid
from typing import Any

from flask import Blueprint, Response, jsonify, request
from flask_jwt_extended import jwt_required
from sqlalchemy import select

from api.auth import current_user_id, is_admin
from api.errors import ApiError, not_found
from api.extensions import publisher, settings
from api.job_options import job_options
from api.jobs import answer_submission, new_submission, processor_or_422
from api.openapi import doc
from api.pagination import page, paginate
from api.schemas.deployments import (
    DeploymentListQuerySchema,
    DeploymentListSchema,
    DeploymentLogsSchema,
    DeploySubmitSchema,
)
from api.session import db_session, json_body
from shared.deploy import transitions
from shared.deploy.jobs import DeployRequest, deploy_job
from shared.deploy.repo_urls import InvalidRepository
from shared.models import Deployment, JobLog
from shared.processors.deploy import NAME as DEPLOY_PROCESSOR
from shared.schemas.responses import DeploymentSchema, JobSchema

submit_bp = Blueprint("deploy_jobs", __name__, url_prefix="/jobs")
bp = Blueprint("deployments", __name__, url_prefix="/deployments")

SUBMIT_SCHEMA = DeploySubmitSchema()
DEPLOYMENT_SCHEMA = DeploymentSchema()
DEPLOYMENT_LIST_SCHEMA = DeploymentListSchema()


def refuse_repository(error: InvalidRepository, within: str | None = None) -> ApiError:
    """422 with the refusal's own code; `within` nests the field (a schedule's `params`)."""
    fields: dict[str, Any] = {error.field: [error.message]}
    return ApiError(
        422, error.code, error.message, {"fields": {within: fields} if within else fields}
    )


def deploy_request(data: dict[str, Any], within: str | None = None) -> DeployRequest:
    """The validated request of a deploy body (`DeploySubmitSchema` fields): a refused URL or
    ref answers 422 with its own code (invalid_repo_url, ...). A deploy schedule's params
    are checked here too (`within="params"`), so both refuse the same way."""
    try:
        return DeployRequest.parse(
            settings(),
            repo_url=data["repo_url"],
            ref=data["ref"],
            container_port=data["container_port"],
            health_path=data["health_path"],
            env=data["env"],
            app=data.get("app"),
            access_token=data.get("access_token"),
        )
    except InvalidRepository as error:
        raise refuse_repository(error, within) from None


@submit_bp.post("/deploy")
@jwt_required()
@doc(
    summary="Deploy a GitHub repository as the next release of an app (clone, build, run, "
    "health-check, then route the app's URL to it)",
    tags=["deployments"],
    body=DeploySubmitSchema,
    response=JobSchema,
    status=202,
    errors=(409, 429, 503),
)
def submit_deploy() -> Response:
    data = SUBMIT_SCHEMA.load(json_body())
    processor = processor_or_422(DEPLOY_PROCESSOR)
    job = deploy_job(settings(), current_user_id(), deploy_request(data))
    return answer_submission(
        new_submission(
            processor,
            job.params,
            data["max_attempts"],
            with_job=job.with_job,
            kind_quota=job.kind_quota,
            options=job_options(data),
        )
    )


def load_deployment(deployment_id: uuid.UUID, *, for_update: bool = False) -> Deployment:
    deployment = db_session().get(Deployment, deployment_id, with_for_update=for_update)
    if deployment is None or (deployment.owner_id != current_user_id() and not is_admin()):
        raise not_found("deployment")
    return deployment


@bp.get("")
@jwt_required()
@doc(
    summary="List deployments (yours; all for an admin)",
    tags=["deployments"],
    query=DeploymentListQuerySchema,
    response=DeploymentListSchema,
)
def list_deployments() -> Response:
    args = DeploymentListQuerySchema().load(request.args)
    query = select(Deployment)
    if not is_admin():
        query = query.where(Deployment.owner_id == current_user_id())
    if args.get("status"):
        query = query.where(Deployment.status == args["status"])
    query = paginate(query, Deployment.created_at, Deployment.id, args.get("cursor"), args["limit"])
    rows, next_cursor = page(list(db_session().scalars(query)), args["limit"])
    return jsonify(DEPLOYMENT_LIST_SCHEMA.dump({"items": rows, "next_cursor": next_cursor}))


@bp.get("/<uuid:deployment_id>")
@jwt_required()
@doc(summary="One deployment", tags=["deployments"], response=DeploymentSchema, errors=(404,))
def get_deployment(deployment_id: uuid.UUID) -> Response:
    return jsonify(DEPLOYMENT_SCHEMA.dump(load_deployment(deployment_id)))


@bp.get("/<uuid:deployment_id>/logs")
@jwt_required()
@doc(
    summary="The build log and the app's recent output (as of the last check)",
    tags=["deployments"],
    response=DeploymentLogsSchema,
    errors=(404,),
)
def deployment_logs(deployment_id: uuid.UUID) -> Response:
    deployment = load_deployment(deployment_id)
    build = db_session().scalars(
        select(JobLog).where(JobLog.job_id == deployment.job_id).order_by(JobLog.id).limit(20)
    )
    return jsonify(
        DeploymentLogsSchema().dump(
            {
                "build": list(build),
                "app": deployment.runtime_log,
                "app_captured_at": deployment.runtime_log_at,
            }
        )
    )


@bp.post("/<uuid:deployment_id>/stop")
@jwt_required()
@doc(
    summary="Stop: the container is stopped and removed and the port released",
    tags=["deployments"],
    response=DeploymentSchema,
    status=202,
    errors=(404, 409),
)
def stop(deployment_id: uuid.UUID) -> Response:
    deployment = load_deployment(deployment_id, for_update=True)
    try:
        stopping, effects = transitions.request_stop(db_session(), deployment)
    except transitions.DeploymentStarting as starting:
        raise ApiError(
            409, starting.code, starting.message, {"job_id": str(starting.job_id)}
        ) from None
    db_session().commit()
    effects.apply(publisher())
    response = jsonify(DEPLOYMENT_SCHEMA.dump(deployment))
    response.status_code = 202 if stopping else 200
    return response
