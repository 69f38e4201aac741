"""A deploy body's repository, ref and settings checked into a DeployRequest, and the 422
its refusal answers: the same for POST /jobs/deploy, a deploy schedule's params and an app's
rollback."""

from __future__ import annotations

from typing import Any

from api.errors import ApiError
from api.extensions import settings
from shared.deploy.jobs import DeployRequest
from shared.deploy.repo_urls import InvalidRepository


def refuse_repository(error: InvalidRepository, within: str | None = None) -> ApiError:
    """422 with the refusal's own code; `within` nests the field (a schedule's `params`)."""
    fields: dict[str, Any] = {error.field: [error.message]}
    return ApiError(
        422, error.code, error.message, {"fields": {within: fields} if within else fields}
    )


def deploy_request(data: dict[str, Any], within: str | None = None) -> DeployRequest:
    """The validated request of a deploy body (`DeploySubmitSchema` fields): a refused URL or
    ref answers 422 with its own code (invalid_repo_url, ...). A deploy schedule's params
    are checked here too (`within="params"`), so both refuse the same way."""
    try:
        return DeployRequest.parse(
            settings(),
            repo_url=data["repo_url"],
            ref=data["ref"],
            container_port=data["container_port"],
            health_path=data["health_path"],
            env=data["env"],
            app=data.get("app"),
            access_token=data.get("access_token"),
        )
    except InvalidRepository as error:
        raise refuse_repository(error, within) from None
