"""A DVC data registry: a git repository whose commits version datasets stored in a remote.

Each ``commit`` writes a file into the registry work tree, tracks it with DVC (``dvc add``),
commits the small ``.dvc`` pointer to git and pushes the content to the DVC remote. The
``(path, revision)`` pair then names that exact content forever, and ``restore`` brings it
back bit for bit from the remote, verified against the recorded MD5.

DVC's Python API (``dvc.repo.Repo``) is used in-process for add/push (a CLI call costs a
second of imports each time); git is driven through its CLI. Writers are serialized with a
file lock because DVC's own repository lock gives up after a few seconds.
"""

from __future__ import annotations

import logging
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops_assets.lib.fingerprints import md5_bytes

_GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "mlops-assets",
    "GIT_AUTHOR_EMAIL": "mlops-assets@localhost",
    "GIT_COMMITTER_NAME": "mlops-assets",
    "GIT_COMMITTER_EMAIL": "mlops-assets@localhost",
}


class DataRegistryError(RuntimeError):
    """The data registry could not version or restore a dataset."""


@dataclass(frozen=True)
class DatasetVersion:
    """One committed version of a dataset.

    Attributes:
        path: Path of the dataset inside the registry (e.g. ``features/2013-01-05.parquet``).
        md5: DVC's MD5 of the content.
        rev: Git commit of the registry that records this version.
        size: Bytes.
    """

    path: str
    md5: str
    rev: str
    size: int


