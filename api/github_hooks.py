"""Deploy on push: GitHub's push webhook for an app, the app's hook secret and its deliveries.

`POST /hooks/github/{app}` is not behind user auth (GitHub cannot log in): the request
proves itself with `X-Hub-Signature-256`, the HMAC-SHA256 of the raw body under the app's
webhook secret, compared in constant time before the body is even parsed. A push to the
app's branch (its `branch`, else the repository's default branch) with `auto_deploy` on
submits a release of the pushed `after` commit as the app's owner; anything else is answered
202 `ignored` with the reason, so GitHub's delivery log says why nothing happened.

Every arrival but a rate-limited one is recorded (AppHookDelivery: what arrived, what it
did); rejected arrivals are bounded by the per-app rate limit (HOOK_RATE_PER_MINUTE), which
is counted before the signature is checked. A delivery id deploys at most once: its
`deployed` row is inserted in the submission's own transaction, where the partial unique
index on (app_id, delivery_id) refuses a second one even when two arrive at once.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import uuid
from typing import Any

from cryptography.fernet import InvalidToken
from flask import Blueprint, Response, g, jsonify, request
from flask_jwt_extended import jwt_required
from marshmallow import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.app_urls import webhook_url
from api.errors import ApiError, not_found
from api.extensions import publisher, settings
from api.operation import doc, header
from api.owned import load_app
from api.pagination import encode_cursor, paginate
from api.quotas import SubmitQuotas, check_hook_rate
from api.schemas.common import PageQuerySchema
from api.schemas.github_hooks import (
    AppHookDeliveryListSchema,
    AppHookSecretSchema,
    AppHookSecretSetSchema,
    GitHubHookAnswerSchema,
    GitHubHookBodySchema,
    GitHubPushSchema,
)
from api.session import db_session, json_body
from api.submission import processor_or_422, resolve_max_attempts
from shared.apps.releases import decrypt_secret, encrypt_secret
from shared.deploy.jobs import DeployRequest, deploy_job
from shared.deploy.repo_urls import InvalidRepository, is_commit
from shared.jobs.submission import NewJob, Submission, submit_job
from shared.models import App, AppHookDelivery, Deployment
from shared.processors.deploy import NAME as DEPLOY_PROCESSOR

log = logging.getLogger(__name__)
bp = Blueprint("github_hooks", __name__, url_prefix="/hooks/github")
apps_bp = Blueprint("app_hooks", __name__, url_prefix="/apps")

DELIVERY_LIST_SCHEMA = AppHookDeliveryListSchema()
ANSWER_SCHEMA = GitHubHookAnswerSchema()
PUSH_SCHEMA = GitHubPushSchema()
#: The events GitHub should send (the only one that deploys).
HOOK_EVENTS = ["push"]
HOOK_CONTENT_TYPE = "application/json"
_DEPLOYED_INDEX = "uq_app_hook_deliveries_deployed"
_NO_COMMIT = "0" * 40
_EVENT_LENGTH = 64
_DELIVERY_LENGTH = 100
#: The headers GitHub sends that the hook reads (a missing or wrong signature answers 401).
_GITHUB_HEADERS = (
    header(
        "X-Hub-Signature-256",
        "sha256=<HMAC-SHA256 of the raw body with the app's webhook secret>",
        {"type": "string", "maxLength": len("sha256=") + 64},
    ),
    header(
        "X-GitHub-Event",
        "push deploys; ping answers pong; any other is ignored.",
        {"type": "string", "maxLength": _EVENT_LENGTH},
    ),
    header(
        "X-GitHub-Delivery",
        "The delivery's id: a repeated one never deploys twice.",
        {"type": "string", "maxLength": _DELIVERY_LENGTH},
    ),
)


class Arrival:
    """What one request to the hook carried, and how its row is recorded."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.event = request.headers.get("X-GitHub-Event", "")[:_EVENT_LENGTH] or "unknown"
        self.delivery_id = request.headers.get("X-GitHub-Delivery", "")[:_DELIVERY_LENGTH] or None
        self.ref: str | None = None
        self.commit: str | None = None

    def row(self, outcome: str, reason: str | None = None, **ids: uuid.UUID) -> AppHookDelivery:
        return AppHookDelivery(
            id=uuid.uuid4(),
            app_id=self.app.id,
            delivery_id=self.delivery_id,
            event=self.event,
            ref=self.ref,
            commit_sha=self.commit,
            outcome=outcome,
            reason=reason[:500] if reason else None,
            **ids,
        )

    def record(self, outcome: str, reason: str | None = None) -> None:
        """Commit this arrival's row in a transaction of its own."""
        session = db_session()
        session.rollback()  # whatever failed before leaves nothing half-done behind
        session.add(self.row(outcome, reason))
        session.commit()

    def answer(self, status: str, reason: str | None = None, code: int = 202) -> Response:
        """Record an arrival that deployed nothing and answer it."""
        self.record(status, reason)
        response = jsonify(ANSWER_SCHEMA.dump({"status": status, "reason": reason}))
        response.status_code = code
        return response


