"""Operator endpoints: dead letters (inspect, requeue, delete; one by one or in bulk), the
platform's stats, and job queues (list, pause, resume: shared/dispatch/queue_states.py)."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from flask import Blueprint, Response, jsonify, request
from flask_jwt_extended import jwt_required
from redis import Redis
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from api import links
from api.errors import not_found
from api.extensions import publisher, settings
from api.identity import current_user_id, require_admin
from api.operation import doc
from api.pagination import page, paginate
from api.schemas.admin import (
    AffectedSchema,
    DeadLetterListSchema,
    DeadLetterQuerySchema,
    QueueListSchema,
    QueueSchema,
    StatsSchema,
)
from api.session import db_session
from shared.clock import now
from shared.dispatch import fast_publish, priorities, queue_states, queue_workers, queues
from shared.errors import JobConflict
from shared.jobs import transitions
from shared.jobs.status import JobStatus
from shared.jobs.transitions import Effects
from shared.models import DeadLetter, Deployment, Job
from shared.processors import get_processor

log = logging.getLogger(__name__)
bp = Blueprint("admin", __name__, url_prefix="/admin")

_BULK_LIMIT = 1000
DEAD_LETTER_LIST_SCHEMA = DeadLetterListSchema()


@bp.before_request
@jwt_required()
def _admins_only() -> None:
    require_admin()


def _filtered(args: dict[str, Any]) -> Select[Any]:
    query = select(DeadLetter)
    if args.get("processor"):
        query = query.where(DeadLetter.processor == args["processor"])
    if args.get("error_code"):
        query = query.where(DeadLetter.error_code == args["error_code"])
    if args.get("since"):
        query = query.where(DeadLetter.failed_at >= args["since"])
    if args.get("until"):
        query = query.where(DeadLetter.failed_at < args["until"])
    if args["state"] == "waiting":
        query = query.where(DeadLetter.requeued_at.is_(None))
    elif args["state"] == "requeued":
        query = query.where(DeadLetter.requeued_at.is_not(None))
    return query


def _requeue(letter: DeadLetter) -> Effects:
    """Queue the dead letter's job again; raises JobConflict if the job moved on already."""
    session = db_session()
    job = session.get(Job, letter.job_id, with_for_update=True)
    processor = get_processor(letter.processor)
    if job is None or processor is None:
        raise JobConflict("job_gone", "The dead letter's job or processor no longer exists.")
    if letter.requeued_at is not None:
        raise JobConflict("already_requeued", "This dead letter was already requeued.")
    effects = transitions.requeue(session, job, processor.task_name, reason="dead_letter_requeue")
    letter.requeued_at = now()
    return effects


@bp.get("/dead-letters")
@doc(
    summary="Dead letters, newest first",
    tags=["admin"],
    query=DeadLetterQuerySchema,
    response=DeadLetterListSchema,
    errors=(403,),
    links={
        "RequeueFirst": ("v1.admin.requeue_dead_letter", {"letter_id": links.FIRST_ITEM}),
        "DeleteFirst": ("v1.admin.delete_dead_letter", {"letter_id": links.FIRST_ITEM}),
        "GetFirstJob": ("v1.jobs.get_job", {"job_id": "$response.body#/items/0/job_id"}),
    },
)
def list_dead_letters() -> Response:
    args = DeadLetterQuerySchema().load(request.args)
    query = paginate(
        _filtered(args), DeadLetter.created_at, DeadLetter.id, args.get("cursor"), args["limit"]
    )
    rows, next_cursor = page(list(db_session().scalars(query)), args["limit"])
    return jsonify(DEAD_LETTER_LIST_SCHEMA.dump({"items": rows, "next_cursor": next_cursor}))


@bp.post("/dead-letters/<uuid:letter_id>/requeue")
@doc(
    summary="Run the dead letter's job again",
    tags=["admin"],
    response=AffectedSchema,
    status=202,
    errors=(403, 404, 409),
    links={
        "GetRequeuedJob": ("v1.jobs.get_job", {"job_id": "$response.body#/job_id"}),
    },
)
def requeue_dead_letter(letter_id: uuid.UUID) -> tuple[Response, int]:
    session = db_session()
    letter = session.get(DeadLetter, letter_id, with_for_update=True)
    if letter is None:
        raise not_found("dead letter")
    effects = _requeue(letter)
    session.commit()
    effects.apply(settings().redis_url, publisher(), session)
    return jsonify({"affected": 1, "job_id": str(letter.job_id)}), 202


@bp.delete("/dead-letters/<uuid:letter_id>")
@doc(summary="Delete one dead letter", tags=["admin"], status=204, errors=(403, 404))
def delete_dead_letter(letter_id: uuid.UUID) -> tuple[str, int]:
    session = db_session()
    letter = session.get(DeadLetter, letter_id)
    if letter is None:
        raise not_found("dead letter")
    session.delete(letter)
    session.commit()
    return "", 204


