"""Deploy jobs and deployments: submit a repository, list and inspect what runs, read its
logs, stop it. The API never touches Docker: stopping is a task for the deploy fleet."""

from __future__ import annotations

import uuid

from flask import Blueprint, Response, jsonify, request
from flask_jwt_extended import jwt_required
from sqlalchemy import select

from api import links
from api.deploy_requests import deploy_request
from api.errors import ApiError
from api.extensions import publisher, settings
from api.identity import current_user_id, is_admin
from api.job_options import job_options
from api.operation import doc
from api.owned import load_deployment
from api.pagination import page, paginate
from api.schemas.deployments import (
    DeploymentListQuerySchema,
    DeploymentListSchema,
    DeploymentLogsSchema,
    DeploySubmitSchema,
)
from api.session import db_session, json_body
from api.submission import IDEMPOTENCY_KEY, answer_submission, new_submission, processor_or_422
from shared.deploy import transitions
from shared.deploy.jobs import deploy_job
from shared.models import Deployment, JobLog
from shared.processors.deploy import NAME as DEPLOY_PROCESSOR
from shared.schemas.responses import DeploymentSchema, JobSchema

submit_bp = Blueprint("deploy_jobs", __name__, url_prefix="/jobs")
bp = Blueprint("deployments", __name__, url_prefix="/deployments")

SUBMIT_SCHEMA = DeploySubmitSchema()
DEPLOYMENT_SCHEMA = DeploymentSchema()
DEPLOYMENT_LIST_SCHEMA = DeploymentListSchema()


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
    also=(200,),  # an Idempotency-Key replay: the original job
    parameters=(IDEMPOTENCY_KEY,),
    links={
        **links.JOB,
        "GetDeployment": ("v1.deployments.get_deployment", {"deployment_id": links.DEPLOYMENT_ID}),
        "GetDeploymentLogs": (
            "v1.deployments.deployment_logs",
            {"deployment_id": links.DEPLOYMENT_ID},
        ),
        "StopDeployment": ("v1.deployments.stop", {"deployment_id": links.DEPLOYMENT_ID}),
    },
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


@bp.get("")
@jwt_required()
@doc(
    summary="List deployments (yours; all for an admin)",
    tags=["deployments"],
    query=DeploymentListQuerySchema,
    response=DeploymentListSchema,
    links={
        "GetFirstDeployment": (
            "v1.deployments.get_deployment",
            {"deployment_id": links.FIRST_ITEM},
        ),
        "StopFirstDeployment": ("v1.deployments.stop", {"deployment_id": links.FIRST_ITEM}),
    },
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
@doc(
    summary="One deployment",
    tags=["deployments"],
    response=DeploymentSchema,
    errors=(404,),
    links={
        "GetDeploymentJob": ("v1.jobs.get_job", {"job_id": "$response.body#/job_id"}),
        "GetDeploymentLogs": ("v1.deployments.deployment_logs", {"deployment_id": links.ID}),
        "StopDeployment": ("v1.deployments.stop", {"deployment_id": links.ID}),
    },
)
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
    also=(200,),  # nothing left to stop
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
