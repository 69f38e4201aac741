"""Admin dead-letter endpoints: filters, pagination, requeue and delete, one or in bulk."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest

from tests.helpers import User, wait_for

pytestmark = pytest.mark.usefixtures("job_worker")


def make_dead(user: User, count: int, processor_params: dict | None = None) -> list[str]:
    """Jobs that die after one attempt each, recorded by the dead-letter worker."""
    ids = [
        user.submit("debug.fail", processor_params or {"fail_times": 99}, max_attempts=1)["id"]
        for _ in range(count)
    ]
    for job_id in ids:
        user.wait_status(job_id, "dead")
    return ids


def letters_for(admin: User, job_ids: list[str], query: str = "") -> list[dict]:
    items = admin.get(f"/api/v1/admin/dead-letters?limit=200{query}").get_json()["items"]
    return [d for d in items if d["job_id"] in job_ids]


def test_non_admins_get_403_and_anonymous_401(client) -> None:
    user = User(client)
    for method, path in (
        ("get", "/api/v1/admin/dead-letters"),
        ("post", "/api/v1/admin/dead-letters/requeue"),
        ("delete", "/api/v1/admin/dead-letters"),
        ("post", f"/api/v1/admin/dead-letters/{uuid.uuid4()}/requeue"),
        ("delete", f"/api/v1/admin/dead-letters/{uuid.uuid4()}"),
    ):
        response = getattr(user, method)(path)
        assert response.status_code == 403, path
        assert response.get_json()["error"]["code"] == "forbidden"
        assert getattr(client, method)(path).status_code == 401


def test_list_filters_by_processor_error_code_and_time(client) -> None:
    user, admin = User(client), User(client, role="admin")
    ids = make_dead(user, 2)
    letters = wait_for(
        lambda: len(letters_for(admin, ids)) == 2 and letters_for(admin, ids),
        message="two dead letters",
    )
    assert {d["processor"] for d in letters} == {"debug.fail"}
    assert letters_for(admin, ids, "&error_code=debug_transient_failure")
    assert letters_for(admin, ids, "&error_code=other") == []
    assert letters_for(admin, ids, "&processor=debug.echo") == []
    future = quote((datetime.now(UTC) + timedelta(hours=1)).isoformat())
    past = quote((datetime.now(UTC) - timedelta(hours=1)).isoformat())
    assert letters_for(admin, ids, f"&since={future}") == []
    assert len(letters_for(admin, ids, f"&since={past}&until={future}")) == 2
    bad = admin.get("/api/v1/admin/dead-letters?since=yesterday")
    assert bad.status_code == 422
    first = admin.get("/api/v1/admin/dead-letters?limit=1").get_json()
    assert len(first["items"]) == 1 and first["next_cursor"]


def test_requeue_one_runs_the_job_again_and_delete_one(client) -> None:
    user, admin = User(client), User(client, role="admin")
    ids = make_dead(user, 2)
    letters = wait_for(
        lambda: len(letters_for(admin, ids)) == 2 and letters_for(admin, ids),
        message="two dead letters",
    )
    requeue = admin.post(f"/api/v1/admin/dead-letters/{letters[0]['id']}/requeue")
    assert requeue.status_code == 202 and requeue.get_json()["affected"] == 1
    requeued_job = letters[0]["job_id"]
    wait_for(
        lambda: "requeued" in [e["type"] for e in user.events(requeued_job)],
        message="requeue event",
    )
    user.wait_status(requeued_job, "dead")  # fail_times=99: it dies again, a new letter
    twice = admin.post(f"/api/v1/admin/dead-letters/{letters[0]['id']}/requeue")
    assert twice.status_code == 409
    assert admin.delete(f"/api/v1/admin/dead-letters/{letters[1]['id']}").status_code == 204
    assert admin.delete(f"/api/v1/admin/dead-letters/{letters[1]['id']}").status_code == 404
    waiting = letters_for(admin, ids)
    assert letters[1]["id"] not in [d["id"] for d in waiting]
    assert letters_for(admin, ids, "&state=requeued")[0]["id"] == letters[0]["id"]


def test_bulk_requeue_and_delete_with_filters(client) -> None:
    user, admin = User(client), User(client, role="admin")
    # The bulk calls are filtered by time so other tests' dead letters are untouched.
    since = quote(datetime.now(UTC).isoformat())
    ids = make_dead(user, 3, {"permanent": False, "fail_times": 1})
    wait_for(lambda: len(letters_for(admin, ids)) == 3, message="three dead letters")
    response = admin.post(f"/api/v1/admin/dead-letters/requeue?since={since}&processor=debug.fail")
    assert response.status_code == 202
    assert response.get_json()["affected"] >= 3
    for job_id in ids:  # each ran again (and, still failing, was dead-lettered anew)
        wait_for(
            lambda j=job_id: [e["type"] for e in user.events(j)].count("dead_lettered") == 2,
            message="the requeued job to run and die again",
        )
    ids2 = make_dead(user, 2)
    wait_for(lambda: len(letters_for(admin, ids2)) == 2, message="two more dead letters")
    deleted = admin.delete(f"/api/v1/admin/dead-letters?since={since}&state=all")
    assert deleted.status_code == 200 and deleted.get_json()["affected"] >= 2
    assert letters_for(admin, ids2, "&state=all") == []
