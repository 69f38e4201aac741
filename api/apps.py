"""Apps: list, inspect, change, delete; their releases; roll back to a kept release.

An app is created by its first deploy (POST /jobs/deploy with `app`, or the derived name).
Its releases are its deployments, numbered v1..vN. Like every deploy endpoint, nothing here
touches Docker or the proxy: stopping and removing are tasks for the deploy fleet, and the
deploy workers bring the proxy's routes in line with these rows.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, jsonify, request
from flask_jwt_extended import jwt_required
from sqlalchemy import select

from api.app_urls import webhook_url
from api.deploy_requests import refuse_repository
from api.errors import ApiError, not_found
from api.extensions import publisher, settings
from api.identity import current_user_id, is_admin
from api.operation import doc
from api.owned import load_app
from api.pagination import page, paginate
from api.schemas.apps import (
    AppDeletedSchema,
    AppListSchema,
    AppPatchSchema,
    AppSchema,
    ReleaseListSchema,
    RollbackSchema,
)
from api.schemas.common import PageQuerySchema
from api.session import db_session, json_body
from api.submission import answer_submission, new_submission, processor_or_422
from shared.apps.releases import encrypt_secret, image_kept
from shared.apps.urls import app_url
from shared.clock import now
from shared.deploy import transitions
from shared.deploy.jobs import DeployRequest, Rollback, deploy_job
from shared.deploy.repo_urls import InvalidRepository
from shared.deploy.status import LIVE
from shared.models import App, Deployment
from shared.processors.deploy import NAME as DEPLOY_PROCESSOR
from shared.schemas.responses import JobSchema
from shared.security.crypto import encrypt_env

bp = Blueprint("apps", __name__, url_prefix="/apps")

APP_SCHEMA = AppSchema()
LIST_SCHEMA = AppListSchema()
RELEASE_LIST_SCHEMA = ReleaseListSchema()
#: Releases shown inline by GET /apps/{app}; the rest are paged by /releases.
RECENT_RELEASES = 10


@dataclass
class AppWithReleases:
    """What AppSchema dumps: the row plus what is derived from it and its releases."""

    app: App
    releases: list[Deployment]
    current: Deployment | None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.app, name)

    @property
    def url(self) -> str:
        return app_url(self.app.name, settings())

    @property
    def current_release(self) -> int | None:
        return self.current.release if self.current else None

    @property
    def current_deployment(self) -> uuid.UUID | None:
        return self.current.id if self.current else None

    @property
    def status(self) -> str:
        return "running" if self.current and self.current.status in LIVE else "stopped"

    @property
    def release_count(self) -> int:
        return self.app.last_release

    @property
    def has_access_token(self) -> bool:
        return self.app.access_token is not None

    @property
    def has_webhook_secret(self) -> bool:
        return self.app.webhook_secret is not None

    @property
    def webhook_url(self) -> str:
        return webhook_url(self.app.name)


def with_releases(app: App) -> AppWithReleases:
    """The app as AppSchema shows it: with its RECENT_RELEASES latest and its current one."""
    session = db_session()
    releases = list(
        session.scalars(
            select(Deployment)
            .where(Deployment.app_id == app.id)
            .order_by(Deployment.release.desc())
            .limit(RECENT_RELEASES)
        )
    )
    current = next((d for d in releases if d.id == app.current_deployment_id), None)
    if current is None and app.current_deployment_id is not None:
        current = session.get(Deployment, app.current_deployment_id)
    return AppWithReleases(app, releases, current)


def _app_response(app: App, status: int = 200) -> Response:
    response = jsonify(APP_SCHEMA.dump(with_releases(app)))
    response.status_code = status
    return response


@bp.get("")
@jwt_required()
@doc(
    summary="List apps (yours; all for an admin), newest first",
    tags=["apps"],
    query=PageQuerySchema,
    response=AppListSchema,
)
def list_apps() -> Response:
    args = PageQuerySchema().load(request.args)
    query = select(App)
    if not is_admin():
        query = query.where(App.owner_id == current_user_id())
    query = paginate(query, App.created_at, App.id, args.get("cursor"), args["limit"])
    rows, next_cursor = page(list(db_session().scalars(query)), args["limit"])
    items = [with_releases(a) for a in rows]
    return jsonify(LIST_SCHEMA.dump({"items": items, "next_cursor": next_cursor}))


@bp.get("/<string:name>")
@jwt_required()
@doc(summary="One app, its URL and its latest releases", tags=["apps"], response=AppSchema,
     errors=(404,))  # fmt: skip
def get_app(name: str) -> Response:
    return _app_response(load_app(name))


@bp.patch("/<string:name>")
@jwt_required()
@doc(
    summary="Change what the app's next releases use (branch, health check, env, token...)",
    tags=["apps"],
    body=AppPatchSchema,
    response=AppSchema,
    errors=(404,),
)
def patch_app(name: str) -> Response:
    changes = AppPatchSchema().load(json_body())
    app = load_app(name, for_update=True)
    for field in ("branch", "auto_deploy", "health_path", "container_port"):
        if field in changes:
            setattr(app, field, changes[field])
    if "env" in changes:
        env = changes["env"] or {}
        app.env, app.env_names = encrypt_env(env, settings()), sorted(env)
    if "access_token" in changes:
        token = changes["access_token"]
        app.access_token = encrypt_secret(token, settings()) if token else None
    app.updated_at = now()
    db_session().commit()
    return _app_response(app)


@bp.delete("/<string:name>")
@jwt_required()
@doc(
    summary="Delete the app: its deployments are stopped and removed, its route, ports, "
    "images and name released",
    tags=["apps"],
    response=AppDeletedSchema,
    status=202,
    errors=(404,),
)
def delete_app(name: str) -> Response:
    session = db_session()
    app = load_app(name, for_update=True)
    live = list(
        session.scalars(
            select(Deployment)
            .where(Deployment.app_id == app.id, Deployment.status.in_(LIVE))
            .with_for_update()
        )
    )
    effects = transitions.Effects()
    for deployment in live:  # live: each one moves to stopping
        _stopping, stop = transitions.request_stop(session, deployment)
        effects.merge(stop)
    # Deployments keep their rows (app_id becomes NULL): the image sweep then releases the
    # images of app-less releases at once, and a release still starting fails at its switch.
    session.delete(app)
    session.commit()
    effects.apply(publisher())
    body = AppDeletedSchema().dump(
        {"name": name, "deleted": True, "stopping": [d.id for d in live]}
    )
    return jsonify(body), 202


@bp.get("/<string:name>/releases")
@jwt_required()
@doc(
    summary="The app's releases, newest first: commit, image, status, whether the image is kept",
    tags=["apps"],
    query=PageQuerySchema,
    response=ReleaseListSchema,
    errors=(404,),
)
def list_releases(name: str) -> Response:
    args = PageQuerySchema().load(request.args)
    app = load_app(name)
    query = select(Deployment).where(Deployment.app_id == app.id)
    query = paginate(query, Deployment.created_at, Deployment.id, args.get("cursor"), args["limit"])
    rows, next_cursor = page(list(db_session().scalars(query)), args["limit"])
    return jsonify(RELEASE_LIST_SCHEMA.dump({"items": rows, "next_cursor": next_cursor}))


@bp.post("/<string:name>/rollback")
@jwt_required()
@doc(
    summary="Run a kept release's image again as a new release (no clone, no build)",
    tags=["apps"],
    body=RollbackSchema,
    response=JobSchema,
    status=202,
    errors=(404, 409, 429, 503),
)
def rollback(name: str) -> Response:
    data = RollbackSchema().load(json_body())
    processor = processor_or_422(DEPLOY_PROCESSOR)
    app = load_app(name)
    if app.owner_id != current_user_id():  # a release is submitted as its app's owner
        raise not_found("app")
    target = db_session().scalar(
        select(Deployment).where(Deployment.app_id == app.id, Deployment.release == data["release"])
    )
    if target is None:
        raise not_found("release")
    if not image_kept(target) or target.image is None or target.commit_sha is None:
        raise ApiError(
            409,
            "release_image_gone",
            f"The image of release v{target.release} is no longer kept (only the last "
            f"{settings().deploy_keep_releases} releases keep theirs); deploy its commit "
            "instead.",
            {"release": target.release, "commit": target.commit_sha},
        )
    try:
        wanted = DeployRequest.next_release(settings(), app.name, app.repo_url)
    except InvalidRepository as error:
        raise refuse_repository(error) from None
    job = deploy_job(
        settings(),
        app.owner_id,
        wanted,
        Rollback(release=target.release, image=target.image, commit=target.commit_sha),
    )
    db_session().commit()  # ends the read; the submit takes the app's lock itself
    return answer_submission(
        new_submission(
            processor,
            job.params,
            data["max_attempts"],
            with_job=job.with_job,
            kind_quota=job.kind_quota,
        )
    )
