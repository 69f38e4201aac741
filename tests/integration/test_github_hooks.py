"""Deploy on push: GitHub's push webhook against the API (Flask test client, real PostgreSQL
and Redis), signed exactly as GitHub signs (HMAC-SHA256 of the raw body bytes). The release
jobs are created and queued; no deploy worker runs them, except in the last test, which
pushes a new commit to the local GitHub stand-in and waits for it to serve."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from shared.db import session_scope
from shared.models import App, Job
from tests.helpers import User, wait_for
from tests.integration.git_repos import FakeGitHub
from tests.integration.workers import deploy_fleet

REPO = "https://github.com/dockyard-tests/hooked"
ZEROS = "0" * 40
SECRET = "a-very-secret-hook-key"  # noqa: S105 - the tests' webhook secret


def commit() -> str:
    return hashlib.sha1(uuid.uuid4().bytes).hexdigest()  # noqa: S324 - a made-up commit id


def push_body(
    ref: str = "refs/heads/main",
    after: str | None = None,
    deleted: bool = False,
    default_branch: str = "main",
) -> bytes:
    """A push payload as GitHub sends it (the fields the hook reads, and some it does not)."""
    payload = {
        "ref": ref,
        "before": commit(),
        "after": after or commit(),
        "created": False,
        "deleted": deleted,
        "forced": False,
        "repository": {
            "full_name": "dockyard-tests/hooked",
            "default_branch": default_branch,
            "clone_url": REPO + ".git",
        },
        "pusher": {"name": "octo", "email": "octo@example.com"},
        "head_commit": {"id": after, "message": "the message ✓"},
    }
    return json.dumps(payload, indent=2).encode()


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def send(
    client: FlaskClient,
    app: str,
    body: bytes,
    secret: str | None,
    *,
    event: str = "push",
    delivery: str | None = None,
    signature: str | None = None,
) -> Any:
    headers = {
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-GitHub-Hook-ID": "1",
        "User-Agent": "GitHub-Hookshot/test",
        "Content-Type": "application/json",
    }
    if signature is not None:
        headers["X-Hub-Signature-256"] = signature
    elif secret is not None:
        headers["X-Hub-Signature-256"] = sign(secret, body)
    return client.post(f"/api/v1/hooks/github/{app}", data=body, headers=headers)


@pytest.fixture()
def user(app: Flask) -> Iterator[User]:
    """A user whose queued release jobs are cancelled afterwards: no deploy worker runs them,
    and the fleet of the last test must not pick them up."""
    owner = User(app.test_client())
    yield owner
    for job in owner.get("/api/v1/jobs?limit=200").get_json()["items"]:
        if job["status"] in ("queued", "scheduled"):
            owner.post(f"/api/v1/jobs/{job['id']}/cancel")


def new_app(user: User, secret: str | None = SECRET) -> str:
    """An app of `user` (its first release queued), with `secret` as its webhook secret."""
    name = f"hook-{uuid.uuid4().hex[:10]}"
    response = user.post("/api/v1/jobs/deploy", json={"repo_url": REPO, "app": name})
    assert response.status_code == 202, response.get_json()
    if secret is not None:
        set_secret(user, name, secret)
    return name


def set_secret(user: User, name: str, secret: str | None = None) -> dict[str, Any]:
    response = user.post(
        f"/api/v1/apps/{name}/webhook-secret", json={} if secret is None else {"secret": secret}
    )
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def releases(user: User, name: str) -> list[dict[str, Any]]:
    response = user.get(f"/api/v1/apps/{name}/releases")
    assert response.status_code == 200, response.get_json()
    return response.get_json()["items"]


def deliveries(user: User, name: str, **query: Any) -> dict[str, Any]:
    response = user.get(f"/api/v1/apps/{name}/hook-deliveries", query_string=query)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def outcomes(user: User, name: str) -> list[tuple[str, str | None]]:
    return [(d["outcome"], d["reason"]) for d in deliveries(user, name)["items"]]


def patch(user: User, name: str, **changes: Any) -> None:
    response = user.client.patch(f"/api/v1/apps/{name}", json=changes, headers=user.headers)
    assert response.status_code == 200, response.get_json()


def test_a_push_to_the_branch_deploys_the_pushed_commit(user: User) -> None:
    name = new_app(user)
    sha = commit()
    response = send(user.client, name, push_body(after=sha), SECRET)
    assert response.status_code == 202, response.get_json()
    answer = response.get_json()
    assert answer["status"] == "deployed" and answer["release"] == 2
    assert answer["job"]["status"] == "queued" and answer["job"]["params"]["ref"] == sha
    assert answer["job"]["params"]["app"] == name
    deployment = user.get(f"/api/v1/deployments/{answer['deployment_id']}").get_json()
    assert deployment["ref"] == sha and deployment["job_id"] == answer["job"]["id"]
    assert deployment["repo_url"] == REPO
    # The commit is not remembered as the app's branch: the next push to main deploys too.
    second = send(user.client, name, push_body(), SECRET).get_json()
    assert second["status"] == "deployed" and second["release"] == 3
    assert [r["release"] for r in releases(user, name)] == [3, 2, 1]
    app = user.get(f"/api/v1/apps/{name}").get_json()
    assert app["branch"] is None and app["has_webhook_secret"] is True
    rows = deliveries(user, name)["items"]
    assert [(r["outcome"], r["commit"], r["ref"]) for r in rows][1] == (
        "deployed",
        sha,
        "refs/heads/main",
    )
    assert rows[1]["job_id"] == answer["job"]["id"]
    assert rows[1]["deployment_id"] == answer["deployment_id"]


def test_the_apps_own_branch_decides_not_the_default_branch(user: User) -> None:
    name = new_app(user)
    patch(user, name, branch="release")
    ignored = send(user.client, name, push_body(ref="refs/heads/main"), SECRET)
    assert ignored.status_code == 202
    assert ignored.get_json() == {
        "status": "ignored",
        "reason": "a push to main; the app deploys release",
    }
    sha = commit()
    deployed = send(user.client, name, push_body(ref="refs/heads/release", after=sha), SECRET)
    assert deployed.get_json()["status"] == "deployed"
    deployment = user.get(f"/api/v1/deployments/{deployed.get_json()['deployment_id']}")
    assert deployment.get_json()["ref"] == sha
    assert user.get(f"/api/v1/apps/{name}").get_json()["branch"] == "release"


def test_bad_or_missing_signatures_are_refused_and_deploy_nothing(user: User) -> None:
    name = new_app(user)
    body = push_body()
    refusals = [
        send(user.client, name, body, None),  # no signature
        send(user.client, name, body, "the-wrong-secret-entirely"),
        send(user.client, name, body, None, signature="sha1=" + "0" * 40),
        send(user.client, name, body, None, signature=sign(SECRET, body + b" ")),
        send(user.client, name, body, None, signature=sign(SECRET, body).upper()),
    ]
    for response in refusals:
        assert response.status_code == 401, response.get_json()
        assert response.get_json()["error"]["code"] == "invalid_signature"
    assert len(releases(user, name)) == 1
    rows = deliveries(user, name)["items"]
    assert [r["outcome"] for r in rows] == ["rejected"] * 5
    assert rows[-1]["reason"] == "X-Hub-Signature-256 is missing"
    assert rows[0]["reason"] == "X-Hub-Signature-256 is not sha256=<hex>"
    assert rows[1]["reason"] == "X-Hub-Signature-256 does not match the body"
    assert all(r["commit"] is None and r["job_id"] is None for r in rows)


def test_an_app_without_a_secret_refuses_every_push(user: User) -> None:
    name = new_app(user, secret=None)
    response = send(user.client, name, push_body(), "anything-at-all-here")
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "invalid_signature"
    assert "no webhook secret" in response.get_json()["error"]["message"]
    assert outcomes(user, name)[0][0] == "rejected"
    assert len(releases(user, name)) == 1


def test_unknown_app_is_404(client: FlaskClient) -> None:
    response = send(client, "no-such-app-here", push_body(), SECRET)
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (push_body(ref="refs/heads/feature"), "a push to feature; the app deploys main"),
        (push_body(ref="refs/tags/v1.0"), "refs/tags/v1.0 is not a branch"),
        (push_body(after=ZEROS, deleted=True), "the branch main was deleted"),
        (push_body(after=ZEROS), "the branch main was deleted"),
    ],
    ids=["other-branch", "tag", "deletion", "zero-after"],
)
def test_pushes_that_do_not_deploy_are_ignored_with_the_reason(
    user: User, body: bytes, reason: str
) -> None:
    name = new_app(user)
    response = send(user.client, name, body, SECRET)
    assert response.status_code == 202
    assert response.get_json() == {"status": "ignored", "reason": reason}
    assert len(releases(user, name)) == 1
    row = deliveries(user, name)["items"][0]
    assert (row["outcome"], row["reason"], row["ref"]) == (
        "ignored",
        reason,
        json.loads(body)["ref"],
    )


def test_auto_deploy_off_and_other_events_are_ignored(user: User) -> None:
    name = new_app(user)
    other = send(user.client, name, b'{"action": "opened"}', SECRET, event="issues")
    assert other.status_code == 202
    assert other.get_json() == {"status": "ignored", "reason": "the issues event does not deploy"}
    patch(user, name, auto_deploy=False)
    off = send(user.client, name, push_body(), SECRET)
    assert off.get_json() == {"status": "ignored", "reason": "auto_deploy is off for this app"}
    patch(user, name, auto_deploy=True)
    assert send(user.client, name, push_body(), SECRET).get_json()["status"] == "deployed"
    assert len(releases(user, name)) == 2


def test_ping_answers_pong(user: User) -> None:
    name = new_app(user)
    body = json.dumps({"zen": "Keep it logically awesome.", "hook_id": 1}).encode()
    response = send(user.client, name, body, SECRET, event="ping")
    assert response.status_code == 200
    assert response.get_json() == {"status": "pong", "reason": None}
    assert outcomes(user, name) == [("pong", None)]


def test_a_signed_body_that_is_not_a_push_is_refused(user: User) -> None:
    name = new_app(user)
    malformed = send(user.client, name, b'{"ref": "refs/heads/main",', SECRET)
    assert malformed.status_code == 400
    assert malformed.get_json()["error"]["code"] == "invalid_json"
    not_object = send(user.client, name, b"[1, 2]", SECRET)
    assert not_object.status_code == 400
    no_ref = send(user.client, name, b'{"after": "abc"}', SECRET)
    assert no_ref.status_code == 422
    assert no_ref.get_json()["error"]["code"] == "validation_error"
    assert [o for o, _ in outcomes(user, name)] == ["rejected"] * 3
    assert len(releases(user, name)) == 1


def test_a_repeated_delivery_id_deploys_once(user: User) -> None:
    name = new_app(user)
    body, delivery = push_body(), str(uuid.uuid4())
    first = send(user.client, name, body, SECRET, delivery=delivery)
    assert first.get_json()["status"] == "deployed"
    again = send(user.client, name, body, SECRET, delivery=delivery)
    assert again.status_code == 202
    assert again.get_json() == {"status": "ignored", "reason": "duplicate delivery"}
    assert len(releases(user, name)) == 2
    assert outcomes(user, name) == [("ignored", "duplicate delivery"), ("deployed", None)]


def test_the_unique_index_refuses_a_duplicate_the_lookup_missed(
    user: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two arrivals that both pass the lookup (a race) meet the partial unique index in the
    submission's transaction: the second is rolled back whole, release number included."""
    import api.github_hooks

    monkeypatch.setattr(api.github_hooks, "_deployed_before", lambda app, delivery: False)
    name = new_app(user)
    body, delivery = push_body(), str(uuid.uuid4())
    assert send(user.client, name, body, SECRET, delivery=delivery).get_json()["status"] == (
        "deployed"
    )
    again = send(user.client, name, body, SECRET, delivery=delivery)
    assert again.status_code == 202
    assert again.get_json() == {"status": "ignored", "reason": "duplicate delivery"}
    assert [r["release"] for r in releases(user, name)] == [2, 1]
    assert send(user.client, name, push_body(), SECRET).get_json()["release"] == 3


