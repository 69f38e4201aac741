"""Webhook subscriptions, the API: CRUD, isolation, the admin view, the quota, the secret
(shown on create and rotation only, stored encrypted, overlapping after a rotation), the URL
refusals at save time, ping, the deliveries listing and redeliver. Sending is tested with a
real receiver and worker elsewhere; here the broker's `webhooks` list shows what was sent."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from redis import Redis
from sqlalchemy import update

from shared.config import get_settings
from shared.db import session_scope
from shared.dispatch import priorities, queues
from shared.models import Webhook, WebhookAttempt, WebhookDelivery
from shared.security.crypto import cipher
from tests.helpers import User, api_error

PUBLIC_URL = "https://1.1.1.1/dockyard"  # a literal public address: no DNS needed
BASE = "/api/v1/webhooks"


def create(user: User, expect: int = 201, **fields) -> dict:
    payload = {"url": PUBLIC_URL, "events": ["job.succeeded"], **fields}
    response = user.post(BASE, json=payload)
    assert response.status_code == expect, response.get_json()
    return response.get_json()


def patch(user: User, webhook_id: str, **fields):
    return user.client.patch(f"{BASE}/{webhook_id}", json=fields, headers=user.headers)


def row(webhook_id: str) -> Webhook:
    with session_scope() as session:
        webhook = session.get(Webhook, uuid.UUID(webhook_id))
        assert webhook is not None
        session.expunge(webhook)
        return webhook


def delivery_row(delivery_id: str) -> WebhookDelivery:
    with session_scope() as session:
        delivery = session.get(WebhookDelivery, uuid.UUID(delivery_id))
        assert delivery is not None
        session.expunge(delivery)
        return delivery


def broker() -> Redis:
    return Redis.from_url(get_settings().broker_url)


def sent_deliveries() -> list[str]:
    """The delivery ids of the deliver messages waiting in the webhooks queue (any priority
    level), oldest first within a level."""
    ids = []
    for name in priorities.list_names(queues.WEBHOOKS).values():
        for raw in reversed(broker().lrange(name, 0, -1)):
            message = json.loads(raw)
            assert message["headers"]["task"] == queues.TASK_WEBHOOK_DELIVER
            ids.append(json.loads(base64.b64decode(message["body"]))[1]["delivery_id"])
    return ids


@pytest.fixture(autouse=True)
def _empty_webhooks_queue() -> None:
    broker().delete(*priorities.list_names(queues.WEBHOOKS).values())


def test_create_shows_the_secret_once_and_stores_it_encrypted(client) -> None:
    user = User(client)
    created = create(
        user,
        events=["job.failed", "job.succeeded", "job.failed"],
        labels={"team": "data"},
        description="builds channel",
    )
    secret = created["secret"]
    assert secret.startswith("whsec_") and len(secret) > 40
    assert created["url"] == PUBLIC_URL
    assert created["events"] == ["job.failed", "job.succeeded"]  # repeats dropped
    assert created["labels"] == {"team": "data"}
    assert created["description"] == "builds channel"
    assert created["enabled"] is True and created["disabled_reason"] is None
    assert created["previous_secret_expires_at"] is None
    assert created["links"]["self"] == f"{BASE}/{created['id']}"

    stored = row(created["id"])
    assert secret not in stored.secret and secret.removeprefix("whsec_") not in stored.secret
    assert cipher(get_settings()).decrypt(stored.secret.encode()).decode() == secret

    shown = user.get(f"{BASE}/{created['id']}").get_json()
    assert "secret" not in shown and secret not in json.dumps(shown)
    listed = user.get(BASE).get_json()["items"]
    assert [w["id"] for w in listed] == [created["id"]]
    assert "secret" not in listed[0]
    assert shown == {k: v for k, v in created.items() if k != "secret"}


def test_patch_changes_fields_and_re_enabling_clears_the_disabled_state(client) -> None:
    user = User(client)
    webhook = create(user)
    response = patch(
        user,
        webhook["id"],
        url="https://8.8.8.8/new",
        events=["*"],
        labels={"env": "prod"},
        description=None,
    )
    assert response.status_code == 200, response.get_json()
    changed = response.get_json()
    assert (changed["url"], changed["events"], changed["labels"], changed["description"]) == (
        "https://8.8.8.8/new",
        ["*"],
        {"env": "prod"},
        None,
    )
    # `*` with other events is just `*`.
    assert patch(user, webhook["id"], events=["job.dead", "*"]).get_json()["events"] == ["*"]

    assert patch(user, webhook["id"], enabled=False).get_json()["enabled"] is False
    with session_scope() as session:  # as the sender leaves an endpoint it gave up on
        session.execute(
            update(Webhook)
            .where(Webhook.id == uuid.UUID(webhook["id"]))
            .values(
                disabled_reason="every delivery failed for 3 days",
                failing_since=datetime.now(UTC) - timedelta(days=3),
            )
        )
    disabled = user.get(f"{BASE}/{webhook['id']}").get_json()
    assert disabled["disabled_reason"] == "every delivery failed for 3 days"
    assert disabled["failing_since"] is not None
    enabled = patch(user, webhook["id"], enabled=True).get_json()
    assert enabled["enabled"] is True
    assert enabled["disabled_reason"] is None and enabled["failing_since"] is None

    assert user.delete(f"{BASE}/{webhook['id']}").status_code == 204
    assert user.get(f"{BASE}/{webhook['id']}").status_code == 404


@pytest.mark.parametrize(
    "fields",
    [
        {"events": []},
        {"events": ["job.exploded"]},
        {"events": "*"},
        {"events": ["ping"]},  # sent on request only, not subscribable
        {"labels": {"Bad Key": "x"}},
        {"labels": {f"k{i}": "v" for i in range(17)}},
        {"url": ""},
        {"description": "x" * 501},
        {"secret": "mine"},  # unknown fields are refused
    ],
)
def test_invalid_bodies_are_422(client, fields) -> None:
    user = User(client)
    assert create(user, expect=422, **fields)["error"]["code"] == "validation_error"


def test_another_users_webhook_answers_404_and_an_admin_sees_all(client) -> None:
    owner, other, admin = User(client), User(client), User(client, role="admin")
    webhook = create(owner)
    path = f"{BASE}/{webhook['id']}"
    delivery = owner.post(f"{path}/ping").get_json()
    for response in (
        other.get(path),
        patch(other, webhook["id"], description="mine now"),
        other.delete(path),
        other.post(f"{path}/rotate-secret"),
        other.post(f"{path}/ping"),
        other.get(f"{path}/deliveries"),
        other.post(f"{path}/deliveries/{delivery['id']}/redeliver"),
    ):
        assert response.status_code == 404, response.get_json()
        api_error(response, code="not_found")
    assert other.get(BASE).get_json()["items"] == []
    assert owner.get(path).get_json()["description"] is None
    # A delivery of another webhook, even one's own, is not found under this one.
    mine = create(other)
    assert (
        other.post(f"{BASE}/{mine['id']}/deliveries/{delivery['id']}/redeliver").status_code == 404
    )

    # Newest first over every user's webhooks: the two just made by two other users.
    listed = admin.get(f"{BASE}?limit=2").get_json()["items"]
    assert [w["id"] for w in listed] == [mine["id"], webhook["id"]]
    assert admin.get(path).get_json()["owner_id"] == webhook["owner_id"]
    assert admin.get(f"{path}/deliveries").status_code == 200


def test_list_is_newest_first_with_a_cursor(client) -> None:
    user = User(client)
    ids = [create(user)["id"] for _ in range(3)]
    first = user.get(f"{BASE}?limit=2").get_json()
    assert [w["id"] for w in first["items"]] == ids[::-1][:2]
    second = user.get(f"{BASE}?limit=2&cursor={first['next_cursor']}").get_json()
    assert [w["id"] for w in second["items"]] == ids[:1]
    assert second["next_cursor"] is None


def test_quota_webhooks(make_app) -> None:
    client = make_app(quota_webhooks=2).test_client()
    user = User(client)
    first = create(user)
    create(user)
    refused = create(user, expect=429)
    assert refused["error"]["code"] == "too_many_webhooks"
    assert refused["error"]["details"] == {"limit": 2, "webhooks": 2}
    assert user.delete(f"{BASE}/{first['id']}").status_code == 204
    create(user)  # a deleted one frees its place
    assert create(User(client))["id"]  # the cap is per user


def test_rotation_shows_the_new_secret_and_keeps_the_old_one_for_the_overlap(make_app) -> None:
    client = make_app(webhook_secret_overlap=3600).test_client()
    user = User(client)
    webhook = create(user)
    before = datetime.now(UTC)
    response = user.post(f"{BASE}/{webhook['id']}/rotate-secret")
    assert response.status_code == 200, response.get_json()
    rotated = response.get_json()
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != webhook["secret"]
    expires = datetime.fromisoformat(rotated["previous_secret_expires_at"])
    assert before + timedelta(seconds=3600) <= expires <= datetime.now(UTC) + timedelta(hours=1)

    stored = row(webhook["id"])
    keys = cipher(get_settings())
    assert keys.decrypt(stored.secret.encode()).decode() == rotated["secret"]
    assert stored.previous_secret is not None
    assert keys.decrypt(stored.previous_secret.encode()).decode() == webhook["secret"]
    shown = user.get(f"{BASE}/{webhook['id']}").get_json()
    assert "secret" not in shown
    assert shown["previous_secret_expires_at"] == rotated["previous_secret_expires_at"]

    # A second rotation: the secret it replaces overlaps; the first one stops signing.
    again = user.post(f"{BASE}/{webhook['id']}/rotate-secret").get_json()
    stored = row(webhook["id"])
    assert stored.previous_secret is not None
    assert keys.decrypt(stored.previous_secret.encode()).decode() == rotated["secret"]
    assert keys.decrypt(stored.secret.encode()).decode() == again["secret"]

    # Once the overlap has passed it is no longer shown as valid.
    with session_scope() as session:
        session.execute(
            update(Webhook)
            .where(Webhook.id == uuid.UUID(webhook["id"]))
            .values(previous_secret_expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    assert user.get(f"{BASE}/{webhook['id']}").get_json()["previous_secret_expires_at"] is None


def test_rotation_without_overlap_drops_the_old_secret_at_once(make_app) -> None:
    user = User(make_app(webhook_secret_overlap=0).test_client())
    webhook = create(user)
    rotated = user.post(f"{BASE}/{webhook['id']}/rotate-secret").get_json()
    assert rotated["previous_secret_expires_at"] is None
    stored = row(webhook["id"])
    assert stored.previous_secret is None and stored.previous_secret_expires_at is None


REFUSED_URLS = [
    ("http://1.1.1.1/hook", "scheme"),
    ("ftp://1.1.1.1/hook", "scheme"),
    ("https://user:pass@1.1.1.1/hook", "credentials"),
    ("https://token@1.1.1.1/hook", "credentials"),
    ("https://127.0.0.1/hook", "127.0.0.1"),
    ("https://127.8.9.10/hook", "127.8.9.10"),
    ("https://10.1.2.3/hook", "10.1.2.3"),
    ("https://172.16.0.1/hook", "172.16.0.1"),
    ("https://172.31.255.254/hook", "172.31.255.254"),
    ("https://192.168.1.1/hook", "192.168.1.1"),
    ("https://169.254.1.1/hook", "169.254.1.1"),
    ("https://169.254.169.254/latest/meta-data/", "169.254.169.254"),
    ("https://224.0.0.1/hook", "224.0.0.1"),
    ("https://0.0.0.0/hook", "0.0.0.0"),
    ("https://[::1]/hook", "::1"),
    ("https://[fc00::1]/hook", "fc00::1"),
    ("https://[fd12:3456::1]/hook", "fd12:3456::1"),
    ("https://[fe80::1]/hook", "fe80::1"),
    ("https://[ff02::1]/hook", "ff02::1"),
    ("https://[::ffff:127.0.0.1]/hook", "::ffff:127.0.0.1"),
    ("https://[::ffff:10.0.0.1]/hook", "::ffff:10.0.0.1"),
    ("https://localhost/hook", "non-public"),
    ("https://does-not-exist.invalid/hook", "does not resolve"),
    ("https:///hook", "no host"),
    ("https://1.1.1.1:99999/hook", "not a valid URL"),
    (" https://1.1.1.1/hook", "whitespace"),
    ("https://1.1.1.1/hook\n", "whitespace"),
    ("https://1.1.1.1/a hook", "whitespace"),
    ("https://1.1.1.1/\x7fhook", "control characters"),
]


@pytest.mark.parametrize(("url", "reason"), REFUSED_URLS)
def test_refused_urls_are_422_webhook_url_refused(client, url, reason) -> None:
    user = User(client)
    refused = create(user, expect=422, url=url)["error"]
    assert refused["code"] == "webhook_url_refused", refused
    assert reason in refused["details"]["reason"], refused
    assert refused["details"]["fields"] == {"url": [refused["details"]["reason"]]}
    # The same check when a saved webhook's URL changes.
    webhook = create(user)
    response = patch(user, webhook["id"], url=url)
    api_error(response, 422, "webhook_url_refused")
    assert user.get(f"{BASE}/{webhook['id']}").get_json()["url"] == PUBLIC_URL


def test_allowed_networks_and_allow_http_open_what_they_name(make_app) -> None:
    user = User(
        make_app(
            webhook_allowed_networks=("127.0.0.0/8", "fd00::/8"), webhook_allow_http=True
        ).test_client()
    )
    for url in (
        "https://127.0.0.1:8443/hook",
        "http://127.0.0.1:8080/hook",
        "https://[fd00::5]/hook",
        "http://1.1.1.1/hook",
    ):
        assert create(user, url=url)["url"] == url
    for url in ("https://10.0.0.1/hook", "https://[fc00::1]/hook", "https://169.254.169.254/"):
        assert create(user, expect=422, url=url)["error"]["code"] == "webhook_url_refused"


def test_ping_records_a_pending_delivery_and_sends_it(client) -> None:
    user = User(client)
    webhook = create(user)
    response = user.post(f"{BASE}/{webhook['id']}/ping")
    assert response.status_code == 202, response.get_json()
    delivery = response.get_json()
    assert delivery["event"] == "ping" and delivery["status"] == "pending"
    assert delivery["webhook_id"] == webhook["id"]
    assert delivery["attempt_count"] == 0 and delivery["attempts"] == []
    assert delivery["next_attempt_at"] is not None
    stored = delivery_row(delivery["id"])
    assert (stored.event_type, stored.status, stored.job_id, stored.deployment_id) == (
        "ping",
        "pending",
        None,
        None,
    )
    assert sent_deliveries() == [delivery["id"]]
    listed = user.get(f"{BASE}/{webhook['id']}/deliveries").get_json()["items"]
    assert [d["id"] for d in listed] == [delivery["id"]]

    patch(user, webhook["id"], enabled=False)
    refused = user.post(f"{BASE}/{webhook['id']}/ping")
    api_error(refused, 409, "webhook_disabled")
    assert sent_deliveries() == [delivery["id"]]


def _insert_failed_delivery(webhook_id: str, created_at: datetime) -> str:
    delivery_id = uuid.uuid4()
    with session_scope() as session:
        session.add(
            WebhookDelivery(
                id=delivery_id,
                webhook_id=uuid.UUID(webhook_id),
                event_type="job.succeeded",
                body='{"id": "x"}',
                status="failed",
                attempts=2,
                next_attempt_at=None,
                created_at=created_at,
            )
        )
        session.flush()
        session.add_all(
            [
                WebhookAttempt(
                    delivery_id=delivery_id,
                    attempt=1,
                    response_code=500,
                    duration_ms=12,
                    response_body="oops",
                ),
                WebhookAttempt(
                    delivery_id=delivery_id, attempt=2, duration_ms=10000, error="timed out"
                ),
            ]
        )
    return str(delivery_id)


def test_deliveries_list_their_attempts_and_redeliver_starts_a_new_cycle(client) -> None:
    user = User(client)
    webhook = create(user)
    path = f"{BASE}/{webhook['id']}"
    old = _insert_failed_delivery(webhook["id"], datetime.now(UTC) - timedelta(hours=1))
    new = _insert_failed_delivery(webhook["id"], datetime.now(UTC))

    listed = user.get(f"{path}/deliveries").get_json()
    assert [d["id"] for d in listed["items"]] == [new, old]
    item = listed["items"][0]
    assert (item["event"], item["status"], item["attempt_count"]) == ("job.succeeded", "failed", 2)
    assert item["delivered_at"] is None and item["next_attempt_at"] is None
    assert [
        (a["attempt"], a["response_code"], a["duration_ms"], a["error"], a["response_body"])
        for a in item["attempts"]
    ] == [(1, 500, 12, None, "oops"), (2, None, 10000, "timed out", None)]
    assert all(a["created_at"] for a in item["attempts"])
    first = user.get(f"{path}/deliveries?limit=1").get_json()
    assert [d["id"] for d in first["items"]] == [new]
    rest = user.get(f"{path}/deliveries?limit=1&cursor={first['next_cursor']}").get_json()
    assert [d["id"] for d in rest["items"]] == [old] and rest["next_cursor"] is None
    assert user.get(f"{path}/deliveries?status=pending").get_json()["items"] == []

    response = user.post(f"{path}/deliveries/{old}/redeliver")
    assert response.status_code == 202, response.get_json()
    again = response.get_json()
    assert (again["id"], again["status"], again["attempt_count"]) == (old, "pending", 0)
    assert len(again["attempts"]) == 2  # the history stays
    assert again["next_attempt_at"] is not None
    stored = delivery_row(old)
    assert stored.body == '{"id": "x"}'  # the same bytes are sent (and signed) again
    assert sent_deliveries() == [old]
    pending = user.get(f"{path}/deliveries?status=pending").get_json()["items"]
    assert [d["id"] for d in pending] == [old]

    assert user.post(f"{path}/deliveries/{uuid.uuid4()}/redeliver").status_code == 404
    patch(user, webhook["id"], enabled=False)
    refused = user.post(f"{path}/deliveries/{new}/redeliver")
    api_error(refused, 409, "webhook_disabled")


def test_deleting_a_webhook_deletes_its_deliveries(client) -> None:
    user = User(client)
    webhook = create(user)
    delivery = user.post(f"{BASE}/{webhook['id']}/ping").get_json()
    assert user.delete(f"{BASE}/{webhook['id']}").status_code == 204
    with session_scope() as session:
        assert session.get(WebhookDelivery, uuid.UUID(delivery["id"])) is None
