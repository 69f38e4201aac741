"""Every setting Dockyard reads, taken from environment variables and validated in one place.

Start-up fails with a single line naming the offending variable, so a misconfigured
container dies loudly instead of misbehaving later. Defaults suit `make run` on a
developer machine.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import unquote, urlparse

DEFAULT_JWT_SECRET = "dev-insecure-jwt-secret-change-me"  # noqa: S105 - refused in production
# Every secret value the repository ships or has shipped: the code's development defaults,
# `make run`'s Flower login, and the placeholders of .env.example, docker-compose.yml and
# deploy/k8s (today's files ship none; these are the values earlier versions published).
# Production refuses each of them for every secret variable. tests/unit/test_config.py reads
# those files and fails if a value they ship is not refused.
SHIPPED_SECRETS = frozenset(
    {
        DEFAULT_JWT_SECRET,
        "dockyard",
        "dockyard-secret",
        "admin:dockyard",
        "change-me",
        "change-me-in-production-to-a-long-random-value",
        "change-me-to-a-long-random-value",
        "change-me-to-a-random-value-of-at-least-32-characters",
        "admin:change-me",
    }
)
SECRET_MIN_LENGTH = 32
# Secrets Dockyard generates or the operator chooses: at least SECRET_MIN_LENGTH characters
# in production. AWS_SECRET_ACCESS_KEY and database passwords are only checked against the
# shipped values: their provider decides their form (AWS keys are 40 characters; a managed
# database's password policy is its own).
_SECRETS_WITH_LENGTH = (
    "JWT_SECRET_KEY",
    "STORAGE_SIGNING_KEY",
    "METRICS_TOKEN",
    "DEPLOY_SECRETS_KEY",
)
ENVIRONMENTS = ("development", "test", "production")


class ConfigError(SystemExit):
    """Raised for a missing or malformed setting; exits with one clear line."""

    def __init__(self, variable: str, problem: str) -> None:
        self.variable = variable
        super().__init__(f"configuration error: {variable} {problem}")


def _int(minimum: int = 0, maximum: int | None = None) -> Callable[[str, str], int]:
    def parse(name: str, raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(name, f"must be an integer, got {raw!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            bounds = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
            raise ConfigError(name, f"must be {bounds}, got {value}")
        return value

    return parse


def _float(minimum: float = 0.0) -> Callable[[str, str], float]:
    def parse(name: str, raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(name, f"must be a number, got {raw!r}") from None
        if value < minimum:
            raise ConfigError(name, f"must be >= {minimum}, got {value}")
        return value

    return parse


def _url(*schemes: str) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        parsed = urlparse(raw)
        if parsed.scheme not in schemes or not (parsed.netloc or parsed.path):
            raise ConfigError(name, f"must be a URL with scheme {' or '.join(schemes)}")
        return raw

    return parse


def _choice(*choices: str) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        if raw not in choices:
            raise ConfigError(name, f"must be one of {', '.join(choices)}, got {raw!r}")
        return raw

    return parse


def _text(name: str, raw: str) -> str:
    if not raw.strip():
        raise ConfigError(name, "must not be empty")
    return raw


def _seconds_list(name: str, raw: str) -> tuple[float, ...]:
    """Comma-separated non-negative seconds, at least one (a backoff schedule)."""
    try:
        values = tuple(float(part) for part in raw.split(",") if part.strip())
    except ValueError:
        raise ConfigError(name, f"must be comma-separated seconds, got {raw!r}") from None
    if not values or any(value < 0 for value in values):
        raise ConfigError(name, f"must be comma-separated seconds >= 0, got {raw!r}")
    return values


def _bool(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(name, f"must be true or false, got {raw!r}")


def _hosts(name: str, raw: str) -> tuple[str, ...]:
    hosts = tuple(h.strip().lower() for h in raw.split(",") if h.strip())
    if not hosts or any(not re.fullmatch(r"[a-z0-9.-]+", h) for h in hosts):
        raise ConfigError(name, f"must be a comma-separated list of host names, got {raw!r}")
    return hosts


def _protocols(name: str, raw: str) -> str:
    protocols = [p.strip() for p in raw.split(",") if p.strip()]
    allowed = {"https", "http", "file"}
    if not protocols or not set(protocols) <= allowed:
        raise ConfigError(name, f"must list protocols among {sorted(allowed)}, got {raw!r}")
    return ":".join(protocols)


def _port_range(name: str, raw: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", raw)
    if not match:
        raise ConfigError(name, f"must look like 20000-20999, got {raw!r}")
    low, high = int(match.group(1)), int(match.group(2))
    if not 1024 <= low <= high <= 65535:
        raise ConfigError(name, "must be a range within 1024-65535")
    return low, high


def _cidrs(name: str, raw: str) -> tuple[str, ...]:
    """Comma-separated IPv4 networks; `none` for an empty list."""
    if raw.strip().lower() == "none":
        return ()
    try:
        return tuple(
            str(ipaddress.IPv4Network(part.strip(), strict=False))
            for part in raw.split(",")
            if part.strip()
        )
    except ValueError:
        raise ConfigError(
            name, f"must list IPv4 networks (10.0.0.0/8,...) or none, got {raw!r}"
        ) from None


def _networks(name: str, raw: str) -> tuple[str, ...]:
    """Comma-separated IPv4 or IPv6 networks; empty or `none` for none."""
    if raw.strip().lower() in ("", "none"):
        return ()
    try:
        return tuple(
            str(ipaddress.ip_network(part.strip(), strict=False))
            for part in raw.split(",")
            if part.strip()
        )
    except ValueError:
        raise ConfigError(
            name, f"must list IP networks (10.0.0.0/8,fd00::/8,...), got {raw!r}"
        ) from None


@dataclass(frozen=True)
class Settings:
    """Validated settings. Build with `load_settings()`; never mutate."""

    env: str = "development"
    database_url: str = "postgresql+psycopg2://dockyard:dockyard@127.0.0.1:5432/dockyard"
    broker_url: str = "redis://127.0.0.1:6379/0"
    result_backend: str = ""
    redis_url: str = "redis://127.0.0.1:6379/1"
    jwt_secret_key: str = DEFAULT_JWT_SECRET
    jwt_access_token_expires: int = 900
    jwt_refresh_token_expires: int = 30 * 24 * 3600
    quota_submits_per_minute: int = 60
    quota_active_jobs: int = 20
    login_max_failures: int = 10
    # Password hashing (argon2id, 64 MiB, ~0.2 s of CPU) is the API's costliest work and
    # runs before any account exists: per client address per minute (Redis, so it holds
    # across API processes) and at most this many at once per process. 0 = off.
    auth_rate_per_minute: int = 20
    trusted_proxies: int = 0
    auth_hash_concurrency: int = 4
    # Request bodies other than uploads (JSON): 413 above, checked before reading.
    max_json_bytes: int = 1024 * 1024
    # Open Server-Sent Events streams per user (each holds a server thread). 0 = off.
    max_streams_per_user: int = 5
    job_max_attempts: int = 3
    job_max_attempts_limit: int = 10
    retry_backoff_base: float = 2.0
    retry_backoff_max: float = 300.0
    retry_jitter: float = 0.5
    heartbeat_interval: float = 5.0
    heartbeat_stale_after: float = 30.0
    sweep_interval: float = 10.0
    outbox_grace: float = 10.0
    sweep_batch_size: int = 200
    broker_visibility_timeout: int = 7200
    max_content_length: int = 100 * 1024 * 1024
    processor_image: str = "dockyard/processors:latest"
    storage_backend: str = "local"
    storage_local_root: str = "var/storage"
    storage_signing_key: str = ""
    public_base_url: str = "http://127.0.0.1:8000"
    s3_endpoint_url: str = ""
    s3_bucket: str = "dockyard"
    s3_public_endpoint_url: str = ""
    s3_region: str = "us-east-1"
    s3_create_bucket: bool = True
    # "presigned": users download from S3_PUBLIC_ENDPOINT_URL; "api": the API signs the URL
    # and streams the object (S3 not reachable by users, as in the compose stack's default).
    s3_downloads: str = "presigned"
    download_url_ttl: int = 3600
    download_url_max_ttl: int = 24 * 3600
    result_retention: int = 7 * 24 * 3600
    file_job_timeout_max: float = 3600.0
    quota_active_deployments: int = 3
    deploy_allowed_hosts: tuple[str, ...] = ("github.com",)
    deploy_git_protocols: str = "https"
    deploy_clone_timeout: float = 120.0
    deploy_max_repo_bytes: int = 200 * 1024 * 1024
    deploy_build_timeout: float = 600.0
    deploy_build_memory: int = 1024 * 1024 * 1024
    deploy_port_range: tuple[int, int] = (20000, 20999)
    deploy_bind_address: str = "127.0.0.1"
    deploy_public_host: str = "127.0.0.1"
    deploy_health_host: str = ""
    deploy_health_timeout: float = 60.0
    deploy_replace_grace: float = 10.0
    deploy_check_interval: float = 30.0
    deploy_image_retention: float = 7 * 24 * 3600.0
    deploy_memory: int = 512 * 1024 * 1024
    deploy_cpus: float = 1.0
    deploy_pids: int = 256
    # Image builds: a CFS quota of this many CPUs (cpuperiod/cpuquota of the build API) and,
    # where the worker can set it up, a pids cgroup for the build (workers/deploy/build.py).
    deploy_build_cpus: float = 1.0
    deploy_build_pids: int = 1024
    # Fernet key (or any 32+ character secret a key is derived from) encrypting deploy `env`
    # values at rest. Empty: derived from JWT_SECRET_KEY with a warning (refused in
    # production). Several comma-separated keys: the first encrypts, all decrypt (rotation).
    deploy_secrets_key: str = ""
    # Host firewall for deploy networks (workers/deploy/firewall.py): `auto` applies it when
    # the worker is root next to a local engine, `iptables` insists, `off` leaves it to ops.
    deploy_firewall: str = "auto"
    deploy_egress_deny: tuple[str, ...] = (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "169.254.0.0/16",
        "100.64.0.0/10",
    )
    reaper_interval: float = 60.0
    file_sweep_interval: float = 60.0
    log_level: str = "INFO"
    log_json: bool = True
    # The `service` field of log lines: the fleet or role (worker-files, beat...); empty
    # means "api" for the API and "worker" for Celery processes.
    service_name: str = ""
    metrics_token: str = ""
    # Job control (README, Job control). A delayed job may wait at most this long; waiting
    # (scheduled) jobs and recurring schedules are capped per user; a batch holds at most
    # BATCH_MAX_JOBS jobs.
    max_delay_seconds: int = 30 * 24 * 3600
    quota_scheduled_jobs: int = 1000
    quota_schedules: int = 20
    batch_max_jobs: int = 500
    # How often beat asks for due scheduled jobs to be released and for schedules to run;
    # a release also waits inside its tick for jobs due before the next one (README).
    release_interval: float = 0.5
    schedule_tick_interval: float = 1.0
    # Webhooks (README, Webhooks). Retries back off along WEBHOOK_BACKOFF (seconds, one per
    # retry, the last repeated); WEBHOOK_BACKOFF_SCALE compresses it (tests use a small one).
    quota_webhooks: int = 10
    webhook_timeout: float = 10.0
    webhook_max_attempts: int = 8
    webhook_backoff: tuple[float, ...] = (60.0, 300.0, 1800.0, 7200.0, 21600.0, 43200.0)
    webhook_backoff_scale: float = 1.0
    webhook_secret_overlap: int = 24 * 3600
    webhook_disable_after: int = 3 * 24 * 3600
    webhook_allow_http: bool = False
    webhook_allowed_networks: tuple[str, ...] = ()
    # Deliveries in flight at once per endpoint (across the fleet): a slow endpoint holds at
    # most this many worker slots.
    webhook_endpoint_concurrency: int = 2
    webhook_dispatch_interval: float = 1.0
    # Apps behind the reverse proxy (workers/deploy/proxy.py): every app answers at
    # http://<app>.<DEPLOY_DOMAIN>:<PROXY_PORT>/ (https on 443 with PROXY_HTTPS and a real
    # domain). The deploy workers configure Caddy through its admin API at PROXY_ADMIN_URL
    # (loopback only) and dial apps at PROXY_UPSTREAM_HOST (default: DEPLOY_HEALTH_HOST or
    # DEPLOY_BIND_ADDRESS; in the compose stack the host as seen from the proxy container).
    deploy_domain: str = "localhost"
    proxy_port: int = 8080
    proxy_admin_url: str = "http://127.0.0.1:2019"
    proxy_upstream_host: str = ""
    proxy_https: bool = False
    # How often a deploy worker compares the proxy's routes with the database and restores
    # them (a restarted proxy answers for every app again within about this long).
    proxy_sync_interval: float = 2.0
    # The images of an app's last this-many releases are kept for rollbacks.
    deploy_keep_releases: int = 5
    # GitHub push hooks accepted per app and minute (POST /hooks/github/{app}; 429 past it).
    hook_rate_per_minute: int = 60

    @property
    def is_production(self) -> bool:
        return self.env == "production"


# (attribute, environment variable, parser)
_SPEC: tuple[tuple[str, str, Callable[[str, str], Any]], ...] = (
    ("env", "DOCKYARD_ENV", _choice(*ENVIRONMENTS)),
    ("database_url", "DATABASE_URL", _url("postgresql+psycopg2", "postgresql", "sqlite")),
    ("broker_url", "CELERY_BROKER_URL", _url("redis", "rediss", "memory")),
    ("result_backend", "CELERY_RESULT_BACKEND", _text),
    ("redis_url", "REDIS_URL", _url("redis", "rediss")),
    ("jwt_secret_key", "JWT_SECRET_KEY", _text),
    ("jwt_access_token_expires", "JWT_ACCESS_TOKEN_EXPIRES", _int(1)),
    ("jwt_refresh_token_expires", "JWT_REFRESH_TOKEN_EXPIRES", _int(1)),
    ("quota_submits_per_minute", "QUOTA_SUBMITS_PER_MINUTE", _int(0)),
    ("quota_active_jobs", "QUOTA_ACTIVE_JOBS", _int(0)),
    ("login_max_failures", "LOGIN_MAX_FAILURES", _int(0)),
    ("auth_rate_per_minute", "AUTH_RATE_PER_MINUTE", _int(0)),
    ("trusted_proxies", "TRUSTED_PROXIES", _int(0, 5)),
    ("auth_hash_concurrency", "AUTH_HASH_CONCURRENCY", _int(0)),
    ("max_json_bytes", "MAX_JSON_BYTES", _int(1024)),
    ("max_streams_per_user", "MAX_STREAMS_PER_USER", _int(0)),
    ("job_max_attempts", "JOB_MAX_ATTEMPTS", _int(1, 100)),
    ("job_max_attempts_limit", "JOB_MAX_ATTEMPTS_LIMIT", _int(1, 100)),
    ("retry_backoff_base", "RETRY_BACKOFF_BASE", _float(0.0)),
    ("retry_backoff_max", "RETRY_BACKOFF_MAX", _float(0.0)),
    ("retry_jitter", "RETRY_JITTER", _float(0.0)),
    ("heartbeat_interval", "HEARTBEAT_INTERVAL", _float(0.1)),
    ("heartbeat_stale_after", "HEARTBEAT_STALE_AFTER", _float(0.5)),
    ("sweep_interval", "SWEEP_INTERVAL", _float(0.5)),
    ("outbox_grace", "OUTBOX_GRACE", _float(0.0)),
    ("sweep_batch_size", "SWEEP_BATCH_SIZE", _int(1, 10000)),
    ("broker_visibility_timeout", "BROKER_VISIBILITY_TIMEOUT", _int(60)),
    ("max_content_length", "MAX_CONTENT_LENGTH", _int(1024)),
    ("processor_image", "PROCESSOR_IMAGE", _text),
    ("storage_backend", "STORAGE_BACKEND", _choice("local", "s3")),
    ("storage_local_root", "STORAGE_LOCAL_ROOT", _text),
    ("storage_signing_key", "STORAGE_SIGNING_KEY", _text),
    ("public_base_url", "PUBLIC_BASE_URL", _url("http", "https")),
    ("s3_endpoint_url", "S3_ENDPOINT_URL", _url("http", "https")),
    ("s3_bucket", "S3_BUCKET", _text),
    ("s3_public_endpoint_url", "S3_PUBLIC_ENDPOINT_URL", _url("http", "https")),
    ("s3_region", "S3_REGION", _text),
    ("s3_create_bucket", "S3_CREATE_BUCKET", _bool),
    ("s3_downloads", "S3_DOWNLOADS", _choice("presigned", "api")),
    ("download_url_ttl", "DOWNLOAD_URL_TTL", _int(1)),
    ("download_url_max_ttl", "DOWNLOAD_URL_MAX_TTL", _int(1)),
    ("result_retention", "RESULT_RETENTION", _int(1)),
    ("file_job_timeout_max", "FILE_JOB_TIMEOUT_MAX", _float(0.1)),
    ("reaper_interval", "REAPER_INTERVAL", _float(1)),
    ("file_sweep_interval", "FILE_SWEEP_INTERVAL", _float(1)),
    ("quota_active_deployments", "QUOTA_ACTIVE_DEPLOYMENTS", _int(0)),
    ("deploy_allowed_hosts", "DEPLOY_ALLOWED_HOSTS", _hosts),
    ("deploy_git_protocols", "DEPLOY_GIT_PROTOCOLS", _protocols),
    ("deploy_clone_timeout", "DEPLOY_CLONE_TIMEOUT", _float(1)),
    ("deploy_max_repo_bytes", "DEPLOY_MAX_REPO_BYTES", _int(1024)),
    ("deploy_build_timeout", "DEPLOY_BUILD_TIMEOUT", _float(1)),
    ("deploy_build_memory", "DEPLOY_BUILD_MEMORY", _int(64 * 1024 * 1024)),
    ("deploy_port_range", "DEPLOY_PORT_RANGE", _port_range),
    ("deploy_bind_address", "DEPLOY_BIND_ADDRESS", _text),
    ("deploy_public_host", "DEPLOY_PUBLIC_HOST", _text),
    ("deploy_health_host", "DEPLOY_HEALTH_HOST", _text),
    ("deploy_health_timeout", "DEPLOY_HEALTH_TIMEOUT", _float(1)),
    ("deploy_replace_grace", "DEPLOY_REPLACE_GRACE", _float(0)),
    ("deploy_check_interval", "DEPLOY_CHECK_INTERVAL", _float(1)),
    ("deploy_image_retention", "DEPLOY_IMAGE_RETENTION", _float(0)),
    ("deploy_memory", "DEPLOY_MEMORY", _int(16 * 1024 * 1024)),
    ("deploy_cpus", "DEPLOY_CPUS", _float(0.1)),
    ("deploy_pids", "DEPLOY_PIDS", _int(16)),
    ("deploy_build_cpus", "DEPLOY_BUILD_CPUS", _float(0.01)),
    ("deploy_build_pids", "DEPLOY_BUILD_PIDS", _int(16)),
    ("deploy_secrets_key", "DEPLOY_SECRETS_KEY", _text),
    ("deploy_firewall", "DEPLOY_FIREWALL", _choice("auto", "iptables", "off")),
    ("deploy_egress_deny", "DEPLOY_EGRESS_DENY", _cidrs),
    ("log_level", "LOG_LEVEL", _choice("DEBUG", "INFO", "WARNING", "ERROR")),
    ("log_json", "LOG_JSON", _bool),
    ("service_name", "DOCKYARD_SERVICE", _text),
    ("metrics_token", "METRICS_TOKEN", lambda _n, raw: raw),
    ("max_delay_seconds", "MAX_DELAY_SECONDS", _int(1)),
    ("quota_scheduled_jobs", "QUOTA_SCHEDULED_JOBS", _int(0)),
    ("quota_schedules", "QUOTA_SCHEDULES", _int(0)),
    ("batch_max_jobs", "BATCH_MAX_JOBS", _int(1, 10000)),
    ("release_interval", "RELEASE_INTERVAL", _float(0.1)),
    ("quota_webhooks", "QUOTA_WEBHOOKS", _int(0)),
    ("webhook_timeout", "WEBHOOK_TIMEOUT", _float(0.1)),
    ("webhook_max_attempts", "WEBHOOK_MAX_ATTEMPTS", _int(1, 100)),
    ("webhook_backoff", "WEBHOOK_BACKOFF", _seconds_list),
    ("webhook_backoff_scale", "WEBHOOK_BACKOFF_SCALE", _float(0.0)),
    ("webhook_secret_overlap", "WEBHOOK_SECRET_OVERLAP", _int(0)),
    ("webhook_disable_after", "WEBHOOK_DISABLE_AFTER", _int(1)),
    ("webhook_allow_http", "WEBHOOK_ALLOW_HTTP", _bool),
    ("webhook_allowed_networks", "WEBHOOK_ALLOWED_NETWORKS", _networks),
    ("webhook_endpoint_concurrency", "WEBHOOK_ENDPOINT_CONCURRENCY", _int(1, 1000)),
    ("webhook_dispatch_interval", "WEBHOOK_DISPATCH_INTERVAL", _float(0.1)),
    ("schedule_tick_interval", "SCHEDULE_TICK_INTERVAL", _float(0.1)),
    ("deploy_domain", "DEPLOY_DOMAIN", _text),
    ("proxy_port", "PROXY_PORT", _int(1, 65535)),
    ("proxy_admin_url", "PROXY_ADMIN_URL", _url("http", "https")),
    ("proxy_upstream_host", "PROXY_UPSTREAM_HOST", _text),
    ("proxy_https", "PROXY_HTTPS", _bool),
    ("proxy_sync_interval", "PROXY_SYNC_INTERVAL", _float(0.1)),
    ("deploy_keep_releases", "DEPLOY_KEEP_RELEASES", _int(1, 1000)),
    ("hook_rate_per_minute", "HOOK_RATE_PER_MINUTE", _int(0)),
)


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every setting; raise ConfigError naming the first bad variable."""
    source = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for attribute, variable, parse in _SPEC:
        raw = source.get(variable)
        if raw is None or (raw == "" and attribute != "metrics_token"):
            continue
        values[attribute] = parse(variable, raw)
    settings = Settings(**values)
    if not settings.result_backend:
        settings = replace(settings, result_backend=_result_backend_for(settings.database_url))
    _check_consistency(settings, source)
    return settings


