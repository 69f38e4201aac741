"""Cloning a repository with git in a subprocess, as little and as safely as possible.

Shallow, only the asked ref, no submodules, no terminal prompts, only the allowed protocols
(GIT_ALLOW_PROTOCOL also binds redirects and submodules), one deadline for the whole clone,
and a size cap on the checkout that also stops a download past it. Failures are sorted: the
git host unreachable or too slow is retryable; a repository refusing the credentials, a
missing repository or ref, or one too large, is permanent.

A private repository's access token reaches git only through its environment, read by a
credential helper that is a shell function in git's configuration (no file, no secret in
any argument); every other credential helper is switched off for that clone, so none can
store the token, and git's output is scrubbed of it before it is quoted in an error.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from shared.config import Settings
from shared.deploy.repo_urls import Repository, is_commit, looks_abbreviated
from shared.errors import PermanentJobError, RetryableJobError

#: Checkouts live in the temporary directory under this prefix while they are cloned and built.
CHECKOUT_PREFIX = "dockyard-clone-"

_UNREACHABLE = (
    "could not resolve host",
    "failed to connect",
    "connection timed out",
    "connection refused",
    "temporary failure",
    "network is unreachable",
    "operation timed out",
    "the remote end hung up unexpectedly",
    "internal server error",
    "http 5",
)

#: What git says when the host refused the clone for its credentials (none, or wrong ones).
#: Sorted before _UNREACHABLE: a refusal is permanent until the token changes.
_UNAUTHORIZED = (
    "authentication failed",
    "could not read username",
    "could not read password",
    "terminal prompts disabled",
    "invalid username or password",
    "invalid credentials",
    "returned error: 401",
    "returned error: 403",
    "http 401",
    "http 403",
)

#: The user name sent with an access token (GitHub's for app and fine-grained tokens; GitLab
#: and Gitea take any user name with a token as the password).
TOKEN_USER = "x-access-token"  # noqa: S105 - a user name, not a secret
#: The only place the token is put: the environment of git and of the helpers it starts.
_TOKEN_VARIABLE = "DOCKYARD_GIT_TOKEN"  # noqa: S105 - a variable name
#: A credential helper git runs through the shell: it answers `get` with the token read from
#: the environment at that moment (so the token is in no argument, not even the shell's:
#: `echo` is a builtin) and ignores `store` and `erase`, so nothing is ever written.
_TOKEN_HELPER = (
    '!f() { test "$1" = get || return 0; '
    f'echo username={TOKEN_USER}; echo "password=${_TOKEN_VARIABLE}"; }}; f'
)


def _credential_env(token: str) -> dict[str, str]:
    """git configuration given through the environment (the command-line scope, read after
    the global ~/.gitconfig): an empty `credential.helper` clears every helper configured
    before it (a global `store` would otherwise write the token to ~/.git-credentials, and
    would be asked first), then only ours."""
    return {
        _TOKEN_VARIABLE: token,
        "GIT_CONFIG_COUNT": "2",
        "GIT_CONFIG_KEY_0": "credential.helper",
        "GIT_CONFIG_VALUE_0": "",
        "GIT_CONFIG_KEY_1": "credential.helper",
        "GIT_CONFIG_VALUE_1": _TOKEN_HELPER,
    }


def _git_env(settings: Settings, token: str | None = None) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key in ("PATH", "HOME", "LANG", "GIT_CONFIG_GLOBAL", "SSL_CERT_FILE", "HTTPS_PROXY")
    }
    env.update(
        GIT_TERMINAL_PROMPT="0",
        GIT_ASKPASS="/bin/false",
        SSH_ASKPASS="/bin/false",
        GCM_INTERACTIVE="never",
        GIT_ALLOW_PROTOCOL=settings.deploy_git_protocols,
        GIT_CONFIG_NOSYSTEM="1",
        GIT_LFS_SKIP_SMUDGE="1",
    )
    if token:
        env.update(_credential_env(token))
    return env


#: How often a running clone's checkout is measured against DEPLOY_MAX_REPO_BYTES.
SIZE_POLL = 0.5


def _git(
    args: list[str],
    cwd: Path | None,
    settings: Settings,
    deadline: float,
    watch: Path | None = None,
    token: str | None = None,
) -> tuple[int, str, str]:
    """Run git until `deadline` (monotonic clock; the whole clone shares one
    DEPLOY_CLONE_TIMEOUT) and, when `watch` is given, while that checkout stays within
    DEPLOY_MAX_REPO_BYTES: the cap stops the download itself, not only what it left on disk.
    Either way its whole process group is killed, not only git itself.

    git hands the network to helpers (`git remote-https`, `fetch-pack`, `index-pack`) that
    outlive a killed `git`: they would keep the connection to a stalled host open and keep
    writing into a checkout that is being removed. In a process group of its own, one
    signal ends them all.

    `token`, for the commands that reach the host, is given to git through its environment
    only (see _credential_env).
    """
    process = subprocess.Popen(  # fixed argv, validated URL and ref
        ["git", "-c", "core.hooksPath=/dev/null", "-c", "advice.detachedHead=false", *args],
        cwd=cwd,
        env=_git_env(settings, token),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=_die_with_parent,  # only a prctl, no locks taken: safe after fork
    )
    try:
        while True:
            wait = max(deadline - time.monotonic(), 0)
            try:
                stdout, stderr = process.communicate(
                    timeout=min(wait, SIZE_POLL) if watch is not None else wait
                )
                return process.returncode, stdout, stderr
            except subprocess.TimeoutExpired as error:
                if time.monotonic() >= deadline:
                    raise RetryableJobError(
                        "clone_timeout",
                        f"The clone did not finish within {settings.deploy_clone_timeout:g} s "
                        "(DEPLOY_CLONE_TIMEOUT).",
                    ) from error
                if watch is not None and _over_cap(watch, settings):
                    raise _too_large(settings) from error
    finally:  # a timeout, the cap, or the worker going down: take git's helpers with it
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.communicate()  # reaps it; the pipes close with the group


def _die_with_parent() -> None:
    """In its own process group, git would outlive a worker killed mid-clone (nothing left to
    kill the group) and run on without a deadline: the kernel kills it with its parent. Its
    helpers then see their pipes to git close and exit."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


