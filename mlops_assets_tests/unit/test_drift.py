from __future__ import annotations

import json
import math
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from mlops_assets.lib import contracts, drift, estimator, features, modeling
from mlops_assets_tests.conftest import validated_day

JANUARY = [date(2013, 1, 1) + timedelta(days=i) for i in range(29)]  # Jan 1 .. Jan 29


@pytest.fixture(scope="module")
def january(tables) -> dict[date, pd.DataFrame]:
    """Real feature frames of 2013-01-01 .. 2013-01-29."""
    planes = contracts.validate(tables["planes"], contracts.planes_schema(), source="p")
    frames = {}
    for day in JANUARY:
        flights, weather = validated_day(tables, day)
        frames[day] = features.build_flight_features(flights, weather, planes)
    return frames


@pytest.fixture(scope="module")
def model(january) -> modeling.DelayClassifier:
    """A champion trained on the 28 days before 2013-01-29 (few trees: fast)."""
    window = modeling.TrainingWindow(as_of=JANUARY[-2], days=28, validation_days=7)
    data = modeling.assemble_training_set({d.isoformat(): f for d, f in january.items()}, window)
    classifier, _ = modeling.fit(data, estimator.HyperParameters(n_estimators=40))
    return classifier


@pytest.fixture(scope="module")
def reference(january, model) -> pd.DataFrame:
    """The champion's training window, scored by the champion (as ``drift_reference``)."""
    window = pd.concat([january[d] for d in JANUARY[:-1]], ignore_index=True)
    return window.assign(probability=model.predict_proba(window))


def test_monitored_columns_are_chosen_and_exist_in_the_features():
    assert drift.DriftPolicy().columns == drift.DRIFT_COLUMNS
    assert drift.PREDICTION_COLUMN in drift.DRIFT_COLUMNS
    assert set(drift.DRIFT_COLUMNS) - {drift.PREDICTION_COLUMN} <= set(features.FEATURE_COLUMNS)
    # The calendar drifts on every new day by construction: never monitored.
    assert not {"month", "day_of_week", "day_of_year"} & set(drift.DRIFT_COLUMNS)


def test_identical_distributions_do_not_drift(reference):
    result = drift.compute_drift(reference.sample(n=900, random_state=1), reference)
    assert not result.drifted
    assert result.drifted_columns == []
    assert result.drift_share == 0
    assert all(c.evaluated and not c.drifted for c in result.columns)
    assert [c.column for c in result.columns] == list(drift.DRIFT_COLUMNS)


def test_a_shifted_column_drifts_and_only_that_one(reference):
    current = reference.sample(n=900, random_state=2)
    # A summer day against a January window: three standard deviations warmer (~+30 F).
    current = current.assign(temp=current["temp"] + 3 * reference["temp"].std())
    result = drift.compute_drift(current, reference)
    assert result.drifted_columns == ["temp"]
    temp = next(c for c in result.columns if c.column == "temp")
    assert temp.method == "wasserstein" and temp.score >= temp.threshold
    assert result.drift_share == pytest.approx(1 / len(drift.DRIFT_COLUMNS))
    # One column is not enough for the day to count as drifted.
    assert not result.drifted


def test_a_shifted_category_mix_drifts(reference):
    current = reference[reference["origin"] == "JFK"].sample(n=900, random_state=3)
    result = drift.compute_drift(current, reference)
    assert "origin" in result.drifted_columns


def test_the_day_drifts_when_the_share_is_over_the_threshold(reference):
    current = reference.sample(n=900, random_state=4)
    current = current.assign(
        temp=current["temp"] + 3 * reference["temp"].std(),
        dewp=current["dewp"] + 3 * reference["dewp"].std(),
    )
    strict = drift.DriftPolicy(drift_share_threshold=0.1)
    result = drift.compute_drift(current, reference, strict)
    assert result.drifted_columns == ["temp", "dewp"]
    assert result.drift_share == pytest.approx(2 / 16)
    assert result.drifted
    assert not drift.compute_drift(current, reference).drifted  # default: 2 of 16 <= 0.15


