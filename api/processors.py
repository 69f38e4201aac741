"""The processor catalogue."""

from __future__ import annotations

import dataclasses

from flask import Blueprint, Response, jsonify
from flask_jwt_extended import jwt_required

from api.extensions import settings
from api.openapi import params_json_schema
from api.operation import doc
from api.schemas.processors import ProcessorListSchema
from shared.processors import all_processors, kind_of

bp = Blueprint("processors", __name__, url_prefix="/processors")


@bp.get("")
@jwt_required()
@doc(
    summary="Every processor with its input and parameters",
    tags=["processors"],
    response=ProcessorListSchema,
)
def list_processors() -> Response:
    config = settings()
    default_attempts = config.job_max_attempts
    items = [
        {
            "name": p.name,
            "kind": p.kind,
            "description": p.description,
            "input": p.input,
            "accepts": list(p.accepts),
            "queue": p.queue,
            "max_attempts": p.max_attempts or default_attempts,
            "params": params_json_schema(p.params_schema),
            "image": (
                (p.image or config.processor_image) if kind_of(p.kind).runs_in_image else None
            ),
            "limits": dataclasses.asdict(p.limits) if p.limits else None,
        }
        for p in all_processors()
    ]
    return jsonify(ProcessorListSchema().dump({"items": items}))