def test_concurrent_deliveries_with_one_id_deploy_once(app: Flask, user: User) -> None:
    name = new_app(user)
    body, delivery = push_body(), str(uuid.uuid4())
    racers = 4
    barrier = threading.Barrier(racers)
    answers: list[Any] = [None] * racers

    def deliver(index: int) -> None:
        client = app.test_client()
        barrier.wait()
        answers[index] = send(client, name, body, SECRET, delivery=delivery)

    threads = [threading.Thread(target=deliver, args=(i,)) for i in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    statuses = sorted((a.status_code, a.get_json()["status"]) for a in answers)
    assert statuses == [(202, "deployed")] + [(202, "ignored")] * (racers - 1), statuses
    assert all(
        a.get_json()["reason"] == "duplicate delivery"
        for a in answers
        if a.get_json()["status"] == "ignored"
    )
    assert len(releases(user, name)) == 2
    with session_scope() as session:
        owner = session.scalar(select(App.owner_id).where(App.name == name))
        jobs = session.scalar(select(func.count()).select_from(Job).where(Job.owner_id == owner))
    assert jobs == 2  # the app's first release and one from the hook
    assert sorted(o for o, _ in outcomes(user, name)) == ["deployed"] + ["ignored"] * (racers - 1)


def test_the_hook_is_rate_limited_per_app(make_app: Any) -> None:
    limited = make_app(hook_rate_per_minute=3)
    user = User(limited.test_client())
    name, other = new_app(user), new_app(user)
    accepted, refused = 0, None
    for _ in range(7):  # two minute windows at most: a refusal comes within 7
        response = send(user.client, name, b"{}", "not-the-secret-at-all")
        if response.status_code == 429:
            refused = response
            break
        assert response.status_code == 401
        accepted += 1
    assert refused is not None and accepted >= 3
    assert refused.get_json()["error"]["code"] == "rate_limited"
    assert 1 <= int(refused.headers["Retry-After"]) <= 61
    assert refused.get_json()["error"]["details"]["limit"] == 3
    # Refused requests leave no row: the rows stay within the limit.
    assert len(deliveries(user, name)["items"]) == accepted
    # Another app has its own budget.
    assert send(user.client, other, push_body(), SECRET).get_json()["status"] == "deployed"
    for job in user.get("/api/v1/jobs?limit=200").get_json()["items"]:
        if job["status"] == "queued":
            user.post(f"/api/v1/jobs/{job['id']}/cancel")


def test_deliveries_are_listed_newest_first_in_pages(user: User) -> None:
    name = new_app(user)
    send(user.client, name, b"{}", SECRET, event="ping")
    send(user.client, name, push_body(ref="refs/tags/v1"), SECRET)
    send(user.client, name, push_body(), None)
    send(user.client, name, push_body(), SECRET, delivery="delivery-4")
    first = deliveries(user, name, limit=2)
    assert [(d["outcome"], d["delivery_id"]) for d in first["items"]][0] == (
        "deployed",
        "delivery-4",
    )
    assert [d["outcome"] for d in first["items"]] == ["deployed", "rejected"]
    assert first["items"][0]["event"] == "push" and first["next_cursor"]
    rest = deliveries(user, name, limit=2, cursor=first["next_cursor"])
    assert [d["outcome"] for d in rest["items"]] == ["ignored", "pong"]
    assert rest["next_cursor"] is None


def test_rotating_the_secret_refuses_the_old_signature(user: User) -> None:
    name = new_app(user, secret=None)
    shown = set_secret(user, name)
    generated = shown["secret"]
    assert len(generated) == 64 and shown["events"] == ["push"]
    assert shown["content_type"] == "application/json"
    assert shown["webhook_url"].endswith(f"/api/v1/hooks/github/{name}")
    assert send(user.client, name, push_body(), generated).get_json()["status"] == "deployed"
    rotated = set_secret(user, name, "my-own-secret-of-length")
    assert rotated["secret"] == "my-own-secret-of-length"
    old = send(user.client, name, push_body(), generated)
    assert old.status_code == 401
    assert send(user.client, name, push_body(), rotated["secret"]).status_code == 202
    # The secret is shown once: never in the app's own answers.
    assert rotated["secret"] not in json.dumps(user.get(f"/api/v1/apps/{name}").get_json())
    short = user.post(f"/api/v1/apps/{name}/webhook-secret", json={"secret": "short"})
    assert short.status_code == 422


def test_another_users_app_is_404_for_secret_and_deliveries(app: Flask, user: User) -> None:
    name = new_app(user)
    stranger = User(app.test_client())
    secret = stranger.post(f"/api/v1/apps/{name}/webhook-secret", json={})
    assert secret.status_code == 404
    listed = stranger.get(f"/api/v1/apps/{name}/hook-deliveries")
    assert listed.status_code == 404
    assert secret.get_json()["error"]["code"] == listed.get_json()["error"]["code"] == "not_found"
    # Its secret is unchanged: the owner's signature still deploys.
    assert send(user.client, name, push_body(), SECRET).get_json()["status"] == "deployed"
    admin = User(app.test_client(), role="admin")
    assert admin.get(f"/api/v1/apps/{name}/hook-deliveries").status_code == 200
    missing = user.get("/api/v1/apps/no-such-app-here/hook-deliveries")
    assert missing.status_code == 404


# --- end to end: a real deploy fleet ----------------------------------------------------------

PORTS = (21300, 21309)


def test_a_signed_push_deploys_the_new_commit_end_to_end(
    app: Flask, tmp_path_factory: pytest.TempPathFactory, job_worker: Any
) -> None:
    github = FakeGitHub(tmp_path_factory.mktemp("github-hooks"))
    repo = f"hookapp{uuid.uuid4().hex[:6]}"
    github.publish(repo, fixture="webapp", extra={"VERSION": "1"})
    try:
        with deploy_fleet(
            github, tmp_path_factory.mktemp("hook-deploy"), "hook-fleet", PORTS, 2,
            DEPLOY_HEALTH_TIMEOUT="20", DEPLOY_REPLACE_GRACE="1",
        ):  # fmt: skip
            user = User(app.test_client())
            name = f"hook-e2e-{uuid.uuid4().hex[:6]}"
            first = user.post(
                "/api/v1/jobs/deploy",
                json={"repo_url": github.url(repo), "app": name, "health_path": "/health"},
            )
            assert first.status_code == 202, first.get_json()
            done = user.wait_status(
                first.get_json()["id"], "succeeded", "failed", "dead", timeout=180
            )
            assert done["status"] == "succeeded", done["error"]
            v1 = user.get(f"/api/v1/deployments/{done['params']['deployment_id']}").get_json()
            assert "version 1" in requests.get(f"http://127.0.0.1:{v1['port']}/", timeout=5).text
            secret = set_secret(user, name)["secret"]
            sha = github.publish(repo, fixture="webapp", extra={"VERSION": "2"})
            response = send(user.client, name, push_body(after=sha), secret)
            assert response.status_code == 202, response.get_json()
            answer = response.get_json()
            assert answer["status"] == "deployed" and answer["release"] == 2
            pushed = user.wait_status(
                answer["job"]["id"], "succeeded", "failed", "dead", timeout=180
            )
            assert pushed["status"] == "succeeded", pushed["error"]
            deployment = user.get(f"/api/v1/deployments/{answer['deployment_id']}").get_json()
            assert deployment["status"] == "healthy" and deployment["commit"] == sha
            # Straight to the release's port: the app's URL is the proxy's, not run here.
            served = requests.get(f"http://127.0.0.1:{deployment['port']}/", timeout=5)
            assert "hello from version 2" in served.text
            current = wait_for(
                lambda: (
                    (a := user.get(f"/api/v1/apps/{name}").get_json())["current_release"] == 2 and a
                ),
                timeout=30,
                message="release 2 to be current",
            )
            assert current["status"] == "running"
            for job in user.get("/api/v1/jobs?limit=50").get_json()["items"]:
                user.post(f"/api/v1/jobs/{job['id']}/cancel")
            for release in releases(user, name):
                user.post(f"/api/v1/deployments/{release['deployment_id']}/stop")
            wait_for(
                lambda: all(
                    user.get(f"/api/v1/deployments/{r['deployment_id']}").get_json()["status"]
                    in ("stopped", "failed")
                    for r in releases(user, name)
                ),
                timeout=60,
                message="the releases to stop",
            )
    finally:
        github.remove_images()
