"""Sending webhook deliveries: one attempt per task, and the dispatcher that finds due ones.

A delivery row (`webhook_deliveries`, written with the state change that causes it) is the
outbox; messages only say "look at this row now". So a message may be lost, duplicated or
late without harm:

- `deliver` takes the row with FOR UPDATE SKIP LOCKED only while it is `pending`, due
  (`next_attempt_at <= now`) and not leased (`locked_until` passed), or when the message
  carries the very lease the dispatcher wrote (`lease`); it then leases the row for
  WEBHOOK_TIMEOUT + LEASE_MARGIN and commits *before* sending, so a second message for the
  row is skipped while this attempt runs, and a worker killed mid-send (SIGKILL) leaves a
  lease that simply expires: the dispatcher sends the row again. The outcome is written only
  while the row still holds this attempt's lease. At least once: an endpoint that answered
  2xx just before the worker died gets the delivery again (same `Dockyard-Delivery` id).
- After its own delivery, a `deliver` task takes the oldest due deliveries the same way for
  DRAIN_BUDGET: under a burst the fleet sends at the pace of sending, and the messages of
  rows already sent are skipped when they arrive.
- `dispatch_due` (beat, every WEBHOOK_DISPATCH_INTERVAL) sends the task for due pending rows
  whose lease passed: retries after backoff, messages lost with the broker, SIGKILLed
  workers, deliveries put back by the per-endpoint cap.

The body is rendered once (shared/webhooks/payloads.py) at the first attempt and kept, so
every retry sends and signs the same bytes. The request goes to an address that
shared/webhooks/urls.py checked just before (no DNS lookup between check and connect), with
no redirects followed. A disabled webhook's pending deliveries end `failed` when taken, with
the reason as their last attempt's error (not sent: a user re-enables and redelivers).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta

import urllib3
from celery import Celery
from sqlalchemy import or_, select, text
from sqlalchemy.orm import Session

from shared import metrics
from shared import redis as shared_redis
from shared.clock import now
from shared.config import Settings
from shared.db import session_scope
from shared.dispatch import queues
from shared.models import Webhook, WebhookAttempt, WebhookDelivery
from shared.security.crypto import cipher
from shared.webhooks.payloads import render
from shared.webhooks.signing import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    signature_header,
)
from shared.webhooks.status import DeliveryStatus
from shared.webhooks.urls import CheckedUrl, UrlRefused, check_url

log = logging.getLogger(__name__)

#: A lease outlasts the request's timeout by this much (URL check, rendering, the commits);
#: after it a killed worker's delivery is sent again.
LEASE_MARGIN = timedelta(seconds=10)
#: After its own delivery a task goes on with the oldest due ones for this long (seconds).
#: A burst of deliveries is then sent at the pace of the sending itself, not of one Celery
#: message each (their own messages, arriving later, find them done: skipped at once).
DRAIN_BUDGET = 0.5
#: How long a dispatched message may wait in the queue before the row is dispatched again.
DISPATCH_LEASE = timedelta(seconds=60)
#: A row never taken nor leased (its own message, sent after the recording commit, is on its
#: way) is given this long before the dispatcher sends another: under a backlog its message
#: waits in the queue, and a second one would only double the fleet's work. Only a message
#: lost with the broker waits this long.
DISPATCH_GRACE = timedelta(seconds=30)
#: Rows dispatched per tick, in one short transaction. Bounded so that a backlog (an
#: endpoint down for hours, then thousands due at once) never makes one long transaction
#: and one burst of messages: the next tick, a second later, sends the next batch.
DISPATCH_BATCH = 500
#: An endpoint at its concurrency cap: the delivery is due again this much later (not an
#: attempt: nothing was sent).
CAP_RETRY = timedelta(seconds=1)
RESPONSE_BODY_LIMIT = 1024
#: Keep-alive pools kept per worker process (one connection each).
POOL_CACHE = 32
_POOLS: OrderedDict[tuple[str, str, int, str], urllib3.HTTPConnectionPool] = OrderedDict()
_POOLS_LOCK = threading.Lock()
#: A webhook's last_success_at is moved at most this often: every delivery to a busy
#: endpoint writing the same webhook row would serialise the fleet on its lock.
SUCCESS_RESOLUTION = timedelta(seconds=1)
_INFLIGHT = "dockyard:webhooks:inflight:"
# Take one slot of an endpoint: drop expired leases, then add ours if under the cap.
_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""


@dataclass(frozen=True)
class Attempt:
    """What one try got: a status code (and the start of the body), or an error."""

    response_code: int | None
    duration_ms: int
    error: str | None = None
    response_body: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.response_code is not None and 200 <= self.response_code < 300


@dataclass(frozen=True)
class Taken:
    """A leased delivery and what sending it needs, read in the taking transaction."""

    delivery_id: uuid.UUID
    lease: datetime
    event_type: str
    url: str
    body: bytes
    secrets: tuple[str, ...]
    attempt: int


def backoff(settings: Settings, attempt: int) -> timedelta:
    """Wait after failed attempt number `attempt` (1-based): WEBHOOK_BACKOFF's entry, the
    last one repeated, times WEBHOOK_BACKOFF_SCALE."""
    steps = settings.webhook_backoff
    return timedelta(seconds=steps[min(attempt, len(steps)) - 1] * settings.webhook_backoff_scale)


def _secrets(webhook: Webhook, settings: Settings, moment: datetime) -> tuple[str, ...]:
    """The current secret, and the previous one during a rotation's overlap."""
    box = cipher(settings)
    secrets = [box.decrypt(webhook.secret.encode()).decode()]
    expires = webhook.previous_secret_expires_at
    if webhook.previous_secret and expires is not None and expires > moment:
        secrets.append(box.decrypt(webhook.previous_secret.encode()).decode())
    return tuple(secrets)


