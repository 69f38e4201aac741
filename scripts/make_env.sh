#!/usr/bin/env bash
# Create or complete the compose stack's env file (default .env; ENV_FILE or the first
# argument names another) with random secrets. A key that already has a value is never
# changed: only missing or empty keys are filled, so running it again (every `make up` does)
# keeps the secrets the stack's volumes were initialised with. The file is made readable by
# its owner only. Random bytes come from /dev/urandom through coreutils, so nothing beyond a
# base system is needed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ENV_FILE="${1:-${ENV_FILE:-$ROOT/.env}}"

hex() {  # hex BYTES: 2*BYTES random hex characters
  head -c "$1" /dev/urandom | od -An -v -tx1 | tr -d ' \n'
}
fernet_key() {  # what cryptography's Fernet.generate_key() makes: urlsafe base64 of 32 bytes
  head -c 32 /dev/urandom | base64 -w0 | tr '+/' '-_'
}
value_of() {  # value_of KEY: the key's value in the file, empty when missing or empty
  sed -n "s/^$1=//p" "$ENV_FILE" | tail -n 1
}

umask 077
[[ -e "$ENV_FILE" ]] || : >"$ENV_FILE"
# MinIO caps its root user at 20 and its password at 40 characters in older releases.
declare -A GENERATE=(
  [JWT_SECRET_KEY]="$(hex 32)"
  [STORAGE_SIGNING_KEY]="$(hex 32)"
  [DEPLOY_SECRETS_KEY]="$(fernet_key)"
  [POSTGRES_PASSWORD]="$(hex 32)"
  [MINIO_ROOT_USER]="dockyard$(hex 6)"
  [MINIO_ROOT_PASSWORD]="$(hex 20)"
  [FLOWER_BASIC_AUTH]="admin:$(hex 24)"
)
ORDER=(JWT_SECRET_KEY STORAGE_SIGNING_KEY DEPLOY_SECRETS_KEY POSTGRES_PASSWORD
  MINIO_ROOT_USER MINIO_ROOT_PASSWORD FLOWER_BASIC_AUTH)
added=()
for key in "${ORDER[@]}"; do
  [[ -n "$(value_of "$key")" ]] && continue
  if grep -q "^$key=" "$ENV_FILE"; then  # present but empty (as .env.example ships it)
    sed -i "s/^$key=.*/$key=${GENERATE[$key]}/" "$ENV_FILE"
  else
    [[ ! -s "$ENV_FILE" || -z "$(tail -c 1 "$ENV_FILE")" ]] || echo >>"$ENV_FILE"
    echo "$key=${GENERATE[$key]}" >>"$ENV_FILE"
  fi
  added+=("$key")
done
if ((${#added[@]})); then
  chmod 600 "$ENV_FILE"
  echo "[env] random secrets written to $ENV_FILE (mode 0600): ${added[*]}" >&2
  echo "[env] Flower login: the user:password in FLOWER_BASIC_AUTH there; keep the file:" \
    "the volumes were initialised with these secrets" >&2
fi
