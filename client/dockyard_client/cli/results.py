"""Saving a file job's result: where it goes (`--out`, else the result's own file name in the
current directory) and never over an existing file without `--force`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dockyard_client.cli.exits import Refusal
from dockyard_client.cli.state import State


def has_result_file(job: dict[str, Any]) -> bool:
    """A succeeded job with a result file still in storage."""
    output = job.get("output")
    return (
        job.get("status") == "succeeded"
        and isinstance(output, dict)
        and not output.get("deleted")
        and bool(output.get("filename"))
    )


def target(job: dict[str, Any], out: Path | None) -> Path:
    """`out` (a directory: the result's file name inside it), else that name in the current
    directory. Only the name's last part is used: a result cannot write elsewhere."""
    name = Path(str((job.get("output") or {}).get("filename") or f"{job['id']}.result")).name
    if out is None:
        return Path.cwd() / name
    return out / name if out.is_dir() else out


def refuse_existing(path: Path, force: bool, job_id: str | None = None) -> None:
    """Exit 2 when `path` exists and --force was not given."""
    if force or not path.exists():
        return
    hint = f" (the result stays downloadable: dockyard jobs download {job_id})" if job_id else ""
    raise Refusal(f"{path} exists; use --force to overwrite it or --out PATH{hint}")


def check_out(out: Path, force: bool) -> None:
    """What can be known of `--out` before the job runs: an existing file (without
    --force) or a missing directory to write into exits 2."""
    if out.is_dir():
        return
    refuse_existing(out, force)
    if not out.parent.is_dir():
        raise Refusal(f"{out.parent} is not a directory")


def save(state: State, job: dict[str, Any], out: Path | None, force: bool) -> Path:
    """Download the job's result; returns where it went."""
    path = target(job, out)
    refuse_existing(path, force, str(job["id"]))
    try:
        return state.client().download(str(job["id"]), path, overwrite=force)
    except OSError as error:  # the local side: a full disk, no permission...
        raise Refusal(f"cannot write {path}: {error.strerror or error}") from error