def _endpoint_key(url: str) -> str:
    return _INFLIGHT + hashlib.sha256(url.encode()).hexdigest()[:32]


def _acquire_slot(settings: Settings, url: str, delivery_id: uuid.UUID, lease: datetime) -> bool:
    """One of WEBHOOK_ENDPOINT_CONCURRENCY slots of the endpoint across the fleet, leased
    until `lease` (a killed worker's slot frees itself). Redis unreachable: allowed (the cap
    protects other users' latency; it must not stop deliveries)."""
    try:
        taken = shared_redis.events(settings.redis_url).eval(
            _ACQUIRE,
            1,
            _endpoint_key(url),
            str(time.time()),
            str(lease.timestamp()),
            str(settings.webhook_endpoint_concurrency),
            str(delivery_id),
            str(int(settings.webhook_timeout + LEASE_MARGIN.total_seconds()) + 60),
        )
        return bool(taken)
    except Exception:
        log.warning("endpoint cap unavailable", exc_info=True, extra={"event": "webhook_cap"})
        return True


def _release_slot(settings: Settings, url: str, delivery_id: uuid.UUID) -> None:
    try:
        shared_redis.events(settings.redis_url).zrem(_endpoint_key(url), str(delivery_id))
    except Exception:
        log.debug("endpoint slot release failed", exc_info=True)


@dataclass(frozen=True)
class Recorded:
    """An attempt's outcome (delivered, retry, failed), for the metrics after the commit."""

    outcome: str
    event_type: str
    latency: float | None  # created_at to delivered

    def count(self, settings: Settings) -> None:
        metrics.webhook_delivery(settings.redis_url, self.event_type, self.outcome, self.latency)


