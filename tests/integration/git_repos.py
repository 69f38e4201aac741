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
