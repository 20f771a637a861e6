"""Day manifests: what the upstream promised, checked against what arrived (``lib/manifest.py``)."""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import date
from pathlib import Path

import pytest

from mlops_assets.cli import main
from mlops_assets.lib.landing import LandingFileError, landing_path, manifest_path
from mlops_assets.lib.manifest import (
    FileEntry,
    IncompleteDeliveryError,
    count_rows,
    read_delivered,
    read_manifest,
    write_manifest,
)
from mlops_assets.lib.replay import replay

DAY = date(2013, 1, 1)


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("replayed")
    replay(root, DAY, 1, include_reference=False)
    return root


@pytest.fixture
def landing(replayed: Path, tmp_path: Path) -> Path:
    """A landing zone with the real 2013-01-01, files and manifest, as the replay writes it."""
    shutil.copytree(replayed, tmp_path / "landing")
    return tmp_path / "landing"


def flights(landing: Path) -> Path:
    path: Path = landing_path(landing, "flights", DAY)
    return path


def test_the_replay_writes_the_manifest_of_what_it_delivered(landing: Path):
    manifest = read_manifest(landing, DAY)
    assert manifest is not None and manifest.day == DAY
    payload = flights(landing).read_bytes()
    assert manifest.files["flights/2013-01-01.csv"] == FileEntry(
        842, len(payload), hashlib.sha256(payload).hexdigest()
    )
    assert manifest.files["weather/2013-01-01.csv"].rows == 67  # five hours missing upstream
    assert len(read_delivered(landing, "flights", DAY, require_manifest=True)) == 842


def test_a_file_cut_at_a_line_boundary_names_the_file_and_both_counts(landing: Path):
    payload = flights(landing).read_bytes()
    cut = b"".join(payload.splitlines(keepends=True)[:501])  # the header and 500 rows
    flights(landing).write_bytes(cut)
    promised = read_manifest(landing, DAY).files["flights/2013-01-01.csv"]  # type: ignore[union-attr]
    with pytest.raises(IncompleteDeliveryError) as info:
        read_delivered(landing, "flights", DAY, require_manifest=True)
    assert str(info.value) == (
        f"{flights(landing)}: does not match its manifest manifests/2013-01-01.json: "
        f"500 rows delivered, 842 in the manifest; {len(cut):,} bytes delivered, "
        f"{len(payload):,} in the manifest; sha256 {hashlib.sha256(cut).hexdigest()[:12]} "
        f"delivered, {promised.sha256[:12]} in the manifest"
    )
    assert info.value.rule == "matches_manifest"


def test_a_changed_byte_is_a_checksum_mismatch(landing: Path):
    payload = flights(landing).read_bytes()
    at = payload.index(b",UA,") + 1
    changed = payload[:at] + b"AA" + payload[at + 2 :]  # same rows, same size
    flights(landing).write_bytes(changed)
    with pytest.raises(IncompleteDeliveryError) as info:
        read_delivered(landing, "flights", DAY, require_manifest=True)
    message = str(info.value)
    assert message.startswith(f"{flights(landing)}: does not match its manifest ")
    assert message.endswith(
        f": sha256 {hashlib.sha256(changed).hexdigest()[:12]} delivered, "
        f"{hashlib.sha256(payload).hexdigest()[:12]} in the manifest"
    )


def test_without_a_manifest_a_day_is_refused_unless_manifests_are_optional(landing: Path):
    manifest_path(landing, DAY).unlink()
    with pytest.raises(IncompleteDeliveryError) as info:
        read_delivered(landing, "weather", DAY, require_manifest=True)
    assert str(info.value) == (
        f"{landing_path(landing, 'weather', DAY)}: no manifest manifests/2013-01-01.json "
        "(the upstream writes it after the day's files)"
    )
    assert len(read_delivered(landing, "weather", DAY, require_manifest=False)) == 67


def test_a_manifest_is_checked_even_when_optional_and_must_list_the_file(landing: Path):
    path = manifest_path(landing, DAY)
    data = json.loads(path.read_text())
    del data["files"]["weather/2013-01-01.csv"]
    path.write_text(json.dumps(data))
    with pytest.raises(IncompleteDeliveryError, match="not listed in its manifest"):
        read_delivered(landing, "weather", DAY, require_manifest=False)
    path.write_text('{"day": "2013-01-01", "files": {"flights/2013-01-01.csv": {"rows": 1}}}')
    with pytest.raises(IncompleteDeliveryError, match=r"is not a valid manifest \(KeyError"):
        read_delivered(landing, "flights", DAY, require_manifest=False)


def test_count_rows_counts_lines_after_the_header():
    assert [count_rows(p) for p in (b"", b"a,b\n", b"a,b\n1,2\n", b"a,b\n1,2\n3,4")] == [0, 0, 1, 2]


def test_a_user_writes_the_manifest_of_their_own_files(landing: Path, capsys):
    manifest_path(landing, DAY).unlink()
    assert main(["landing-manifest", "--day", "2013-01-01", "--landing", str(landing)]) == 0
    assert read_manifest(landing, DAY) == write_manifest(landing, DAY)
    assert capsys.readouterr().out == (
        f"wrote {landing}/manifests/2013-01-01.json: flights/2013-01-01.csv (842 rows), "
        "weather/2013-01-01.csv (67 rows)\n"
    )
    assert main(["landing-manifest", "--day", "2013-01-02", "--landing", str(landing)]) == 1
    assert "no flights/2013-01-02.csv or weather/2013-01-02.csv" in capsys.readouterr().err
    with pytest.raises(LandingFileError):
        write_manifest(landing, date(2013, 1, 2))
    assert not manifest_path(landing, date(2013, 1, 2)).exists()
