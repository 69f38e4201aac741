# The apps' reverse proxy for the compose stack (PROXY_IMAGE): Debian's caddy, started with the
# configuration `make run` uses (deploy/proxy/caddy.json: no apps, the catch-all 404), except
# that the apps listen on PROXY_PORT and the admin API on :2019 of the container, which only the
# `proxy-admin` network (the deploy workers) reaches; it is never published. Build context:
# deploy/.
ARG BASE_IMAGE=dockyard/base:bookworm
FROM ${BASE_IMAGE}
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends caddy ca-certificates \
    && rm -rf /var/lib/apt/lists/* && mkdir -p /var/lib/caddy && chown caddy:caddy /var/lib/caddy
COPY proxy/caddy.json /etc/dockyard/caddy.json
COPY compose/proxy-entrypoint.sh /usr/local/bin/dockyard-proxy
# Certificates (PROXY_HTTPS) and Caddy's state: the volume on /var/lib/caddy.
ENV XDG_CONFIG_HOME=/var/lib/caddy XDG_DATA_HOME=/var/lib/caddy PROXY_PORT=8080
USER caddy
EXPOSE 8080 2019
ENTRYPOINT ["/usr/local/bin/dockyard-proxy"]
