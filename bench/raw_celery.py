"""Raw Celery on the platform's parts: the floor a job platform built on them stands on.

Same Redis broker, Celery's stock PostgreSQL database result backend in the same database,
late acks, prefetch 1, JSON, task events on (the bench starts every worker with `-E`, as
Flower needs): plain Celery as a team would run it for the same work, with none of the
platform's bookkeeping. Run by `celery -A bench.raw_celery worker -E -Q bench_raw`.
"""

from __future__ import annotations

from celery import Celery

from bench.env import BROKER_URL, RESULT_BACKEND

QUEUE = "bench_raw"

app = Celery("bench_raw", broker=BROKER_URL, backend=RESULT_BACKEND)
app.conf.update(
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_default_queue=QUEUE,
    broker_connection_retry_on_startup=True,
)


@app.task(name="bench.noop")
def noop(index: int) -> int:
    """Nothing to do: what is measured is the round trip through broker and backend."""
    return index


def create_result_tables() -> None:
    """Create Celery's result tables before any worker starts.

    The database backend creates them lazily in each process on first use; two pool processes
    doing so at once can race, and the bench's drain poll needs the table to exist.
    """
    session = app.backend.ResultSession()
    session.close()