@bp.post("/dead-letters/requeue")
@doc(
    summary="Requeue every waiting dead letter matching the filters (up to 1000 a call)",
    tags=["admin"],
    query=DeadLetterQuerySchema,
    response=AffectedSchema,
    status=202,
    errors=(403,),
)
def requeue_dead_letters() -> tuple[Response, int]:
    args = DeadLetterQuerySchema().load({**request.args, "state": "waiting"})
    session = db_session()
    letters = session.scalars(
        _filtered(args)
        .order_by(DeadLetter.created_at)
        .limit(_BULK_LIMIT)
        .with_for_update(skip_locked=True)
    ).all()
    requeued: list[Effects] = []
    skipped = 0
    for letter in letters:
        try:
            with session.begin_nested():
                requeued.append(_requeue(letter))
        except JobConflict:
            skipped += 1
    session.commit()
    for effects in requeued:
        effects.apply(settings().redis_url, publisher(), session)
    remaining = session.scalar(select(func.count()).select_from(_filtered(args).subquery()))
    return jsonify({"affected": len(requeued), "skipped": skipped, "remaining": remaining}), 202


@bp.delete("/dead-letters")
@doc(
    summary="Delete every dead letter matching the filters (up to 1000 a call)",
    tags=["admin"],
    query=DeadLetterQuerySchema,
    response=AffectedSchema,
    errors=(403,),
)
def delete_dead_letters() -> Response:
    args = DeadLetterQuerySchema().load(request.args)
    session = db_session()
    ids = session.scalars(
        _filtered(args)
        .with_only_columns(DeadLetter.id)
        .order_by(DeadLetter.created_at)
        .limit(_BULK_LIMIT)
    ).all()
    if ids:
        session.execute(DeadLetter.__table__.delete().where(DeadLetter.id.in_(ids)))
    session.commit()
    remaining = session.scalar(select(func.count()).select_from(_filtered(args).subquery()))
    return jsonify({"affected": len(ids), "remaining": remaining})


@bp.get("/stats")
@doc(summary="Platform overview for operators", tags=["admin"], response=StatsSchema, errors=(403,))
def stats() -> Response:
    session = db_session()
    by_status = dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
    deployments = dict(
        session.execute(select(Deployment.status, func.count()).group_by(Deployment.status)).all()
    )
    waiting = session.scalar(
        select(func.count()).select_from(DeadLetter).where(DeadLetter.requeued_at.is_(None))
    )
    celery = publisher()
    with celery.connection_for_write() as connection:
        client = connection.default_channel.client
        depths = {queue: priorities.depth(client, queue) for queue in queues.ALL_QUEUES}
    try:
        replies = celery.control.ping(timeout=1.0) or []
    except Exception:  # the broker is down: say so instead of failing the whole page
        replies = []
    workers = sorted(name for reply in replies for name in reply)
    return jsonify(
        StatsSchema().dump(
            {
                "jobs_by_status": {s.value: by_status.get(s.value, 0) for s in JobStatus},
                "deployments_by_status": deployments,
                "queue_depths": depths,
                "workers_online": workers,
                "workers_online_count": len(workers),
                "dead_letters_waiting": waiting or 0,
                "paused_queues": sorted(queue_states.paused_names(session)),
            }
        )
    )


#: Held jobs a resume publishes before it answers; the outbox sweep publishes the rest.
_RELEASE_LIMIT = 1000


def _queue(session: Session, broker: Redis, name: str, paused: bool) -> dict[str, Any]:
    """A job queue as operators see it: its true depth is the messages waiting in the broker
    plus the jobs waiting unpublished in PostgreSQL (held by a pause, or not yet sent)."""
    in_broker = priorities.depths(broker, name)
    held = queue_states.held_depths(session, name)
    oldest = queue_states.oldest_waiting(session, name)
    return {
        "name": name,
        "depth": {level.value: in_broker[level] + held[level.value] for level in in_broker},
        "paused": paused,
        "workers": queue_workers.live(broker, name),
        "oldest_waiting_seconds": (now() - oldest).total_seconds() if oldest else None,
    }


@bp.get("/queues")
@doc(
    summary="Job queues: depth per priority, paused, live workers, oldest waiting job",
    tags=["admin"],
    response=QueueListSchema,
    errors=(403,),
)
def list_queues() -> Response:
    session = db_session()
    paused = queue_states.paused_names(session)
    broker = fast_publish.broker_client(publisher())
    items = [_queue(session, broker, name, name in paused) for name in queue_states.PAUSABLE]
    return jsonify(QueueListSchema().dump({"items": items}))


def _set_paused(name: str, paused: bool) -> Response:
    """Store the state (the workers' source of truth), then tell the workers at once."""
    if name not in queue_states.PAUSABLE:
        raise not_found("queue")
    session = db_session()
    queue_states.set_paused(session, name, paused, current_user_id())
    session.commit()
    queue_states.announce(publisher(), name, paused)
    released = 0 if paused else queue_states.release_held(name, _RELEASE_LIMIT, publisher())
    log.info(
        "queue %s %s",
        name,
        "paused" if paused else "resumed",
        extra={"event": "queue_state", "queue": name, "paused": paused, "released": released},
    )
    broker = fast_publish.broker_client(publisher())
    return jsonify(QueueSchema().dump(_queue(session, broker, name, paused)))


@bp.post("/queues/<name>/pause")
@doc(
    summary="Pause a job queue: its workers start no new work; submissions wait",
    tags=["admin"],
    response=QueueSchema,
    errors=(403, 404),
)
def pause_queue(name: str) -> Response:
    return _set_paused(name, True)


@bp.post("/queues/<name>/resume")
@doc(
    summary="Resume a paused job queue: its workers take the waiting jobs again",
    tags=["admin"],
    response=QueueSchema,
    errors=(403, 404),
)
def resume_queue(name: str) -> Response:
    return _set_paused(name, False)
