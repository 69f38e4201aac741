"""The `dockyard` command line as a user runs it: the installed console script
(`.venv/bin/dockyard`) in a subprocess, against a live API over HTTP, with HOME and
XDG_CONFIG_HOME in the test's own directory. Exit codes, stdout/stderr separation, the
credentials file's mode, Ctrl-C, and the progress bar drawn in a real terminal (tmux)."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import docker
import pytest

from shared.config import get_settings
from tests.helpers import wait_for
from tests.integration.git_repos import OWNER, FakeGitHub
from tests.integration.live_server import new_account, serve
from tests.integration.workers import deploy_fleet
from workers.deploy.lifecycle import release_stopped_images

DOCKYARD = str(Path(sys.executable).with_name("dockyard"))
#: The progress bar's percentage, as rich draws it.
PERCENT = re.compile(r"(\d{1,3})%")


@pytest.fixture(scope="module")
def api(settings, job_worker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The live API (diagnostics jobs run on the session's worker); webhooks may point at
    a local address, so `webhooks create` has a URL it accepts."""
    env = {"WEBHOOK_ALLOW_HTTP": "true", "WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8"}
    with serve(tmp_path_factory.mktemp("cli-api"), env) as base:
        yield base


class Cli:
    """One user's shell: its own HOME and config directory, the API URL in the
    environment, and `run(...)` to call `dockyard` there."""

    def __init__(self, home: Path, api: str) -> None:
        self.home = home
        self.config = home / ".config"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("DOCKYARD_")},
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(self.config),
            "DOCKYARD_API_URL": api,
            "NO_COLOR": "1",
        }
        self.env.pop("COLUMNS", None)
        home.mkdir(parents=True, exist_ok=True)

    @property
    def credentials(self) -> Path:
        return self.config / "dockyard" / "credentials.json"

    def run(
        self,
        *args: str,
        stdin: str | None = None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        timeout: float = 90,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [DOCKYARD, *args],
            input=stdin,
            env={**self.env, **(env or {})},
            cwd=cwd or self.home,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def ok(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        done = self.run(*args, **kwargs)
        assert done.returncode == 0, (done.returncode, done.stdout, done.stderr)
        return done

    def json(self, *args: str, **kwargs: Any) -> Any:
        return json.loads(self.ok(*args, "--json", **kwargs).stdout)

    def login(self, email: str, password: str) -> None:
        self.ok("login", "--email", email, "--password-stdin", stdin=password + "\n")


def logged_in(tmp_path: Path, api: str, *, admin: bool = False) -> Cli:
    cli = Cli(tmp_path / ("admin-home" if admin else "home"), api)
    cli.login(*new_account(api, admin=admin))
    return cli


@pytest.fixture()
def cli(tmp_path: Path, api: str) -> Cli:
    return logged_in(tmp_path, api)


def job_status(cli: Cli, job_id: str) -> str:
    return str(cli.json("jobs", "show", job_id)["status"])


# --- login ---------------------------------------------------------------------------------


def test_login_saves_0600_credentials_whoami_and_logout_revokes(tmp_path: Path, api: str) -> None:
    cli = Cli(tmp_path / "home", api)
    email, password = new_account(api)
    done = cli.ok("login", "--email", email, "--password-stdin", stdin=password + "\n")
    assert done.stdout == ""  # nothing for a pipe: the confirmation is on stderr
    assert email in done.stderr
    mode = stat.S_IMODE(cli.credentials.stat().st_mode)
    assert mode == 0o600, oct(mode)
    assert stat.S_IMODE(cli.credentials.parent.stat().st_mode) == 0o700
    saved = json.loads(cli.credentials.read_text())
    assert saved["email"] == email and saved["api_url"] == api
    assert saved["access_token"] and saved["refresh_token"]
    assert password not in cli.credentials.read_text()

    assert email in cli.ok("whoami").stdout
    assert cli.json("whoami")["email"] == email

    cli.ok("logout")
    assert not cli.credentials.exists()
    done = cli.run("whoami")
    assert done.returncode == 3
    assert "error: " in done.stderr and "dockyard login" in done.stderr
    # Revoked on the server, not only forgotten here.
    done = cli.run("whoami", env={"DOCKYARD_TOKEN": saved["access_token"]})
    assert done.returncode == 3 and "token_revoked" in done.stderr, done.stderr


def test_login_asks_for_the_password_without_echo(tmp_path: Path, api: str) -> None:
    """A real terminal (a pty): the prompt appears and the typed password is not echoed."""
    cli = Cli(tmp_path / "home", api)
    email, password = new_account(api)
    output = run_in_pty(cli, ["login", "--email", email], answers={"Password": password})
    assert "Password:" in output
    assert password not in output
    assert f"as {email}" in output
    assert stat.S_IMODE(cli.credentials.stat().st_mode) == 0o600


def run_in_pty(cli: Cli, args: list[str], answers: dict[str, str], timeout: float = 30) -> str:
    """Run `dockyard` with a pty as its terminal, typing each answer once its prompt shows;
    returns everything the terminal displayed."""
    import pty

    master, slave = pty.openpty()
    process = subprocess.Popen(
        [DOCKYARD, *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=cli.env,
        cwd=cli.home,
        start_new_session=True,
    )
    os.close(slave)
    seen, pending = b"", dict(answers)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
            for prompt in list(pending):
                if prompt.encode() in seen:
                    os.write(master, pending.pop(prompt).encode() + b"\r")
        assert process.wait(timeout=timeout) == 0, seen.decode(errors="replace")
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
    return seen.decode(errors="replace")


def test_refreshed_tokens_are_saved_back(tmp_path: Path, settings, job_worker) -> None:
    """Access tokens that expire in 2 s: the next command refreshes by itself and the new
    tokens replace the old ones in the file (still 0600)."""
    (tmp_path / "short").mkdir()
    with serve(tmp_path / "short", {"JWT_ACCESS_TOKEN_EXPIRES": "2"}, workers=1) as base:
        cli = Cli(tmp_path / "home", base)
        cli.login(*new_account(base))
        before = json.loads(cli.credentials.read_text())
        time.sleep(2.5)  # the token's lifetime is the point of this test
        cli.ok("whoami")
        after = json.loads(cli.credentials.read_text())
        assert after["access_token"] != before["access_token"]
        assert after["refresh_token"] != before["refresh_token"]
        assert stat.S_IMODE(cli.credentials.stat().st_mode) == 0o600
        cli.ok("whoami")  # the saved refresh token is the live one

        # Commands started together with an expired token refresh once between them: two
        # spends of one refresh token would look like a theft and end the login. The wait is
        # the access token's 2 s lifetime again: nothing to poll, the clock is the point.
        time.sleep(2.5)
        together = [
            subprocess.Popen(
                [DOCKYARD, "whoami"],
                env=cli.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(8)
        ]
        outcomes = [(p.wait(timeout=60), p.communicate()[1]) for p in together]
        assert all(code == 0 for code, _ in outcomes), outcomes
        cli.ok("whoami")


# --- errors and exit codes -----------------------------------------------------------------


def test_usage_errors_exit_2(cli: Cli) -> None:
    for args in (
        ["no-such-command"],
        ["run", "--no-such-option", "debug.echo"],
        ["run"],
        ["run", "debug.echo", "--param", "no-equals-sign"],
        ["run", "debug.echo", "--at", "2030-01-01T00:00:00Z", "--in", "5m"],
        ["run", "debug.echo", "--in", "soon"],
        ["run", "debug.echo", "--priority", "urgent"],
        ["run", "debug.echo", "--out", "x"],
        ["run", "debug.echo", "--wait", "--out", "/no/such/directory/result.json"],
        ["run", "text.stats", "/no/such/file.txt"],
        ["jobs", "download", str(uuid.uuid4()), "--out", "/no/such/directory/x"],
    ):
        done = cli.run(*args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert done.stdout == ""


def test_a_bad_token_and_an_unreachable_api_exit_3(cli: Cli) -> None:
    done = cli.run("jobs", "ls", env={"DOCKYARD_TOKEN": "not-a-token"})
    assert done.returncode == 3
    assert done.stderr.startswith("error: "), done.stderr
    assert "request id: " in done.stderr
    done = cli.run("--api-url", "http://127.0.0.1:9", "processors")
    assert done.returncode == 3
    assert done.stderr.startswith("error: "), done.stderr


def test_bad_params_exit_3_with_the_422_details(cli: Cli) -> None:
    done = cli.run("run", "debug.sleep", "--param", "seconds=forever")
    assert done.returncode == 3
    assert "error: invalid_params: " in done.stderr
    assert "params.seconds: Not a valid number." in done.stderr, done.stderr
    assert "request id: " in done.stderr
    assert done.stdout == ""


# --- processors and run --------------------------------------------------------------------


def test_processors_table_and_json(cli: Cli) -> None:
    table = cli.ok("processors").stdout
    assert "NAME" in table.splitlines()[0]
    assert "debug.sleep" in table and "seconds*" in table
    names = {p["name"] for p in cli.json("processors")}
    assert {"debug.echo", "debug.sleep", "image.thumbnail"} <= names


def test_run_wait_prints_the_outcome_and_exits_0(cli: Cli) -> None:
    done = cli.ok(
        "run", "debug.echo", "--param", "message=hello there", "--label", "team=cli", "--wait"
    )
    line = done.stdout.strip()
    assert re.fullmatch(r'job [0-9a-f-]{36} succeeded: \{"message": "hello there"\}', line), line
    job_id = line.split()[1]
    job = cli.json("jobs", "show", job_id)
    assert job["labels"] == {"team": "cli"} and job["params"]["message"] == "hello there"


def test_param_values_are_json_when_they_parse(cli: Cli) -> None:
    job = cli.json(
        "run", "debug.sleep", "-p", "seconds=0.2", "-p", "steps=2", "--priority", "high", "--wait"
    )
    assert job["status"] == "succeeded"
    assert job["params"]["seconds"] == 0.2 and job["params"]["steps"] == 2
    assert job["priority"] == "high"
    assert job["result"] == {"slept_seconds": 0.2, "steps": 2}


def test_run_wait_json_keeps_stdout_one_document(cli: Cli) -> None:
    done = cli.ok("run", "debug.sleep", "-p", "seconds=0.6", "-p", "steps=3", "--wait", "--json")
    job = json.loads(done.stdout)  # the whole of stdout is the job
    assert job["status"] == "succeeded"
    assert "progress" not in done.stdout.replace('"progress"', "")
    # Without a terminal the progress is plain lines on stderr.
    assert f"job {job['id']} progress 3/3" in done.stderr, done.stderr


def test_a_failed_job_exits_1(cli: Cli) -> None:
    done = cli.run("run", "debug.fail", "--param", "permanent=true", "--wait")
    assert done.returncode == 1, done.stderr
    assert re.search(r"job \S+ failed: debug_permanent_failure: ", done.stdout), done.stdout


def test_a_dead_job_exits_1(cli: Cli) -> None:
    done = cli.run("run", "debug.fail", "-p", "fail_times=3", "--max-attempts", "1", "--wait")
    assert done.returncode == 1, done.stderr
    assert re.search(r"job \S+ dead: debug_transient_failure: ", done.stdout), done.stdout


def test_delayed_jobs_cancel_and_retry(cli: Cli) -> None:
    later = cli.json("run", "debug.echo", "-p", "message=later", "--in", "1h")
    assert later["status"] == "scheduled" and later["run_at"]
    when = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
    at = cli.json("run", "debug.echo", "-p", "message=at", "--at", when.isoformat())
    assert at["status"] == "scheduled"
    assert datetime.fromisoformat(at["run_at"]) == when
    local = when.astimezone().replace(tzinfo=None).isoformat()  # no offset: local time
    at_local = cli.json("run", "debug.echo", "-p", "message=at", "--at", local)
    assert at_local["run_at"] == at["run_at"]
    for job in (at, at_local):
        cli.ok("jobs", "cancel", job["id"])
    done = cli.ok("jobs", "cancel", later["id"])
    assert done.stdout.strip() == f"job {later['id']} cancelled"
    assert job_status(cli, later["id"]) == "cancelled"
    again = cli.run("jobs", "cancel", later["id"])
    assert again.returncode == 3 and "error: " in again.stderr  # 409: already finished
    cli.ok("jobs", "retry", later["id"])
    assert job_status(cli, later["id"]) in ("queued", "running", "succeeded")
    wait_for(lambda: job_status(cli, later["id"]) == "succeeded", timeout=30)


# --- jobs ----------------------------------------------------------------------------------


def test_jobs_ls_show_events_logs_watch(cli: Cli) -> None:
    tag = uuid.uuid4().hex[:8]
    first = cli.json("run", "debug.echo", "-p", "message=one", "-l", f"batch={tag}", "--wait")
    second = cli.json("run", "debug.sleep", "-p", "seconds=0.2", "-l", f"batch={tag}", "--wait")
    listed = cli.json("jobs", "ls", "--label", f"batch={tag}")
    assert [job["id"] for job in listed] == [second["id"], first["id"]]  # newest first
    assert len(cli.json("jobs", "ls", "--label", f"batch={tag}", "--limit", "1")) == 1
    only = cli.json("jobs", "ls", "--label", f"batch={tag}", "--processor", "debug.echo")
    assert [job["id"] for job in only] == [first["id"]]
    table = cli.ok("jobs", "ls", "--label", f"batch={tag}").stdout
    assert first["id"] in table and second["id"] in table and "succeeded" in table

    shown = cli.ok("jobs", "show", first["id"]).stdout
    assert "succeeded" in shown and '{"message":"one"}' in shown

    events = cli.json("jobs", "events", second["id"])
    assert [e["type"] for e in events][0] == "submitted"
    assert events[-1]["type"] == "succeeded"
    assert "progress" in cli.ok("jobs", "events", second["id"]).stdout

    assert cli.json("jobs", "logs", first["id"]) == []  # diagnostics write no container log

    watched = cli.ok("jobs", "watch", second["id"]).stdout  # an ended job: replay, exit 0
    assert "submitted" in watched and "succeeded" in watched
    lines = cli.ok("jobs", "watch", second["id"], "--json").stdout.splitlines()
    assert json.loads(lines[-1])["type"] == "succeeded"
    failed = cli.run("run", "debug.fail", "-p", "permanent=true", "--json")
    job_id = json.loads(failed.stdout)["id"]
    assert cli.run("jobs", "watch", job_id).returncode == 1

    missing = cli.run("jobs", "show", str(uuid.uuid4()))
    assert missing.returncode == 3 and "error: not_found: " in missing.stderr


# --- file jobs -----------------------------------------------------------------------------


def test_a_file_job_downloads_its_result_and_never_overwrites(
    cli: Cli, files_worker, tmp_path: Path
) -> None:
    source = tmp_path / "words.txt"
    source.write_text("the fox and the dog\nthe end\n")
    out = tmp_path / "stats.json"
    done = cli.ok("run", "text.stats", str(source), "--wait", "--out", str(out), timeout=180)
    assert re.fullmatch(rf"job \S+ succeeded: saved {re.escape(str(out))}", done.stdout.strip())
    stats = json.loads(out.read_text())
    assert stats["lines"] == 2, stats

    # An existing --out is refused before anything is submitted.
    out.write_text("mine")
    refused = cli.run("run", "text.stats", str(source), "--wait", "--out", str(out))
    assert refused.returncode == 2
    assert "exists; use --force" in refused.stderr
    assert out.read_text() == "mine"
    forced = cli.ok("run", "text.stats", str(source), "--wait", "-o", str(out), "--force")
    assert "saved" in forced.stdout and json.loads(out.read_text()) == stats

    # Default: the result's own name in the current directory; a second run refuses.
    workdir = tmp_path / "work"
    workdir.mkdir()
    first = cli.ok("run", "text.stats", str(source), "--wait", cwd=workdir, timeout=180)
    saved = Path(first.stdout.strip().rsplit("saved ", 1)[1])
    assert saved.parent == workdir and saved.exists()
    again = cli.run("run", "text.stats", str(source), "--wait", cwd=workdir, timeout=180)
    assert again.returncode == 2
    assert "exists; use --force" in again.stderr and "dockyard jobs download" in again.stderr
    job_id = again.stdout.split()[1]
    assert f"job {job_id} succeeded" in again.stdout
    fetched = cli.ok("jobs", "download", job_id, "--out", str(tmp_path / "copy.json"))
    assert "saved" in fetched.stdout
    assert json.loads((tmp_path / "copy.json").read_text()) == stats
    logs = cli.json("jobs", "logs", job_id)
    assert isinstance(logs, list)


# --- Ctrl-C --------------------------------------------------------------------------------


def test_ctrl_c_with_cancel_on_interrupt_cancels_the_job_and_exits_130(cli: Cli) -> None:
    process = subprocess.Popen(
        [DOCKYARD, "run", "debug.sleep", "-p", "seconds=60", "-p", "steps=60", "--wait"]
        + ["--cancel-on-interrupt"],
        env=cli.env,
        cwd=cli.home,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        first = process.stderr.readline()  # "job <id> queued"
        job_id = first.split()[1]
        for line in process.stderr:  # wait for the job to be running and reporting
            if "progress" in line:
                break
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr
    assert f"job {job_id} cancel" in stderr
    assert stdout == ""
    wait_for(lambda: job_status(cli, job_id) == "cancelled", timeout=30)


# --- the progress bar in a real terminal ---------------------------------------------------


class Tmux:
    """A private tmux server (its own socket) with one detached pane."""

    def __init__(self) -> None:
        self.socket = f"dockyard-cli-{uuid.uuid4().hex[:8]}"

    def __call__(self, *args: str) -> str:
        return subprocess.run(
            ["tmux", "-L", self.socket, *args],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout

    def start(self, script: Path) -> None:
        self("new-session", "-d", "-x", "120", "-y", "30", "-s", "cli", f"bash {script}")

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "cli")

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, check=False)
        # tmux leaves its socket file behind: -L names it in tmux's directory.
        directory = Path(os.environ.get("TMUX_TMPDIR") or "/tmp") / f"tmux-{os.getuid()}"
        (directory / self.socket).unlink(missing_ok=True)


def shell_script(cli: Cli, path: Path, command: str) -> Path:
    """A script that runs `command` in the user's environment, then shows its exit code
    and keeps the pane open to be captured."""
    exports = "\n".join(
        f"export {key}={json.dumps(value)}"
        for key, value in cli.env.items()
        if key in ("HOME", "XDG_CONFIG_HOME", "DOCKYARD_API_URL", "PATH", "LANG", "LC_ALL")
    )
    path.write_text(f"{exports}\ncd {cli.home}\n{command}\necho EXIT=$?\nsleep 60\n")
    return path


@pytest.fixture()
def tmux() -> Iterator[Tmux]:
    session = Tmux()
    try:
        yield session
    finally:
        session.kill()


def test_the_progress_bar_advances_in_a_real_terminal(cli: Cli, tmux: Tmux, tmp_path: Path) -> None:
    command = f"{DOCKYARD} run debug.sleep -p seconds=8 -p steps=8 --wait"
    tmux.start(shell_script(cli, tmp_path / "run.sh", command))
    seen: set[int] = set()
    screens: list[str] = []

    def finished() -> bool:
        screen = tmux.screen()
        screens.append(screen)
        seen.update(int(p) for p in PERCENT.findall(screen) if int(p) < 100)
        return "EXIT=" in screen

    wait_for(finished, timeout=90, interval=0.2, message="the run to end in the pane")
    final = screens[-1]
    assert len(seen) >= 2, (seen, screens[-5:])  # the bar moved while the job ran
    assert "━" in "".join(screens)  # rich's bar, drawn
    assert "100%" in final and "8/8" in final
    assert re.search(r"job [0-9a-f-]{36} succeeded: \{", final), final
    assert "EXIT=0" in final


def test_ctrl_c_in_a_terminal_asks_before_cancelling(cli: Cli, tmux: Tmux, tmp_path: Path) -> None:
    command = f"{DOCKYARD} run debug.sleep -p seconds=60 -p steps=60 --wait"
    tmux.start(shell_script(cli, tmp_path / "run.sh", command))
    wait_for(lambda: PERCENT.search(tmux.screen()), timeout=60, interval=0.2, message="the bar")
    tmux("send-keys", "-t", "cli", "C-c")
    question = wait_for(
        lambda: re.search(r"Cancel job ([0-9a-f-]{36})\? \[y/N\]", tmux.screen()),
        timeout=20,
        interval=0.1,
        message="the question",
    )
    tmux("send-keys", "-t", "cli", "y", "Enter")
    wait_for(lambda: "EXIT=" in tmux.screen(), timeout=20, interval=0.1, message="the exit")
    assert "EXIT=130" in tmux.screen()
    wait_for(lambda: job_status(cli, question.group(1)) == "cancelled", timeout=30)


# --- admin ---------------------------------------------------------------------------------


def test_admin_commands(tmp_path: Path, api: str, cli: Cli) -> None:
    admin = logged_in(tmp_path, api, admin=True)
    stats = admin.json("admin", "stats")
    assert "jobs_by_status" in stats
    assert "jobs" in admin.ok("admin", "stats").stdout
    queues = {q["name"]: q for q in admin.json("admin", "queues", "ls")}
    assert "diagnostics" in queues
    assert "files" in admin.ok("admin", "queues", "ls").stdout

    # A paused queue holds a new job until it is resumed.
    assert admin.json("admin", "queues", "pause", "deploy")["paused"] is True
    try:
        assert {q["name"]: q for q in admin.json("admin", "queues", "ls")}["deploy"]["paused"]
    finally:
        assert admin.json("admin", "queues", "resume", "deploy")["paused"] is False
    unknown = admin.run("admin", "queues", "pause", "no-such-queue")
    assert unknown.returncode == 3 and "not_found" in unknown.stderr

    dead = json.loads(
        cli.run(
            "run", "debug.fail", "-p", "fail_times=5", "--max-attempts", "1", "--wait", "--json"
        ).stdout
    )
    assert dead["status"] == "dead"

    def letter() -> dict[str, Any] | None:
        letters = admin.json("admin", "dead-letters", "ls", "--processor", "debug.fail")
        return next((d for d in letters if d["job_id"] == dead["id"]), None)

    found = wait_for(letter, timeout=30, message="the dead letter")
    assert dead["id"] in admin.ok("admin", "dead-letters", "ls").stdout
    requeued = admin.ok("admin", "dead-letters", "requeue", found["id"])
    assert f"job {dead['id']} queued again" in requeued.stdout
    refused = admin.run("admin", "dead-letters", "purge", stdin="")
    assert refused.returncode == 2 and "--yes" in refused.stderr
    purged = admin.json("admin", "dead-letters", "purge", "--yes", "--error-code", "nothing-x")
    assert purged == {"affected": 0, "remaining": 0}

    for args in (["admin", "stats"], ["admin", "queues", "ls"], ["admin", "dead-letters", "ls"]):
        forbidden = cli.run(*args)
        assert forbidden.returncode == 3, args
        assert forbidden.stderr.startswith("error: forbidden: "), forbidden.stderr


# --- schedules, webhooks, apps -------------------------------------------------------------


def test_schedules_commands(cli: Cli) -> None:
    name = f"nightly-{uuid.uuid4().hex[:6]}"
    created = cli.json(
        "schedules", "create", name, "debug.echo", "-p", "message=hi", "--every", "1h"
    )
    assert created["every_seconds"] == 3600 and created["params"]["message"] == "hi"
    assert created["id"] in {s["id"] for s in cli.json("schedules", "ls")}
    assert name in cli.ok("schedules", "ls").stdout
    assert cli.json("schedules", "show", created["id"])["name"] == name
    job = cli.json("schedules", "trigger", created["id"])
    assert job["schedule_id"] == created["id"]
    both = cli.run("schedules", "create", "x", "debug.echo", "--every", "1h", "--cron", "* * * * *")
    assert both.returncode == 2
    bad = cli.run("schedules", "create", "bad", "debug.echo", "-p", "message=x", "--cron", "nope")
    assert bad.returncode == 3 and "invalid_schedule" in bad.stderr
    cli.ok("schedules", "delete", created["id"])
    gone = cli.run("schedules", "show", created["id"])
    assert gone.returncode == 3 and "not_found" in gone.stderr


def test_webhooks_commands(cli: Cli) -> None:
    done = cli.ok("webhooks", "create", "http://127.0.0.1:9/hook", "-e", "job.succeeded")
    webhook_id = done.stdout.split()[1]
    assert re.search(r"^secret \S{16,}$", done.stdout, re.MULTILINE), done.stdout
    shown = cli.json("webhooks", "show", webhook_id)
    assert shown["events"] == ["job.succeeded"] and "secret" not in shown
    assert webhook_id in {w["id"] for w in cli.json("webhooks", "ls")}
    delivery = cli.json("webhooks", "ping", webhook_id)
    assert delivery["webhook_id"] == webhook_id
    refused = cli.run("webhooks", "create", "ftp://example.com/x")
    assert refused.returncode == 3 and "error: " in refused.stderr
    cli.ok("webhooks", "delete", webhook_id)
    assert cli.run("webhooks", "show", webhook_id).returncode == 3


def test_apps_ls_and_a_missing_app(cli: Cli) -> None:
    assert cli.json("apps", "ls") == []
    assert "NAME" in cli.ok("apps", "ls").stdout
    missing = cli.run("apps", "show", "no-such-app")
    assert missing.returncode == 3 and "error: not_found: " in missing.stderr
    refused = cli.run("apps", "delete", "no-such-app", stdin="")
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert cli.run("apps", "delete", "no-such-app", "--yes").returncode == 3
    assert cli.run("apps", "releases", "no-such-app").returncode == 3


def test_shell_completion_script(cli: Cli) -> None:
    script = cli.ok(env={"_DOCKYARD_COMPLETE": "bash_source"}).stdout
    assert "_dockyard_completion" in script and "complete " in script


# --- deploy --------------------------------------------------------------------------------

DEPLOY_PORTS = (21950, 21959)  # inside no other test's range


@pytest.fixture(scope="module")
def deploy_api(job_worker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A deploy fleet cloning from the GitHub stand-in, and an API started inside its
    environment (the API checks repository URLs with the same settings)."""
    github = FakeGitHub(tmp_path_factory.mktemp("github"))
    github.publish("webapp")
    github.publish("badbuild")
    try:
        with (
            deploy_fleet(
                github,
                tmp_path_factory.mktemp("deploy"),
                "cli-deploy-fleet",
                DEPLOY_PORTS,
                2,
                DEPLOY_HEALTH_TIMEOUT="20",
            ),
            serve(tmp_path_factory.mktemp("deploy-api")) as base,
        ):
            yield base
    finally:
        github.remove_images()


def test_deploy_follow_streams_the_build_and_ends_with_the_url(
    tmp_path: Path, deploy_api: str
) -> None:
    cli = logged_in(tmp_path, deploy_api)
    name = f"cli-{uuid.uuid4().hex[:8]}"
    repo = f"https://github.com/{OWNER}/webapp"
    done = cli.ok(
        "deploy", repo, "--app", name, "--health-path", "/health", "-e", "GREETING=hi",
        "--follow", timeout=300,
    )  # fmt: skip
    lines = done.stdout.splitlines()
    assert "==> clone" in lines and "==> build" in lines, done.stdout
    assert lines[-1] == f"healthy: http://{name}.localhost:8080/", done.stdout

    apps = {app["name"]: app for app in cli.json("apps", "ls")}
    assert apps[name]["current_release"] == 1 and apps[name]["status"] == "running"
    assert name in cli.ok("apps", "ls").stdout
    shown = cli.ok("apps", "show", name).stdout
    assert "GREETING" in shown and "v1" in shown
    releases = cli.json("apps", "releases", name)
    assert [r["release"] for r in releases] == [1]
    assert "healthy" in cli.ok("apps", "releases", name).stdout

    stopped = cli.json("apps", "stop", name)
    assert stopped["status"] in ("stopping", "stopped")
    wait_for(lambda: cli.json("apps", "show", name)["status"] == "stopped", timeout=60)
    deleted = cli.json("apps", "delete", name, "--yes")
    assert deleted["deleted"] is True
    assert cli.run("apps", "show", name).returncode == 3
    # The deleted app's release image goes now, as the periodic check would (this module's
    # fleet stops before its next check): later modules count the images left to release.
    docker_client = docker.from_env()
    try:
        release_stopped_images(docker_client, get_settings(), 50)
    finally:
        docker_client.close()

    failed = cli.run("deploy", f"https://github.com/{OWNER}/badbuild", "--follow", timeout=300)
    assert failed.returncode == 1, (failed.stdout, failed.stderr)
    assert failed.stdout.splitlines()[-1].startswith("failed: build_failed: "), failed.stdout


def test_register_then_logged_in(tmp_path: Path, api: str) -> None:
    cli = Cli(tmp_path / "home", api)
    email = f"new-{uuid.uuid4().hex[:8]}@example.com"
    cli.ok("register", "--email", email, "--password-stdin", stdin="a long passphrase\n")
    assert cli.json("whoami")["email"] == email
    taken = cli.run("register", "--email", email, "--password-stdin", stdin="a long passphrase\n")
    assert taken.returncode == 3 and "error: email_taken: " in taken.stderr
