"""A DVC data registry: a git repository whose commits version datasets stored in a remote.

Each ``commit`` writes a file into the registry work tree, tracks it with DVC (``dvc add``),
pushes the content to the DVC remote and commits the small ``.dvc`` pointer to git. The
``(path, revision)`` pair then names that exact content forever, and ``restore`` brings it
back bit for bit from the remote, verified against the recorded MD5. A commit is all or
nothing, and ``store_versioned`` extends that to a copy in the lake: both sides get the new
version or neither does.

DVC's Python API (``dvc.repo.Repo``) is used in-process for add/push (a CLI call costs a
second of imports each time); git is driven through its CLI. Writers are serialized with a
file lock because DVC's own repository lock gives up after a few seconds.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import subprocess
from collections.abc import Iterator
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


# The registry's one DVC remote, as its config names it.
REMOTE = "default"
_REMOTE_SECTION = f'remote "{REMOTE}"'


def _is_url(remote: str) -> bool:
    return re.match(r"\w+://", remote) is not None


def _resolved(entry: str, dvc_dir: Path) -> str:
    """A config's remote entry as DVC reads it: a relative folder is relative to ``.dvc``."""
    return entry if _is_url(entry) else os.path.normpath(dvc_dir / entry)


def _effective_remote(dvc_dir: Path) -> str | None:
    """The remote DVC uses in this work tree (``config.local`` over ``config``), resolved."""
    from configobj import ConfigObj

    for name in ("config.local", "config"):
        if (dvc_dir / name).is_file():
            url = ConfigObj(str(dvc_dir / name)).get(_REMOTE_SECTION, {}).get("url")
            if url:
                return _resolved(str(url), dvc_dir)
    return None


class DataRegistryError(RuntimeError):
    """The data registry could not version or restore a dataset."""


