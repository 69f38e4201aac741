"""A platform of its own for fault tests: a private Redis or PostgreSQL that a test may
shut down and start again, and the API under gunicorn as a subprocess on them, so no other
test's worker or database is disturbed."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import redis
import requests
from redis import Redis

from tests.helpers import PASSWORD, free_port, wait_for
from tests.integration.workers import Process

GUNICORN = str(Path(sys.executable).with_name("gunicorn"))


class PrivateRedis:
    """A redis-server without persistence on a port of its own."""

    def __init__(self, tmp_path: Path) -> None:
        self.port = free_port()
        self.tmp_path = tmp_path
        self.process: subprocess.Popen[bytes] | None = None
        self.client = Redis(port=self.port, socket_timeout=2)

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.tmp_path),
            ],
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_for(self._answers, timeout=10, message="redis to start")

    def _answers(self) -> bool:
        try:
            return bool(self.client.ping())
        except Exception:
            return False

    def lose_everything(self) -> None:
        """SHUTDOWN NOSAVE, then the same server started again: every key is gone."""
        assert self.process is not None
        self.client.set("test:sentinel", 1)
        with suppress(redis.ConnectionError):  # the connection drops as the server exits
            self.client.shutdown(nosave=True)
        self.process.wait(timeout=10)
        self.client.connection_pool.disconnect()
        self.start()
        # Running workers write their liveness keys again at once; what was there is gone.
        assert not self.client.exists("test:sentinel")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


@contextmanager
def api_server(tmp_path: Path, env: dict[str, str]) -> Iterator[str]:
    port = free_port()
    process = Process(
        [
            GUNICORN,
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "--threads",
            "4",
            "api.wsgi:app",
        ],
        tmp_path / "api.log",
        env,
    )
    base = f"http://127.0.0.1:{port}/api/v1"

    def up() -> bool:
        try:
            return requests.get(f"{base}/healthz", timeout=5).status_code == 200
        except requests.RequestException:
            return process.popen.poll() is not None

    try:
        wait_for(up, timeout=30, message="the API to start")
        assert process.popen.poll() is None, process.log()
        yield base
    finally:
        process.stop()


class Api:
    def __init__(self, base: str) -> None:
        self.base = base
        email = f"loss-{uuid.uuid4().hex[:10]}@example.com"
        body = {"email": email, "password": PASSWORD}
        assert requests.post(f"{base}/auth/register", json=body, timeout=10).status_code == 201
        token = requests.post(f"{base}/auth/login", json=body, timeout=10).json()["access_token"]
        self.headers = {"Authorization": f"Bearer {token}"}

    def get(self, path: str) -> Any:
        response = requests.get(f"{self.base}{path}", headers=self.headers, timeout=10)
        assert response.status_code == 200, response.text
        return response.json()

    def submit(self, processor: str, params: dict[str, Any]) -> uuid.UUID:
        response = requests.post(
            f"{self.base}/jobs",
            json={"processor": processor, "params": params},
            headers=self.headers,
            timeout=10,
        )
        assert response.status_code == 202, response.text
        return uuid.UUID(response.json()["id"])


PG_BIN = (
    Path("/usr/lib/postgresql")
    / max((p.name for p in Path("/usr/lib/postgresql").iterdir()), key=lambda v: int(v))
    / "bin"
    if Path("/usr/lib/postgresql").is_dir()
    else Path("/usr/bin")
)


class PrivatePostgres:
    """A PostgreSQL cluster of the test's own (initdb in a temporary directory, run as the
    `postgres` user), which the test may restart with jobs in flight."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="dockyard-pg-"))
        shutil.chown(self.dir, "postgres", "postgres")
        self.data = self.dir / "data"
        self.url = f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/dockyard"

    def _as_postgres(self, *args: str) -> None:
        subprocess.run(
            ["su", "postgres", "-s", "/bin/sh", "-c", " ".join(shlex.quote(a) for a in args)],
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def _pg_ctl(self, action: str) -> None:
        self._as_postgres(
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.dir / "log"),
            "-w",
            "-m",
            "fast",
            "-o",
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1",
            action,
        )

    def start(self) -> None:
        self._as_postgres(
            str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust"
        )
        self._pg_ctl("start")
        self._as_postgres(
            str(PG_BIN / "createdb"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "dockyard",
        )

    def restart(self) -> None:
        """A fast shutdown (every connection is terminated) and a start."""
        self._pg_ctl("restart")

    def stop(self) -> None:
        with suppress(subprocess.CalledProcessError):
            self._pg_ctl("stop")
        shutil.rmtree(self.dir, ignore_errors=True)


@contextmanager
def scratch_database(database_url: str, suffix: str) -> Iterator[str]:
    """A migrated database of the test's own in the tests' PostgreSQL (dropped afterwards),
    so a platform stack the test runs never sees rows other tests left (its sweeps would
    act on them) and its rows reach no other test."""
    from sqlalchemy import create_engine, make_url, text

    from shared.db import get_engine
    from shared.migrate import upgrade

    base = make_url(database_url)
    name = f"{base.database}_{suffix}"
    admin = create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = base.set(database=name).render_as_string(hide_password=False)
    upgrade(url)
    try:
        yield url
    finally:
        get_engine(url).dispose()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
