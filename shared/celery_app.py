"""The Celery application shared by the API (publisher) and the workers."""

from __future__ import annotations

from celery import Celery


def make_celery(broker_url: str | None = None) -> Celery:
    """A Celery app configured by celeryconfig; `broker_url` overrides the broker (an API
    built with explicit settings publishes where those settings say)."""
    celery = Celery("dockyard")
    celery.config_from_object("celeryconfig")
    if broker_url is not None:
        # Celery lets $CELERY_BROKER_URL beat `broker_url`; publishing uses the write URL,
        # which an explicit setting controls.
        # Item assignment, as attribute assignment does at run time: the attribute is a
        # read-only property in the type stubs.
        celery.conf["broker_write_url"] = broker_url
    return celery


app = make_celery()
