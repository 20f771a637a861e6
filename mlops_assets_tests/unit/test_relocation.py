"""A copied or moved MLflow store is re-pointed at its own artifacts, the original untouched.

Real MLflow on a SQLite store in a state folder (the embedded default's shape).
"""

from __future__ import annotations

import shutil
import sqlite3
import time
from pathlib import Path

import pytest

from mlops_assets import settings
from mlops_assets.lib.relocation import MARKER, relocate


def _digests(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _locations(db: Path) -> list[str]:
    """Every text value of the store that names a file (artifact roots and URIs)."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT artifact_location FROM experiments UNION ALL SELECT artifact_uri FROM runs"
        ).fetchall()
    return [str(value) for (value,) in rows if "/" in str(value)]


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> settings.Locations:
    """A state with one MLflow run and its artifact, opened once where it was made (made
    once: creating an MLflow store takes seconds; no test changes it)."""
    import mlflow

    from mlops_assets.resources.tracking import local_tracking

    where = settings.Locations(tmp_path_factory.mktemp("made") / "original state")  # quoted URIs
    tracking = local_tracking(where.state)
    client = tracking.client()
    run = client.create_run(tracking.ensure_experiment())
    note = where.state.parent / "note.txt"
    note.write_text("artifact")
    client.log_artifact(run.info.run_id, str(note))
    client.set_terminated(run.info.run_id)
    assert relocate(where) is None  # first open: records where it is
    assert (where.state / MARKER).read_text() == str(where.state)
    mlflow.set_tracking_uri(None)  # type: ignore[arg-type]
    return where


def _open(where: settings.Locations) -> str:
    """Reads the state's one artifact through MLflow, as the pipeline would."""
    from mlops_assets.resources.tracking import local_tracking

    client = local_tracking(where.state).client()
    (run,) = client.search_runs([client.get_experiment_by_name(settings.MODEL_NAME).experiment_id])
    assert run.info.artifact_uri.startswith(where.state.as_uri() + "/")
    path = client.download_artifacts(run.info.run_id, "note.txt", str(where.state.parent))
    return Path(path).read_text()


def test_a_copy_is_repointed_and_the_original_is_untouched(
    original: settings.Locations, tmp_path: Path
) -> None:
    before = _digests(original.state)
    copy = settings.Locations(tmp_path / "copy")
    shutil.copytree(original.state, copy.state)
    moved = relocate(copy)
    assert moved is not None and moved.previous == original.state
    assert moved.tracking_records == 2  # the experiment and the run
    values = _locations(copy.tracking_db)
    assert not [v for v in values if str(original.state) in v or original.state.as_uri() in v]
    assert len([v for v in values if v.startswith(copy.state.as_uri() + "/")]) == 2, values
    assert _open(copy) == "artifact"
    assert relocate(copy) is None  # idempotent
    assert _digests(original.state) == before


def test_a_state_moved_before_it_had_a_marker_finds_its_origin(
    original: settings.Locations, tmp_path: Path
) -> None:
    made = settings.Locations(tmp_path / "made")
    shutil.copytree(original.state, made.state)
    relocate(made)
    (made.state / MARKER).unlink()  # as a state from before the marker
    moved = settings.Locations(tmp_path / "moved")
    made.state.rename(moved.state)
    relocation = relocate(moved)
    assert relocation is not None and relocation.previous == made.state
    assert _open(moved) == "artifact"
    assert not made.state.exists()


def test_opening_where_it_was_is_a_single_read(original: settings.Locations) -> None:
    started = time.perf_counter()
    for _ in range(100):
        assert relocate(original) is None
    assert (time.perf_counter() - started) / 100 < 0.002


def test_a_state_not_made_yet_is_left_alone(tmp_path: Path) -> None:
    where = settings.Locations(tmp_path / "nothing")
    assert relocate(where) is None
    assert not where.state.exists()
