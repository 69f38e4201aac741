"""The processor catalogue. Importing this package registers every family."""

from shared.processors import (
    deploy,  # noqa: F401  (registers the deploy family)
    diagnostics,  # noqa: F401  (registers the debug.* family)
    files,  # noqa: F401  (registers the file-processing family)
)
from shared.processors.registry import (
    JobContext,
    Kind,
    Limits,
    Processor,
    all_processors,
    get_processor,
    kind_of,
    register,
    register_kind,
)

__all__ = [
    "JobContext",
    "Kind",
    "Limits",
    "Processor",
    "all_processors",
    "get_processor",
    "kind_of",
    "register",
    "register_kind",
]
