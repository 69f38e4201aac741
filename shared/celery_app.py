"""The Celery application shared by the API (publisher) and the workers."""

from __future__ import annotations

from celery import Celery

app = Celery("dockyard")
app.config_from_object("celeryconfig")
