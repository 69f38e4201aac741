#!/bin/sh
# Start Caddy with deploy/proxy/caddy.json, apps on PROXY_PORT and the admin API on every
# interface of the container (compose keeps it on the internal proxy-admin network). The
# deploy workers then load the routes; they keep this admin address (workers/deploy/proxy.py).
set -eu
sed -e 's/"127\.0\.0\.1:2019"/":2019"/' -e "s/\":8080\"/\":${PROXY_PORT}\"/" \
  /etc/dockyard/caddy.json >/tmp/caddy.json
exec caddy run --config /tmp/caddy.json "$@"
