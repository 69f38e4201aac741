"""Webhook subscriptions: create, list, inspect, change, delete, rotate the secret, ping,
list deliveries and redeliver one.

The URL is checked when it is saved (shared/webhooks/urls.py; the sender checks it again at
every delivery). The secret is generated here, shown only in the answers of a create and a
rotation, and stored as a Fernet token (shared/security/crypto.py), so a database dump alone cannot
sign. Deliveries are recorded as `pending` rows and sent after the commit
(shared/webhooks/outbox.py); the webhooks worker does the sending.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from flask import Blueprint, Response, jsonify, request, url_for
from flask_jwt_extended import jwt_required
from sqlalchemy import select

from api import links
from api.errors import ApiError, not_found
from api.extensions import publisher, settings
from api.identity import current_user_id, is_admin
from api.operation import doc
from api.pagination import page, paginate
from api.quotas import check_webhooks
from api.schemas.common import PageQuerySchema
from api.schemas.webhooks import (
    WEBHOOK_ALL_EVENTS,
    WebhookCreateSchema,
    WebhookDeliveryListSchema,
    WebhookDeliveryQuerySchema,
    WebhookDeliverySchema,
    WebhookListSchema,
    WebhookPatchSchema,
    WebhookSchema,
    WebhookSecretSchema,
)
from api.session import db_session, json_body
from shared.clock import now
from shared.jobs.submission import lock_owner
from shared.models import Webhook, WebhookAttempt, WebhookDelivery
from shared.security.crypto import cipher
from shared.webhooks import outbox as webhook_outbox
from shared.webhooks.status import DeliveryStatus
from shared.webhooks.urls import UrlRefused, check_url

bp = Blueprint("webhooks", __name__, url_prefix="/webhooks")

WEBHOOK_SCHEMA = WebhookSchema()
LIST_SCHEMA = WebhookListSchema()
CREATE_SCHEMA = WebhookCreateSchema()
PATCH_SCHEMA = WebhookPatchSchema()
LIST_QUERY_SCHEMA = PageQuerySchema()
DELIVERY_SCHEMA = WebhookDeliverySchema()
DELIVERY_LIST_SCHEMA = WebhookDeliveryListSchema()
DELIVERY_QUERY_SCHEMA = WebhookDeliveryQuerySchema()
SECRET_PREFIX = "whsec_"  # noqa: S105 (a label, not a secret)


@dataclass(frozen=True)
class DeliveryWithAttempts:
    """A delivery row with its attempts, as WebhookDeliverySchema dumps it (the row's own
    `attempts` column, the count, shows as `attempt_count`)."""

    row: WebhookDelivery
    attempts: list[WebhookAttempt]

    @property
    def attempt_count(self) -> int:
        return self.row.attempts

    def __getattr__(self, name: str) -> Any:
        return getattr(self.row, name)


def _checked_url(url: str) -> str:
    """The URL as given, once Dockyard may call it; else 422 `webhook_url_refused`.

    Whitespace and control characters are refused before the check: the URL parser would
    drop them silently, so the stored URL would not be the one called."""
    try:
        if any(char.isspace() or not char.isprintable() for char in url):
            raise UrlRefused("the URL contains whitespace or control characters")
        check_url(url, settings())
    except UrlRefused as refused:
        raise ApiError(
            422,
            "webhook_url_refused",
            f"This URL cannot be a webhook: {refused.reason}.",
            {"reason": refused.reason, "fields": {"url": [refused.reason]}},
        ) from None
    return url


def _events(events: list[str]) -> list[str]:
    """Without repeats, in the order given; `*` alone stands for every event."""
    return [WEBHOOK_ALL_EVENTS] if WEBHOOK_ALL_EVENTS in events else list(dict.fromkeys(events))


def _new_secret() -> tuple[str, str]:
    """(the secret to show once, the Fernet token to store)."""
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    return secret, cipher(settings()).encrypt(secret.encode()).decode()


def load_webhook(webhook_id: uuid.UUID, *, for_update: bool = False) -> Webhook:
    """The caller's webhook (any for an admin); someone else's answers 404 like a missing one."""
    webhook = db_session().get(Webhook, webhook_id, with_for_update=for_update)
    if webhook is None or (webhook.owner_id != current_user_id() and not is_admin()):
        raise not_found("webhook")
    return webhook


def _load_delivery(webhook: Webhook, delivery_id: uuid.UUID) -> WebhookDelivery:
    delivery = db_session().get(WebhookDelivery, delivery_id, with_for_update=True)
    if delivery is None or delivery.webhook_id != webhook.id:
        raise not_found("delivery")
    return delivery


def _require_enabled(webhook: Webhook) -> None:
    if not webhook.enabled:
        raise ApiError(
            409,
            "webhook_disabled",
            "The webhook is disabled; enable it first (PATCH enabled: true).",
            {"disabled_reason": webhook.disabled_reason},
        )


def _with_attempts(deliveries: list[WebhookDelivery]) -> list[DeliveryWithAttempts]:
    """The deliveries with their attempts, oldest attempt first (one query for the page)."""
    attempts: dict[uuid.UUID, list[WebhookAttempt]] = {d.id: [] for d in deliveries}
    if deliveries:
        query = (
            select(WebhookAttempt)
            .where(WebhookAttempt.delivery_id.in_(list(attempts)))
            .order_by(WebhookAttempt.id)
        )
        for attempt in db_session().scalars(query):
            attempts[attempt.delivery_id].append(attempt)
    return [DeliveryWithAttempts(d, attempts[d.id]) for d in deliveries]


def _answer(body: dict[str, Any], status: int = 200) -> Response:
    response = jsonify(body)
    response.status_code = status
    return response


def _with_secret(webhook: Webhook, secret: str, status: int) -> Response:
    """The webhook as WebhookSecretSchema documents it: its usual fields and the secret."""
    response = _answer({**WEBHOOK_SCHEMA.dump(webhook), "secret": secret}, status)
    if status == 201:
        response.headers["Location"] = url_for("v1.webhooks.get_webhook", webhook_id=webhook.id)
    return response


def _delivery_answer(delivery: WebhookDelivery) -> Response:
    return _answer(DELIVERY_SCHEMA.dump(_with_attempts([delivery])[0]), 202)


@bp.post("")
@jwt_required()
@doc(
    summary="Subscribe a URL to job and deployment events; the answer shows the secret once",
    tags=["webhooks"],
    body=WebhookCreateSchema,
    response=WebhookSecretSchema,
    status=201,
    errors=(429,),
    links=links.WEBHOOK,
)
def create_webhook() -> Response:
    data = CREATE_SCHEMA.load(json_body())
    url = _checked_url(data["url"])
    owner = current_user_id()
    session = db_session()
    if settings().quota_webhooks:
        lock_owner(session, owner)  # concurrent creates cannot pass the cap together
        check_webhooks(settings(), session, owner)
    secret, token = _new_secret()
    webhook = Webhook(
        id=uuid.uuid4(),
        owner_id=owner,
        url=url,
        events=_events(data["events"]),
        labels=data["labels"],
        description=data["description"],
        enabled=True,
        secret=token,
    )
    session.add(webhook)
    session.commit()
    return _with_secret(webhook, secret, 201)


@bp.get("")
@jwt_required()
@doc(
    summary="List webhooks (yours; all for an admin), newest first",
    tags=["webhooks"],
    query=PageQuerySchema,
    response=WebhookListSchema,
    links={
        "GetFirstWebhook": ("v1.webhooks.get_webhook", {"webhook_id": links.FIRST_ITEM}),
    },
)
def list_webhooks() -> Response:
    args = LIST_QUERY_SCHEMA.load(request.args)
    query = select(Webhook)
    if not is_admin():
        query = query.where(Webhook.owner_id == current_user_id())
    query = paginate(query, Webhook.created_at, Webhook.id, args.get("cursor"), args["limit"])
    rows, next_cursor = page(list(db_session().scalars(query)), args["limit"])
    return jsonify(LIST_SCHEMA.dump({"items": rows, "next_cursor": next_cursor}))


@bp.get("/<uuid:webhook_id>")
@jwt_required()
@doc(
    summary="One webhook (never its secret)",
    tags=["webhooks"],
    response=WebhookSchema,
    errors=(404,),
    links=links.WEBHOOK,
)
def get_webhook(webhook_id: uuid.UUID) -> Response:
    return jsonify(WEBHOOK_SCHEMA.dump(load_webhook(webhook_id)))


@bp.patch("/<uuid:webhook_id>")
@jwt_required()
@doc(
    summary="Change a webhook; enabled: true re-enables one Dockyard disabled",
    tags=["webhooks"],
    body=WebhookPatchSchema,
    response=WebhookSchema,
    errors=(404,),
)
def patch_webhook(webhook_id: uuid.UUID) -> Response:
    data = PATCH_SCHEMA.load(json_body())
    webhook = load_webhook(webhook_id, for_update=True)
    if "url" in data:
        webhook.url = _checked_url(data["url"])
    if "events" in data:
        webhook.events = _events(data["events"])
    for name in ("labels", "description"):
        if name in data:
            setattr(webhook, name, data[name])
    if data.get("enabled") is True and not webhook.enabled:
        # A fresh start: the failing streak that disabled it is forgotten.
        webhook.disabled_reason = None
        webhook.failing_since = None
    if "enabled" in data:
        webhook.enabled = data["enabled"]
    db_session().commit()
    return jsonify(WEBHOOK_SCHEMA.dump(webhook))


@bp.delete("/<uuid:webhook_id>")
@jwt_required()
@doc(
    summary="Delete a webhook and its delivery history (nothing more is sent to it)",
    tags=["webhooks"],
    status=204,
    errors=(404,),
)
def delete_webhook(webhook_id: uuid.UUID) -> Response:
    webhook = load_webhook(webhook_id, for_update=True)
    db_session().delete(webhook)
    db_session().commit()
    return Response(status=204)


@bp.post("/<uuid:webhook_id>/rotate-secret")
@jwt_required()
@doc(
    summary="A new secret, shown once; the old one also signs for WEBHOOK_SECRET_OVERLAP",
    tags=["webhooks"],
    response=WebhookSecretSchema,
    errors=(404,),
    links=links.WEBHOOK,
)
def rotate_secret(webhook_id: uuid.UUID) -> Response:
    webhook = load_webhook(webhook_id, for_update=True)
    overlap = settings().webhook_secret_overlap
    secret, token = _new_secret()
    # Only the secret being replaced overlaps: one rotated away earlier stops signing now.
    webhook.previous_secret = webhook.secret if overlap else None
    webhook.previous_secret_expires_at = now() + timedelta(seconds=overlap) if overlap else None
    webhook.secret = token
    db_session().commit()
    return _with_secret(webhook, secret, 200)


@bp.post("/<uuid:webhook_id>/ping")
@jwt_required()
@doc(
    summary="Send a `ping` delivery now (data: the webhook id)",
    tags=["webhooks"],
    response=WebhookDeliverySchema,
    status=202,
    errors=(404, 409),
    links=links.DELIVERY,
)
def ping(webhook_id: uuid.UUID) -> Response:
    webhook = load_webhook(webhook_id, for_update=True)
    _require_enabled(webhook)
    delivery = WebhookDelivery(
        id=uuid.uuid4(),
        webhook_id=webhook.id,
        event_type=webhook_outbox.PING,
        status=DeliveryStatus.PENDING.value,
        attempts=0,
        next_attempt_at=now(),
    )
    db_session().add(delivery)
    db_session().commit()
    webhook_outbox.send([delivery.id], publisher())
    return _delivery_answer(delivery)


@bp.get("/<uuid:webhook_id>/deliveries")
@jwt_required()
@doc(
    summary="The webhook's deliveries with their attempts, newest first",
    tags=["webhooks"],
    query=WebhookDeliveryQuerySchema,
    response=WebhookDeliveryListSchema,
    errors=(404,),
)
def list_deliveries(webhook_id: uuid.UUID) -> Response:
    args = DELIVERY_QUERY_SCHEMA.load(request.args)
    webhook = load_webhook(webhook_id)
    query = select(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook.id)
    if "status" in args:
        query = query.where(WebhookDelivery.status == args["status"])
    query = paginate(
        query, WebhookDelivery.created_at, WebhookDelivery.id, args.get("cursor"), args["limit"]
    )
    rows, next_cursor = page(list(db_session().scalars(query)), args["limit"])
    return jsonify(
        DELIVERY_LIST_SCHEMA.dump({"items": _with_attempts(rows), "next_cursor": next_cursor})
    )


@bp.post("/<uuid:webhook_id>/deliveries/<uuid:delivery_id>/redeliver")
@jwt_required()
@doc(
    summary="Send a delivery again now, same id and body, with a fresh attempt budget",
    tags=["webhooks"],
    response=WebhookDeliverySchema,
    status=202,
    errors=(404, 409),
    links=links.DELIVERY,
)
def redeliver(webhook_id: uuid.UUID, delivery_id: uuid.UUID) -> Response:
    webhook = load_webhook(webhook_id)
    _require_enabled(webhook)
    delivery = _load_delivery(webhook, delivery_id)
    # A new cycle: WEBHOOK_MAX_ATTEMPTS more tries, numbered from 1 again; the earlier
    # attempts stay in the history. A lease (locked_until) a sender holds is left alone, so
    # a delivery being sent right now is not sent twice at once.
    delivery.status = DeliveryStatus.PENDING.value
    delivery.attempts = 0
    delivery.next_attempt_at = now()
    delivery.delivered_at = None
    db_session().commit()
    webhook_outbox.send([delivery.id], publisher())
    return _delivery_answer(delivery)
