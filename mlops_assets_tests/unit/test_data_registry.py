from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from mlops_assets.lib.data_registry import (
    DataRegistry,
    DataRegistryError,
    DatasetVersion,
    store_versioned,
)
from mlops_assets.lib.fingerprints import md5_bytes

PATH = "flight_features/2013-01-05.parquet"


@pytest.fixture
def registry(tmp_path: Path) -> DataRegistry:
    return DataRegistry(tmp_path / "registry", str(tmp_path / "remote"))


def test_versions_restore_bit_for_bit_from_the_remote(registry: DataRegistry, tmp_path: Path):
    first = registry.commit(PATH, b"first version" * 100, "v1")
    second = registry.commit(PATH, b"second version" * 100, "v2")
    assert first.rev != second.rev
    assert registry.history(PATH) == [second.rev, first.rev]
    assert registry.recorded_md5(PATH, first.rev) == first.md5 == md5_bytes(b"first version" * 100)
    out = tmp_path / "restored.parquet"
    assert registry.restore(PATH, first.rev, out, expected_md5=first.md5) == first.md5
    assert out.read_bytes() == b"first version" * 100


def _local_files(registry: DataRegistry) -> list[Path]:
    """Data bytes kept in the registry's folder: its work tree's data files and DVC cache."""
    cache = registry.root / ".dvc" / "cache" / "files" / "md5"
    kept = list(cache.iterdir()) if cache.exists() else []  # objects and their folders
    return kept + [p for p in registry.root.rglob("*.parquet") if p.is_file()]


def test_a_version_lives_in_the_remote_only_and_reads_back_from_it(registry: DataRegistry):
    first = registry.commit(PATH, b"first version" * 100, "v1")
    second = registry.commit(PATH, b"second version" * 100, "v2")
    assert _local_files(registry) == []  # the lake and the remote hold it, not a third copy
    assert registry.read(PATH, first.rev) == b"first version" * 100
    assert registry.read(PATH, second.rev) == b"second version" * 100
    again = registry.commit(PATH, b"second version" * 100, "v2 again")
    assert not again.created and again.rev == second.rev
    assert _local_files(registry) == []


def _git_objects(registry: DataRegistry) -> dict[str, int]:
    out = subprocess.run(
        ["git", "count-objects", "-v"], cwd=registry.root, capture_output=True, text=True
    )
    return {k: int(v) for k, v in (line.split(": ") for line in out.stdout.splitlines())}


def test_loose_git_objects_are_packed_and_every_version_still_reads(tmp_path: Path):
    registry = DataRegistry(tmp_path / "registry", str(tmp_path / "remote"), pack_after=8)
    versions = [registry.commit(PATH, f"version {n}".encode() * 50, f"v{n}") for n in range(4)]
    objects = _git_objects(registry)
    assert objects["packs"] >= 1 and objects["in-pack"] >= 8
    assert objects["count"] < 8  # what is loose is only what came after the last pack
    for n, version in enumerate(versions):
        assert registry.read(PATH, version.rev) == f"version {n}".encode() * 50
    assert registry.history(PATH) == [v.rev for v in reversed(versions)]


def test_below_the_threshold_objects_stay_loose(registry: DataRegistry):
    registry.commit(PATH, b"one version", "v1")
    assert _git_objects(registry)["packs"] == 0


def test_identical_content_records_no_new_version(registry: DataRegistry):
    first = registry.commit(PATH, b"same", "v1")
    again = registry.commit(PATH, b"same", "v1 again")
    assert again.rev == first.rev
    assert registry.history(PATH) == [first.rev]


def test_unknown_revision_or_mismatch_is_a_clear_error(registry: DataRegistry, tmp_path: Path):
    version = registry.commit(PATH, b"data", "v1")
    with pytest.raises(DataRegistryError, match="not versioned at registry revision"):
        registry.recorded_md5("flight_features/1999-01-01.parquet", version.rev)
    out = tmp_path / "x"
    with pytest.raises(DataRegistryError, match="expected 0000"):
        registry.restore(PATH, version.rev, out, expected_md5="0000")
    assert not out.exists()


