"""The health check: GET the app's health path through its leased port until it answers 2xx."""

from __future__ import annotations

import time
from collections.abc import Callable

import requests


def wait_healthy(
    url: str,
    deadline_seconds: float,
    still_running: Callable[[], bool],
    between_tries: Callable[[], None] = lambda: None,
) -> tuple[bool, str]:
    """Retry with backoff (0.05 s growing by half to 1 s) until a 2xx, the deadline, or the
    container exits. Returns (healthy, what the last try saw). Most apps answer within a
    second of starting: early tries are frequent so a deploy reports healthy promptly."""
    deadline = time.monotonic() + deadline_seconds
    delay = 0.05
    last = "no answer yet"
    while True:
        try:
            response = requests.get(url, timeout=2, allow_redirects=False)
            if 200 <= response.status_code < 300:
                return True, f"HTTP {response.status_code}"
            last = f"HTTP {response.status_code}"
        except requests.RequestException as error:
            last = type(error).__name__
        if not still_running():
            return False, f"{last}; the container exited"
        if time.monotonic() + delay > deadline:
            return False, last
        between_tries()
        time.sleep(delay)
        delay = min(delay * 1.5, 1.0)
