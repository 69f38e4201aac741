"""A git started by a deploy worker dies with the worker (it runs in a process group of its
own, so nothing else would stop it)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]
PARENT = """
import subprocess, sys, time
sys.path.insert(0, sys.argv[1])
from workers.deploy import git
child = subprocess.Popen(["sleep", "300"], start_new_session=True,
                         preexec_fn=git._die_with_parent)
print(child.pid, flush=True)
time.sleep(300)  # stands for a worker busy mid-clone until the test SIGKILLs it
"""


def _dead(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "State:\tZ" in status  # killed; waiting for init to reap it


def test_a_child_started_like_git_dies_when_its_worker_is_killed() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(ROOT)], stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    assert not _dead(child)
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    wait_for(lambda: _dead(child), timeout=5, message="git's stand-in to die with its parent")
