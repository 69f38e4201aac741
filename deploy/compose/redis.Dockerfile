# Redis for machines without a registry (compose's REDIS_IMAGE defaults to redis:7-alpine).
ARG BASE_IMAGE=dockyard/base:bookworm
FROM ${BASE_IMAGE}
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/* && mkdir -p /data && chown redis:redis /data
USER redis
WORKDIR /data
EXPOSE 6379
# Like the official image: reachable from the other containers (no protected mode).
ENTRYPOINT ["/bin/sh", "-c", "exec \"$@\" --protected-mode no", "--"]
CMD ["redis-server", "--appendonly", "yes"]