def _result_backend_for(database_url: str) -> str:
    """Celery's database backend wants the `db+` prefix and an explicit psycopg2 driver."""
    if database_url.startswith("postgresql://"):
        database_url = "postgresql+psycopg2://" + database_url[len("postgresql://") :]
    return "db+" + database_url


def _check_consistency(settings: Settings, environ: Mapping[str, str] | None = None) -> None:
    if settings.is_production:
        _check_production_secrets(settings, os.environ if environ is None else environ)
    if settings.is_production and not settings.deploy_secrets_key:
        raise ConfigError(
            "DEPLOY_SECRETS_KEY",
            "must be set when DOCKYARD_ENV=production (it encrypts deploy env values; "
            "a Fernet key: `python3 -c 'from cryptography.fernet import Fernet; "
            "print(Fernet.generate_key().decode())'`)",
        )
    if settings.job_max_attempts > settings.job_max_attempts_limit:
        raise ConfigError("JOB_MAX_ATTEMPTS", "must not exceed JOB_MAX_ATTEMPTS_LIMIT")
    if settings.download_url_ttl > settings.download_url_max_ttl:
        raise ConfigError("DOWNLOAD_URL_TTL", "must not exceed DOWNLOAD_URL_MAX_TTL")
    if settings.retry_jitter > 1:
        raise ConfigError("RETRY_JITTER", "must be between 0 and 1")
    if settings.heartbeat_stale_after <= settings.heartbeat_interval:
        raise ConfigError("HEARTBEAT_STALE_AFTER", "must be longer than HEARTBEAT_INTERVAL")
    if settings.broker_visibility_timeout <= settings.retry_backoff_max:
        raise ConfigError(
            "BROKER_VISIBILITY_TIMEOUT",
            "must be longer than RETRY_BACKOFF_MAX, or delayed retries get delivered twice",
        )