def _take(
    session: Session, delivery_id: uuid.UUID | None, lease: datetime | None, settings: Settings
) -> Taken | Recorded | str:
    """Lease the delivery (None: the oldest due one no one holds) for this attempt (committed
    with the session), or its outcome when it ends untried (a disabled webhook), or why not
    (skipped, capped)."""
    moment = now()
    free = or_(WebhookDelivery.locked_until.is_(None), WebhookDelivery.locked_until <= moment)
    if lease is not None:
        free = or_(free, WebhookDelivery.locked_until == lease)
    query = (
        select(WebhookDelivery, Webhook)
        .join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
        .where(
            WebhookDelivery.status == DeliveryStatus.PENDING,
            WebhookDelivery.next_attempt_at <= moment,
            free,
        )
    )
    if delivery_id is None:
        query = query.order_by(WebhookDelivery.next_attempt_at).limit(1)
    else:
        query = query.where(WebhookDelivery.id == delivery_id)
    row = session.execute(query.with_for_update(of=WebhookDelivery, skip_locked=True)).first()
    if row is None:
        return "skipped"  # done, not due, or another worker holds it
    delivery, webhook = row.tuple()
    if not webhook.enabled:
        refused = Attempt(None, 0, "not sent: the webhook is disabled")
        return _record_failure(session, delivery, webhook, refused, settings)
    mine = moment + timedelta(seconds=settings.webhook_timeout) + LEASE_MARGIN
    if not _acquire_slot(settings, webhook.url, delivery.id, mine):
        delivery.next_attempt_at = moment + CAP_RETRY
        # Any lease ended (the dispatcher's too), but not NULL: a row once taken is not
        # "fresh", so the dispatcher sends it again at CAP_RETRY, not after DISPATCH_GRACE.
        delivery.locked_until = moment
        return "capped"
    if delivery.body is None:
        delivery.body = render(session, delivery).decode()
    delivery.locked_until = mine
    return Taken(
        delivery_id=delivery.id,
        lease=mine,
        event_type=delivery.event_type,
        url=webhook.url,
        body=delivery.body.encode(),
        secrets=_secrets(webhook, settings, moment),
        attempt=delivery.attempts + 1,
    )


def _new_pool(scheme: str, address: str, port: int, host: str) -> urllib3.HTTPConnectionPool:
    if scheme == "https":
        # Connect to the checked address; TLS still verifies the certificate for the host.
        return urllib3.HTTPSConnectionPool(
            address, port, server_hostname=host, assert_hostname=host, maxsize=1, retries=False
        )
    return urllib3.HTTPConnectionPool(address, port, maxsize=1, retries=False)


def _pool(checked: CheckedUrl, address: str) -> urllib3.HTTPConnectionPool:
    """This process's keep-alive pool to `address` for the URL's host (the least recently
    used one closed past POOL_CACHE): a busy endpoint is not paid a TCP and TLS handshake per
    delivery, and the connection still goes to the address checked for this delivery."""
    key = (checked.scheme, address, checked.port, checked.host)
    with _POOLS_LOCK:
        pool = _POOLS.pop(key, None) or _new_pool(*key)
        _POOLS[key] = pool
        evicted = [_POOLS.popitem(last=False)[1] for _ in range(len(_POOLS) - POOL_CACHE)]
    for old in evicted:
        old.close()
    return pool


def _host_header(checked: CheckedUrl) -> str:
    default = 443 if checked.scheme == "https" else 80
    host = f"[{checked.host}]" if ":" in checked.host else checked.host
    return host if checked.port == default else f"{host}:{checked.port}"


def send(taken: Taken, settings: Settings) -> Attempt:
    """POST the body to the checked address (each in turn while the connection is refused)."""
    started = time.monotonic()

    def took() -> int:
        return int((time.monotonic() - started) * 1000)

    try:
        checked = check_url(taken.url, settings)
    except UrlRefused as refused:
        return Attempt(None, took(), f"URL refused: {refused.reason}"[:500])
    headers = {
        "Host": _host_header(checked),
        "Content-Type": "application/json",
        "User-Agent": "Dockyard-Webhooks",
        EVENT_HEADER: taken.event_type,
        DELIVERY_HEADER: str(taken.delivery_id),
        SIGNATURE_HEADER: signature_header(taken.secrets, taken.body),
    }
    error = "no address to connect to"
    for address in checked.addresses:
        try:
            response = _pool(checked, address).urlopen(
                "POST",
                checked.target,
                body=taken.body,
                headers=headers,
                retries=False,
                redirect=False,
                timeout=urllib3.Timeout(total=settings.webhook_timeout),
                preload_content=False,
                assert_same_host=False,
            )
            # A pool's urlopen answers its response_class, HTTPResponse (typed as the base).
            assert isinstance(response, urllib3.HTTPResponse)
            try:
                head = response.read(RESPONSE_BODY_LIMIT)
                if not response.isclosed():
                    response.close()  # a longer body: not read, its connection not reused
            finally:
                response.release_conn()
            return Attempt(response.status, took(), None, head.decode("utf-8", "replace"))
        except urllib3.exceptions.NewConnectionError as failure:
            error = f"connection failed: {failure}"
        except urllib3.exceptions.TimeoutError:
            return Attempt(None, took(), f"timed out after {settings.webhook_timeout:g} s")
        except urllib3.exceptions.HTTPError as failure:
            return Attempt(None, took(), f"{type(failure).__name__}: {failure}"[:500])
    return Attempt(None, took(), error[:500])


