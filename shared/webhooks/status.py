"""The statuses of a webhook delivery, as stored in `webhook_deliveries.status` and shown by
the API (README, Webhooks). A pure table, like the job and deployment statuses: the model,
the outbox's INSERT, the sender's statements and the API read the values from here.

A delivery is recorded `pending` with the state change that causes it; the sender ends it
`delivered` (a 2xx) or `failed` (WEBHOOK_MAX_ATTEMPTS used up, or its webhook disabled). A
user's redeliver makes any delivery `pending` again, with a fresh attempt budget.
"""

from __future__ import annotations

import enum


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"
