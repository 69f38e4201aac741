"""Queue and task names: one Celery queue per worker fleet."""

DIAGNOSTICS = "diagnostics"
FILES = "files"
DEPLOY = "deploy"
DEAD_LETTER = "dead_letter"
MAINTENANCE = "maintenance"
#: Webhook deliveries: their own fleet, so a slow endpoint never delays jobs.
WEBHOOKS = "webhooks"

#: Fleets that run user jobs; diagnostics may be sent to any of them to probe it.
JOB_QUEUES = (DIAGNOSTICS, FILES, DEPLOY)
ALL_QUEUES = (DIAGNOSTICS, FILES, DEPLOY, DEAD_LETTER, MAINTENANCE, WEBHOOKS)

TASK_DIAGNOSTIC = "dockyard.diagnostic.run"
TASK_FILE = "dockyard.file.run"
TASK_DEPLOY = "dockyard.deploy.run"
TASK_DEAD_LETTER = "dockyard.dead_letter.record"
TASK_SWEEP = "dockyard.maintenance.sweep"
TASK_REAP_CONTAINERS = "dockyard.files.reap_containers"
TASK_FILE_SWEEP = "dockyard.maintenance.file_sweep"
TASK_DEPLOY_STOP = "dockyard.deploy.stop"
TASK_DEPLOY_CHECK = "dockyard.deploy.check"
TASK_RELEASE_DUE = "dockyard.maintenance.release_due"
TASK_SCHEDULE_TICK = "dockyard.maintenance.schedule_tick"
TASK_WEBHOOK_DELIVER = "dockyard.webhooks.deliver"
TASK_WEBHOOK_DISPATCH = "dockyard.webhooks.dispatch"