_PR_SET_PDEATHSIG = 1
try:  # loaded here, not after the fork: the child must take no loader lock
    _LIBC: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True)
except OSError:
    _LIBC = None


def _over_cap(path: Path, settings: Settings) -> bool:
    cap = settings.deploy_max_repo_bytes
    return path.exists() and directory_size(path, cap) > cap


def _too_large(settings: Settings) -> PermanentJobError:
    return PermanentJobError(
        "repository_too_large",
        f"The checkout exceeds {settings.deploy_max_repo_bytes} bytes (DEPLOY_MAX_REPO_BYTES).",
    )


def _run(
    args: list[str],
    cwd: Path | None,
    settings: Settings,
    deadline: float,
    watch: Path | None = None,
    token: str | None = None,
) -> str:
    returncode, stdout, stderr = _git(args, cwd, settings, deadline, watch, token)
    if returncode != 0:
        output = stderr or stdout
        if token:  # git never prints it; should one ever echo it, it goes no further
            output = output.replace(token, "[access token]")
        raise _failure(output.strip()[-600:])
    return stdout


def _failure(message: str) -> PermanentJobError | RetryableJobError:
    """Sort a failed git command by what it said. A refusal for credentials first: it is
    permanent, and its output may also say the remote end hung up."""
    lowered = message.lower()
    if any(marker in lowered for marker in _UNAUTHORIZED):
        return PermanentJobError(
            "clone_unauthorized",
            "The repository refused the clone: it is private (or does not exist) and the "
            "access token is missing, wrong or expired; set or renew the app's access_token "
            f"(PATCH /api/v1/apps/<app>). git said: {message}",
        )
    if any(marker in lowered for marker in _UNREACHABLE):
        return RetryableJobError("git_unreachable", f"The git host is unreachable: {message}")
    if (
        "remote branch" in lowered
        or "couldn't find remote ref" in lowered
        or ("not our ref" in lowered)
    ):
        return PermanentJobError("ref_not_found", f"The ref does not exist: {message}")
    return PermanentJobError("clone_failed", f"git clone failed: {message}")


