"""A stand-in for GitHub: local bare repositories that git reaches through its own
`url.<base>.insteadOf` rewrite, so the platform's real URL validation and clone path run
unchanged on `https://github.com/<owner>/<repo>` URLs (see ../shared/ENVIRONMENT.md)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import docker
from docker.errors import APIError

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "deploy"
OWNER = "dockyard-tests"


def _git(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=Dockyard Tests", "-c", "user.email=tests@example.com", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


class FakeGitHub:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.repos = root / "repos"
        self.repos.mkdir(parents=True, exist_ok=True)
        self.gitconfig = root / "gitconfig"
        self.gitconfig.write_text(
            f'[url "file://{self.repos}/"]\n\tinsteadOf = https://github.com/{OWNER}/\n'
            "[init]\n\tdefaultBranch = main\n"
        )

    def url(self, name: str) -> str:
        return f"https://github.com/{OWNER}/{name}"

    def publish(
        self, name: str, fixture: str | None = None, extra: dict[str, str] | None = None
    ) -> str:
        """Commit the fixture's files (plus `extra`) and push to the bare repository `name`;
        returns the commit SHA."""
        bare = self.repos / name
        if not bare.exists():
            _git("init", "-q", "--bare", "-b", "main", str(bare))
        work = self.root / "work" / name
        if work.exists():
            shutil.rmtree(work)
        _git("clone", "-q", str(bare), str(work))
        for item in work.iterdir():
            if item.name != ".git":
                shutil.rmtree(item) if item.is_dir() else item.unlink()
        shutil.copytree(FIXTURES / (fixture or name), work, dirs_exist_ok=True)
        for filename, text in (extra or {}).items():
            (work / filename).write_text(text)
        _git("add", "-A", cwd=work)
        _git("commit", "-q", "--allow-empty", "-m", f"publish {name}", cwd=work)
        _git("push", "-q", "origin", "HEAD:main", cwd=work)
        return _git("rev-parse", "HEAD", cwd=work)

    def branch(self, name: str, branch: str, commit: str) -> None:
        """Point `branch` of repository `name` at `commit`."""
        _git("branch", "-f", branch, commit, cwd=self.repos / name)

    def route(self, name: str, server: str) -> None:
        """Clone repository `name` from `server` (the base URL of a test's http:// git
        server: `<server><name>`) instead of file://: git picks the longest insteadOf."""
        with self.gitconfig.open("a") as config:
            config.write(
                f'[url "{server}{name}"]\n\tinsteadOf = https://github.com/{OWNER}/{name}\n'
            )

    def remove_images(self) -> int:
        """Remove the images deploys of these repositories built. Deployments keep their
        image when stopped (cached redeploys), and every test run publishes new commits, so
        without this each run would leave a few more tags behind."""
        client = docker.from_env()
        prefix = f"dockyard-deploy/{OWNER}-"
        removed = 0
        try:
            for image in client.images.list():
                for tag in image.tags:
                    if tag.startswith(prefix):
                        try:
                            client.images.remove(tag)
                            removed += 1
                        except APIError:  # still used by a container another test left
                            pass
        finally:
            client.close()
        return removed


class SlowGitHttpServer:
    """The bare repositories of a FakeGitHub served over git's smart HTTP by `git
    http-backend` (real protocol, real packs), each response sent at `bytes_per_second`: a
    slow link, so a test can watch what the platform does while a clone is downloading.
    Records how many response bytes went out and whether a client hung up mid-response.

    With `token`, a private host: every request needs HTTP Basic auth with the token as the
    password (any user name, as GitHub takes an access token), else 401 asking for it."""

    def __init__(self, github: FakeGitHub, bytes_per_second: int, token: str | None = None) -> None:
        import http.server
        import threading

        self.github = github
        self.rate = bytes_per_second
        self.token = token
        self.refused = 0
        self.users: set[str] = set()
        self.sent = 0
        self.hung_up = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                server._serve(self)

            def do_POST(self) -> None:  # noqa: N802
                server._serve(self)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/"

    def _serve(self, request) -> None:  # noqa: ANN001 - a BaseHTTPRequestHandler
        import time
        from urllib.parse import urlsplit

        path = urlsplit(request.path)
        body = request.rfile.read(int(request.headers.get("Content-Length") or 0))
        if not self._authorized(request.headers.get("Authorization", "")):
            self.refused += 1
            request.send_response(401)
            request.send_header("WWW-Authenticate", 'Basic realm="git"')
            request.send_header("Content-Length", "0")
            request.end_headers()
            return
        env = {
            "PATH": "/usr/bin:/bin",
            "GIT_PROJECT_ROOT": str(self.github.repos),
            "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": request.command,
            "PATH_INFO": path.path,
            "QUERY_STRING": path.query,
            "CONTENT_TYPE": request.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "HTTP_CONTENT_ENCODING": request.headers.get("Content-Encoding", ""),
            "GIT_PROTOCOL": request.headers.get("Git-Protocol", ""),
            "REMOTE_ADDR": "127.0.0.1",
        }
        output = subprocess.run(
            ["git", "http-backend"], input=body, env=env, capture_output=True, check=False
        ).stdout
        head, _, payload = output.partition(b"\r\n\r\n")
        headers = [line.split(": ", 1) for line in head.decode().split("\r\n") if ": " in line]
        status = next((int(v.split()[0]) for k, v in headers if k == "Status"), 200)
        request.send_response(status)
        for key, value in headers:
            if key != "Status":
                request.send_header(key, value)
        request.send_header("Content-Length", str(len(payload)))
        request.end_headers()
        chunk = max(self.rate // 10, 1)
        try:
            for start in range(0, len(payload), chunk):
                piece = payload[start : start + chunk]
                request.wfile.write(piece)
                request.wfile.flush()
                self.sent += len(piece)
                time.sleep(len(piece) / self.rate)  # the link's speed
        except (BrokenPipeError, ConnectionResetError):
            self.hung_up.set()

    def _authorized(self, header: str) -> bool:
        """No token: a public host. Else Basic credentials whose password is the token."""
        import base64
        import binascii
        import hmac

        if self.token is None:
            return True
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        self.users.add(user)
        return hmac.compare_digest(password.encode(), self.token.encode())

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
