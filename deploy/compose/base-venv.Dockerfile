# The local Debian base plus python3-venv/pip: what deploy/Dockerfile needs of its base.
ARG BASE_IMAGE=dockyard/base:bookworm
FROM ${BASE_IMAGE}
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends python3-venv python3-pip \
    && rm -rf /var/lib/apt/lists/*
