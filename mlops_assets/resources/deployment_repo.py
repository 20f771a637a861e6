"""The deployment repository: releases are commits, reverts are reverts (GitOps).

Argo CD watches the repository and applies what it holds; nothing else writes to a cluster.
Each release clones or fetches the remote into a private checkout, writes the service's
manifests and the new blue-green state, commits and pushes. A push that loses a race is
redone on top of the other release; a remote that cannot be reached fails the release and
leaves the remote as it was.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import yaml

from mlops_assets import settings
from mlops_assets.lib import release as rel

BRANCH = "main"
GIT_TIMEOUT_S = 60
PUSH_ATTEMPTS = 5
STATE_FILE = "release.json"
ENV_FILE = "release.env"
IDENTITY = ("mlops-assets release", "mlops-assets@localhost")
# `git log` fields: sha, subject, trailers (one "key: value" per line), one record each.
_LOG_FORMAT = "%H%x1f%s%x1f%(trailers:only,unfold)%x1e"


class DeploymentRepoError(RuntimeError):
    """The deployment repository could not be read or written (the message says which)."""


@dataclass(frozen=True)
class Outcome:
    """What a release or a revert did.

    Attributes:
        commit: The repository's head after it (the new commit, or the unchanged head).
        changed: False when the release was already live.
        state: The blue-green state the repository holds now.
    """

    commit: str
    changed: bool
    state: rel.ReleaseState


class DeploymentRepo(dg.ConfigurableResource):
    """A git repository holding the prediction service's manifests and release state.

    Attributes:
        url: The remote Argo CD watches (a path or any git URL; locally a bare repository
            under the state folder, created on first use).
        checkout: Private working copy of releases on this host.
        manifests: The service's Kubernetes base (docs/deploy.md), copied into the
            repository with each release.
        create_remote: Create ``url`` as a bare repository when it does not exist (the
            embedded default; a production remote that cannot be reached is an error).
    """

    url: str
    checkout: str
    manifests: str
    create_remote: bool = False

    def release(self, release: rel.Release) -> Outcome:
        """Commits ``release`` to the idle colour, which becomes live, and pushes it.

        Raises:
            DeploymentRepoError: when the remote cannot be read or written; nothing was
                pushed, and running the release again retries it.
        """
        base = Path(self.manifests)
        if not (base / "kustomization.yaml").is_file():
            raise DeploymentRepoError(f"no Kubernetes base at {base} (kustomization.yaml)")
        with self._locked():
            for _ in range(PUSH_ATTEMPTS):
                previous = self._sync()
                state = rel.next_state(previous, release, uuid.uuid4().hex[:12])
                if state == previous:
                    return Outcome(self._head(), False, state)
                self._write(state, base)
                self._commit(rel.commit_message(release, state, previous))
                if self._push():
                    return Outcome(self._head(), True, state)
        raise DeploymentRepoError(
            f"{self.url}: {PUSH_ATTEMPTS} pushes in a row lost a race with other releases"
        )

    def revert(self, actor: str, reason: str) -> Outcome:
        """Reverts the newest release not reverted yet: the live Service flips back.

        Raises:
            ReleaseError: when there is nothing to revert.
            DeploymentRepoError: when the remote cannot be read or written.
        """
        with self._locked():
            for _ in range(PUSH_ATTEMPTS):
                self._sync()
                target = rel.to_revert(self.history())
                self._git("revert", "--no-commit", target["sha"])
                release_id = target[rel.RELEASE_TRAILER]
                self._commit(rel.revert_message(release_id, target["subject"], actor, reason))
                if self._push():
                    return Outcome(self._head(), True, self._state_or_fail())
        raise DeploymentRepoError(f"{self.url}: the revert lost {PUSH_ATTEMPTS} races")

    def history(self) -> list[dict[str, str]]:
        """The checkout's commits, newest first: ``sha``, ``subject`` and trailers."""
        if not self._has_commits():
            return []
        entries = []
        for record in self._git("log", f"--format={_LOG_FORMAT}").split("\x1e"):
            if not record.strip():
                continue
            sha, subject, trailers = record.strip().split("\x1f")
            entry = {"sha": sha, "subject": subject}
            for line in trailers.splitlines():
                key, _, value = line.partition(": ")
                entry[key.strip()] = value.strip()
            entries.append(entry)
        return entries

    def state(self) -> rel.ReleaseState | None:
        """The blue-green state on the remote (fetched), or None before the first release."""
        with self._locked():
            return self._sync()

    @property
    def app_dir(self) -> Path:
        """The folder of the service in the checkout (the Argo CD Application's path)."""
        return Path(self.checkout) / rel.APP

    def _sync(self) -> rel.ReleaseState | None:
        """Makes the checkout equal to the remote's branch (or empty before any release)."""
        self._ensure_local_remote()
        checkout = Path(self.checkout)
        if not (checkout / ".git").is_dir():
            shutil.rmtree(checkout, ignore_errors=True)
            checkout.parent.mkdir(parents=True, exist_ok=True)
            self._run(["git", "clone", "--quiet", self.url, str(checkout)], cwd=checkout.parent)
        else:
            # A copied or moved state's checkout still names the remote it was cloned from.
            if self._git("remote", "get-url", "origin").strip() != self.url:
                self._git("remote", "set-url", "origin", self.url)
            self._git("fetch", "--quiet", "--prune", "origin")
        if self._remote_has_branch():
            self._git("checkout", "--quiet", "-B", BRANCH, f"origin/{BRANCH}")
            self._git("reset", "--quiet", "--hard", f"origin/{BRANCH}")
        else:
            # Before the first release: an unborn branch with nothing staged.
            self._git("symbolic-ref", "HEAD", f"refs/heads/{BRANCH}")
            self._git("rm", "-r", "--quiet", "--cached", "--ignore-unmatch", ".")
        self._git("clean", "--quiet", "-fdx")
        path = self.app_dir / STATE_FILE
        return rel.ReleaseState.from_json(path.read_text()) if path.is_file() else None

    def _write(self, state: rel.ReleaseState, base: Path) -> None:
        shutil.rmtree(self.app_dir / "base", ignore_errors=True)
        shutil.copytree(base, self.app_dir / "base")
        kustomization = yaml.safe_dump(rel.overlay(state), sort_keys=False)
        (self.app_dir / "kustomization.yaml").write_text(kustomization)
        (self.app_dir / STATE_FILE).write_text(state.as_json())
        live_image = state.colours[state.live]["image"]
        (self.app_dir / ENV_FILE).write_text(f"MLOPS_SERVICE_IMAGE={live_image}\n")

    def _commit(self, message: str) -> None:
        self._git("add", "--all")
        self._git("commit", "--quiet", "--no-verify", "--file", "-", stdin=message)

    def _push(self) -> bool:
        """Pushes the branch; False when another push got there first (fetch and redo)."""
        done = self._run(["git", "push", "--quiet", "origin", f"HEAD:{BRANCH}"], check=False)
        if done.returncode == 0:
            return True
        if "rejected" in done.stderr or "fetch first" in done.stderr:
            return False
        raise DeploymentRepoError(f"pushing to {self.url} failed: {_tail(done.stderr)}")

    def _state_or_fail(self) -> rel.ReleaseState:
        path = self.app_dir / STATE_FILE
        if not path.is_file():
            raise DeploymentRepoError(f"{path} is missing after the revert")
        return rel.ReleaseState.from_json(path.read_text())

    def _remote_has_branch(self) -> bool:
        refs = self._git("ls-remote", "--heads", "origin", BRANCH)
        return bool(refs.strip())

    def _has_commits(self) -> bool:
        done = self._run(["git", "rev-parse", "--verify", "--quiet", "HEAD"], check=False)
        return done.returncode == 0

    def _head(self) -> str:
        return self._git("rev-parse", "HEAD").strip()

    def _ensure_local_remote(self) -> None:
        """Creates the embedded default remote (a bare repository) on first use."""
        if self.create_remote and not Path(self.url).exists():
            Path(self.url).mkdir(parents=True)
            self._run(
                ["git", "init", "--quiet", "--bare", f"--initial-branch={BRANCH}", "."],
                cwd=Path(self.url),
            )

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """One release or revert at a time through this checkout."""
        lock = Path(f"{self.checkout}.lock")
        lock.parent.mkdir(parents=True, exist_ok=True)
        with lock.open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _git(self, *args: str, stdin: str | None = None) -> str:
        return self._run(["git", *args], stdin=stdin).stdout

    def _run(
        self,
        command: list[str],
        *,
        cwd: Path | None = None,
        check: bool = True,
        stdin: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        name, email = IDENTITY
        env = {
            **os.environ,
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_AUTHOR_NAME": name,
            "GIT_AUTHOR_EMAIL": email,
            "GIT_COMMITTER_NAME": name,
            "GIT_COMMITTER_EMAIL": email,
        }
        try:
            done = subprocess.run(
                command,
                cwd=cwd or self.checkout,
                env=env,
                input=stdin,
                capture_output=True,
                text=True,
                timeout=GIT_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired as error:
            raise DeploymentRepoError(f"{' '.join(command[:2])} on {self.url} timed out") from error
        if check and done.returncode != 0:
            raise DeploymentRepoError(
                f"{' '.join(command[:2])} on the deployment repository {self.url} failed: "
                f"{_tail(done.stderr or done.stdout)}"
            )
        return done


def _tail(text: str) -> str:
    return " | ".join(text.strip().splitlines()[-3:]) or "no output"


def local_deployment_repo(state: Path) -> DeploymentRepo:
    """The embedded default: a bare repository and a checkout under the state folder."""
    where = settings.Locations(state).deployment
    return DeploymentRepo(
        url=str(where / "remote.git"),
        checkout=str(where / "checkout"),
        manifests=str(settings.project_root() / "deploy" / "service" / "base"),
        create_remote=True,
    )