def _signature_ok(app: App, body: bytes) -> tuple[bool, str]:
    """(whether X-Hub-Signature-256 signs `body` with the app's secret, why not)."""
    try:
        secret = decrypt_secret(app.webhook_secret, settings())
    except InvalidToken:  # encrypted under a key no longer configured
        return False, "the app's webhook secret cannot be read; set it again"
    if secret is None:
        return False, "the app has no webhook secret (POST /apps/{app}/webhook-secret)"
    given = request.headers.get("X-Hub-Signature-256", "")
    if not given:
        return False, "X-Hub-Signature-256 is missing"
    if not given.startswith("sha256="):
        return False, "X-Hub-Signature-256 is not sha256=<hex>"
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(given[len("sha256=") :].encode(), expected.encode()):
        return False, "X-Hub-Signature-256 does not match the body"
    return True, ""


def _payload(arrival: Arrival) -> dict[str, Any]:
    """The signed body as a JSON object; a malformed one is recorded, then 400/422."""
    try:
        document = request.get_json(force=True, silent=True)  # NUL, bad UTF-8: 422 here
    except ApiError as error:
        arrival.record("rejected", f"malformed body: {error.message}")
        raise
    if not isinstance(document, dict):
        arrival.record("rejected", "the body is not a JSON object")
        raise ApiError(400, "invalid_json", "The request body must be a JSON object.")
    return document


@bp.post("/<string:name>")
@doc(
    summary="GitHub push webhook: a push to the app's branch deploys the pushed commit",
    tags=["apps"],
    body=GitHubHookBodySchema,
    response=GitHubHookAnswerSchema,
    status=202,
    auth=None,
    errors=(401, 404, 409, 429, 503),
    also=(200,),  # a ping's pong
    parameters=_GITHUB_HEADERS,
)
def github_push(name: str) -> Response:
    app = db_session().scalar(select(App).where(App.name == name))
    if app is None:
        raise not_found("app")
    check_hook_rate(settings(), app.id)
    arrival = Arrival(app)
    body = request.get_data(cache=True)
    valid, why = _signature_ok(app, body)
    if not valid:
        arrival.record("rejected", why)
        raise ApiError(401, "invalid_signature", f"Signature refused: {why}.")
    payload = _payload(arrival)
    if arrival.event == "ping":
        return arrival.answer("pong", code=200)
    if arrival.event != "push":
        return arrival.answer("ignored", f"the {arrival.event} event does not deploy")
    try:
        push = PUSH_SCHEMA.load(payload)
    except ValidationError:
        arrival.record("rejected", "not a push payload (ref, after)")
        raise
    arrival.ref, arrival.commit = push["ref"], push["after"]
    reason = _why_not(app, push)
    if reason is not None:
        return arrival.answer("ignored", reason)
    if arrival.delivery_id is not None and _deployed_before(app, arrival.delivery_id):
        return arrival.answer("ignored", "duplicate delivery")
    return _deploy(arrival)


def _why_not(app: App, push: dict[str, Any]) -> str | None:
    """Why this push does not deploy the app, or None when it does."""
    if not app.auto_deploy:
        return "auto_deploy is off for this app"
    ref = push["ref"]
    if not ref.startswith("refs/heads/"):
        return f"{ref} is not a branch"
    branch = app.branch or push["default_branch"]
    if branch is None:
        return "the payload names no default branch and the app has none"
    if ref != f"refs/heads/{branch}":
        return f"a push to {ref.removeprefix('refs/heads/')}; the app deploys {branch}"
    if push["deleted"] or push["after"] == _NO_COMMIT:
        return f"the branch {branch} was deleted"
    if push["after"] is None or not is_commit(push["after"]):
        return "`after` is not a commit id"
    return None


def _deployed_before(app: App, delivery_id: str) -> bool:
    found = db_session().scalar(
        select(AppHookDelivery.id).where(
            AppHookDelivery.app_id == app.id,
            AppHookDelivery.delivery_id == delivery_id,
            AppHookDelivery.outcome == "deployed",
        )
    )
    return found is not None