@dataclass(frozen=True)
class DataRegistry:
    """A DVC data registry in ``root`` with a default remote at ``remote_url``.

    Attributes:
        root: Local work tree of the registry repository.
        remote_url: DVC remote (a local directory, ``s3://...``, ...).
        git_remote: Optional git URL the registry pulls from and pushes to.
    """

    root: Path
    remote_url: str
    git_remote: str | None = None

    # -- plumbing ---------------------------------------------------------------------------
    def _git(self, *args: str, check: bool = True) -> str:
        env = {**os.environ, **_GIT_IDENTITY, "GIT_TERMINAL_PROMPT": "0"}
        result = subprocess.run(
            ["git", *args], cwd=self.root, env=env, capture_output=True, text=True, check=False
        )
        if check and result.returncode != 0:
            raise DataRegistryError(f"git {' '.join(args)} failed in {self.root}: {result.stderr}")
        return result.stdout.strip()

    def _lock(self) -> Any:
        from filelock import FileLock

        return FileLock(str(self.root.parent / f".{self.root.name}.lock"), timeout=600)

    def ensure(self) -> None:
        """Creates (or clones) the registry repository and its DVC config if missing."""
        os.environ.setdefault("DVC_NO_ANALYTICS", "1")
        self.root.parent.mkdir(parents=True, exist_ok=True)
        with self._lock():
            if (self.root / ".dvc").exists():
                return
            if self.git_remote and not (self.root / ".git").exists():
                subprocess.run(
                    ["git", "clone", "--quiet", self.git_remote, str(self.root)],
                    check=True,
                    capture_output=True,
                )
            self.root.mkdir(parents=True, exist_ok=True)
            if not (self.root / ".git").exists():
                self._git("init", "--quiet", "--initial-branch=main")
            if not (self.root / ".dvc").exists():
                from dvc.repo import Repo

                quiet = logging.getLogger("dvc.repo.init")  # "Initialized DVC repository."
                quiet.disabled = True
                try:
                    Repo.init(str(self.root))
                finally:
                    quiet.disabled = False
                with Repo(str(self.root)) as repo, repo.config.edit() as conf:
                    conf["core"]["remote"] = "default"
                    conf["core"]["analytics"] = False
                    conf["core"]["autostage"] = True  # stages .dvc pointers (and stays quiet)
                    conf["remote"]["default"] = {"url": self.remote_url}
                self._git("add", ".dvc", ".dvcignore")
                self._git("commit", "--quiet", "-m", "Initialize data registry")
                if self.git_remote:
                    self._git("push", "--quiet", "origin", "HEAD")

    def _know(self, rev: str) -> None:
        """Makes ``rev`` readable here (only with a git remote).

        Clones the registry if this machine has no work tree yet, and fetches when the work
        tree does not know ``rev`` (committed by another machine).
        """
        if not self.git_remote:
            return
        self.ensure()
        if not self._git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", check=False):
            with self._lock():
                self._git("fetch", "--quiet", "origin", check=False)

    # -- public API -------------------------------------------------------------------------
    def commit(self, path: str, payload: bytes, message: str) -> DatasetVersion:
        """Versions ``payload`` at ``path``: dvc add, git commit, dvc push (and git push).

        Committing content identical to the current version records no new commit and
        returns the existing revision.

        Raises:
            DataRegistryError: if any step fails; the work tree is reset to the last commit.
        """
        self.ensure()
        target = self.root / path
        with self._lock():
            try:
                if self.git_remote:
                    self._git("pull", "--quiet", "--rebase", "origin", "HEAD")
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(f".{target.name}.tmp")
                tmp.write_bytes(payload)
                tmp.replace(target)
                from dvc.repo import Repo

                with Repo(str(self.root)) as repo:
                    repo.add(str(target))
                    pointer = f"{path}.dvc"
                    gitignore = str(Path(path).parent / ".gitignore")
                    self._git("add", pointer, gitignore)
                    if self._git("status", "--porcelain", "--", pointer, gitignore):
                        self._git("commit", "--quiet", "-m", message)
                    repo.push(targets=[str(target)])
                if self.git_remote:
                    self._git("push", "--quiet", "origin", "HEAD")
                rev = self._git("log", "-1", "--format=%H", "--", f"{path}.dvc")
            except Exception as exc:
                self._git("reset", "--quiet", "--hard", "HEAD", check=False)
                if isinstance(exc, DataRegistryError):
                    raise
                raise DataRegistryError(f"could not version {path}: {exc}") from exc
        return DatasetVersion(path=path, md5=md5_bytes(payload), rev=rev, size=len(payload))

    def read(self, path: str, rev: str) -> bytes:
        """The exact bytes of ``path`` at registry revision ``rev`` (fetched from the remote).

        Raises:
            DataRegistryError: if the revision or path is unknown.
        """
        import dvc.api

        self._know(rev)
        try:
            with dvc.api.open(path, repo=str(self.root), rev=rev, mode="rb") as handle:
                return handle.read()
        except Exception as exc:
            raise DataRegistryError(
                f"cannot read {path} at registry revision {rev}: {exc}"
            ) from exc

    def restore(self, path: str, rev: str, dest: Path, expected_md5: str | None = None) -> str:
        """Writes ``path`` at ``rev`` to ``dest`` and returns its MD5.

        Raises:
            DataRegistryError: if the content does not match ``expected_md5``.
        """
        payload = self.read(path, rev)
        digest = md5_bytes(payload)
        if expected_md5 and digest != expected_md5:
            raise DataRegistryError(
                f"{path}@{rev[:10]} has md5 {digest}, expected {expected_md5}: not restoring"
            )
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(payload)
        return digest

    def history(self, path: str) -> list[str]:
        """Registry revisions that changed ``path``, newest first."""
        out = self._git("log", "--format=%H", "--", f"{path}.dvc", check=False)
        return [line for line in out.splitlines() if line]

    def recorded_md5(self, path: str, rev: str) -> str:
        """The MD5 the ``.dvc`` pointer of ``path`` records at ``rev``.

        Raises:
            DataRegistryError: if ``path`` is not versioned at ``rev``.
        """
        import yaml

        self._know(rev)
        text = self._git("show", f"{rev}:{path}.dvc", check=False)
        if not text:
            raise DataRegistryError(f"{path} is not versioned at registry revision {rev}")
        outs = (yaml.safe_load(text) or {}).get("outs") or [{}]
        return str(outs[0].get("md5", ""))
