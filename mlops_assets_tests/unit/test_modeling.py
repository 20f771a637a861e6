from __future__ import annotations

import pickle
from datetime import date

import numpy as np
import pandas as pd
import pytest

from mlops_assets.lib import estimator, modeling
from mlops_assets.lib.features import FEATURE_COLUMNS, LABEL_COLUMN


def synthetic_days(n_days: int, rows: int = 300, seed: int = 0, positive: float | None = None):
    """Feature-shaped days where delay depends on temperature and carrier."""
    rng = np.random.default_rng(seed)
    frames = {}
    for i in range(n_days):
        day = date(2013, 3, 1 + i).isoformat()
        frame = pd.DataFrame({c: rng.normal(size=rows) for c in FEATURE_COLUMNS})
        for column in ("carrier", "origin", "dest", "route", "engine", "plane_type"):
            frame[column] = pd.array(rng.choice(["A", "B", "C"], size=rows), dtype="string")
        logit = 1.5 * frame["temp"] + (frame["carrier"] == "A").astype(float) - 1
        label = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
        if positive is not None:
            label = np.full(rows, int(positive))
        frame[LABEL_COLUMN] = pd.array(label, dtype="Int8")
        frame["flight_date"] = day
        frames[day] = frame
    return frames


def test_window_days_and_split_are_by_time():
    window = modeling.TrainingWindow(as_of=date(2013, 3, 10), days=10, validation_days=3)
    assert window.start == date(2013, 3, 1)
    assert window.validation_start == date(2013, 3, 8)
    data = modeling.assemble_training_set(synthetic_days(12), window)
    train = data[data["split"] == "train"]
    validation = data[data["split"] == "validation"]
    assert train["flight_date"].max() < validation["flight_date"].min()
    assert set(data["flight_date"]) == {date(2013, 3, d).isoformat() for d in range(1, 11)}


def test_bad_windows_are_rejected():
    with pytest.raises(ValueError, match="validation_days"):
        modeling.TrainingWindow(as_of=date(2013, 3, 10), days=5, validation_days=5)
    window = modeling.TrainingWindow(as_of=date(2013, 6, 1), days=10, validation_days=3)
    with pytest.raises(modeling.TrainingDataError, match="no feature days"):
        modeling.assemble_training_set(synthetic_days(5), window)


def test_single_class_window_is_rejected():
    window = modeling.TrainingWindow(as_of=date(2013, 3, 10), days=10, validation_days=3)
    with pytest.raises(modeling.TrainingDataError, match="single class"):
        modeling.assemble_training_set(synthetic_days(10, positive=False), window)


def test_training_is_deterministic_and_learns_the_signal():
    window = modeling.TrainingWindow(as_of=date(2013, 3, 10), days=10, validation_days=3)
    data = modeling.assemble_training_set(synthetic_days(10), window)
    params = estimator.HyperParameters(n_estimators=50)
    model, metrics = modeling.fit(data, params)
    again, metrics_again = modeling.fit(data, params)
    assert metrics == metrics_again
    assert model.model_text == again.model_text
    assert metrics["roc_auc"] > 0.7
    assert 0 < model.threshold < 1
    importances = model.importances()
    assert list(importances.columns) == ["feature", "importance"]
    assert importances["feature"].iloc[0] == "temp"


def test_unseen_categories_and_missing_columns():
    window = modeling.TrainingWindow(as_of=date(2013, 3, 10), days=10, validation_days=3)
    data = modeling.assemble_training_set(synthetic_days(10), window)
    model, _ = modeling.fit(data, estimator.HyperParameters(n_estimators=20))
    rows = data.head(3).copy()
    rows["carrier"] = pd.array(["ZZ", "A", "B"], dtype="string")  # ZZ never seen
    assert np.isfinite(model.predict_proba(rows)).all()
    with pytest.raises(ValueError, match="missing from the input"):
        model.predict_proba(rows.drop(columns=["temp"]))


