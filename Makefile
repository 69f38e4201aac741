SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTEST_ARGS ?=

.PHONY: help run test test-unit lint fmt docs bench migrate clean up down scale

help:  ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

run:  ## Install what is missing, migrate, and run API, workers, beat and Flower (Ctrl-C stops)
	@scripts/run.sh

test:  ## The same set-up, then the whole test suite
	@scripts/test.sh $(PYTEST_ARGS)

# The plugins of the integration tests (pytest-celery, pytest-docker-tools, schemathesis and
# hypothesis) cost seconds of imports at start-up; no unit test uses them.
UNIT_PLUGINS := -p no:celery -p no:docker_tools -p no:schemathesis -p no:hypothesispytest

test-unit:  ## The unit tests only: needs the virtualenv, no PostgreSQL, Redis, S3 or Docker
	@scripts/venv.sh
	.venv/bin/pytest tests/unit $(UNIT_PLUGINS) $(PYTEST_ARGS)

lint:  ## ruff check and format check, then mypy (strict on shared/ and client/)
	@test -x .venv/bin/ruff -a -x .venv/bin/mypy || scripts/setup.sh
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

fmt:  ## Rewrite the code as lint wants it: ruff's safe fixes, then ruff format
	@test -x .venv/bin/ruff || scripts/setup.sh
	.venv/bin/ruff check --fix .
	.venv/bin/ruff format .

docs:  ## Regenerate docs/configuration.md, then build the docs site strictly into var/site
	@scripts/venv.sh
	.venv/bin/python -m shared.config_docs
	.venv/bin/mkdocs build --strict -d var/site

bench:  ## Performance comparison (docs/performance.md)
	@scripts/setup.sh
	.venv/bin/python -m bench $(BENCH_ARGS)

migrate:  ## Apply database migrations to DATABASE_URL (default: the dev database)
	.venv/bin/python -m shared.migrate upgrade

clean:  ## Remove run-time files and caches (keeps .venv)
	rm -rf var .pytest_cache .ruff_cache
	find . -name __pycache__ -not -path './.venv/*' -prune -exec rm -rf {} +

up:  ## The compose stack in the background; creates .env with random secrets on first use
	scripts/compose.sh up -d

down:  ## Stop the compose stack (volumes kept; `scripts/compose.sh down -v` drops them)
	scripts/compose.sh down

scale:  ## Resize fleets with the images `make up` built: make scale FILES=4 DEPLOY=2 WEBHOOKS=2
	SKIP_IMAGES=1 scripts/compose.sh up -d --scale worker-files=$(or $(FILES),1) --scale worker-deploy=$(or $(DEPLOY),1) --scale worker-webhooks=$(or $(WEBHOOKS),1)
