"""Raw Celery, configured like the platform (Redis broker, PostgreSQL result backend, late
acks, prefetch 1): the floor any job platform on these parts stands on."""

from __future__ import annotations

from celery import Celery

from bench.env import BROKER_URL, DATABASE_URL

app = Celery("bench_raw", broker=BROKER_URL, backend="db+" + DATABASE_URL)
app.conf.update(
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_default_queue="bench_raw",
    worker_hijack_root_logger=False,
)


@app.task(name="bench.noop")
def noop(index: int) -> int:
    return index