def test_an_empty_current_day_is_a_clear_error(reference):
    with pytest.raises(drift.EmptyDataError, match="current data has no rows"):
        drift.compute_drift(reference.iloc[0:0], reference)
    with pytest.raises(drift.EmptyDataError, match="reference data has no rows"):
        drift.compute_drift(reference, reference.iloc[0:0])


def test_a_missing_monitored_column_is_named(reference):
    with pytest.raises(ValueError, match=r"current data lacks monitored column\(s\) \['temp'\]"):
        drift.compute_drift(reference.drop(columns=["temp"]), reference)


def test_a_column_without_values_is_reported_not_evaluated(reference):
    # The weather of 2013-12-31 is missing from the source: a day can have no weather at all.
    current = reference.sample(n=900, random_state=5).assign(temp=np.nan)
    result = drift.compute_drift(current, reference)
    temp = next(c for c in result.columns if c.column == "temp")
    assert not temp.evaluated and not temp.drifted and math.isnan(temp.score)
    assert result.drift_share == 0
    assert "| temp | wasserstein | no data |" in result.markdown()


def test_reference_sampling_is_bounded_and_deterministic(reference):
    first = drift.sample_reference(reference, 5000, seed=7)
    again = drift.sample_reference(reference, 5000, seed=7)
    other = drift.sample_reference(reference, 5000, seed=8)
    assert len(reference) > 5000 and len(first) == 5000
    pd.testing.assert_frame_equal(first, again)
    assert not first.equals(other)
    # Rows keep the window's order (oldest day first).
    assert first["flight_date"].is_monotonic_increasing
    small = reference.head(100)
    pd.testing.assert_frame_equal(drift.sample_reference(small, 5000, 7), small)
    with pytest.raises(ValueError, match="max_rows"):
        drift.sample_reference(reference, 0, 7)


def test_the_report_is_bounded_by_the_policy(reference):
    policy = drift.DriftPolicy(reference_max_rows=2000)
    result = drift.compute_drift(reference.head(300), reference, policy)
    assert result.reference_rows == 2000
    assert result.current_rows == 300


def test_a_real_january_day_against_the_previous_28_days(january, model, reference):
    day = january[date(2013, 1, 29)]
    result = drift.compute_drift(day.assign(probability=model.predict_proba(day)), reference)
    assert result.current_rows == len(day)
    assert result.reference_rows == 5000
    assert all(c.evaluated for c in result.columns)
    # The day after the window looks like the window: the policy stays quiet.
    assert not result.drifted
    assert result.drift_share <= 0.15
    scores = {c.column: c.score for c in result.columns}
    assert scores["carrier"] < 0.1 and scores["origin"] < 0.1
    # Evidently's outputs: a standalone HTML page and parseable JSON with one test per column.
    assert result.html.lstrip().lower().startswith("<!doctype html") or "<html" in result.html
    assert len(result.html) > 10_000
    report = json.loads(result.json)
    assert len(report["tests"]) == len(drift.DRIFT_COLUMNS)
    assert {t["status"] for t in report["tests"]} <= {"SUCCESS", "FAIL"}
    table = result.markdown().splitlines()
    assert table[0].startswith("| column | method | score")
    assert len(table) == 2 + len(drift.DRIFT_COLUMNS)


def test_bad_policies_are_rejected():
    with pytest.raises(ValueError, match="unknown drift method"):
        drift.DriftPolicy(rules={"temp": drift.ColumnRule("ks", 0.05)})
    with pytest.raises(ValueError, match="carrier is categorical"):
        drift.DriftPolicy(rules={"carrier": drift.ColumnRule("wasserstein", 0.1)})
    with pytest.raises(ValueError, match="threshold must be > 0"):
        drift.DriftPolicy(rules={"temp": drift.ColumnRule("psi", 0)})
    with pytest.raises(ValueError, match="drift_share_threshold"):
        drift.DriftPolicy(drift_share_threshold=1.5)
    with pytest.raises(ValueError, match="reference_max_rows"):
        drift.DriftPolicy(reference_max_rows=0)
