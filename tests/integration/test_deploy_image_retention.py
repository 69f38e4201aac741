"""Stopped deployments keep their image for DEPLOY_IMAGE_RETENTION (a cached redeploy), then
the periodic check removes the tag, unless another deployment still holds it. Real Docker
engine, real PostgreSQL; the rows are written directly so their stop times can be in the past.
"""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import docker
import pytest
from sqlalchemy import delete, update

from shared.clock import now
from shared.config import Settings
from shared.db import session_scope
from shared.models import Deployment
from tests.helpers import User
from workers.deploy.containers import remove_image
from workers.deploy.lifecycle import check_deployments, release_stopped_images

BASE_IMAGE = os.environ.get("DOCKYARD_BASE_IMAGE", "dockyard/base:bookworm")
DAY = timedelta(days=1)


@pytest.fixture()
def images(tmp_path: Path) -> Iterator[list[str]]:
    """Three unique deploy-style tags on the base image (a label each, no layers to build)."""
    client = docker.from_env()
    tags = []
    for index in range(3):
        context = tmp_path / f"image{index}"
        context.mkdir()
        (context / "Dockerfile").write_text(
            f"FROM {BASE_IMAGE}\nLABEL dockyard.test-nonce={uuid.uuid4().hex}\n"
        )
        tag = f"dockyard-deploy/dockyard-tests-retention{index}:{uuid.uuid4().hex[:12]}"
        client.images.build(path=str(context), tag=tag, rm=True)
        tags.append(tag)
    yield tags
    for tag in tags:
        remove_image(client, tag)


def tags_present() -> set[str]:
    return {tag for image in docker.from_env().images.list() for tag in image.tags}


def add_deployment(
    owner_id: str, image: str, status: str, stopped_ago: timedelta | None
) -> uuid.UUID:
    with session_scope() as session:
        row = Deployment(
            owner_id=uuid.UUID(owner_id),
            job_id=uuid.uuid4(),
            repo_url="https://github.com/dockyard-tests/retention",
            repo_key="dockyard-tests/retention",
            image=image,
            status=status,
            stopped_at=None if stopped_ago is None else now() - stopped_ago,
        )
        session.add(row)
        session.flush()
        return row.id


def released(deployment_id: uuid.UUID) -> bool:
    with session_scope() as session:
        return session.get(Deployment, deployment_id).image_released_at is not None


def test_images_of_long_stopped_deployments_are_removed_unless_still_held(
    app, settings: Settings, images: list[str]
) -> None:
    lone, shared_recent, shared_active = images
    client = docker.from_env()
    week = dataclasses.replace(settings, deploy_image_retention=7 * 86400.0)
    # The sweep is global: first release what earlier tests left due (a deleted app's
    # releases are due at once), so the counts below are this test's rows only.
    while release_stopped_images(client, week, limit=1000):
        pass
    user = User(app.test_client())
    owner = user.profile["id"]
    oldest = add_deployment(owner, lone, "stopped", 10 * DAY)
    old_shared = add_deployment(owner, shared_recent, "stopped", 9 * DAY)
    recent = add_deployment(owner, shared_recent, "stopped", timedelta(hours=1))
    old_of_active = add_deployment(owner, shared_active, "stopped", 8 * DAY)
    # Starting: a deploy of that commit is building; the pipeline names its tag before the
    # build, so the sweep must not remove it from under the build.
    active = add_deployment(owner, shared_active, "starting", None)
    try:
        # Bounded: the two oldest stops only.
        assert release_stopped_images(client, week, limit=2) == 2
        assert released(oldest) and released(old_shared)
        assert not released(old_of_active)
        present = tags_present()
        assert lone not in present  # nobody else held it
        assert shared_recent in present  # `recent` stopped within the retention
        assert shared_active in present

        assert release_stopped_images(client, week, limit=2) == 1
        assert released(old_of_active)
        assert shared_active in tags_present()  # `active` is building it
        assert not released(recent) and not released(active)
        assert release_stopped_images(client, week, limit=2) == 0

        # The user sees that a redeploy of that commit would now be a full build.
        shown = user.get(f"/api/v1/deployments/{oldest}").get_json()
        assert shown["image_released_at"] is not None and shown["image"] == lone
        assert user.get(f"/api/v1/deployments/{recent}").get_json()["image_released_at"] is None

        # Once the last holder has been stopped for the retention too, the periodic check
        # (the deploy fleet's beat task) removes the tag.
        with session_scope() as session:
            session.execute(
                update(Deployment).where(Deployment.id == recent).values(stopped_at=now() - 8 * DAY)
            )
        counts = check_deployments(client, week)
        assert counts["images_released"] >= 1
        assert released(recent)
        assert shared_recent not in tags_present()
        assert shared_active in tags_present()
    finally:
        with session_scope() as session:
            session.execute(
                delete(Deployment).where(
                    Deployment.id.in_([oldest, old_shared, recent, old_of_active, active])
                )
            )


def test_a_zero_retention_releases_a_stopped_image_at_the_next_check(
    app, settings: Settings, images: list[str]
) -> None:
    user = User(app.test_client())
    stopped = add_deployment(user.profile["id"], images[0], "stopped", timedelta(seconds=1))
    try:
        release_stopped_images(
            docker.from_env(), dataclasses.replace(settings, deploy_image_retention=0.0), limit=50
        )
        assert released(stopped)
        assert images[0] not in tags_present()
    finally:
        with session_scope() as session:
            session.execute(delete(Deployment).where(Deployment.id == stopped))