def test_registry_is_its_own_git_repo_with_a_local_remote(registry: DataRegistry):
    registry.ensure()
    assert (registry.root / ".git").is_dir()
    config = (registry.root / ".dvc" / "config").read_text()
    assert "analytics = False" in config
    # The folder remote is per machine and relative: not committed, no absolute path.
    assert "url" not in config
    local = registry.root / ".dvc" / "config.local"
    assert "url = ../../remote" in local.read_text()
    ignored = subprocess.run(["git", "check-ignore", "-q", str(local)], cwd=registry.root)
    assert ignored.returncode == 0


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_moved_registry_keeps_versioning_into_the_remote_beside_it(tmp_path: Path):
    old, new = tmp_path / "old", tmp_path / "new"
    first = DataRegistry(old / "registry", str(old / "remote")).commit(PATH, b"one" * 50, "v1")
    old.rename(new)
    moved = DataRegistry(new / "registry", str(new / "remote"))
    second = moved.commit(PATH, b"two" * 50, "v2")
    shutil.rmtree(moved.root / ".dvc" / "cache")  # both versions come from the moved remote
    assert moved.read(PATH, first.rev) == b"one" * 50
    assert moved.read(PATH, second.rev) == b"two" * 50
    assert not old.exists()


def test_a_copied_registry_follows_its_remote_setting_not_the_recorded_one(tmp_path: Path):
    """A registry made before remotes were relative records the absolute folder in its
    committed config; a copy given another remote versions into that one only."""
    original = DataRegistry(tmp_path / "a" / "registry", str(tmp_path / "a" / "remote"))
    first = original.commit(PATH, b"one" * 50, "v1")
    dvc_dir = original.root / ".dvc"
    (dvc_dir / "config.local").unlink()
    with (dvc_dir / "config").open("a") as config:
        config.write(f"['remote \"default\"']\n    url = {original.remote_url}\n")
    subprocess.run(["git", "commit", "-qam", "absolute remote"], cwd=original.root, check=True)
    before = files_of(tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    copy = DataRegistry(tmp_path / "b" / "registry", str(tmp_path / "elsewhere"))
    second = copy.commit(PATH, b"two" * 50, "v2")
    assert files_of(tmp_path / "a") == before
    assert len(files_of(tmp_path / "elsewhere")) == 1  # v2's content, pushed to the setting
    shutil.rmtree(copy.root / ".dvc" / "cache")
    assert copy.read(PATH, second.rev) == b"two" * 50
    # v1 is in the copied remote only, which the setting no longer names: a clear error.
    with pytest.raises(DataRegistryError, match="cannot read"):
        copy.read(PATH, first.rev)
    assert files_of(tmp_path / "a") == before


def test_registry_with_a_git_remote_shares_versions_between_clones(tmp_path: Path):
    origin = tmp_path / "registry.git"
    subprocess.run(
        ["git", "init", "-q", "--bare", "--initial-branch=main", str(origin)], check=True
    )
    remote = str(tmp_path / "dvc-remote")
    writer = DataRegistry(tmp_path / "writer", remote, git_remote=str(origin))
    version = writer.commit(PATH, b"shared" * 10, "v1")
    # A second work tree (another machine) clones the registry and restores the version.
    reader = DataRegistry(tmp_path / "reader", remote, git_remote=str(origin))
    reader.ensure()
    out = tmp_path / "out.parquet"
    assert reader.restore(
        PATH, version.rev, out, expected_md5=reader.recorded_md5(PATH, version.rev)
    )
    assert out.read_bytes() == b"shared" * 10
    # Both writers append to the same history.
    second = reader.commit(PATH, b"from reader", "v2")
    assert writer.commit("other/x.parquet", b"x", "v3").rev != second.rev
    assert writer.history(PATH) == [second.rev, version.rev]


# -- failures: all or nothing ----------------------------------------------------------------


def _git(repo: Path, *args: str, bare: bool = False) -> str:
    where = ["--git-dir", str(repo)] if bare else ["-C", str(repo)]
    result = subprocess.run(["git", *where, *args], capture_output=True, text=True, check=True)
    return result.stdout.strip()


def _origin(tmp_path: Path) -> Path:
    origin = tmp_path / "registry.git"
    subprocess.run(
        ["git", "init", "-q", "--bare", "--initial-branch=main", str(origin)], check=True
    )
    return origin


def _reject_pushes(origin: Path) -> Path:
    """A server-side hook that refuses every push (branch protection, a policy, an outage)."""
    hook = origin / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'pushes to the registry are frozen' >&2\nexit 1\n")
    hook.chmod(0o755)
    return hook


def _break_dvc_remote(registry: DataRegistry) -> Path:
    """The DVC remote becomes unusable: a file where its folder was."""
    remote = Path(registry.remote_url)
    shutil.rmtree(remote)
    remote.write_bytes(b"")
    return remote


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_a_failed_dvc_push_records_no_revision_and_keeps_the_previous_version(
    registry: DataRegistry,
):
    first = registry.commit(PATH, b"first", "v1")
    remote = _break_dvc_remote(registry)
    with pytest.raises(DataRegistryError, match=f"could not version {PATH}") as info:
        registry.commit(PATH, b"second", "v2")
    assert f"pushing to the DVC remote {remote} failed: NotADirectoryError" in str(info.value)
    assert registry.history(PATH) == [first.rev]
    assert _git(registry.root, "rev-parse", "HEAD") == first.rev
    assert _git(registry.root, "status", "--porcelain") == ""
    # The recorded version is the first again; the bytes that failed are nowhere left.
    assert registry.recorded_md5(PATH, "HEAD") == first.md5
    assert _local_files(registry) == []


def test_a_rejected_git_push_leaves_no_commit_for_a_later_push_to_publish(tmp_path: Path):
    origin = _origin(tmp_path)
    registry = DataRegistry(tmp_path / "clone", str(tmp_path / "remote"), git_remote=str(origin))
    first = registry.commit(PATH, b"first", "v1")
    hook = _reject_pushes(origin)
    with pytest.raises(DataRegistryError, match="pushes to the registry are frozen"):
        registry.commit(PATH, b"second", "v2 never published")
    assert _git(registry.root, "rev-parse", "HEAD") == first.rev
    assert registry.read(PATH, "HEAD") == b"first" and _local_files(registry) == []
    hook.unlink()
    later = registry.commit("other/x.parquet", b"x", "v3")
    published = _git(origin, "log", "--format=%s", "main", bare=True).splitlines()
    assert published == ["v3", "v1", "Initialize data registry"]
    assert registry.history(PATH) == [first.rev] and later.rev != first.rev


def test_withdraw_restores_the_previous_version_everywhere(tmp_path: Path):
    origin = _origin(tmp_path)
    registry = DataRegistry(tmp_path / "clone", str(tmp_path / "remote"), git_remote=str(origin))
    first = registry.commit(PATH, b"first", "v1")
    second = registry.commit(PATH, b"second", "v2")
    rev = registry.withdraw(second, "the lake write failed")
    assert rev is not None
    assert registry.recorded_md5(PATH, rev) == first.md5
    assert registry.history(PATH) == [rev, second.rev, first.rev]
    assert registry.read(PATH, rev) == b"first" and _local_files(registry) == []
    assert _git(origin, "rev-parse", "main", bare=True) == rev
    subject = _git(registry.root, "log", "-1", "--format=%s")
    assert subject == f"Withdraw {PATH} at {second.rev[:10]}: the lake write failed"
    # A first version is withdrawn by removing the path.
    only = registry.commit("other/y.parquet", b"y", "y1")
    gone = registry.withdraw(only, "the lake write failed")
    assert gone is not None
    with pytest.raises(DataRegistryError, match="not versioned"):
        registry.recorded_md5("other/y.parquet", gone)
    assert not (registry.root / "other" / "y.parquet").exists()


def test_withdraw_leaves_existing_and_newer_versions_alone(registry: DataRegistry):
    first = registry.commit(PATH, b"first", "v1")
    again = registry.commit(PATH, b"first", "v1 again")
    assert not again.created
    assert registry.withdraw(again, "the lake write failed") is None  # recorded nothing new
    second = registry.commit(PATH, b"second", "v2")
    with pytest.raises(DataRegistryError, match="has a newer version"):
        registry.withdraw(first, "too late")
    assert registry.history(PATH) == [second.rev, first.rev]
    assert _git(registry.root, "status", "--porcelain") == ""


# -- store_versioned: the lake and the registry together -------------------------------------


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    folder = tmp_path / "lake" / "flight_features"
    folder.mkdir(parents=True)
    return folder


def _stored(registry: DataRegistry, lake: Path, payload: bytes) -> DatasetVersion:
    return store_versioned(registry, PATH, payload, "v", lake / "2013-01-05.parquet")


def test_store_versioned_writes_the_lake_and_the_registry(registry: DataRegistry, lake: Path):
    version = _stored(registry, lake, b"first")
    assert (lake / "2013-01-05.parquet").read_bytes() == b"first"
    assert registry.recorded_md5(PATH, version.rev) == version.md5 == md5_bytes(b"first")
    assert registry.read(PATH, version.rev) == b"first"
    assert _leftovers(lake) == []


def test_a_lake_that_cannot_be_written_leaves_the_registry_alone(
    registry: DataRegistry, lake: Path, monkeypatch: pytest.MonkeyPatch
):
    from mlops_assets.lib import storage

    first = _stored(registry, lake, b"first")

    def disk_full(target: Any, payload: bytes) -> Any:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(storage, "stage", disk_full)
    with pytest.raises(OSError, match="No space left"):
        _stored(registry, lake, b"second")
    assert registry.history(PATH) == [first.rev]
    assert (lake / "2013-01-05.parquet").read_bytes() == b"first"
    assert _leftovers(lake) == []


def test_a_registry_that_fails_leaves_the_lake_at_its_previous_version(
    registry: DataRegistry, lake: Path
):
    first = _stored(registry, lake, b"first")
    _break_dvc_remote(registry)
    with pytest.raises(DataRegistryError, match=f"could not version {PATH}"):
        _stored(registry, lake, b"second")
    assert (lake / "2013-01-05.parquet").read_bytes() == b"first"
    assert _leftovers(lake) == []  # the staged bytes are gone
    assert registry.history(PATH) == [first.rev]


def test_a_failed_publish_withdraws_the_new_version(
    registry: DataRegistry, lake: Path, monkeypatch: pytest.MonkeyPatch
):
    from mlops_assets.lib import storage

    first = _stored(registry, lake, b"first")

    def refused(staged: Any, target: Any) -> None:
        raise PermissionError(13, "Permission denied", str(target))

    monkeypatch.setattr(storage, "promote", refused)
    with pytest.raises(PermissionError):
        _stored(registry, lake, b"second")
    assert (lake / "2013-01-05.parquet").read_bytes() == b"first"
    assert _leftovers(lake) == []
    [withdrawal, second, earlier] = registry.history(PATH)
    assert earlier == first.rev
    assert registry.recorded_md5(PATH, withdrawal) == first.md5  # the tip is v1 again
    assert registry.recorded_md5(PATH, second) == md5_bytes(b"second")
    assert "PermissionError" in _git(registry.root, "log", "-1", "--format=%s")
    # Same content again: nothing new was recorded, so nothing is withdrawn.
    with pytest.raises(PermissionError):
        _stored(registry, lake, b"first")
    assert registry.history(PATH) == [withdrawal, second, earlier]


def test_a_failed_publish_whose_withdrawal_fails_names_the_revision(
    registry: DataRegistry, lake: Path, monkeypatch: pytest.MonkeyPatch
):
    from mlops_assets.lib import storage

    _stored(registry, lake, b"first")

    def refused(staged: Any, target: Any) -> None:
        raise PermissionError(13, "Permission denied", str(target))

    def unreachable(self: DataRegistry, version: DatasetVersion, reason: str) -> str:
        raise DataRegistryError("git push failed: the server is unreachable")

    monkeypatch.setattr(storage, "promote", refused)
    monkeypatch.setattr(DataRegistry, "withdraw", unreachable)
    with pytest.raises(DataRegistryError) as info:
        _stored(registry, lake, b"second")
    [orphan, _] = registry.history(PATH)
    message = str(info.value)
    assert f"{PATH} at registry revision {orphan} is not in the lake" in message
    assert "Permission denied" in message and "unreachable" in message
    assert (lake / "2013-01-05.parquet").read_bytes() == b"first"
    assert _leftovers(lake) == []


def test_reading_a_registry_never_made_creates_nothing(tmp_path: Path):
    registry = DataRegistry(tmp_path / "registry", str(tmp_path / "remote"))
    with pytest.raises(DataRegistryError, match="cannot read"):
        registry.read(PATH, "0" * 40)
    assert not registry.root.exists()


# -- a writer killed mid-write ----------------------------------------------------------------

OTHER = "flight_features/2013-01-06.parquet"


def test_a_writer_killed_inside_git_commit_leaves_no_version(
    registry: DataRegistry, tmp_path: Path
):
    """A real SIGKILL while git commits (a hook holds it there): the pointer the writer had
    staged stays behind; the next commit records only its own version."""
    import os
    import signal
    import sys

    from mlops_assets.processes import wait_for

    first = registry.commit(PATH, b"first", "v1")
    marker = tmp_path / "committing"
    hook = registry.root / ".git" / "hooks" / "pre-commit"
    hook.write_text(f"#!/bin/sh\ntouch '{marker}'\nsleep 120\n")
    hook.chmod(0o755)
    writer = (
        "import sys; from pathlib import Path; from mlops_assets.lib.data_registry import "
        "DataRegistry; DataRegistry(Path(sys.argv[1]), sys.argv[2]).commit(sys.argv[3], "
        "b'killed', 'killed')"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", writer, str(registry.root), registry.remote_url, OTHER],
        start_new_session=True,
    )
    try:
        wait_for(marker.exists, 60.0, interval=0.1, what="the writer inside git commit")
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the writer, git and its hook
        process.wait(timeout=30)
    hook.unlink()
    # What the kill left: the new pointer staged, ready to be swept into any later commit.
    assert f"A  {OTHER}.dvc" in _git(registry.root, "status", "--porcelain")

    second = registry.commit(PATH, b"second", "v2")
    assert registry.history(PATH) == [second.rev, first.rev]
    assert registry.history(OTHER) == []
    assert f"{OTHER}.dvc" not in _git(registry.root, "ls-tree", "-r", "--name-only", "HEAD")
    assert _git(registry.root, "status", "--porcelain") == ""


def test_a_write_clears_the_staged_files_of_killed_writers(registry: DataRegistry, lake: Path):
    killed = lake / ".2013-01-05.parquet.0123abcd.tmp"  # what a writer killed mid-write leaves
    killed.write_bytes(b"half")
    neighbour = lake / ".2013-01-06.parquet.0123abcd.tmp"  # another partition's: not ours
    neighbour.write_bytes(b"other")
    _stored(registry, lake, b"first")
    assert (lake / "2013-01-05.parquet").read_bytes() == b"first"
    assert _leftovers(lake) == [neighbour.name]