def test_training_and_prediction_share_one_matrix():
    """Level codes are positions in the training levels; unseen and missing levels are NaN."""
    model = modeling.DelayClassifier(
        model_text="", categories={"carrier": ["A", "B"]}, features=["carrier", "temp"]
    )
    frame = pd.DataFrame(
        {
            "carrier": pd.array(["B", "A", "ZZ", None], dtype="string"),
            "temp": pd.array([1.5, None, 3, 4], dtype="Float64"),
        }
    )
    expected = np.array([[1.0, 1.5], [0.0, np.nan], [np.nan, 3.0], [np.nan, 4.0]])
    np.testing.assert_array_equal(model.prepare(frame), expected)
    columns = {"carrier": ["B", "A", "ZZ", None], "temp": [1.5, None, 3, 4]}
    np.testing.assert_array_equal(model.matrix(columns), expected)
    assert model.categorical_indices() == [0]


def test_models_pickled_before_the_rename_still_load():
    model = modeling.DelayClassifier.__new__(modeling.DelayClassifier)
    model.__setstate__({"booster_text": "text", "categories": {}, "threshold": 0.4, "features": []})
    assert model == modeling.DelayClassifier("text", {}, 0.4, [])
    assert pickle.loads(pickle.dumps(model)) == model


@pytest.mark.parametrize(
    ("challenger", "champion", "promote", "reason"),
    [
        ({"roc_auc": 0.70, "pr_auc": 0.4}, None, True, "no champion yet"),
        ({"roc_auc": 0.55, "pr_auc": 0.4}, None, False, "below floor: roc_auc"),
        ({"roc_auc": 0.70, "pr_auc": 0.2}, {"roc_auc": 0.6}, False, "below floor: pr_auc"),
        ({"roc_auc": 0.70, "pr_auc": 0.4}, {"roc_auc": 0.69}, True, "beats champion"),
        ({"roc_auc": 0.70, "pr_auc": 0.4}, {"roc_auc": 0.698}, False, "does not beat"),
    ],
)
def test_gate_decisions(challenger, champion, promote, reason):
    decision = modeling.decide(challenger, champion, modeling.GatePolicy())
    assert decision.promote is promote
    assert reason in decision.reason


def test_the_gate_judges_both_models_on_the_same_rows_and_refuses_other_schemas():
    window = modeling.TrainingWindow(as_of=date(2013, 3, 10), days=10, validation_days=3)
    data = modeling.assemble_training_set(synthetic_days(10), window)
    holdout = data[data[modeling.SPLIT_COLUMN] == "validation"]
    strong, _ = modeling.fit(data, estimator.HyperParameters(n_estimators=50))
    weak, _ = modeling.fit(data, estimator.HyperParameters(n_estimators=2))
    policy = modeling.GatePolicy(min_pr_auc=0.0)
    first = modeling.judge(strong, None, holdout, policy, versions=("1", None))
    assert first.promote and first.champion is None
    itself = modeling.judge(strong, strong, holdout, policy, versions=("1", "1"))
    assert not itself.promote and itself.champion == itself.challenger
    better = modeling.judge(strong, weak, holdout, policy, versions=("2", "1"))
    assert better.promote, better.reason
    assert better.champion == modeling.evaluate(weak, holdout)
    # A champion that scores other features is never compared.
    other = modeling.DelayClassifier(weak.model_text, weak.categories, weak.threshold, ["x"])
    refused = modeling.judge(strong, other, holdout, policy, versions=("2", "1"))
    assert not refused.promote and not refused.comparable and refused.champion is None
    assert refused.reason.startswith("feature schema drift between champion v1 and challenger v2")
    assert "missing in the holdout ['x']; feature lists differ" in refused.reason


def test_gate_config_is_generated_from_the_policy():
    from mlops_assets.defs.training import GateConfig

    fields = GateConfig.model_fields
    # The policy's settings, and the gate's own switch that ends a running trial.
    assert set(fields) == {"metric", "margin", "min_roc_auc", "min_pr_auc", "conclude_trial"}
    policy = GateConfig().model_dump(exclude={"conclude_trial"})
    assert modeling.GatePolicy(**policy) == modeling.GatePolicy()
    assert GateConfig().conclude_trial is False
    assert fields["margin"].description == "Required improvement over the champion."
