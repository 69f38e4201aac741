"""What operators watch: Prometheus metrics and the admin overview, from real work."""

from __future__ import annotations

import json
import logging
import uuid
from datetime import timedelta

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from shared.clock import now
from shared.db import session_scope
from shared.logging_setup import JsonFormatter
from shared.models import Job
from tests.helpers import User, wait_for
from workers.sweeps import recover_stale_jobs


def scrape(client, **kwargs) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics", **kwargs)
    assert response.status_code == 200, response.data[:300]
    assert response.content_type.startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_jobs_time_them_and_show_queues(app, job_worker) -> None:
    user = User(app.test_client())
    client = app.test_client()
    echo = {"kind": "diagnostic", "processor": "debug.echo"}
    before = scrape(client)
    job = user.submit("debug.echo", {"message": "metrics"})
    user.wait_status(job["id"], "succeeded")
    failed = user.submit("debug.fail", {"permanent": True})
    user.wait_status(failed["id"], "failed")
    fail = {"kind": "diagnostic", "processor": "debug.fail", "status": "failed"}

    def scraped_after_both_ended() -> dict | None:
        # A worker counts a job's end just after committing it: await the second count.
        scraped = scrape(client)  # not behind user auth
        ended = [
            value(samples, "dockyard_jobs_ended_total", **labels)
            for samples in (scraped, before)
            for labels in (fail, {**echo, "status": "succeeded"})
        ]
        return scraped if ended[0] > ended[2] and ended[1] > ended[3] else None

    after = wait_for(scraped_after_both_ended, message="the failed job to be counted")
    assert value(after, "dockyard_jobs_submitted_total", **echo) == (
        value(before, "dockyard_jobs_submitted_total", **echo) + 1
    )
    assert value(after, "dockyard_jobs_ended_total", status="succeeded", **echo) == (
        value(before, "dockyard_jobs_ended_total", status="succeeded", **echo) + 1
    )
    assert value(after, "dockyard_job_duration_seconds_count", **echo) >= 1
    assert value(after, "dockyard_job_queue_wait_seconds_count", **echo) >= 1
    assert value(after, "dockyard_job_duration_seconds_bucket", le="+Inf", **echo) == value(
        after, "dockyard_job_duration_seconds_count", **echo
    )
    assert ("dockyard_queue_depth", (("queue", "files"),)) in after
    assert ("dockyard_deployments", (("status", "healthy"),)) in after
    latency = [
        key
        for key in after
        if key[0] == "dockyard_http_request_duration_seconds_count"
        and ("route", "/api/v1/jobs") in key[1]
        and ("status", "202") in key[1]
    ]
    assert latency


def test_metrics_count_requeues_and_jobs_of_lost_workers(app, settings, job_worker) -> None:
    """A user's retry, an operator's dead-letter requeue and the heartbeat sweep's ends (a
    worker lost: one job cancelled as asked, one out of attempts and dead) are all counted."""
    user, admin = User(app.test_client()), User(app.test_client(), role="admin")
    client = app.test_client()
    fail = {"kind": "diagnostic", "processor": "debug.fail"}
    echo = {"kind": "diagnostic", "processor": "debug.echo"}
    before = scrape(client)

    failed = user.submit("debug.fail", {"permanent": True})
    user.wait_status(failed["id"], "failed")
    assert user.post(f"/api/v1/jobs/{failed['id']}/retry").status_code == 202
    dead = user.submit("debug.fail", {"fail_times": 99}, max_attempts=1)
    user.wait_status(dead["id"], "dead")
    letter = wait_for(
        lambda: next(
            (
                item
                for item in admin.get("/api/v1/admin/dead-letters?limit=200").get_json()["items"]
                if item["job_id"] == dead["id"]
            ),
            None,
        ),
        message="the dead letter",
    )
    assert admin.post(f"/api/v1/admin/dead-letters/{letter['id']}/requeue").status_code == 202

    # Two jobs "running" on a worker that died an hour ago (queued on `files`, which no
    # worker here consumes, so only the sweep touches them).
    stranded = [user.submit("debug.echo", {"message": "lost", "fleet": "files"}) for _ in "ab"]
    with session_scope() as session:
        for job, cancel in zip(stranded, (True, False), strict=True):
            session.execute(
                update(Job)
                .where(Job.id == uuid.UUID(job["id"]))
                .values(
                    status="running",
                    attempts=job["max_attempts"],
                    heartbeat_at=now() - timedelta(hours=1),
                    worker_host="gone",
                    cancel_requested=cancel,
                )
            )
    recover_stale_jobs(settings)
    assert user.job(stranded[0]["id"])["status"] == "cancelled"
    assert user.job(stranded[1]["id"])["status"] == "dead"

    def grew(samples: dict, name: str, **labels: str) -> float:
        return value(samples, name, **labels) - value(before, name, **labels)

    after = wait_for(
        lambda: (
            (s := scrape(client))
            and grew(s, "dockyard_jobs_ended_total", status="dead", **echo) >= 1
            and s
        ),
        message="the sweep's ends to be counted",
    )
    assert grew(after, "dockyard_jobs_requeued_total", reason="user_retry", **fail) == 1
    assert grew(after, "dockyard_jobs_requeued_total", reason="dead_letter_requeue", **fail) == 1
    assert grew(after, "dockyard_jobs_worker_lost_total", **echo) == 2
    assert grew(after, "dockyard_jobs_ended_total", status="cancelled", **echo) == 1
    assert grew(after, "dockyard_jobs_ended_total", status="dead", **echo) == 1
    # Let the requeued jobs end before the worker stops (each fails again).
    user.wait_status(failed["id"], "failed")
    user.wait_status(dead["id"], "dead")


