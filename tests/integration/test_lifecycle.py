"""The whole lifecycle of each diagnostic processor, through the API and a real worker."""

from __future__ import annotations

import pytest

from tests.helpers import User, wait_for

pytestmark = pytest.mark.usefixtures("job_worker")


def types(events: list[dict]) -> list[str]:
    return [e["type"] for e in events]


def test_echo_succeeds_with_its_message_as_result(client) -> None:
    user = User(client)
    job = user.submit("debug.echo", {"message": "hello dockyard"})
    assert job["status"] == "queued"
    done = user.wait_status(job["id"], "succeeded")
    assert done["result"] == {"message": "hello dockyard"}
    assert done["attempts"] == 1
    assert done["queue"] == "diagnostics"  # the default fleet for diagnostics
    assert done["error"] is None
    assert done["started_at"] and done["finished_at"]
    assert types(user.events(job["id"])) == ["submitted", "started", "succeeded"]


def test_sleep_reports_every_progress_step(client) -> None:
    user = User(client)
    job = user.submit("debug.sleep", {"seconds": 0.3, "steps": 3})
    done = user.wait_status(job["id"], "succeeded")
    assert done["progress"] == {"current": 3, "total": 3, "message": "slept 0.30s"}
    progress = [e["data"] for e in user.events(job["id"]) if e["type"] == "progress"]
    assert [(p["current"], p["total"]) for p in progress] == [(1, 3), (2, 3), (3, 3)]
    assert done["result"] == {"slept_seconds": 0.3, "steps": 3}


def test_fail_retries_with_exponential_backoff_then_succeeds(client, settings) -> None:
    user = User(client)
    job = user.submit("debug.fail", {"fail_times": 2})
    done = user.wait_status(job["id"], "succeeded")
    assert done["attempts"] == 3
    assert done["result"] == {"succeeded_on_attempt": 3}
    events = user.events(job["id"])
    assert types(events) == [
        "submitted",
        "started",
        "attempt_failed",
        "retry_scheduled",
        "started",
        "attempt_failed",
        "retry_scheduled",
        "started",
        "succeeded",
    ]
    retries = [e for e in events if e["type"] == "retry_scheduled"]
    for attempt, event in enumerate(retries, start=1):
        ceiling = settings.retry_backoff_base * 2 ** (attempt - 1)
        assert ceiling * (1 - settings.retry_jitter) <= event["data"]["delay"] <= ceiling
        assert event["data"]["queue"] == "diagnostics"
    failed = [e for e in events if e["type"] == "attempt_failed"]
    assert failed[0]["data"]["error"]["code"] == "debug_transient_failure"
    # Each retry started no earlier than its scheduled delay after the failure.
    from datetime import datetime

    def at(event: dict) -> datetime:
        return datetime.fromisoformat(event["created_at"])

    starts = [e for e in events if e["type"] == "started"][1:]
    for retry, start in zip(retries, starts, strict=True):
        assert (at(start) - at(retry)).total_seconds() >= retry["data"]["delay"] - 0.05


def test_permanent_failure_fails_at_once_without_retry(client) -> None:
    user = User(client)
    job = user.submit("debug.fail", {"permanent": True})
    done = user.wait_status(job["id"], "failed")
    assert done["attempts"] == 1
    assert done["error"]["code"] == "debug_permanent_failure"
    assert types(user.events(job["id"])) == ["submitted", "started", "attempt_failed", "failed"]


def test_exhausted_retries_dead_letter_the_job(client) -> None:
    user = User(client)
    job = user.submit("debug.fail", {"fail_times": 5}, max_attempts=2)
    done = user.wait_status(job["id"], "dead")
    assert done["attempts"] == 2
    assert done["error"]["code"] == "debug_transient_failure"
    assert types(user.events(job["id"]))[-1] == "dead_lettered"
    admin = User(client, role="admin")
    letters = wait_for(
        lambda: [
            d
            for d in admin.get("/api/v1/admin/dead-letters?processor=debug.fail").get_json()[
                "items"
            ]
            if d["job_id"] == job["id"]
        ],
        message="the dead-letter worker to record the job",
    )
    assert letters[0]["attempts"] == 2
    assert letters[0]["error"]["code"] == "debug_transient_failure"
    assert letters[0]["task_name"] == "dockyard.diagnostic.run"
    assert "RetryableJobError" in letters[0]["traceback"]
    assert letters[0]["args"]["params"]["fail_times"] == 5


def test_cancel_running_sleep_stops_at_next_step(client) -> None:
    user = User(client)
    job = user.submit("debug.sleep", {"seconds": 30, "steps": 60})
    wait_for(lambda: user.job(job["id"])["progress"]["current"], message="first progress step")
    response = user.post(f"/api/v1/jobs/{job['id']}/cancel")
    assert response.status_code == 202
    assert response.get_json()["cancel_requested"] is True
    done = user.wait_status(job["id"], "cancelled", timeout=5)
    assert done["progress"]["current"] < 60
    assert done["result"] is None
    kinds = types(user.events(job["id"]))
    assert kinds[-1] == "cancelled"
    # The worker stopped at the first step after the request, not later.
    assert kinds[kinds.index("cancel_requested") :].count("progress") <= 1


def test_cancel_queued_job_never_starts(client, make_app) -> None:
    # An app whose broker is unreachable: the job is committed but not yet published,
    # exactly the window in which a cancel must win.
    offline = make_app(broker_url="redis://127.0.0.1:1/0").test_client()
    user = User(offline)
    job = user.submit("debug.echo", {"message": "never"})
    response = user.post(f"/api/v1/jobs/{job['id']}/cancel")
    assert response.status_code == 200
    assert response.get_json()["status"] == "cancelled"
    from shared.config import get_settings
    from workers.sweeps import publish_unpublished

    assert publish_unpublished(get_settings()) == 0  # cancelled jobs are not published
    assert types(user.events(job["id"])) == ["submitted", "cancelled"]
    again = user.post(f"/api/v1/jobs/{job['id']}/cancel")
    assert again.status_code == 409
    assert again.get_json()["error"]["code"] == "job_not_cancellable"


def test_retry_failed_job_gets_fresh_attempt_budget(client) -> None:
    user = User(client)
    job = user.submit("debug.fail", {"permanent": True})
    user.wait_status(job["id"], "failed")
    response = user.post(f"/api/v1/jobs/{job['id']}/retry")
    assert response.status_code == 202
    body = response.get_json()
    assert body["status"] == "queued" and body["attempts"] == 0 and body["error"] is None
    done = user.wait_status(job["id"], "failed")
    assert done["attempts"] == 1
    assert "requeued" in types(user.events(job["id"]))


def test_retry_refused_for_active_or_succeeded_job(client) -> None:
    user = User(client)
    job = user.submit("debug.echo", {"message": "x"})
    user.wait_status(job["id"], "succeeded")
    response = user.post(f"/api/v1/jobs/{job['id']}/retry")
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "job_not_retryable"


def test_retry_cancelled_job_runs_it(client) -> None:
    user = User(client)
    job = user.submit("debug.sleep", {"seconds": 20, "steps": 40})
    wait_for(lambda: user.job(job["id"])["status"] == "running", message="running")
    user.post(f"/api/v1/jobs/{job['id']}/cancel")
    user.wait_status(job["id"], "cancelled")
    assert user.post(f"/api/v1/jobs/{job['id']}/retry").status_code == 202
    user.wait_status(job["id"], "running")
    user.post(f"/api/v1/jobs/{job['id']}/cancel")
    user.wait_status(job["id"], "cancelled")
