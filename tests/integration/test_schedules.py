"""Recurring schedules: the API (CRUD, validation, isolation, quota, trigger, runs) and the
tick (overlap, misfire, exactly one job per occurrence with two beat processes and a beat
restart)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import delete, select, update

from shared.clock import now
from shared.db import session_scope
from shared.models import Job, Schedule
from tests.helpers import User, api_error, wait_for
from tests.integration.workers import celery_beat, celery_worker

# Jobs parked on the deploy fleet: no worker consumes it in these tests, so they stay queued
# (an unfinished previous run for `overlap: skip`).
PARKED = {"message": "tick", "fleet": "deploy"}


@pytest.fixture(autouse=True)
def _no_schedules_left() -> Iterator[None]:
    """Each test's schedules end with it: a due one would otherwise make jobs in whatever
    test runs a beat next (and the tick tests count what one tick makes)."""
    yield
    with session_scope() as session:
        session.execute(delete(Schedule))


def create(user: User, expect: int = 201, **fields) -> dict:
    payload = {"name": f"s-{uuid.uuid4().hex[:8]}", "processor": "debug.echo"}
    payload["params"] = PARKED
    payload.update(fields)
    if "cron" not in payload and "every_seconds" not in payload:
        payload["every_seconds"] = 3600
    response = user.post("/api/v1/schedules", json=payload)
    assert response.status_code == expect, response.get_json()
    return response.get_json()


def patch(user: User, schedule_id: str, **fields):
    return user.client.patch(f"/api/v1/schedules/{schedule_id}", json=fields, headers=user.headers)


def at(value: str) -> datetime:
    return datetime.fromisoformat(value)


def set_next_run(schedule_id: str, moment: datetime) -> None:
    with session_scope() as session:
        session.execute(
            update(Schedule).where(Schedule.id == uuid.UUID(schedule_id)).values(next_run_at=moment)
        )


def schedule_row(schedule_id: str) -> Schedule:
    with session_scope() as session:
        row = session.get(Schedule, uuid.UUID(schedule_id))
        assert row is not None
        return row


def occurrences(schedule_id: str) -> list[datetime]:
    with session_scope() as session:
        return list(
            session.scalars(
                select(Job.scheduled_for)
                .where(Job.schedule_id == uuid.UUID(schedule_id))
                .order_by(Job.scheduled_for)
            )
        )


# --- the API -------------------------------------------------------------------------------


def test_create_read_list_change_delete(client) -> None:
    user = User(client)
    before = now()
    made = user.post(
        "/api/v1/schedules",
        json={
            "name": "nightly",
            "processor": "debug.echo",
            "params": {"message": "hi"},
            "cron": "30 2 * * *",
            "timezone": "Europe/Paris",
            "priority": "low",
            "labels": {"team": "data"},
        },
    )
    assert made.status_code == 201, made.get_json()
    body = made.get_json()
    assert made.headers["Location"] == f"/api/v1/schedules/{body['id']}"
    assert body["cron"] == "30 2 * * *" and body["every_seconds"] is None
    assert body["timezone"] == "Europe/Paris" and body["priority"] == "low"
    assert body["labels"] == {"team": "data"} and body["enabled"] is True
    assert body["overlap"] == "skip" and body["misfire"] == "run_once"
    assert body["params"]["message"] == "hi"  # with the processor's defaults
    assert body["last_run_at"] is None and body["last_job_id"] is None
    next_run = at(body["next_run_at"])
    assert before < next_run <= before + timedelta(days=1)
    assert next_run.astimezone(ZoneInfo("Europe/Paris")).hour == 2
    assert user.get(f"/api/v1/schedules/{body['id']}").get_json() == body

    every = create(user, every_seconds=60)
    assert at(every["next_run_at"]) - now() <= timedelta(seconds=60)
    listed = user.get("/api/v1/schedules").get_json()
    assert [s["id"] for s in listed["items"]] == [every["id"], body["id"]]
    page = user.get("/api/v1/schedules?limit=1").get_json()
    assert [s["id"] for s in page["items"]] == [every["id"]]
    rest = user.get(f"/api/v1/schedules?limit=1&cursor={page['next_cursor']}").get_json()
    assert [s["id"] for s in rest["items"]] == [body["id"]] and rest["next_cursor"] is None

    changed = patch(user, body["id"], every_seconds=120, name="every two minutes", enabled=False)
    assert changed.status_code == 200, changed.get_json()
    changed_body = changed.get_json()
    assert changed_body["cron"] is None and changed_body["every_seconds"] == 120
    assert changed_body["name"] == "every two minutes" and changed_body["enabled"] is False
    assert at(changed_body["next_run_at"]) <= now() + timedelta(seconds=120)

    assert user.delete(f"/api/v1/schedules/{body['id']}").status_code == 204
    assert user.get(f"/api/v1/schedules/{body['id']}").status_code == 404
    assert user.delete(f"/api/v1/schedules/{body['id']}").status_code == 404


@pytest.mark.parametrize(
    ("fields", "code", "field"),
    [
        ({"cron": "* * * *"}, "invalid_schedule", "cron"),
        ({"cron": "0 0 * * * *"}, "invalid_schedule", "cron"),
        ({"cron": "61 * * * *"}, "invalid_schedule", "cron"),
        ({"cron": "0 0 30 2 *"}, "invalid_schedule", "cron"),  # never occurs
        ({"cron": "0 * * * *", "every_seconds": 60}, "invalid_schedule", "cron"),
        ({"cron": None, "every_seconds": None}, "invalid_schedule", "cron"),
        ({"every_seconds": 9}, "invalid_schedule", "every_seconds"),
        ({"every_seconds": 10**12}, "invalid_schedule", "every_seconds"),
        ({"timezone": "Mars/Olympus"}, "invalid_schedule", "timezone"),
        ({"timezone": "../../etc/passwd"}, "invalid_schedule", "timezone"),
        ({"processor": "image.thumbnail"}, "invalid_schedule", "processor"),
        ({"processor": "deploy.repository"}, "validation_error", "params"),  # a deploy body
        ({"processor": "nope.nothing"}, "unknown_processor", "processor"),
        ({"params": {"message": "x", "bogus": 1}}, "invalid_params", "params"),
        ({"overlap": "sometimes"}, "validation_error", "overlap"),
        ({"misfire": "later"}, "validation_error", "misfire"),
        ({"max_attempts": 11}, "validation_error", "max_attempts"),
        ({"name": ""}, "validation_error", "name"),
        ({"surprise": 1}, "validation_error", "surprise"),
    ],
)
def test_create_validation(client, fields, code, field) -> None:
    user = User(client)
    payload = {"name": "x", "processor": "debug.echo", "params": {"message": "m"}}
    payload["every_seconds"] = 60
    payload.update(fields)
    if "cron" in fields and "every_seconds" not in fields:
        del payload["every_seconds"]
    response = user.post("/api/v1/schedules", json=payload)
    assert response.status_code == 422, response.get_json()
    body = api_error(response)
    assert body["code"] == code, body
    assert field in body["details"]["fields"], body


def test_names_are_unique_per_user(client) -> None:
    alice, bob = User(client), User(client)
    first = create(alice, name="daily")
    taken = alice.post(
        "/api/v1/schedules",
        json={"name": "daily", "processor": "debug.echo", "params": PARKED, "every_seconds": 60},
    )
    api_error(taken, 409, "schedule_name_taken")
    create(bob, name="daily")  # another user's names are theirs
    other = create(alice, name="hourly")
    renamed = patch(alice, other["id"], name="daily")
    api_error(renamed, 409, "schedule_name_taken")
    assert alice.get(f"/api/v1/schedules/{other['id']}").get_json()["name"] == "hourly"
    assert patch(alice, first["id"], cron="0 * * * *", every_seconds=None).status_code == 200
    bad = patch(alice, first["id"], timezone="Nowhere/Else")
    api_error(bad, 422, "invalid_schedule")
    both = patch(alice, first["id"], every_seconds=60)  # replaces the cron
    assert both.status_code == 200 and both.get_json()["cron"] is None


def test_another_users_schedule_answers_404(client) -> None:
    alice, bob = User(client), User(client)
    schedule = create(alice)
    base = f"/api/v1/schedules/{schedule['id']}"
    missing = f"/api/v1/schedules/{uuid.uuid4()}"
    for path in (base, missing):
        assert bob.get(path).status_code == 404
        assert api_error(bob.get(path))["message"] == "The requested schedule does not exist."
        assert bob.get(f"{path}/runs").status_code == 404
        assert bob.post(f"{path}/trigger").status_code == 404
        assert patch(bob, path.rsplit("/", 1)[1], name="mine").status_code == 404
        assert bob.delete(path).status_code == 404
    assert schedule["id"] not in [s["id"] for s in bob.get("/api/v1/schedules").get_json()["items"]]
    admin = User(client, role="admin")
    assert admin.get(base).status_code == 200
    assert schedule["id"] in [s["id"] for s in admin.get("/api/v1/schedules").get_json()["items"]]
    assert alice.get(base).status_code == 200


def test_schedules_per_user_are_capped(make_app) -> None:
    client = make_app(quota_schedules=2).test_client()
    alice, bob = User(client), User(client)
    first, _ = create(alice), create(alice)
    refused = alice.post(
        "/api/v1/schedules",
        json={"name": "third", "processor": "debug.echo", "params": PARKED, "every_seconds": 60},
    )
    assert refused.status_code == 429
    body = api_error(refused)
    assert body["code"] == "too_many_schedules"
    assert body["details"] == {"limit": 2, "schedules": 2}
    create(bob)
    assert alice.delete(f"/api/v1/schedules/{first['id']}").status_code == 204
    create(alice)


def test_trigger_runs_once_now_and_runs_lists_its_jobs(client) -> None:
    user = User(client)
    schedule = create(user, priority="high", labels={"k": "v"}, max_attempts=2, enabled=False)
    ran = []
    for _ in range(3):
        response = user.post(f"/api/v1/schedules/{schedule['id']}/trigger")
        assert response.status_code == 202, response.get_json()
        ran.append(response.get_json())
    job = ran[-1]
    assert job["schedule_id"] == schedule["id"] and job["status"] == "queued"
    assert job["priority"] == "high" and job["labels"] == {"k": "v"}
    assert job["max_attempts"] == 2 and job["queue"] == "deploy"
    assert job["params"]["message"] == "tick"
    after = user.get(f"/api/v1/schedules/{schedule['id']}").get_json()
    assert after["last_job_id"] == job["id"] and after["last_run_at"] is not None
    assert after["next_run_at"] == schedule["next_run_at"]  # a trigger moves no occurrence
    user.submit("debug.echo", PARKED)  # not the schedule's
    seen, cursor = [], None
    while True:
        query = "?limit=2" + (f"&cursor={cursor}" if cursor else "")
        body = user.get(f"/api/v1/schedules/{schedule['id']}/runs{query}").get_json()
        seen += [item["id"] for item in body["items"]]
        assert all(item["schedule_id"] == schedule["id"] for item in body["items"])
        assert set(body["items"][0]) == set(user.job(job["id"]))  # the shape of GET /jobs
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == [j["id"] for j in reversed(ran)]  # newest first


# --- the tick ------------------------------------------------------------------------------


def tick(settings) -> dict[str, int]:
    from workers.schedules import run_schedule_tick

    return run_schedule_tick(settings)


def test_overlap_skip_waits_for_the_previous_run(client, settings) -> None:
    user = User(client)
    skip = create(user, every_seconds=10)
    allow = create(user, every_seconds=10, overlap="allow")
    for schedule in (skip, allow):
        set_next_run(schedule["id"], now() - timedelta(seconds=1))
    tick(settings)
    first = schedule_row(skip["id"]).last_job_id
    assert first is not None and len(occurrences(allow["id"])) == 1
    for schedule in (skip, allow):
        set_next_run(schedule["id"], now() - timedelta(seconds=1))
    outcome = tick(settings)
    assert outcome.get("skipped_overlap") == 1, outcome
    assert len(occurrences(skip["id"])) == 1  # the first run is still queued
    assert len(occurrences(allow["id"])) == 2
    assert schedule_row(skip["id"]).next_run_at > now()  # the skipped occurrence is passed
    assert user.post(f"/api/v1/jobs/{first}/cancel").status_code == 200
    set_next_run(skip["id"], now() - timedelta(seconds=1))
    tick(settings)
    assert len(occurrences(skip["id"])) == 2  # the previous run ended


def test_misfire_run_once_makes_one_catch_up_job_and_skip_makes_none(client, settings) -> None:
    user = User(client)
    run_once = create(user, every_seconds=10, overlap="allow")
    skip = create(user, every_seconds=10, overlap="allow", misfire="skip")
    down_since = now() - timedelta(seconds=95)  # ten occurrences missed
    for schedule in (run_once, skip):
        set_next_run(schedule["id"], down_since)
    tick(settings)
    made = occurrences(run_once["id"])
    assert len(made) == 1
    assert made[0] == down_since + timedelta(seconds=90)  # the latest missed one
    assert schedule_row(run_once["id"]).next_run_at == made[0] + timedelta(seconds=10)
    assert occurrences(skip["id"]) == []
    assert schedule_row(skip["id"]).next_run_at > now()
    assert tick(settings) == {}  # nothing due any more


def test_an_on_time_occurrence_runs_under_misfire_skip_and_a_disabled_one_never(
    client, settings
) -> None:
    user = User(client)
    skip = create(user, every_seconds=10, misfire="skip")
    disabled = create(user, every_seconds=10, enabled=False)
    for schedule in (skip, disabled):
        set_next_run(schedule["id"], now() - timedelta(seconds=1))  # within the grace
    tick(settings)
    assert len(occurrences(skip["id"])) == 1
    assert occurrences(disabled["id"]) == []


def test_an_occurrence_that_already_has_its_job_makes_no_second_one(client, settings) -> None:
    user = User(client)
    schedule = create(user, every_seconds=10, overlap="allow")
    occurrence = now() - timedelta(seconds=2)
    set_next_run(schedule["id"], occurrence)
    assert tick(settings) == {"made": 1}
    set_next_run(schedule["id"], occurrence)  # moved back by hand: the same occurrence again
    assert tick(settings) == {"existed": 1}
    assert occurrences(schedule["id"]) == [occurrence]
    assert schedule_row(schedule["id"]).next_run_at > now()


def test_cron_schedules_run_in_their_timezone(client, settings) -> None:
    user = User(client)
    schedule = create(user, cron="*/5 * * * *", timezone="Asia/Kolkata", overlap="allow")
    next_run = at(schedule["next_run_at"])
    assert next_run.minute % 5 == 0 and next_run.second == 0
    set_next_run(schedule["id"], next_run - timedelta(minutes=15))
    tick(settings)
    made = occurrences(schedule["id"])
    assert len(made) == 1 and made[0].minute % 5 == 0 and made[0] <= now()
    assert schedule_row(schedule["id"]).next_run_at > now()


def test_exactly_one_job_per_occurrence_with_two_beats_and_a_restart(client, tmp_path) -> None:
    """Two beat processes send every tick twice, a maintenance worker runs them two at a
    time, and one beat is restarted in the middle: each occurrence still makes one job."""
    user = User(client)
    many = [create(user, every_seconds=10, overlap="allow") for _ in range(4)]
    catch_up = create(user, every_seconds=10, overlap="allow")
    start = now()
    for schedule in many:
        set_next_run(schedule["id"], start)
    set_next_run(catch_up["id"], start - timedelta(seconds=35))  # after downtime
    env = {"SCHEDULE_TICK_INTERVAL": "0.2", "SWEEP_INTERVAL": "5"}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with (
        celery_worker(tmp_path, "maintenance", "maintenance", concurrency=2, env=env),
        celery_beat(tmp_path / "a", env=env) as beat,
    ):
        with celery_beat(tmp_path / "b", env=env) as second:
            wait_for(
                lambda: all(len(occurrences(s["id"])) >= 1 for s in many),
                timeout=20,
                message="the first occurrences",
            )
            wait_for(lambda: "dockyard-schedule-tick" in second.log(), message="beat b's ticks")
        with celery_beat(tmp_path / "b", env=env):  # restarted while the other keeps going
            wait_for(
                lambda: all(len(occurrences(s["id"])) >= 3 for s in many),
                timeout=40,
                message="three occurrences each",
            )
        assert "dockyard-schedule-tick" in beat.log()
    for schedule in many:
        made = occurrences(schedule["id"])
        assert made == [start + timedelta(seconds=10 * i) for i in range(len(made))], made
    # After the downtime: one catch-up job, for the latest missed occurrence (at least
    # start - 5 s: the workers took a while to start), then one per occurrence.
    made = occurrences(catch_up["id"])
    missed = (made[0] - (start - timedelta(seconds=35))) / timedelta(seconds=10)
    assert missed == int(missed) and missed >= 3, made
    assert made == [made[0] + timedelta(seconds=10 * i) for i in range(len(made))], made
