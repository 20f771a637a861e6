"""The champion's scoring bundle published for scorers outside the code location."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from mlops_assets.lib import scoring, scoring_bundles
from mlops_assets_tests.bundles import small_bundle


@pytest.fixture(scope="module")
def bundle(tables) -> scoring.ScoringBundle:
    return small_bundle(tables, version="7")


def test_a_published_bundle_scores_like_the_original(bundle, tmp_path: Path):
    root = str(tmp_path)
    assert scoring_bundles.champion_version(root) is None
    assert scoring_bundles.publish(root, bundle) == "7"
    assert scoring_bundles.champion_version(root) == "7"
    loaded = scoring_bundles.load(root, "7")
    model = scoring.request_model(bundle.request_fields())
    request = model(**scoring.EXAMPLE_REQUEST).model_dump()
    assert scoring.score(loaded, [request]) == scoring.score(bundle, [request])
    pd.testing.assert_frame_equal(loaded.planes, bundle.planes.reset_index(drop=True))


def test_a_new_champion_moves_the_pointer_and_keeps_the_old_bundle(bundle, tmp_path: Path):
    root = str(tmp_path)
    scoring_bundles.publish(root, bundle)
    newer = scoring.ScoringBundle(
        classifier=bundle.classifier,
        planes=bundle.planes,
        carriers=bundle.carriers,
        airports=bundle.airports,
        model={**bundle.model, "model_version": "8"},
    )
    scoring_bundles.publish(root, newer)
    assert scoring_bundles.champion_version(root) == "8"
    assert scoring_bundles.load(root, "7").model["model_version"] == "7"


def test_a_bundle_without_a_version_is_refused_and_nothing_is_published(bundle, tmp_path):
    unnamed = scoring.ScoringBundle(
        classifier=bundle.classifier,
        planes=bundle.planes,
        carriers=bundle.carriers,
        airports=bundle.airports,
        model={},
    )
    with pytest.raises(ValueError, match="names no model_version"):
        scoring_bundles.publish(str(tmp_path), unnamed)
    assert list(tmp_path.iterdir()) == []


def test_unreadable_pointer_and_missing_bundle_are_named(tmp_path: Path):
    (tmp_path / scoring_bundles.POINTER).write_text("{half")
    with pytest.raises(scoring_bundles.BundleError, match="cannot read the champion pointer"):
        scoring_bundles.champion_version(str(tmp_path))
    (tmp_path / scoring_bundles.POINTER).write_text("{}")
    with pytest.raises(scoring_bundles.BundleError, match="names no model_version"):
        scoring_bundles.champion_version(str(tmp_path))
    with pytest.raises(scoring_bundles.BundleError, match="version 9"):
        scoring_bundles.load(str(tmp_path), "9")


def test_default_root_per_environment(tmp_path: Path):
    assert scoring_bundles.default_root({"MLOPS_STATE_DIR": str(tmp_path)}) == str(
        tmp_path.resolve() / "lake" / "scoring_bundles"
    )
    production = {"MLOPS_ENV": "production", "MLOPS_LAKE_URL": "s3://b/lake"}
    assert scoring_bundles.default_root(production) == "s3://b/lake/scoring_bundles"