def _duplicate(error: IntegrityError) -> bool:
    diag = getattr(error.orig, "diag", None)
    return getattr(diag, "constraint_name", None) == _DEPLOYED_INDEX


def _deploy(arrival: Arrival) -> Response:
    """Submit the release as the app's owner, its `deployed` row in the same transaction."""
    app, commit = arrival.app, arrival.commit
    assert commit is not None
    processor = processor_or_422(DEPLOY_PROCESSOR)
    try:
        wanted = DeployRequest.next_release(settings(), app.name, app.repo_url, ref=commit)
    except InvalidRepository as error:
        return arrival.answer("ignored", f"the app's repository is refused: {error.message}")
    owner, app_id = app.owner_id, app.id
    job = deploy_job(settings(), owner, wanted)
    deployment_id = uuid.UUID(job.params["deployment_id"])

    def with_job(session: Session, new_job: NewJob) -> None:
        job.with_job(session, new_job)
        session.add(arrival.row("deployed", job_id=new_job.id, deployment_id=deployment_id))
        session.flush()  # a duplicate delivery fails here, before the message is published

    submission = Submission(
        owner_id=owner,
        processor=processor,
        params=job.params,
        max_attempts=resolve_max_attempts(processor, None),
        request_id=g.request_id,
        quotas=SubmitQuotas(settings(), owner, job.kind_quota),
        with_job=with_job,
    )
    session = db_session()
    session.commit()  # ends the reads; the submit takes the app's lock itself
    try:
        result = submit_job(session, submission, celery=publisher(), redis_url=settings().redis_url)
    except IntegrityError as error:
        if not _duplicate(error):
            raise
        return arrival.answer("ignored", "duplicate delivery")
    except Exception as error:  # refused (quota, name) or failed: recorded, then answered
        _record_failure(arrival, error)
        raise
    release = session.scalar(select(Deployment.release).where(Deployment.id == deployment_id))
    log.info(
        "push deployed",
        extra={"event": "hook_deployed", "app_id": str(app_id), "job_id": str(result.job.id)},
    )
    body = {
        "status": "deployed",
        "job": result.job,
        "deployment_id": deployment_id,
        "release": release,
    }
    return jsonify(ANSWER_SCHEMA.dump(body)), 202


def _record_failure(arrival: Arrival, error: Exception) -> None:
    reason = getattr(error, "message", None) or type(error).__name__
    try:
        arrival.record("ignored", f"not deployed: {reason}")
    except Exception:  # the database itself is down: the error answers for both
        log.warning("hook delivery not recorded", exc_info=True, extra={"event": "hook_unrecorded"})


@apps_bp.post("/<string:name>/webhook-secret")
@jwt_required()
@doc(
    summary="Set or rotate the app's GitHub webhook secret (generated unless given); the "
    "answer shows it once, with how to configure the webhook",
    tags=["apps"],
    body=AppHookSecretSetSchema,
    response=AppHookSecretSchema,
    errors=(404,),
)
def set_webhook_secret(name: str) -> Response:
    data = AppHookSecretSetSchema().load(json_body(optional=True))
    app = load_app(name, for_update=True)
    secret = data.get("secret") or secrets.token_hex(32)
    app.webhook_secret = encrypt_secret(secret, settings())
    db_session().commit()
    shown = {
        "secret": secret,
        "webhook_url": webhook_url(app.name),
        "content_type": HOOK_CONTENT_TYPE,
        "events": HOOK_EVENTS,
    }
    return jsonify(AppHookSecretSchema().dump(shown))


@apps_bp.get("/<string:name>/hook-deliveries")
@jwt_required()
@doc(
    summary="What arrived at the app's push hook and what it did, newest first",
    tags=["apps"],
    query=PageQuerySchema,
    response=AppHookDeliveryListSchema,
    errors=(404,),
)
def list_hook_deliveries(name: str) -> Response:
    args = PageQuerySchema().load(request.args)
    app = load_app(name)
    query = select(AppHookDelivery).where(AppHookDelivery.app_id == app.id)
    query = paginate(
        query, AppHookDelivery.received_at, AppHookDelivery.id, args.get("cursor"), args["limit"]
    )
    rows = list(db_session().scalars(query))
    next_cursor = None
    if len(rows) > args["limit"]:
        rows = rows[: args["limit"]]
        next_cursor = encode_cursor(rows[-1].received_at, rows[-1].id)
    return jsonify(DELIVERY_LIST_SCHEMA.dump({"items": rows, "next_cursor": next_cursor}))
