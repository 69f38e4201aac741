"""docs/configuration.md, generated from the settings' declarations in shared/config.py.

    python -m shared.config_docs           write the page (`make docs` runs this)
    python -m shared.config_docs --check   exit 1 when the page differs from what it would write

The page is never edited by hand: a setting's name, type, default, bounds, secrecy and
description live in its declaration, and tests/unit/test_config_docs.py fails when the
committed page is stale. The variables only the shell scripts and the compose files read are
declared here (SCRIPT_VARIABLES), since no Dockyard process ever parses them.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from shared.config import (
    ENVIRONMENT_ONLY,
    RULES,
    SECRET_MIN_LENGTH,
    SECTIONS,
    SETTINGS,
    Secret,
    Section,
    Setting,
    Variable,
)

PAGE = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


@dataclass(frozen=True)
class ScriptVariable:
    """A variable read by scripts/*.sh or the compose files, never by a Dockyard process."""

    env: str
    read_by: str
    shown_default: str
    description: str
    secret: Secret = Secret.NO


_RUN, _TEST, _SETUP, _IMAGES = "`make run`", "`make test`", "`scripts/setup.sh`", "image builds"
_COMPOSE, _UP = "compose files", "`make up` / `scripts/compose.sh`"

SCRIPT_VARIABLES: tuple[ScriptVariable, ...] = (
    ScriptVariable("API_PORT", f"{_RUN}, {_COMPOSE}", "`8000`", "the API's port on the host"),
    ScriptVariable("API_WORKERS", _RUN, "`3`", "gunicorn worker processes of the API"),
    ScriptVariable("API_THREADS", _RUN, "`4`", "threads per gunicorn worker"),
    ScriptVariable(
        "WORKER_CONCURRENCY", _RUN, "`2`", "processes of each Celery worker (one per queue)"
    ),
    ScriptVariable("FLOWER_PORT", f"{_RUN}, {_COMPOSE}", "`5555`", "Flower's port"),
    ScriptVariable("PYTHON", _SETUP, "`python3`", "the interpreter `.venv` is created with"),
    ScriptVariable(
        "TEST_DATABASE_URL",
        _TEST,
        "`postgresql+psycopg2://dockyard:dockyard@127.0.0.1:5432/dockyard_test`",
        "`DATABASE_URL` of the tests",
    ),
    ScriptVariable(
        "TEST_CELERY_BROKER_URL", _TEST, "`redis://127.0.0.1:6379/14`", "the tests' broker"
    ),
    ScriptVariable("TEST_REDIS_URL", _TEST, "`redis://127.0.0.1:6379/15`", "the tests' Redis"),
    ScriptVariable(
        "DOCKYARD_BASE_IMAGE",
        _IMAGES,
        "`dockyard/base:bookworm`",
        "the Debian base image made locally with debootstrap (no registry needed)",
    ),
    ScriptVariable(
        "DEBIAN_MIRROR", _IMAGES, "`http://deb.debian.org/debian`", "where debootstrap fetches"
    ),
    ScriptVariable(
        "ENV_FILE", _UP, "`.env`", "the compose stack's settings, completed with random secrets"
    ),
    ScriptVariable(
        "LOCAL_IMAGES",
        _UP,
        "`1`",
        "`1`: build every image here first; `0`: pull public images (set them in the env file)",
    ),
    ScriptVariable(
        "SKIP_IMAGES", _UP, "`0`", "`1`: reuse the images the last `up` built (`make scale`)"
    ),
    ScriptVariable("COMPOSE_PROJECT_NAME", _UP, "`dockyard`", "the compose project's name"),
    ScriptVariable(
        "API_BIND_ADDRESS",
        _COMPOSE,
        "`127.0.0.1`",
        "the host address the API is published on (`0.0.0.0`: every interface)",
    ),
    ScriptVariable(
        "PROXY_BIND_ADDRESS", _COMPOSE, "`127.0.0.1`", "the host address `PROXY_PORT` is on"
    ),
    ScriptVariable(
        "S3_BIND_ADDRESS",
        f"{_UP}, {_COMPOSE}",
        "(unset)",
        "set: S3 (MinIO) is published on this host address (`deploy/compose/expose-s3.yml`)",
    ),
    ScriptVariable("MINIO_PORT", _COMPOSE, "`9000`", "S3's port on the host, when published"),
    ScriptVariable(
        "FLOWER_BIND_ADDRESS",
        f"{_UP}, {_COMPOSE}",
        "(unset)",
        "set: Flower is published on this host address (`deploy/compose/expose-flower.yml`)",
    ),
    ScriptVariable(
        "DOCKER_SOCKET",
        _COMPOSE,
        "`/var/run/docker.sock`",
        "the engine socket mounted into the file and deploy workers",
    ),
    ScriptVariable(
        "DOCKER_GID",
        f"{_UP}, {_COMPOSE}",
        "the host's `docker` group",
        "the group that may use `DOCKER_SOCKET`, given to the workers that mount it",
    ),
    ScriptVariable(
        "WORKER_DOCKER_HOST",
        _COMPOSE,
        "`unix:///var/run/docker.sock`",
        "`DOCKER_HOST` of the file and deploy workers in the stack",
    ),
    ScriptVariable(
        "PLATFORM_IMAGE", _COMPOSE, "`dockyard/platform:latest`", "the API and workers' image"
    ),
    ScriptVariable(
        "PLATFORM_BASE_IMAGE", _COMPOSE, "`python:3.12-slim`", "the platform image's base"
    ),
    ScriptVariable("REDIS_IMAGE", _COMPOSE, "`redis:7-alpine`", "the stack's Redis"),
    ScriptVariable("POSTGRES_IMAGE", _COMPOSE, "`postgres:16-alpine`", "the stack's PostgreSQL"),
    ScriptVariable("MINIO_IMAGE", _COMPOSE, "`minio/minio:latest`", "the stack's S3 service"),
    ScriptVariable("PROXY_IMAGE", _COMPOSE, "`dockyard/proxy:local`", "the apps' reverse proxy"),
    ScriptVariable(
        "PROXY_BASE_IMAGE", _COMPOSE, "`debian:bookworm-slim`", "the proxy image's base"
    ),
    ScriptVariable(
        "POSTGRES_PASSWORD",
        _COMPOSE,
        "generated by `make up`",
        "the stack's database password (in its `DATABASE_URL`)",
        Secret.PROVIDED,
    ),
    ScriptVariable(
        "MINIO_ROOT_USER", _COMPOSE, "generated by `make up`", "S3's user (`AWS_ACCESS_KEY_ID`)"
    ),
    ScriptVariable(
        "MINIO_ROOT_PASSWORD",
        _COMPOSE,
        "generated by `make up`",
        "S3's password (`AWS_SECRET_ACCESS_KEY`)",
        Secret.PROVIDED,
    ),
)

_INTRO = f"""\
<!-- Generated by `python -m shared.config_docs` (`make docs`) from the declarations in
shared/config.py. Do not edit: change a declaration and regenerate; a unit test fails while
this page is stale. -->

# Configuration

Every setting is an environment variable. Each process (API, workers, beat) reads all of them
once at start and validates them (`load_settings` in `shared/config.py`): a bad value stops
start-up with one line naming the variable, such as
`configuration error: QUOTA_ACTIVE_JOBS must be an integer, got 'lots'`. An empty variable
counts as unset. The defaults suit `make run` on a developer machine.

With `DOCKYARD_ENV=production` a process also refuses to start, naming the variable and never
echoing the value, when a secret (a `yes` in the secret column) is a value the repository
ships or has shipped (the development defaults, `make run`'s Flower login, earlier
placeholders, anything still containing `change-me`), or when one marked
"{Secret.CHOSEN.value}" is shorter than {SECRET_MIN_LENGTH} characters. `DATABASE_URL` is
checked for its password, `AWS_SECRET_ACCESS_KEY` with `STORAGE_BACKEND=s3`, and each
`FLOWER_BASIC_AUTH` password. `make up` writes random secrets into `.env`;
`openssl rand -hex 32` makes one.

A variable read by a library rather than by Dockyard's settings (boto3, the Docker SDK,
Flower, prometheus_client) is listed in its section with "read by" in its description; the
variables only the scripts and the compose files read come last.
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _row(*cells: str) -> str:
    return "| " + " | ".join(_cell(cell) for cell in cells) + " |"


def _default(setting: Setting) -> str:
    if setting.shown_default:
        return setting.shown_default
    shown = setting.parser.show(setting.default)
    return f"`{shown}`" if shown else "(none)"


def _bounds(setting: Setting) -> str:
    parts = [setting.parser.bounds] if setting.parser.bounds else []
    parts += [rule.problem for rule in RULES if rule.env == setting.env]
    return "; ".join(parts)


def _section(section: Section) -> list[str]:
    lines = [f"## {section.title}", "", section.intro, ""]
    lines += [_row("variable", "type", "default", "bounds", "secret", "description")]
    lines += ["|---|---|---|---|---|---|"]
    settings = [s for s in SETTINGS if s.section is section]
    lines += [
        _row(f"`{s.env}`", s.parser.kind, _default(s), _bounds(s), s.secret.value, s.description)
        for s in settings
    ]
    others: list[Variable] = [v for v in ENVIRONMENT_ONLY if v.section is section]
    lines += [
        _row(f"`{v.env}`", v.kind, v.shown_default, "", v.secret.value, v.description)
        for v in others
    ]
    return [*lines, ""]


def _scripts() -> list[str]:
    lines = [
        "## Read by the scripts and the compose stack",
        "",
        "No Dockyard process reads these: the shell scripts under `scripts/` (behind the make "
        "targets) and the compose files do.",
        "",
        _row("variable", "read by", "default", "secret", "description"),
        "|---|---|---|---|---|",
    ]
    lines += [
        _row(f"`{v.env}`", v.read_by, v.shown_default, v.secret.value, v.description)
        for v in SCRIPT_VARIABLES
    ]
    return [*lines, ""]


def render() -> str:
    """The whole page, deterministic: declaration order, no timestamps."""
    lines = [_INTRO]
    for section in SECTIONS:
        lines += _section(section)
    lines += _scripts()
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="exit 1 if the page is stale")
    parser.add_argument("--output", type=Path, default=PAGE, help="the page (default: %(default)s)")
    args = parser.parse_args(argv)
    page: Path = args.output
    text = render()
    if args.check:
        if not page.exists() or page.read_text() != text:
            print(
                f"{page} is stale: run `python -m shared.config_docs` (or `make docs`) "
                "and commit the result",
                file=sys.stderr,
            )
            return 1
        return 0
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