def _record_failure(
    session: Session,
    delivery: WebhookDelivery,
    webhook: Webhook,
    attempt: Attempt,
    settings: Settings,
) -> Recorded:
    """Write a failed attempt and what follows: due again after backoff, or failed (after
    WEBHOOK_MAX_ATTEMPTS, or at once when the webhook is disabled); the webhook's
    failing_since, and its disabling once every delivery failed for WEBHOOK_DISABLE_AFTER.
    A 2xx is recorded by `_DELIVERED`."""
    moment = now()
    delivery.attempts += 1
    session.add(
        WebhookAttempt(
            delivery_id=delivery.id,
            attempt=delivery.attempts,
            response_code=attempt.response_code,
            duration_ms=attempt.duration_ms,
            error=attempt.error,
            response_body=attempt.response_body,
        )
    )
    delivery.locked_until = None
    if not webhook.enabled or delivery.attempts >= settings.webhook_max_attempts:
        delivery.status = DeliveryStatus.FAILED.value
        delivery.next_attempt_at = None
        outcome = DeliveryStatus.FAILED.value
    else:
        delivery.next_attempt_at = moment + backoff(settings, delivery.attempts)
        outcome = "retry"
    if webhook.enabled:
        webhook.failing_since = webhook.failing_since or moment
        if moment - webhook.failing_since >= timedelta(seconds=settings.webhook_disable_after):
            webhook.enabled = False
            webhook.disabled_reason = (
                "disabled automatically: every delivery has failed since "
                f"{webhook.failing_since.isoformat(timespec='seconds')}"
            )
            log.warning(
                "webhook disabled after failing deliveries",
                extra={"event": "webhook_disabled", "webhook_id": str(webhook.id)},
            )
    return Recorded(outcome, delivery.event_type, None)


#: A 2xx: the delivery delivered, its attempt, and the webhook's last_success_at (moved at
#: most once per SUCCESS_RESOLUTION) with failing_since cleared, in one statement: most
#: attempts succeed, and a busy fleet pays one round trip for them instead of four.
_DELIVERED = text(
    """
WITH d AS (
    UPDATE webhook_deliveries
    SET status = :delivered, attempts = attempts + 1, delivered_at = :moment,
        next_attempt_at = NULL, locked_until = NULL, updated_at = :moment
    WHERE id = :id AND status = :pending AND locked_until = :lease
    RETURNING id, attempts, webhook_id, event_type, created_at
), attempt AS (
    INSERT INTO webhook_attempts
        (delivery_id, attempt, response_code, duration_ms, response_body, created_at)
    SELECT id, attempts, :code, :duration_ms, :response_body, :moment FROM d
), hook AS (
    UPDATE webhooks w SET last_success_at = :moment, failing_since = NULL, updated_at = :moment
    FROM d
    WHERE w.id = d.webhook_id AND (w.failing_since IS NOT NULL OR w.last_success_at IS NULL
        OR w.last_success_at < CAST(:moment AS timestamptz) - :resolution)
)
SELECT event_type, created_at FROM d
"""
)


def _finish_delivered(taken: Taken, attempt: Attempt) -> Recorded | None:
    """A 2xx recorded in one statement; None if the row no longer holds this lease."""
    moment = now()
    with session_scope() as session:
        row = session.execute(
            _DELIVERED,
            {
                "id": taken.delivery_id,
                "lease": taken.lease,
                "moment": moment,
                "code": attempt.response_code,
                "duration_ms": attempt.duration_ms,
                "response_body": attempt.response_body,
                "resolution": SUCCESS_RESOLUTION,
                "delivered": DeliveryStatus.DELIVERED.value,
                "pending": DeliveryStatus.PENDING.value,
            },
        ).first()
    if row is None:
        return None
    return Recorded(
        DeliveryStatus.DELIVERED.value, row.event_type, (moment - row.created_at).total_seconds()
    )


