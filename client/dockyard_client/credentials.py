"""Where the command line keeps a login between runs.

One JSON file, `$XDG_CONFIG_HOME/dockyard/credentials.json` (`~/.config/dockyard/...` when the
variable is unset), holding the API URL it was made for, the access and refresh tokens and
the email. The tokens are secrets: the file is created with mode 0600 (never widened and
then narrowed: `os.open` makes it so from its first byte) in a 0700 directory, and replaced
atomically (a temporary sibling renamed over it) so a crash never leaves half a file.
`locked()` serialises the token refreshes of `dockyard` commands running at the same time.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; concurrent refreshes are not serialised
    fcntl = None  # type: ignore[assignment]

FILE_MODE = 0o600
DIR_MODE = 0o700


@dataclass(frozen=True)
class Credentials:
    """A saved login: which API it belongs to and its tokens."""

    api_url: str
    access_token: str
    refresh_token: str | None = None
    email: str | None = None


def config_dir() -> Path:
    """`$XDG_CONFIG_HOME/dockyard`, else `~/.config/dockyard` (the XDG default)."""
    base = os.environ.get("XDG_CONFIG_HOME") or ""
    root = Path(base) if os.path.isabs(base) else Path.home() / ".config"
    return root / "dockyard"


def credentials_path() -> Path:
    """The credentials file the command line reads and writes."""
    return config_dir() / "credentials.json"


def load(path: Path | None = None) -> Credentials | None:
    """The saved login, or None when there is none (or the file is not one of ours)."""
    target = path or credentials_path()
    try:
        raw = json.loads(target.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(raw, dict) or not raw.get("api_url") or not raw.get("access_token"):
        return None
    return Credentials(
        api_url=str(raw["api_url"]),
        access_token=str(raw["access_token"]),
        refresh_token=raw.get("refresh_token") or None,
        email=raw.get("email") or None,
    )


def save(credentials: Credentials, path: Path | None = None) -> Path:
    """Write the login with mode 0600 from creation, replacing any earlier one atomically."""
    target = path or credentials_path()
    target.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()  # left by a crashed run with our pid: O_EXCL would refuse it
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(asdict(credentials), handle, indent=2)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise
    return target


def remove(path: Path | None = None) -> bool:
    """Delete the saved login; False when there was none."""
    try:
        (path or credentials_path()).unlink()
    except FileNotFoundError:
        return False
    return True


@contextlib.contextmanager
def locked(path: Path | None = None) -> Iterator[None]:
    """Hold an exclusive lock on the login (a `.lock` file beside it) for a refresh: the
    API ends a login whose refresh token is spent twice, so two commands must not refresh
    the same one at once."""
    target = path or credentials_path()
    target.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    fd = os.open(target.with_name(target.name + ".lock"), os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