def _is_shipped(value: str) -> bool:
    """A value the repository ships, or an edit of a placeholder that still says so."""
    lowered = value.strip().lower()
    return lowered in SHIPPED_SECRETS or "change-me" in lowered or "changeme" in lowered


def _check_production_secrets(settings: Settings, environ: Mapping[str, str]) -> None:
    """Refuse any secret the repository ships, or a short one, naming the variable (never
    the value). Variables the settings do not parse (AWS_*, FLOWER_BASIC_AUTH,
    DEPLOY_SECRETS_KEY) are read from the environment the processes get them from."""
    candidates: list[tuple[str, str]] = [("JWT_SECRET_KEY", settings.jwt_secret_key)]
    for variable in ("STORAGE_SIGNING_KEY", "METRICS_TOKEN"):
        if environ.get(variable):
            candidates.append((variable, environ[variable]))
    for key in environ.get("DEPLOY_SECRETS_KEY", "").split(","):  # several while rotating
        if key.strip():
            candidates.append(("DEPLOY_SECRETS_KEY", key.strip()))
    if settings.storage_backend == "s3" and environ.get("AWS_SECRET_ACCESS_KEY"):
        candidates.append(("AWS_SECRET_ACCESS_KEY", environ["AWS_SECRET_ACCESS_KEY"]))
    for variable, value in candidates:
        if _is_shipped(value):
            raise ConfigError(variable, _SHIPPED_MESSAGE)
        if variable in _SECRETS_WITH_LENGTH and len(value) < SECRET_MIN_LENGTH:
            raise ConfigError(
                variable, f"must be at least {SECRET_MIN_LENGTH} characters in production"
            )
    for pair in filter(None, environ.get("FLOWER_BASIC_AUTH", "").split(",")):
        password = pair.partition(":")[2]
        if _is_shipped(pair) or _is_shipped(password):
            raise ConfigError("FLOWER_BASIC_AUTH", _SHIPPED_MESSAGE)
        if len(password) < SECRET_MIN_LENGTH:
            raise ConfigError(
                "FLOWER_BASIC_AUTH",
                f"passwords must be at least {SECRET_MIN_LENGTH} characters in production",
            )
    if _is_shipped(unquote(urlparse(settings.database_url).password or "")):
        raise ConfigError("DATABASE_URL", "password " + _SHIPPED_MESSAGE)


_SHIPPED_MESSAGE = (
    "must not be a value the repository ships (.env.example, docker-compose.yml, deploy/k8s, "
    "a development default) when DOCKYARD_ENV=production: set a random secret (`make up` "
    "writes them to .env; `openssl rand -hex 32` makes one)"
)


_cached: Settings | None = None


def get_settings() -> Settings:
    """Process-wide settings, loaded once from the environment."""
    global _cached
    if _cached is None:
        _cached = load_settings()
    return _cached


def reset_settings_cache() -> None:
    """Forget cached settings (tests change the environment between apps)."""
    global _cached
    _cached = None
