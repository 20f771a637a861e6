from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mlops_assets.lib.data_registry import DataRegistry, DataRegistryError
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
    # Restore must come from the remote, not a local cache.
    shutil.rmtree(registry.root / ".dvc" / "cache")
    out = tmp_path / "restored.parquet"
    assert registry.restore(PATH, first.rev, out, expected_md5=first.md5) == first.md5
    assert out.read_bytes() == b"first version" * 100
    # The work tree keeps the latest version.
    assert (registry.root / PATH).read_bytes() == b"second version" * 100


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
    assert str(Path(registry.remote_url)) in config


def test_registry_with_a_git_remote_shares_versions_between_clones(tmp_path: Path):
    import subprocess

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
