"""The SDK (client/dockyard_client) against a live API over real HTTP."""

from __future__ import annotations

from dockyard_client import Client
from tests.integration.live_server import new_account


def test_submit_wait_events(live_server: str) -> None:
    email, password = new_account(live_server)
    with Client(live_server) as client:
        client.login(email, password)
        job = client.submit("debug.sleep", {"seconds": 0.3, "steps": 3})
        events = list(client.watch(job["id"]))
        finished = client.wait(job["id"], timeout=30)
    assert finished["status"] == "succeeded"
    assert [e["type"] for e in events][0] == "submitted"
    assert events[-1]["type"] == "succeeded"
