"""Prometheus metrics at GET /metrics (outside /api/v1; optionally behind METRICS_TOKEN).

Job counters and histograms come from Redis, where every API process and worker adds to
them (shared/metrics.py); queue depths from the broker; paused queues and deployments from
PostgreSQL; request latency from this process (or, under gunicorn with
PROMETHEUS_MULTIPROC_DIR set, from all of its worker processes).
"""

from __future__ import annotations

import hmac
import logging
import os
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Flask, Response, g, request
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from redis import Redis
from sqlalchemy import func, select

from api.errors import ApiError
from api.extensions import metrics_registry, settings
from shared import metrics
from shared import redis as shared_redis
from shared.config import Settings
from shared.db import session_scope
from shared.deploy.status import ACTIVE, in_order
from shared.dispatch import priorities, queue_states, queues
from shared.models import Deployment

log = logging.getLogger(__name__)
bp = Blueprint("metrics", __name__)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _split(field: bytes) -> list[str]:
    return field.decode().split(metrics.SEP)


def _histogram(
    redis: Redis,
    key: str,
    name: str,
    documentation: str,
    labels: tuple[str, ...] = ("kind", "processor"),
) -> Metric:
    family = HistogramMetricFamily(name, documentation, labels=list(labels))
    series: dict[tuple[str, ...], dict[str, float]] = defaultdict(dict)
    for field, value in redis.hgetall(key).items():
        *names, bound = _split(field)
        series[tuple(names)][bound] = float(value)
    for labels, values in sorted(series.items()):
        buckets = [(str(b), values.get(str(b), 0.0)) for b in metrics.BUCKETS]
        buckets.append(("+Inf", values.get("+Inf", 0.0)))
        family.add_metric(list(labels), buckets, values.get("sum", 0.0))
    return family


class PlatformCollector(Collector):
    """Reads the fleet-wide figures at scrape time."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.redis = shared_redis.scrape(settings.redis_url)
        self.broker = shared_redis.scrape(settings.broker_url)

    def describe(self) -> Iterator[Metric]:
        # Registering must not read Redis or the database (the app may start while they
        # are down); families are only known at scrape time.
        return iter(())

    def collect(self) -> Iterator[Metric]:
        for part in (self._jobs, self._queues, self._paused, self._deployments):
            try:
                yield from part()
            except Exception:  # one source down: the others are still reported
                log.warning("metrics source failed", exc_info=True, extra={"event": "metrics"})

    def _jobs(self) -> Iterator[Metric]:
        submitted = CounterMetricFamily(
            "dockyard_jobs_submitted", "Jobs accepted by the API.", labels=["kind", "processor"]
        )
        ended = CounterMetricFamily(
            "dockyard_jobs_ended",
            "Jobs that reached succeeded, failed, dead or cancelled.",
            labels=["kind", "processor", "status"],
        )
        requeued = CounterMetricFamily(
            "dockyard_jobs_requeued",
            "Finished jobs queued again, by a user's retry or an operator's dead-letter requeue.",
            labels=["kind", "processor", "reason"],
        )
        lost = CounterMetricFamily(
            "dockyard_jobs_worker_lost",
            "Running jobs whose worker stopped responding (found by the heartbeat sweep).",
            labels=["kind", "processor"],
        )
        webhooks = CounterMetricFamily(
            "dockyard_webhook_deliveries",
            "Webhook delivery attempts by event and outcome: delivered, retry (due again after "
            "backoff), failed (for good).",
            labels=["event", "outcome"],
        )
        # counter field "<name>|<label>|..." -> its family and where its labels end
        families = {
            "submitted": (submitted, 3),
            "ended": (ended, 4),
            "requeued": (requeued, 4),
            "worker_lost": (lost, 3),
            "webhook_deliveries": (webhooks, 3),
        }
        for field, value in sorted(self.redis.hgetall(metrics.COUNTERS).items()):
            parts = _split(field)
            if parts[0] in families:
                family, end = families[parts[0]]
                family.add_metric(parts[1:end], float(value))
        yield from (submitted, ended, requeued, lost, webhooks)
        yield _histogram(
            self.redis,
            metrics.DURATION,
            "dockyard_job_duration_seconds",
            "Time a worker spent on one attempt.",
        )
        yield _histogram(
            self.redis,
            metrics.QUEUE_WAIT,
            "dockyard_job_queue_wait_seconds",
            "Time from submit to a worker claiming the first attempt.",
        )
        yield _histogram(
            self.redis,
            metrics.WEBHOOK_LATENCY,
            "dockyard_webhook_delivery_latency_seconds",
            "Time from the state change that made a webhook delivery to the endpoint's 2xx.",
            labels=("event",),
        )

    def _queues(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily("dockyard_queue_depth", "Messages waiting.", labels=["queue"])
        for queue in queues.ALL_QUEUES:
            depth.add_metric([queue], float(priorities.depth(self.broker, queue)))
        yield depth

    def _paused(self) -> Iterator[Metric]:
        paused = GaugeMetricFamily(
            "dockyard_queue_paused",
            "1 while an operator has paused the job queue (its workers start no new work).",
            labels=["queue"],
        )
        with session_scope() as session:
            names = queue_states.paused_names(session)
        for queue in queue_states.PAUSABLE:
            paused.add_metric([queue], 1.0 if queue in names else 0.0)
        yield paused

    def _deployments(self) -> Iterator[Metric]:
        deployments = GaugeMetricFamily(
            "dockyard_deployments", "Deployments by status.", labels=["status"]
        )
        with session_scope() as session:
            counts = dict(
                session.execute(
                    select(Deployment.status, func.count()).group_by(Deployment.status)
                ).all()
            )
        for status in in_order(ACTIVE):
            deployments.add_metric([status.value], float(counts.get(status.value, 0)))
        yield deployments


def init_metrics(app: Flask, settings: Settings) -> None:
    registry = CollectorRegistry(auto_describe=True)
    latency = Histogram(
        "dockyard_http_request_duration_seconds",
        "API request latency.",
        ["method", "route", "status"],
        buckets=_LATENCY_BUCKETS,
        registry=registry,
    )
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        scrape = CollectorRegistry()
        multiprocess.MultiProcessCollector(scrape)
    else:
        scrape = registry
    scrape.register(PlatformCollector(settings))
    app.extensions["dockyard_metrics"] = scrape

    @app.after_request
    def observe(response: Response) -> Response:
        started = getattr(g, "started", None)
        if started is not None:
            route = request.url_rule.rule if request.url_rule is not None else "unmatched"
            latency.labels(request.method, route, str(response.status_code)).observe(
                time.perf_counter() - started
            )
        return response


@bp.get("/metrics")
def scrape() -> Response:
    token = settings().metrics_token
    if token:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise ApiError(401, "invalid_metrics_token", "A valid metrics token is required.")
    body: Any = generate_latest(metrics_registry())
    return Response(body, content_type=CONTENT_TYPE)