class _ErrorRecords(logging.Handler):
    """Collects the exceptions attached to ERROR log records."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.errors: list[BaseException] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            self.errors.append(record.exc_info[1])


@dataclass(frozen=True)
class DatasetVersion:
    """One committed version of a dataset.

    Attributes:
        path: Path of the dataset inside the registry (e.g. ``features/2013-01-05.parquet``).
        md5: DVC's MD5 of the content.
        rev: Git commit of the registry that records this version.
        size: Bytes.
        created: Whether this commit recorded ``rev`` (False: the content was already the
            current version, and ``rev`` is the earlier commit that recorded it).
    """

    path: str
    md5: str
    rev: str
    size: int
    created: bool


@dataclass(frozen=True)
class DataRegistry:
    """A DVC data registry in ``root`` with a default remote at ``remote_url``.

    Attributes:
        root: Local work tree of the registry repository.
        remote_url: DVC remote (a local directory, ``s3://...``, ...).
        git_remote: Optional git URL the registry pulls from and pushes to.
        pack_after: Loose git objects that make a commit pack them (see ``_pack``).
    """

    root: Path
    remote_url: str
    git_remote: str | None = None
    pack_after: int = 256

    # -- plumbing ---------------------------------------------------------------------------
    def _git(self, *args: str, check: bool = True) -> str:
        env = {**os.environ, **_GIT_IDENTITY, "GIT_TERMINAL_PROMPT": "0"}
        result = subprocess.run(
            ["git", *args], cwd=self.root, env=env, capture_output=True, text=True, check=False
        )
        if check and result.returncode != 0:
            raise DataRegistryError(f"git {' '.join(args)} failed in {self.root}: {result.stderr}")
        return result.stdout.strip()

    def _pack(self) -> None:
        """Packs the loose objects once there are ``pack_after`` of them.

        Each loose object takes a disk block of its own: a year of daily versions leaves about
        1,900 of them (8.8 MB) where one pack holds the same in about 0.3 MB. git's own
        threshold (``gc.auto``, 6,700 objects) is not reached by a registry's commits. Upkeep,
        not part of the version: a failure here leaves the objects loose and the commit stands.
        """
        counted = self._git("count-objects", check=False).split()  # "171 objects, 684 kilobytes"
        if counted and counted[0].isdigit() and int(counted[0]) >= self.pack_after:
            self._git("repack", "-d", "-q", check=False)  # -d: also drops the loose copies

    def _lock(self) -> Any:
        from filelock import FileLock

        return FileLock(str(self.root.parent / f".{self.root.name}.lock"), timeout=600)

    def ensure(self) -> None:
        """Creates (or clones) the registry repository and its DVC config if missing.

        An existing registry is pointed at ``remote_url`` when it uses another remote (a
        copied or moved state, a changed setting): the setting always wins.
        """
        os.environ.setdefault("DVC_NO_ANALYTICS", "1")
        self.root.parent.mkdir(parents=True, exist_ok=True)
        with self._lock():
            if (self.root / ".dvc").exists():
                self._point_at_remote()
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
                self._init_dvc()

    def _init_dvc(self) -> None:
        from dvc.repo import Repo

        quiet = logging.getLogger("dvc.repo.init")  # "Initialized DVC repository."
        quiet.disabled = True
        try:
            Repo.init(str(self.root))
        finally:
            quiet.disabled = False
        self._point_at_remote()
        with Repo(str(self.root)) as repo, repo.config.edit() as conf:
            conf["core"]["remote"] = REMOTE
            conf["core"]["analytics"] = False
            conf["core"]["autostage"] = True  # stages .dvc pointers (and stays quiet)
            # `dvc add` links the work tree's file into the cache instead of copying it; both
            # are removed once the version is pushed (see _drop_local_copy).
            conf["cache"]["type"] = "reflink,hardlink,copy"
            if _is_url(self.remote_url):  # shared with every clone; a folder is per machine
                conf["remote"][REMOTE] = {"url": self.remote_url}
        self._git("add", ".dvc", ".dvcignore")
        self._git("commit", "--quiet", "-m", "Initialize data registry")
        if self.git_remote:
            self._git("push", "--quiet", "origin", "HEAD")

    def _remote_entry(self) -> str:
        """``remote_url`` as the config records it.

        A folder in the registry's own parent (the state folder) is relative to ``.dvc``, so
        the state can be moved and copied with its remote.
        """
        if _is_url(self.remote_url):
            return self.remote_url
        remote = Path(self.remote_url).absolute()
        if remote.is_relative_to(self.root.parent.absolute()):
            return os.path.relpath(remote, self.root.absolute() / ".dvc")
        return str(remote)

    def _point_at_remote(self) -> None:
        """Makes ``remote_url`` this work tree's remote.

        Written to the git-ignored ``.dvc/config.local``, which DVC lays over the committed
        ``.dvc/config`` of every revision it reads (old revisions included).
        """
        from configobj import ConfigObj

        dvc_dir = self.root.absolute() / ".dvc"
        entry = self._remote_entry()
        if _effective_remote(dvc_dir) == _resolved(entry, dvc_dir):
            return
        local = ConfigObj(str(dvc_dir / "config.local"))
        local.setdefault(_REMOTE_SECTION, {})["url"] = entry
        local.write()

    def _know(self, rev: str) -> None:
        """Makes ``rev`` readable here: an existing registry reads from ``remote_url``.

        With a git remote, clones the registry if this machine has no work tree yet, and
        fetches when the work tree does not know ``rev`` (committed by another machine).
        """
        if not self.git_remote:
            if (self.root / ".dvc").exists():  # nothing to read from a registry never made
                self.ensure()
            return
        self.ensure()
        if not self._git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", check=False):
            with self._lock():
                self._git("fetch", "--quiet", "origin", check=False)

    def _sync_data(self, path: str) -> None:
        """Leaves no data file of ``path`` in the work tree: versions live in the remote."""
        target = self.root / path
        target.with_name(f".{target.name}.tmp").unlink(missing_ok=True)
        target.unlink(missing_ok=True)

    def _push(self, repo: Any, target: Path) -> None:
        """``dvc push`` of one file; a failure names the remote, the cause and a missing bucket.

        DVC raises an error that only counts the files that failed to upload and logs the
        cause, so the cause is taken from its log records.
        """
        from mlops_assets.lib.storage import location, missing_bucket

        causes = _ErrorRecords()
        loggers = [logging.getLogger(name) for name in ("dvc", "dvc_data", "dvc_objects")]
        for logger in loggers:
            logger.addHandler(causes)
        try:
            repo.push(targets=[str(target)])
        except Exception as exc:
            name = repo.config["core"].get("remote", "")
            url = str(repo.config["remote"].get(name, {}).get("url", "")) or self.remote_url
            cause = causes.errors[0] if causes.errors else exc
            reason = f"{type(cause).__name__}: {cause}"
            bucket = missing_bucket(location(url))
            if bucket:
                reason = f"bucket {bucket!r} does not exist ({reason})"
            raise DataRegistryError(f"pushing to the DVC remote {url} failed: {reason}") from exc
        finally:
            for logger in loggers:
                logger.removeHandler(causes)

    @staticmethod
    def _drop_local_copy(repo: Any, target: Path, md5: str) -> None:
        """Removes a version's bytes from the work tree and the local DVC cache.

        The remote is the record, and every read of a version comes from it, as in a fresh
        clone or a production run's pod: a local cache would be a third copy of what the lake
        and the remote hold (a year of features: 23 MB).
        """
        target.unlink(missing_ok=True)
        cached = Path(repo.cache.local.oid_to_path(md5))
        cached.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # its folder too, once empty (a block each)
            cached.parent.rmdir()

    def _reset(self, path: str, start: str | None) -> None:
        """Puts the work tree back at revision ``start`` (HEAD if unknown), data file included."""
        self._git("reset", "--quiet", "--hard", start or "HEAD", check=False)
        self._sync_data(path)

    def _recover_interrupted(self) -> None:
        """Drops what a writer killed mid-commit left behind (hold the lock).

        A process killed after ``dvc add`` leaves its pointer staged (DVC's autostage), which
        the next commit would record as a version nobody finished; one killed inside a git
        command can leave git's ``index.lock``, and every later git command would refuse to
        run. Under the lock no other writer is running, so all of it goes: the work
        tree returns to the last commit.
        """
        (self.root / ".git" / "index.lock").unlink(missing_ok=True)
        self._git("reset", "--quiet", "--hard", "HEAD")
        # Its data file, no longer ignored once .gitignore is back (ignored files stay).
        self._git("clean", "--quiet", "--force", "-d")

    @contextlib.contextmanager
    def _transaction(self, path: str, failure: str) -> Iterator[None]:
        """From the remote's latest revision; any failure resets to the start (hold the lock).

        Raises:
            DataRegistryError: ``failure`` and the cause, after the reset.
        """
        start = None
        try:
            self._recover_interrupted()
            if self.git_remote:
                self._git("pull", "--quiet", "--rebase", "origin", "HEAD")
            start = self._git("rev-parse", "HEAD")
            yield
        except BaseException as exc:
            self._reset(path, start)
            if not isinstance(exc, Exception):
                raise
            raise DataRegistryError(f"{failure}: {exc}") from exc

    # -- public API -------------------------------------------------------------------------
    def commit(self, path: str, payload: bytes, message: str) -> DatasetVersion:
        """Versions ``payload`` at ``path``: dvc add, dvc push, git commit (and git push).

        All or nothing: the content reaches the DVC remote before a commit names it, and any
        failure resets the registry to the revision it started from, so no local commit is left
        for a later push to publish. Committing content identical to the current version
        records no new commit and returns the existing revision (``created`` is False).

        Raises:
            DataRegistryError: if any step fails; the registry is as it was before the call
                (the DVC remote may keep the content, unreferenced).
        """
        try:
            self.ensure()
        except Exception as exc:
            raise DataRegistryError(
                f"could not version {path}: cannot open the data registry in {self.root}: {exc}"
            ) from exc
        target = self.root / path
        pointer = f"{path}.dvc"
        gitignore = str(Path(path).parent / ".gitignore")
        md5 = md5_bytes(payload)
        with self._lock():
            with self._transaction(path, f"could not version {path}"):
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(f".{target.name}.tmp")
                tmp.write_bytes(payload)
                tmp.replace(target)
                from dvc.repo import Repo

                with Repo(str(self.root)) as repo:
                    try:
                        repo.add(str(target))
                        self._push(repo, target)
                    finally:  # pushed or not, no local copy stays
                        self._drop_local_copy(repo, target, md5)
                self._git("add", pointer, gitignore)
                created = bool(self._git("status", "--porcelain", "--", pointer, gitignore))
                if created:
                    self._git("commit", "--quiet", "-m", message)
                    if self.git_remote:
                        self._git("push", "--quiet", "origin", "HEAD")
                rev = self._git("log", "-1", "--format=%H", "--", pointer)
            if created:
                self._pack()
        return DatasetVersion(path=path, md5=md5, rev=rev, size=len(payload), created=created)

    def withdraw(self, version: DatasetVersion, reason: str) -> str | None:
        """Takes ``version`` back: its path records again what it recorded before.

        For a version whose data could not be published after it was committed. Published
        history is not rewritten (other clones may hold it): a new commit restores the previous
        pointer, or removes the path if ``version`` was its first, and says why.

        Returns:
            The withdrawing revision, or None if ``version`` recorded no commit of its own.

        Raises:
            DataRegistryError: if the path has a newer version, or a step fails (the registry
                is as it was before the call).
        """
        if not version.created:
            return None
        pointer = f"{version.path}.dvc"
        failure = f"could not withdraw {version.path} at {version.rev[:10]}"
        with self._lock():
            with self._transaction(version.path, failure):
                latest = self._git("log", "-1", "--format=%H", "--", pointer)
                if latest != version.rev:
                    raise DataRegistryError(f"it has a newer version ({latest[:10]})")
                before = f"{version.rev}^"
                if self._git("ls-tree", "--name-only", before, "--", pointer):
                    self._git("checkout", "--quiet", before, "--", pointer)
                else:
                    self._git("rm", "--quiet", "--", pointer)
                message = f"Withdraw {version.path} at {version.rev[:10]}: {reason}"
                self._git("commit", "--quiet", "-m", message)
                if self.git_remote:
                    self._git("push", "--quiet", "origin", "HEAD")
                rev = self._git("rev-parse", "HEAD")
            self._sync_data(version.path)
        return rev

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


def store_versioned(
    registry: DataRegistry, path: str, payload: bytes, message: str, target: Any
) -> DatasetVersion:
    """Writes ``payload`` to ``target`` (a lake ``UPath``) and versions it at ``path``.

    Both sides get the new version or neither does, on every failure that raises:

    1. stage: the bytes go next to ``target`` under a hidden name, which no reader opens. A
       lake that cannot be written fails here, before the registry is touched.
    2. commit: the registry records the version (all or nothing, see ``DataRegistry.commit``);
       if it fails, the staged bytes are dropped and ``target`` was never changed.
    3. promote: the staged bytes replace ``target`` in one step. If that fails, the version is
       withdrawn (``DataRegistry.withdraw``), so the registry records the previous one again.

    A process killed between 2 and 3 leaves a registry version that no materialization
    names, and the lake at its previous version: readers never see unversioned data.

    Raises:
        DataRegistryError: the registry failed (the lake is unchanged), or a withdrawal
            failed (the message names the revision the lake does not hold).
        Exception: the lake's own error from staging or promoting (the registry records the
            version it recorded before).
    """
    from mlops_assets.lib.storage import discard, discard_interrupted, promote, stage

    staged = stage(target, payload)
    try:
        version = registry.commit(path, payload, message)
        try:
            promote(staged, target)
        except Exception as error:
            try:
                registry.withdraw(version, f"writing {target} failed ({type(error).__name__})")
            except DataRegistryError as failed:
                raise DataRegistryError(
                    f"{path} at registry revision {version.rev} is not in the lake: writing "
                    f"{target} failed ({error}), and withdrawing the version failed too "
                    f"({failed})"
                ) from error
            raise
    finally:
        discard(staged)
    discard_interrupted(target)
    return version
