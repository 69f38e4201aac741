"""The processor catalogue. Importing this package registers every family."""

from shared.processors import diagnostics  # noqa: F401  (registers the debug.* family)
from shared.processors.registry import (
    JobContext,
    Processor,
    all_processors,
    get_processor,
    register,
)

__all__ = ["JobContext", "Processor", "all_processors", "get_processor", "register"]
