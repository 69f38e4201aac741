"""Labels: given on every submit (validated), shown on the job, filtered by with
`GET /jobs?label=key:value` (repeatable, all must match) through the GIN index."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Executable, select, text
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ClauseElement

from shared.db import session_scope
from shared.models import Job
from tests.helpers import User

JOBS = "/api/v1/jobs"
PARKED = {"seconds": 60, "fleet": "deploy"}  # no worker consumes the deploy fleet here


class Explain(Executable, ClauseElement):
    """EXPLAIN of a statement, its parameters bound as the statement's own would be."""

    inherit_cache = False

    def __init__(self, statement: Any) -> None:
        self.statement = statement


@compiles(Explain)
def _explain(element: Explain, compiler: Any, **kw: Any) -> str:
    return "EXPLAIN " + compiler.process(element.statement, **kw)


def submit(user: User, labels: dict[str, str]) -> str:
    return user.submit("debug.sleep", PARKED, labels=labels)["id"]


def listed(user: User, *filters: str, expect: int = 200) -> Any:
    response = user.get(JOBS, query_string=[("label", f) for f in filters])
    assert response.status_code == expect, response.get_json()
    body = response.get_json()
    return {job["id"] for job in body["items"]} if expect == 200 else body["error"]


def test_jobs_are_filtered_by_every_label_given(client) -> None:
    user = User(client)
    web_prod = submit(user, {"team": "web", "env": "prod"})
    web_dev = submit(user, {"team": "web", "env": "dev"})
    data = submit(user, {"team": "data", "note": "a:b c"})
    plain = submit(user, {})
    batch = user.post(
        f"{JOBS}/batch",
        json={"jobs": [{"processor": "debug.sleep", "params": PARKED, "labels": {"team": "web"}}]},
    )
    assert batch.status_code == 202
    batched = batch.get_json()["items"][0]["id"]
    assert user.job(web_prod)["labels"] == {"team": "web", "env": "prod"}
    assert user.job(plain)["labels"] == {}

    assert listed(user, "team:web") == {web_prod, web_dev, batched}
    assert listed(user, "team:web", "env:prod") == {web_prod}
    assert listed(user, "note:a:b c") == {data}  # the value is everything after the first ':'
    assert listed(user, "team:ops") == set()
    assert listed(user, "team:web", "team:data") == set()  # one key, two values: none
    assert listed(user) == {web_prod, web_dev, data, plain, batched}
    # Another user's labels are not theirs to find.
    assert listed(User(client), "team:web") == set()
    for job_id in (web_prod, web_dev, data, plain, batched):
        user.post(f"{JOBS}/{job_id}/cancel")


def test_labels_are_validated(client) -> None:
    user = User(client)
    too_many = {f"k{index}": "v" for index in range(17)}
    for labels in (too_many, {"Bad Key": "v"}, {"": "v"}, {"k" * 64: "v"}, {"k": "v" * 257}):
        response = user.post(
            JOBS, json={"processor": "debug.sleep", "params": PARKED, "labels": labels}
        )
        assert response.status_code == 422, labels
        assert "labels" in response.get_json()["error"]["details"]["fields"]
    sixteen = {f"k{index}": "v" * 256 for index in range(16)}
    user.post(f"{JOBS}/{submit(user, sixteen)}/cancel")
    for bad in ("nocolon", "Bad:v", ":v", "k" * 64 + ":v", "k:" + "v" * 257):
        error = listed(user, bad, expect=422)
        assert error["code"] == "validation_error" and "label" in error["details"]["fields"]
    assert listed(user, *[f"k{index}:v" for index in range(17)], expect=422)


def test_the_label_filter_uses_the_gin_index(client) -> None:
    """100k jobs with varied labels (one INSERT ... SELECT), then the list query's own SQL
    under EXPLAIN: a Bitmap Index Scan on ix_jobs_labels."""
    from api.jobs import labels_match
    from api.pagination import paginate

    owner = uuid.UUID(User(client).profile["id"])
    with session_scope() as session:
        session.execute(
            text("""
            INSERT INTO jobs (id, owner_id, kind, processor, queue, params, status, attempts,
                max_attempts, cancel_requested, priority, labels, created_at, updated_at)
            SELECT gen_random_uuid(), :owner, 'diagnostic', 'debug.echo', 'diagnostics',
                '{}', 'succeeded', 1, 3, false, 'normal',
                jsonb_build_object('team', 'team-' || (i % 50), 'run', 'run-' || i,
                    'env', CASE WHEN i % 2 = 0 THEN 'prod' ELSE 'dev' END),
                now() - i * interval '1 second', now()
            FROM generate_series(1, 100000) AS i
            """),
            {"owner": owner},
        )
    try:
        with session_scope() as session:
            session.execute(text("ANALYZE jobs"))
        query = select(Job).where(Job.owner_id == owner, labels_match(["run:run-4242"]))
        query = paginate(query, Job.created_at, Job.id, None, 50)
        with session_scope() as session:
            plan = "\n".join(session.scalars(Explain(query)))  # type: ignore[call-overload]
            found = session.scalars(query).all()
        assert "Bitmap Index Scan on ix_jobs_labels" in plan, plan
        assert [job.labels["run"] for job in found] == ["run-4242"]
    finally:
        with session_scope() as session:
            session.execute(text("DELETE FROM jobs WHERE owner_id = :owner"), {"owner": owner})
            session.execute(text("ANALYZE jobs"))


def test_a_label_key_with_a_trailing_newline_is_refused(client) -> None:
    """Keys are matched whole: `$` alone would accept "team\\n", a label no filter can reach."""
    user = User(client)
    response = user.post(
        "/api/v1/jobs",
        json={"processor": "debug.echo", "params": {"message": "x"}, "labels": {"team\n": "x"}},
    )
    assert response.status_code == 422
    assert response.get_json()["error"]["code"] == "validation_error"
