"""The caller's resources, loaded by id or name for the views of several blueprints.

Someone else's job, deployment or app answers 404 exactly like a missing one (an admin
sees every one), so an id reveals nothing about resources the caller may not see.
"""

from __future__ import annotations

import uuid

from sqlalchemy import select

from api.errors import not_found
from api.identity import current_user_id, is_admin
from api.session import db_session
from shared.models import App, Deployment, Job


def load_job(job_id: uuid.UUID, *, for_update: bool = False) -> Job:
    """The caller's job (any job for an admin); someone else's answers 404 like a missing one."""
    job = db_session().get(Job, job_id, with_for_update=for_update)
    if job is None or (job.owner_id != current_user_id() and not is_admin()):
        raise not_found("job")
    return job


def load_deployment(deployment_id: uuid.UUID, *, for_update: bool = False) -> Deployment:
    deployment = db_session().get(Deployment, deployment_id, with_for_update=for_update)
    if deployment is None or (deployment.owner_id != current_user_id() and not is_admin()):
        raise not_found("deployment")
    return deployment


def load_app(name: str, *, for_update: bool = False) -> App:
    """The app if the caller owns it (or is an admin); 404 otherwise, as for a missing one."""
    query = select(App).where(App.name == name)
    if for_update:
        query = query.with_for_update()
    app = db_session().scalar(query)
    if app is None or (app.owner_id != current_user_id() and not is_admin()):
        raise not_found("app")
    return app
