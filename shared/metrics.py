"""Job metrics shared by every process: counters and histograms kept in Redis.

API processes, workers and hosts all write to the same Redis hashes (one pipelined round trip
per event), so the API's /metrics shows fleet-wide totals no matter which process or host
served the scrape; Prometheus-style in-process counters would each see only their own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from redis.client import Pipeline

from shared import redis as shared_redis

log = logging.getLogger(__name__)

COUNTERS = "dockyard:metrics:counters"
DURATION = "dockyard:metrics:job_duration"
QUEUE_WAIT = "dockyard:metrics:queue_wait"
WEBHOOK_LATENCY = "dockyard:metrics:webhook_latency"
BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
SEP = "|"


def _observe(pipe: Pipeline, key: str, labels: str, seconds: float) -> None:
    for bound in BUCKETS:
        if seconds <= bound:
            pipe.hincrby(key, f"{labels}{SEP}{bound}", 1)
    pipe.hincrby(key, f"{labels}{SEP}+Inf", 1)
    pipe.hincrbyfloat(key, f"{labels}{SEP}sum", seconds)


def _increment(url: str, *field: str, by: int = 1) -> None:
    _safely(url, lambda pipe: pipe.hincrby(COUNTERS, SEP.join(field), by))


def job_submitted(url: str, kind: str, processor: str, count: int = 1) -> None:
    """`count` jobs submitted (a batch counts each of its jobs)."""
    _increment(url, "submitted", kind, processor, by=count)


def job_requeued(url: str, kind: str, processor: str, reason: str) -> None:
    """A finished job was queued again (`user_retry`, `dead_letter_requeue`)."""
    _increment(url, "requeued", kind, processor, reason)


def worker_lost(url: str, kind: str, processor: str) -> None:
    """A running job's worker died: its heartbeat stopped (the sweep) or its pool process
    is gone (the redelivery)."""
    _increment(url, "worker_lost", kind, processor)


def job_ended(
    url: str,
    kind: str,
    processor: str,
    status: str,
    duration: float | None = None,
    queue_wait: float | None = None,
) -> None:
    """A job reached `status` (succeeded, failed, dead, cancelled); an attempt's duration
    and a first attempt's wait in the queue feed the histograms."""

    def write(pipe: Pipeline) -> None:
        pipe.hincrby(COUNTERS, SEP.join(("ended", kind, processor, status)), 1)
        labels = SEP.join((kind, processor))
        if duration is not None:
            _observe(pipe, DURATION, labels, max(0.0, duration))
        if queue_wait is not None:
            _observe(pipe, QUEUE_WAIT, labels, max(0.0, queue_wait))

    _safely(url, write)


def attempt_observed(
    url: str, kind: str, processor: str, duration: float | None, queue_wait: float | None
) -> None:
    def write(pipe: Pipeline) -> None:
        labels = SEP.join((kind, processor))
        if duration is not None:
            _observe(pipe, DURATION, labels, max(0.0, duration))
        if queue_wait is not None:
            _observe(pipe, QUEUE_WAIT, labels, max(0.0, queue_wait))

    _safely(url, write)


def webhook_delivery(url: str, event: str, outcome: str, latency: float | None = None) -> None:
    """A webhook delivery attempt ended: `delivered`, `retry` (due again after backoff) or
    `failed` (for good); a delivered one's latency (from the delivery's creation, the state
    change, to the endpoint's 2xx) feeds the histogram."""

    def write(pipe: Pipeline) -> None:
        pipe.hincrby(COUNTERS, SEP.join(("webhook_deliveries", event, outcome)), 1)
        if latency is not None:
            _observe(pipe, WEBHOOK_LATENCY, event, max(0.0, latency))

    _safely(url, write)


def _safely(url: str, write: Callable[[Pipeline], object]) -> None:
    """Metrics never fail the work they describe."""
    try:
        pipe = shared_redis.events(url).pipeline(transaction=False)
        write(pipe)
        pipe.execute()
    except Exception:
        log.debug("metrics write failed", exc_info=True)