def directory_size(path: Path, limit: int) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += (Path(root) / name).lstat().st_size
            except OSError:
                continue
            if total > limit:
                return total
    return total


def clone(
    repo: Repository, ref: str | None, dest: Path, settings: Settings, token: str | None = None
) -> str:
    """Check out `ref` (default branch when None) of `repo` into `dest`; returns the commit.

    `token`: a private repository's access token, sent over HTTPS as the password of
    TOKEN_USER and never written anywhere (not in `dest/.git/config` either)."""
    deadline = time.monotonic() + settings.deploy_clone_timeout
    try:
        _fetch(repo, ref, dest, settings, deadline, token)
    except PermanentJobError as error:
        if error.code == "ref_not_found" and ref is not None and looks_abbreviated(ref):
            raise PermanentJobError(
                "ref_not_found",
                f"No branch or tag is named {ref!r}; to deploy a commit, give its full "
                "40-character id (git cannot fetch an abbreviated one).",
            ) from error
        raise
    if _over_cap(dest, settings):  # what git wrote in its last moments counts too
        raise _too_large(settings)
    commit = _run(["rev-parse", "HEAD"], dest, settings, deadline).strip()
    # The build context is the checkout without git's metadata: smaller, no history baked
    # into images, and the same files give the same layer cache on every redeploy.
    shutil.rmtree(dest / ".git", ignore_errors=True)
    return commit


def _fetch(
    repo: Repository,
    ref: str | None,
    dest: Path,
    settings: Settings,
    deadline: float,
    token: str | None = None,
) -> None:
    """A shallow checkout of exactly one ref: a commit by id, else a branch or tag. Only the
    commands that reach the host get the token."""
    if ref is not None and is_commit(ref):
        dest.mkdir(parents=True, exist_ok=True)
        _run(["init", "-q", str(dest)], None, settings, deadline)
        _run(["remote", "add", "origin", repo.url], dest, settings, deadline)
        _run(
            ["fetch", "-q", "--depth", "1", "--no-tags", "origin", ref],
            dest,
            settings,
            deadline,
            dest,
            token,
        )
        _run(["checkout", "-q", "--detach", "FETCH_HEAD"], dest, settings, deadline, dest)
    else:
        args = ["clone", "-q", "--depth", "1", "--single-branch", "--no-tags"]
        args += ["--no-recurse-submodules"]
        if ref is not None:
            args += ["--branch", ref]
        _run([*args, "--", repo.url, str(dest)], None, settings, deadline, dest, token)


def remove_stale_checkouts(settings: Settings, limit: int, root: Path | None = None) -> int:
    """Remove checkouts older than any deploy can keep one.

    A checkout is deleted when its clone and build end, but not when the worker is killed
    mid-deploy (SIGKILL, a lost host): those would pile up in the temporary directory. One
    older than twice the clone and build timeouts (plus ten minutes) belongs to no running
    deploy on this host. At most `limit` per run, like the rest of the periodic check.
    """
    root = root or Path(tempfile.gettempdir())
    too_old = time.time() - 2 * (settings.deploy_clone_timeout + settings.deploy_build_timeout)
    too_old -= 600
    removed = 0
    with os.scandir(root) as entries:
        for entry in entries:
            if removed >= limit:
                break
            if not entry.name.startswith(CHECKOUT_PREFIX) or not entry.is_dir(
                follow_symlinks=False
            ):
                continue
            if entry.stat(follow_symlinks=False).st_mtime < too_old:
                shutil.rmtree(entry.path, ignore_errors=True)
                removed += 1
    return removed
