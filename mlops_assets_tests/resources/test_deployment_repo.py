"""The deployment repository on real git: releases, races, reverts and an unreachable remote.

Every test works on a bare repository in a temporary folder (the embedded default's shape)
and renders what the repository holds with kustomize, as Argo CD would.
"""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from mlops_assets import settings
from mlops_assets.lib import release as rel
from mlops_assets.resources.deployment_repo import (
    ENV_FILE,
    STATE_FILE,
    DeploymentRepo,
    DeploymentRepoError,
)
from mlops_assets_tests.deploy.test_service_manifests import kustomize, validation_errors
from mlops_assets_tests.releases import REPOSITORY
from mlops_assets_tests.releases import release_of as _release

BASE = settings.project_root() / "deploy" / "service" / "base"


def _repo(tmp_path: Path, name: str = "checkout", **extra: object) -> DeploymentRepo:
    fields: dict[str, object] = {
        "url": str(tmp_path / "remote.git"),
        "checkout": str(tmp_path / name),
        "manifests": str(BASE),
        "create_remote": True,
    }
    return DeploymentRepo(**(fields | extra))  # type: ignore[arg-type]


def _remote_log(tmp_path: Path) -> list[str]:
    done = subprocess.run(
        ["git", "--git-dir", str(tmp_path / "remote.git"), "log", "--format=%H %P|%s", "main"],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip().splitlines()


def _render(folder: Path) -> list[dict[str, object]]:
    """What Argo CD would apply: the release's kustomization rendered, each object valid."""
    objects = kustomize(folder)
    assert validation_errors(objects) == []
    return objects


def _selected_colour(objects: list[dict[str, object]], service: str) -> str:
    for obj in objects:
        meta = obj["metadata"]
        if obj["kind"] == "Service" and meta["name"] == service:  # type: ignore[index]
            return str(obj["spec"]["selector"][rel.COLOUR_LABEL])  # type: ignore[index]
    raise AssertionError(f"no Service {service}")


def _images(objects: list[dict[str, object]]) -> dict[str, str]:
    return {
        obj["metadata"]["name"]: obj["spec"]["template"]["spec"]["containers"][0]["image"]  # type: ignore[index]
        for obj in objects
        if obj["kind"] == "Deployment"
    }


def test_releases_flip_the_live_colour_and_render_as_argo_cd_would(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    first = repo.release(_release("1", "aaa"))
    second = repo.release(_release("2", "bbb"))
    assert (first.changed, second.changed) == (True, True)
    objects = _render(repo.app_dir)
    assert _selected_colour(objects, rel.APP) == "green"
    assert _selected_colour(objects, f"{rel.APP}-preview") == "blue"
    assert _images(objects) == {
        f"{rel.APP}-blue": f"{REPOSITORY}:aaa",
        f"{rel.APP}-green": f"{REPOSITORY}:bbb",
    }
    env = (repo.app_dir / ENV_FILE).read_text()
    assert env == f"MLOPS_SERVICE_IMAGE={REPOSITORY}:bbb\n"
    log = _remote_log(tmp_path)
    assert [line.split("|")[1] for line in log] == [
        "Release flight_delay v2 to green (blue keeps v1)",
        "Release flight_delay v1 to blue",
    ]


def test_the_same_release_twice_makes_no_commit(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    first = repo.release(_release("1", "aaa"))
    again = repo.release(_release("1", "aaa"))
    assert not again.changed
    assert again.commit == first.commit
    assert len(_remote_log(tmp_path)) == 1


def test_a_revert_flips_traffic_back_and_nothing_left_is_said(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    with pytest.raises(rel.ReleaseError, match="holds no release"):
        repo.revert("ana", "nothing yet")
    first = repo.release(_release("1", "aaa"))
    repo.release(_release("2", "bbb"))
    reverted = repo.revert("ana", "p99 latency doubled")
    assert reverted.state.live == "blue"
    assert reverted.state == first.state
    assert _selected_colour(_render(repo.app_dir), rel.APP) == "blue"
    message = subprocess.run(
        ["git", "--git-dir", str(tmp_path / "remote.git"), "log", "-1", "--format=%B"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "p99 latency doubled" in message
    assert "By: ana" in message
    assert f"{rel.REVERT_TRAILER}: {repo.history()[1][rel.RELEASE_TRAILER]}" in message
    with pytest.raises(rel.ReleaseError, match="is the first release"):
        repo.revert("ana", "again")
    assert len(_remote_log(tmp_path)) == 3


def test_an_unreachable_remote_fails_loudly_and_a_later_run_retries(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    repo.release(_release("1", "aaa"))
    before = _remote_log(tmp_path)
    away = tmp_path / "moved.git"
    (tmp_path / "remote.git").rename(away)
    with pytest.raises(DeploymentRepoError, match=r"remote\.git"):
        _repo(tmp_path, create_remote=False).release(_release("2", "bbb"))
    away.rename(tmp_path / "remote.git")
    assert _remote_log(tmp_path) == before
    retried = _repo(tmp_path, create_remote=False).release(_release("2", "bbb"))
    assert retried.changed
    assert retried.state.live == "green"


def test_a_remote_that_never_existed_is_not_created_in_production(tmp_path: Path) -> None:
    repo = _repo(tmp_path, url=str(tmp_path / "nowhere.git"), create_remote=False)
    with pytest.raises(DeploymentRepoError, match=r"nowhere\.git"):
        repo.release(_release("1", "aaa"))
    assert not (tmp_path / "nowhere.git").exists()


def test_two_releases_at_once_never_interleave(tmp_path: Path) -> None:
    _repo(tmp_path).release(_release("1", "aaa"))
    # Two hosts: separate checkouts of one remote, pushing at the same moment.
    hosts = [_repo(tmp_path, f"host{n}") for n in range(2)]
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def release(host: DeploymentRepo, version: str) -> None:
        try:
            start.wait()
            host.release(_release(version, f"b{version}"))
        except BaseException as error:
            errors.append(error)

    threads = [
        threading.Thread(target=release, args=(host, str(n + 2))) for n, host in enumerate(hosts)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    log = _remote_log(tmp_path)
    assert len(log) == 3
    # A straight line: each commit's one parent is the commit below it.
    for line, below in itertools.pairwise(log):
        assert line.split("|")[0].split()[1:] == [below.split()[0]]
    state = hosts[0].state()
    assert state is not None
    served = {state.colours[colour]["model_version"] for colour in rel.COLOURS}
    assert served == {"2", "3"}


def test_a_broken_state_file_stops_the_release_with_its_name(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    repo.release(_release("1", "aaa"))
    (repo.app_dir / STATE_FILE).write_text(json.dumps({"live": "blue"}))
    subprocess.run(["git", "-C", repo.checkout, "commit", "-qam", "hand edit"], check=True)
    subprocess.run(["git", "-C", repo.checkout, "push", "-q", "origin", "HEAD:main"], check=True)
    before = _remote_log(tmp_path)
    with pytest.raises(rel.ReleaseError, match=r"release\.json is not a release state"):
        repo.release(_release("2", "bbb"))
    assert _remote_log(tmp_path) == before


def test_a_missing_kubernetes_base_is_named(tmp_path: Path) -> None:
    shutil.copytree(BASE, tmp_path / "base")
    (tmp_path / "base" / "kustomization.yaml").unlink()
    repo = _repo(tmp_path, manifests=str(tmp_path / "base"))
    with pytest.raises(DeploymentRepoError, match="no Kubernetes base"):
        repo.release(_release("1", "aaa"))


def _digests(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_copied_deployment_folder_releases_into_its_own_remote(tmp_path: Path) -> None:
    """The copy's checkout was cloned from the original's remote; it follows its own url."""
    original, copied = tmp_path / "original", tmp_path / "copy"
    _repo(original).release(_release("1", "aaa"))
    before = _digests(original)
    shutil.copytree(original, copied, symlinks=True)
    outcome = _repo(copied).release(_release("2", "bbb"))
    assert outcome.changed and outcome.state.live == "green"
    assert len(_remote_log(copied)) == 2
    assert _digests(original) == before
