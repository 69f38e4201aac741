"""Apply Alembic migrations: `python -m shared.migrate [upgrade head | revision -m MSG ...]`.

Alembic is configured in code so that the database URL has one source (DATABASE_URL) and
the migrations ship inside the package that runs them.
"""

from __future__ import annotations

import sys
from pathlib import Path

from alembic import command
from alembic.config import Config

from shared.config import get_settings

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def alembic_config(database_url: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["database_url"] = database_url or get_settings().database_url
    return config


def upgrade(database_url: str | None = None, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def main(argv: list[str]) -> int:
    if not argv or argv[0] == "upgrade":
        upgrade(revision=argv[1] if len(argv) > 1 else "head")
        return 0
    if argv[0] == "revision":
        message = argv[argv.index("-m") + 1] if "-m" in argv else "change"
        command.revision(alembic_config(), message=message, autogenerate=True)
        return 0
    if argv[0] == "downgrade":
        command.downgrade(alembic_config(), argv[1] if len(argv) > 1 else "-1")
        return 0
    print(
        f"unknown command {argv[0]!r}; use upgrade, downgrade or revision -m MSG", file=sys.stderr
    )
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
