"""Flower shows the fleet's tasks live, under names that tell the kinds of work apart."""

from __future__ import annotations

import pytest
import requests

from tests.helpers import User, wait_for
from tests.integration.workers import celery_worker, flower

pytestmark = pytest.mark.usefixtures("job_worker")
URL = "http://127.0.0.1:5599"
AUTH = ("ops", "flower-test-pass")


def get(path: str, auth: tuple[str, str] | None = AUTH) -> requests.Response | None:
    try:
        return requests.get(f"{URL}{path}", auth=auth, timeout=5)
    except requests.ConnectionError:
        return None


def flower_hears_worker() -> bool:
    response = get("/metrics")
    online = 'flower_worker_online{worker="flowered@localhost"} 1.0'
    return response is not None and response.ok and online in response.text


def test_flower_requires_basic_auth_and_lists_named_tasks(client, tmp_path) -> None:
    user = User(client)
    with flower(tmp_path, 5599, ":".join(AUTH)), celery_worker(tmp_path, "flowered", "files"):
        wait_for(lambda: get("/healthcheck") is not None, timeout=60, message="flower up")
        anonymous = get("/api/tasks", auth=None)
        assert anonymous is not None and anonymous.status_code == 401
        # Flower answers HTTP before its event receiver is bound to the broker; events sent
        # before that are lost to it. A heartbeat it has counted proves it is listening.
        wait_for(flower_hears_worker, timeout=30, message="flower to receive worker heartbeats")
        job = user.submit("debug.echo", {"message": "watch me", "fleet": "files"})
        user.wait_status(job["id"], "succeeded", timeout=60)

        def finished_task() -> dict | None:
            response = get("/api/tasks")
            tasks = response.json().values() if response is not None and response.ok else []
            return next(
                (
                    t
                    for t in tasks
                    if job["id"] in str(t.get("kwargs")) and t.get("state") == "SUCCESS"
                ),
                None,
            )

        task = wait_for(finished_task, timeout=30, message="flower to show the finished task")
        assert task["name"] == "dockyard.diagnostic.run"
        assert task["worker"] == "flowered@localhost"
        # Job tasks keep no result row; Flower has the task's summary from its
        # task-succeeded event.
        assert "'outcome': 'succeeded'" in str(task.get("result"))