def test_metrics_token_when_configured(make_app) -> None:
    client = make_app(metrics_token="scrape-me").test_client()
    refused = client.get("/metrics")
    assert refused.status_code == 401
    assert refused.get_json()["error"]["code"] == "invalid_metrics_token"
    assert scrape(client, headers={"Authorization": "Bearer scrape-me"})


def test_admin_stats(app, job_worker) -> None:
    user = User(app.test_client())
    admin = User(app.test_client(), role="admin")
    job = user.submit("debug.echo", {"message": "stats"})
    user.wait_status(job["id"], "succeeded")
    assert user.get("/api/v1/admin/stats").status_code == 403
    # Workers are found by a broadcast ping with a 1 s deadline: a busy worker can miss one.
    stats = wait_for(
        lambda: (
            s if "pytest-worker@localhost" in (s := admin.get("/api/v1/admin/stats").get_json())[
                "workers_online"] else None
        ),
        message="the worker to answer the ping",
    )  # fmt: skip
    assert stats["jobs_by_status"]["succeeded"] >= 1
    assert set(stats["jobs_by_status"]) >= {"queued", "running", "dead", "cancelled"}
    assert set(stats["queue_depths"]) >= {"diagnostics", "files", "deploy", "dead_letter"}
    assert "pytest-worker@localhost" in stats["workers_online"]
    assert stats["workers_online_count"] == len(stats["workers_online"])
    assert stats["dead_letters_waiting"] >= 0


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.formatter_ = JsonFormatter("api")
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.formatter_.format(record))


def test_logs_are_json_lines_with_context_and_no_secrets(app, job_worker) -> None:
    capture = _Capture()
    root = logging.getLogger()
    root.addHandler(capture)
    try:
        client = app.test_client()
        password = f"pw-{uuid.uuid4().hex}"
        email = f"secret-{uuid.uuid4().hex[:8]}@example.com"
        client.post("/api/v1/auth/register", json={"email": email, "password": password})
        tokens = client.post("/api/v1/auth/login", json={"email": email, "password": password})
        tokens = tokens.get_json()
        client.post("/api/v1/auth/login", json={"email": email, "password": password + "x"})
        headers = {"Authorization": f"Bearer {tokens['access_token']}", "X-Request-ID": "trace-1"}
        job = client.post(
            "/api/v1/jobs", json={"processor": "debug.echo", "params": {"message": "hi"}},
            headers=headers,
        ).get_json()  # fmt: skip
        wait_for(
            lambda: (
                client.get(f"/api/v1/jobs/{job['id']}", headers=headers).get_json()["status"]
                == "succeeded"
            )
        )
        # The worker logs the attempt's end just after the commit seen above.
        wait_for(
            lambda: any('"workers.runner"' in line and job["id"] in line for line in capture.lines),
            message="the worker's log line",
        )
        client.post(
            "/api/v1/auth/logout", json={"refresh_token": tokens["refresh_token"]}, headers=headers
        )
    finally:
        root.removeHandler(capture)
    records = [json.loads(line) for line in capture.lines]
    assert records
    for record in records:
        assert {"timestamp", "level", "service", "event"} <= set(record)
    text = "\n".join(capture.lines)
    for secret in (password, tokens["access_token"], tokens["refresh_token"]):
        assert secret not in text
    traced = [r for r in records if r.get("request_id") == "trace-1"]
    loggers = {r["logger"] for r in traced if r.get("job_id") == job["id"]}
    assert {"shared.jobs.submission", "workers.runner"} <= loggers  # one id, API to worker
