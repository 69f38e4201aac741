"""A declarative registry of processors: one module per family registers its entries.

The API reads the registry to validate submissions and publish to the right queue; the
workers read it to run the work. Neither needs to know which families exist.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from marshmallow import Schema


class JobContext(Protocol):
    """What a running processor may use: its attempt number and a progress reporter."""

    job_id: str
    attempt: int

    def progress(self, current: int, total: int, message: str = "") -> None:
        """Record progress; raises JobCancelled when the job's owner asked to cancel."""


RunFunction = Callable[[JobContext, dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class Limits:
    """What one container run of a processor may use before it is stopped."""

    memory_bytes: int = 256 * 1024 * 1024
    cpus: float = 1.0
    pids: int = 64
    timeout_seconds: float = 60.0
    max_output_bytes: int = 64 * 1024 * 1024
    tmpfs_bytes: int = 64 * 1024 * 1024


@dataclass(frozen=True)
class Processor:
    name: str
    kind: str  # diagnostic | file | deploy
    description: str
    input: str  # none | file | repository
    params_schema: type[Schema]
    queue: str
    task_name: str
    run: RunFunction | None = None
    max_attempts: int | None = None  # None: the platform default (JOB_MAX_ATTEMPTS)
    accepts: tuple[str, ...] = ()  # content types (judged from magic bytes) for file input
    image: str | None = None  # None: the configured PROCESSOR_IMAGE
    command: tuple[str, ...] = ()  # "{input}" and "{output}" are replaced by container paths
    limits: Limits | None = None

    def load_params(self, raw: dict[str, Any] | None) -> dict[str, Any]:
        """Validate and normalise params; raises marshmallow.ValidationError."""
        params: dict[str, Any] = _schema_instance(self.params_schema).load(raw or {})
        return params


@dataclass(frozen=True)
class Kind:
    """What the API needs to know of a family of processors (a job kind), declared by the
    family's module, so no view branches on a kind's name."""

    name: str
    submit_path: str  # the endpoint under /api/v1 that takes its jobs
    downloadable: bool = False  # a successful job leaves a result file to download
    runs_in_image: bool = False  # its processors run in a container image (shown in /processors)
    fleet_param: bool = False  # its params may pick the queue (`fleet`), to probe a fleet


_REGISTRY: dict[str, Processor] = {}
_KINDS: dict[str, Kind] = {}
_SCHEMAS: dict[type[Schema], Schema] = {}


def register_kind(kind: Kind) -> Kind:
    if kind.name in _KINDS:
        raise ValueError(f"job kind {kind.name!r} registered twice")
    _KINDS[kind.name] = kind
    return kind


def kind_of(name: str) -> Kind:
    """The kind a job or processor names (a row of an unknown kind gets no extras)."""
    return _KINDS.get(name) or Kind(name, submit_path="/jobs")


def _schema_instance(schema: type[Schema]) -> Schema:
    """One reusable instance per schema class (building one per request is costly)."""
    if schema not in _SCHEMAS:
        _SCHEMAS[schema] = schema()
    return _SCHEMAS[schema]


def register(processor: Processor) -> Processor:
    if processor.name in _REGISTRY:
        raise ValueError(f"processor {processor.name!r} registered twice")
    _REGISTRY[processor.name] = processor
    return processor


def get_processor(name: str) -> Processor | None:
    return _REGISTRY.get(name)


def all_processors() -> list[Processor]:
    return sorted(_REGISTRY.values(), key=lambda p: p.name)
