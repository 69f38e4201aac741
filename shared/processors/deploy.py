"""The deploy family: build a repository's Dockerfile and run it on a leased host port.

One entry, run by the `deploy` fleet (workers/deploy/). Its params are what the job shows;
the app's environment variables are secrets and live on the deployment row, never here.
"""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from shared.dispatch import queues
from shared.processors.registry import Kind, Processor, register, register_kind

NAME = "deploy.repository"


class DeployParams(Schema):
    repo_url = fields.String(required=True, metadata={"description": "Canonical clone URL."})
    ref = fields.String(load_default=None, allow_none=True)
    container_port = fields.Integer(
        load_default=None, allow_none=True, validate=validate.Range(min=1, max=65535)
    )
    health_path = fields.String(load_default="/")
    env_names = fields.List(fields.String(), load_default=list)
    deployment_id = fields.String(required=True)


register_kind(Kind("deploy", submit_path="/jobs/deploy"))


register(
    Processor(
        name=NAME,
        kind="deploy",
        description=(
            "Clone a GitHub repository, build its Dockerfile, run it on a free host port and "
            "report its URL once healthy (submit with POST /jobs/deploy)."
        ),
        input="repository",
        params_schema=DeployParams,
        queue=queues.DEPLOY,
        task_name=queues.TASK_DEPLOY,
        max_attempts=3,
    )
)
