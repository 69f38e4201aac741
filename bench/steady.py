"""An open-loop client: GETs sent at a fixed rate whatever the server does, each outcome kept.

Open loop because a closed loop (send, wait, send) slows down exactly when the server
stalls, and so sends fewer requests into the very moment that is being measured. Here a
scheduler hands one request to a pool every 1/rate seconds; a request that cannot start on
time waits in the pool and its delay counts in its latency (measured from when it was due).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import requests

POOL = 32  # enough threads that a few slow answers do not delay the next sends
TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Outcome:
    due: float  # seconds after the client started, when the request was scheduled
    latency_s: float  # from `due` to the answer (or the error)
    status: int | None  # None: a connection error or a timeout
    body: str  # the answer's first line, or the error


class SteadyClient:
    """GETs `url` with `headers` `rate` times a second until the block ends. Alternate requests
    go on a fresh connection and on the thread's kept-alive one, as browsers and API clients
    mix them. A 200 is a success; everything else (another status, a connection error, a
    timeout) is an error, with no retry: requests' default adapter retries nothing once the
    request was sent, so a request racing a proxy config swap onto an idle connection counts."""

    def __init__(self, url: str, headers: dict[str, str], rate: float) -> None:
        self.url, self.headers, self.period = url, headers, 1.0 / rate
        self.outcomes: list[Outcome] = []
        self.started = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(POOL, thread_name_prefix="steady")
        self._scheduler = threading.Thread(target=self._schedule, daemon=True)

    def __enter__(self) -> SteadyClient:
        self.started = time.monotonic()
        self._scheduler.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._scheduler.join(timeout=10)
        self._pool.shutdown(wait=True)

    def now(self) -> float:
        """Seconds since the client started, on the clock outcomes use."""
        return time.monotonic() - self.started

    def _schedule(self) -> None:
        count = 0
        while not self._stop.is_set():
            due = self.started + count * self.period
            self._pool.submit(self._send, due - self.started, count % 2 == 0)
            count += 1
            self._stop.wait(max(self.started + count * self.period - time.monotonic(), 0))

    def _send(self, due: float, fresh: bool) -> None:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        try:
            if fresh:
                response = requests.get(self.url, headers=self.headers, timeout=TIMEOUT_S)
            else:
                response = session.get(self.url, headers=self.headers, timeout=TIMEOUT_S)
            status, body = response.status_code, response.text.split(";")[0].strip()
        except requests.RequestException as error:
            status, body = None, repr(error)[:200]
        outcome = Outcome(due, self.now() - due, status, body)
        with self._lock:
            self.outcomes.append(outcome)

    def snapshot(self) -> list[Outcome]:
        """The outcomes so far, in the order the requests were due."""
        with self._lock:
            return sorted(self.outcomes, key=lambda o: o.due)
