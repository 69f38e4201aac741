"""Celery configuration for the API (which only publishes) and every worker fleet.

Values come from shared.config so that the environment is read and validated once.
The reliability settings below together give at-least-once delivery: a job the API
answered 202 for is run even if the worker running it is killed.
"""

from kombu import Queue

from shared.config import get_settings
from shared.dispatch import priorities, queues

_settings = get_settings()

broker_url = _settings.broker_url
result_backend = _settings.result_backend
# Celery's database backend keeps task results in the platform's PostgreSQL; the job
# table stays the source of truth for users, this is the operator's trail per delivery.
# Not extended: the job tables already keep arguments, worker and timings per attempt.
result_extended = False
# Results are the operator's trail per delivery, re-derivable from the job table: they need
# not wait for the WAL flush (the job row, written by the API, is the durable record).
database_engine_options = {
    "pool_pre_ping": True,
    "hide_parameters": True,  # no bound values (task arguments) in errors or logs
    "connect_args": {"options": "-c synchronous_commit=off"},
}
result_expires = 7 * 24 * 3600

# Late acknowledgement: a message is acked only after the task returns, so a worker that
# dies mid-job leaves the message unacked and the broker delivers it again.
task_acks_late = True
# When a pool process is killed (SIGKILL, OOM) the main process rejects the message back
# to the queue at once instead of acking it as failed: redelivery without waiting.
task_reject_on_worker_lost = True
# Prefetch one: a worker reserves only the message it is about to run, so a busy or dead
# worker never sits on a backlog that idle workers could take.
worker_prefetch_multiplier = 1
# With the Redis broker an unacked message returns only after the visibility timeout.
# It must exceed the longest job and the longest retry countdown (held unacked as an
# ETA message), or a healthy job would be delivered twice. Recovery from a dead *whole*
# worker does not wait for it: the heartbeat sweep re-dispatches stale jobs in seconds.
# A message lost with the broker's data (Redis restarted without persistence, a promoted
# replica) is not waited for either: every job message carries a mark written in the same
# Redis transaction, and the maintenance sweep republishes a published job whose mark is gone
# (shared/dispatch/broker_marks.py, workers/broker_recovery.py; README, Reliability).
broker_transport_options = {
    "visibility_timeout": _settings.broker_visibility_timeout,
    # Priorities (shared/dispatch/priorities.py): one Redis list per step for each queue, and
    # a worker's BRPOP names its lists in step order, so a waiting `high` job (step 0) is
    # always taken before `normal` (3) before `low` (6). With prefetch 1 and late acks a busy
    # worker holds no reserved backlog, so the order holds whenever a slot frees. Chosen over
    # one queue per priority because workers keep consuming `-Q files`: compose, k8s and
    # Flower see the same queue names, and kombu's own restore of unacked messages keeps their
    # priority. Every job message carries its priority (shared/dispatch/publish.py);
    # maintenance messages carry none and wait at step 0, ahead of job work, which suits
    # sweeps that unblock jobs.
    "priority_steps": list(priorities.STEPS),
}
result_backend_transport_options = {"visibility_timeout": _settings.broker_visibility_timeout}
# Fail fast when the broker is unreachable at publish time: the job row is already
# committed and the outbox sweep publishes it later, so the API must not hang.
task_publish_retry = True
task_publish_retry_policy = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.5,
}
broker_connection_retry_on_startup = True
broker_connection_timeout = 2

task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
timezone = "UTC"
enable_utc = True