def _finish(taken: Taken, attempt: Attempt, settings: Settings) -> str:
    """Record the attempt if the row still holds this attempt's lease."""
    if attempt.succeeded:
        delivered = _finish_delivered(taken, attempt)
        if delivered is None:
            return _lease_lost(taken)
        delivered.count(settings)
        return delivered.outcome
    with session_scope() as session:
        row = session.execute(
            select(WebhookDelivery, Webhook)
            .join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
            .where(
                WebhookDelivery.id == taken.delivery_id,
                WebhookDelivery.status == DeliveryStatus.PENDING,
                WebhookDelivery.locked_until == taken.lease,
            )
            .with_for_update(of=WebhookDelivery)
        ).first()
        if row is None:
            return _lease_lost(taken)
        delivery, webhook = row.tuple()
        recorded = _record_failure(session, delivery, webhook, attempt, settings)
    recorded.count(settings)
    return recorded.outcome


def _lease_lost(taken: Taken) -> str:
    log.warning(
        "webhook delivery lease lost before its outcome was recorded",
        extra={"event": "webhook_lease_lost", "delivery_id": str(taken.delivery_id)},
    )
    return "lease_lost"


def deliver(delivery_id: uuid.UUID, settings: Settings, lease: datetime | None = None) -> str:
    """One attempt of the delivery, then more due ones for up to DRAIN_BUDGET; returns what
    happened to the first (delivered, retry, failed, skipped, capped, disabled, lease_lost)."""
    outcome = attempt_one(delivery_id, settings, lease)
    deadline = time.monotonic() + DRAIN_BUDGET
    while time.monotonic() < deadline:
        if attempt_one(None, settings) in ("skipped", "capped"):
            break
    return outcome


def attempt_one(
    delivery_id: uuid.UUID | None, settings: Settings, lease: datetime | None = None
) -> str:
    """One attempt of the delivery (None: of the oldest due one no one holds)."""
    with session_scope() as session:
        taken = _take(session, delivery_id, lease, settings)
    if isinstance(taken, Recorded):
        taken.count(settings)
        return taken.outcome
    if isinstance(taken, str):
        return taken
    try:
        attempt = send(taken, settings)
    finally:
        _release_slot(settings, taken.url, taken.delivery_id)
    outcome = _finish(taken, attempt, settings)
    log.info(
        "webhook delivery attempt %d: %s",
        taken.attempt,
        outcome,
        extra={
            "event": "webhook_attempt",
            "delivery_id": str(taken.delivery_id),
            "response_code": attempt.response_code,
            "duration_ms": attempt.duration_ms,
            "outcome": outcome,
        },
    )
    return outcome


def dispatch_due(celery: Celery, limit: int = DISPATCH_BATCH) -> int:
    """Send the deliver task for up to `limit` due pending deliveries whose lease passed
    (a row never tried nor leased: older than DISPATCH_GRACE), oldest first
    (ix_webhook_deliveries_due), leasing each for DISPATCH_LEASE so the next ticks do not
    send it again while its message waits; the message carries that lease, so it (and only
    it) may take the row. Returns how many were sent."""
    moment = now()
    with session_scope() as session:
        rows = session.scalars(
            select(WebhookDelivery)
            .where(
                WebhookDelivery.status == DeliveryStatus.PENDING,
                WebhookDelivery.next_attempt_at <= moment,
                or_(
                    WebhookDelivery.locked_until.is_(None),
                    WebhookDelivery.locked_until <= moment,
                ),
                or_(
                    WebhookDelivery.attempts > 0,
                    WebhookDelivery.locked_until.is_not(None),
                    WebhookDelivery.created_at <= moment - DISPATCH_GRACE,
                ),
            )
            .order_by(WebhookDelivery.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()
        lease = moment + DISPATCH_LEASE
        for row in rows:
            row.locked_until = lease
        ids = [row.id for row in rows]
    for delivery_id in ids:
        celery.send_task(
            queues.TASK_WEBHOOK_DELIVER,
            args=[str(delivery_id)],
            kwargs={"lease": lease.isoformat()},
            queue=queues.WEBHOOKS,
        )
    if ids:
        log.info(
            "dispatched %d due webhook deliveries",
            len(ids),
            extra={"event": "webhooks_dispatched", "count": len(ids)},
        )
    return len(ids)
