"""OpenAPI links: where an operation's answer supplies the ids other operations take, so
clients (and a stateful fuzzer) follow real resources instead of guessing ids.

The sets several views declare (`@doc(links=...)`) are named here; a link is its name ->
(the endpoint it leads to, that endpoint's parameters as runtime expressions).
"""

from __future__ import annotations

from api.operation import Links

#: The id of the resource the answer is.
ID = "$response.body#/id"
#: The id of the first item of a list's page.
FIRST_ITEM = "$response.body#/items/0/id"
#: The deployment a deploy job is for.
DEPLOYMENT_ID = "$response.body#/params/deployment_id"

#: An answer that is a job.
JOB: Links = {
    "GetJob": ("v1.jobs.get_job", {"job_id": ID}),
    "GetJobEvents": ("v1.jobs.job_events", {"job_id": ID}),
    "GetJobLogs": ("v1.file_jobs.job_logs", {"job_id": ID}),
    "DownloadResult": ("v1.file_jobs.download", {"job_id": ID}),
    "CancelJob": ("v1.jobs.cancel", {"job_id": ID}),
    "RetryJob": ("v1.jobs.retry", {"job_id": ID}),
}
#: An answer whose first item is a job.
FIRST_JOB: Links = {"GetFirstJob": ("v1.jobs.get_job", {"job_id": FIRST_ITEM})}
#: An answer that is a schedule.
SCHEDULE: Links = {
    name: (f"v1.schedules.{endpoint}", {"schedule_id": ID})
    for name, endpoint in (
        ("GetSchedule", "get_schedule"),
        ("PatchSchedule", "patch_schedule"),
        ("TriggerSchedule", "trigger"),
        ("GetScheduleRuns", "schedule_runs"),
        ("DeleteSchedule", "delete_schedule"),
    )
}
#: An answer that is a webhook.
WEBHOOK: Links = {
    name: (f"v1.webhooks.{endpoint}", {"webhook_id": ID})
    for name, endpoint in (
        ("GetWebhook", "get_webhook"),
        ("PatchWebhook", "patch_webhook"),
        ("RotateWebhookSecret", "rotate_secret"),
        ("PingWebhook", "ping"),
        ("GetWebhookDeliveries", "list_deliveries"),
        ("DeleteWebhook", "delete_webhook"),
    )
}
#: An answer that is a webhook delivery.
DELIVERY: Links = {
    "Redeliver": (
        "v1.webhooks.redeliver",
        {"webhook_id": "$response.body#/webhook_id", "delivery_id": ID},
    ),
}