# Every fleet has its own queue; nothing is ever routed to Celery's default queue. Job
# tasks are published with an explicit queue (the job's fleet), retries included.
task_default_queue = queues.MAINTENANCE
task_queues = tuple(Queue(name) for name in queues.ALL_QUEUES)
task_routes = {
    queues.TASK_DEAD_LETTER: {"queue": queues.DEAD_LETTER},
    queues.TASK_SWEEP: {"queue": queues.MAINTENANCE},
    queues.TASK_FILE_SWEEP: {"queue": queues.MAINTENANCE},
    queues.TASK_SCHEDULE_TICK: {"queue": queues.MAINTENANCE},
    queues.TASK_RELEASE_DUE: {"queue": queues.MAINTENANCE},
    # Webhook deliveries and their dispatcher run on the webhooks fleet: a slow endpoint
    # holds its workers, never the job or maintenance fleets (workers/webhooks.py).
    queues.TASK_WEBHOOK_DELIVER: {"queue": queues.WEBHOOKS},
    queues.TASK_WEBHOOK_DISPATCH: {"queue": queues.WEBHOOKS},
    # The reaper needs the Docker engine, which only the files fleet is given.
    queues.TASK_REAP_CONTAINERS: {"queue": queues.FILES},
    # Deployments live on the deploy fleet's Docker engine: only its workers may touch them.
    queues.TASK_DEPLOY_STOP: {"queue": queues.DEPLOY},
    queues.TASK_DEPLOY_CHECK: {"queue": queues.DEPLOY},
}
task_create_missing_queues = False

# Task events let Flower show tasks live; sent events carry the task name, which tells
# diagnostics, file jobs and deploy jobs apart.
worker_send_task_events = True
# No "task-sent" event from the API: it would double the broker round trips of every submit,
# and Flower learns of each task from the worker's "task-received" anyway.
task_send_sent_event = False
# The job row records when an attempt starts; a STARTED write to the result backend per task
# would only add a database round trip (Flower still sees task-started events).
task_track_started = False
worker_hijack_root_logger = False

imports = ("workers.tasks",)

beat_schedule = {
    "dockyard-sweep": {
        "task": queues.TASK_SWEEP,
        "schedule": _settings.sweep_interval,
        "options": {"queue": queues.MAINTENANCE, "expires": _settings.sweep_interval * 3},
    },
    "dockyard-file-sweep": {
        "task": queues.TASK_FILE_SWEEP,
        "schedule": _settings.file_sweep_interval,
        "options": {"queue": queues.MAINTENANCE, "expires": _settings.file_sweep_interval * 3},
    },
    "dockyard-check-deployments": {
        "task": queues.TASK_DEPLOY_CHECK,
        "schedule": _settings.deploy_check_interval,
        "options": {"queue": queues.DEPLOY, "expires": _settings.deploy_check_interval * 3},
    },
    "dockyard-reap-containers": {
        "task": queues.TASK_REAP_CONTAINERS,
        "schedule": _settings.reaper_interval,
        "options": {"queue": queues.FILES, "expires": _settings.reaper_interval * 3},
    },
    # Delayed jobs (workers/release.py): each tick also releases the jobs that come due before
    # the next one, so lateness stays well under a second. A tick that waited past the next
    # one is dropped (expires): the next tick does the same work.
    "dockyard-release-due": {
        "task": queues.TASK_RELEASE_DUE,
        "schedule": _settings.release_interval,
        "options": {"queue": queues.MAINTENANCE, "expires": _settings.release_interval * 2},
    },
    # Recurring schedules (workers/schedules.py): each tick makes the jobs of due occurrences;
    # two beats (or a restarted one) make each occurrence once. A tick that waited past the
    # next one is dropped (expires): the next tick does the same work.
    "dockyard-schedule-tick": {
        "task": queues.TASK_SCHEDULE_TICK,
        "schedule": _settings.schedule_tick_interval,
        "options": {"queue": queues.MAINTENANCE, "expires": _settings.schedule_tick_interval * 2},
    },
    # Webhook retries and recovery (workers/webhooks.py): due pending deliveries are sent
    # again, a bounded batch per tick; a tick that waited past the next one is dropped.
    "dockyard-webhook-dispatch": {
        "task": queues.TASK_WEBHOOK_DISPATCH,
        "schedule": _settings.webhook_dispatch_interval,
        "options": {"queue": queues.WEBHOOKS, "expires": _settings.webhook_dispatch_interval * 2},
    },
}
