"""The `dockyard` command line (placeholder until the CLI lands)."""

from __future__ import annotations

import sys


def main() -> None:
    """Entry point of the `dockyard` console script."""
    sys.stderr.write("dockyard: the command line is not available yet\n")
    raise SystemExit(2)
