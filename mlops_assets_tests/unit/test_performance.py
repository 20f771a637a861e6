"""A day's real performance: joins, metrics, days without labels, mismatched inputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from mlops_assets.lib.features import KEY_COLUMNS, LABEL_COLUMN
from mlops_assets.lib.performance import PerformanceInputError, day_performance


def frames(n: int = 400, seed: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    keys = pd.DataFrame(
        {
            "flight_date": ["2013-03-01"] * n,
            "carrier": rng.choice(["AA", "UA", "B6"], n),
            "flight": np.arange(n),
            "origin": rng.choice(["JFK", "LGA", "EWR"], n),
        }
    )
    label = (rng.random(n) < 0.25).astype(float)
    probability = np.clip(0.25 + 0.3 * (label - 0.25) + rng.normal(0, 0.15, n), 0, 1)
    predictions = keys.assign(probability=probability, delayed=probability >= 0.3, threshold=0.3)
    labels = keys.assign(**{LABEL_COLUMN: label})
    return predictions, labels


def test_metrics_match_sklearn_on_the_joined_rows() -> None:
    predictions, labels = frames()
    shuffled = labels.sample(frac=1.0, random_state=3)  # the join is by key, not position
    result = day_performance(predictions, shuffled, validation_predicted_rate=0.2)
    y = labels[LABEL_COLUMN].to_numpy()
    p = predictions["probability"].to_numpy()
    assert result.status == "ok" and result.usable
    assert result.rows == result.labelled_rows == 400
    assert result.metrics["roc_auc"] == pytest.approx(roc_auc_score(y, p))
    assert result.metrics["pr_auc"] == pytest.approx(average_precision_score(y, p))
    assert result.metrics["positive_rate"] == pytest.approx(y.mean())
    rate = predictions["delayed"].mean()
    assert result.metrics["predicted_positive_rate"] == pytest.approx(rate)
    assert result.metrics["prediction_rate_shift"] == pytest.approx(rate - 0.2)


def test_cancelled_flights_have_no_label_and_are_left_out() -> None:
    predictions, labels = frames()
    labels.loc[:99, LABEL_COLUMN] = np.nan
    result = day_performance(predictions, labels)
    assert result.rows == 400 and result.labelled_rows == 300
    y = labels[LABEL_COLUMN].iloc[100:].to_numpy()
    p = predictions["probability"].iloc[100:].to_numpy()
    assert result.metrics["roc_auc"] == pytest.approx(roc_auc_score(y, p))


def test_a_day_without_labels_says_so() -> None:
    predictions, labels = frames()
    labels[LABEL_COLUMN] = np.nan
    result = day_performance(predictions, labels)
    assert result.status == "no labels"
    assert not result.usable
    assert result.labelled_rows == 0
    assert "roc_auc" not in result.metrics
    assert result.metrics["predicted_positive_rate"] >= 0  # prediction drift is still known


def test_one_class_and_few_labels_are_not_usable() -> None:
    predictions, labels = frames()
    labels[LABEL_COLUMN] = 0.0
    assert day_performance(predictions, labels).status == "one class"
    predictions, labels = frames(n=60)
    few = day_performance(predictions, labels, min_labelled_rows=100)
    assert few.status == "too few labels" and not few.usable
    assert "roc_auc" in few.metrics


def test_empty_day() -> None:
    predictions, labels = frames(n=0)
    result = day_performance(predictions, labels)
    assert result.rows == 0 and result.status == "no labels"


def test_different_flights_are_refused() -> None:
    predictions, labels = frames()
    with pytest.raises(PerformanceInputError, match="1 predicted without a label row"):
        day_performance(predictions, labels.iloc[1:])
    doubled = pd.concat([predictions, predictions.iloc[:2]])
    with pytest.raises(PerformanceInputError, match="predictions: 2 duplicated"):
        day_performance(doubled, labels)


def test_key_columns_are_the_flight_key() -> None:
    assert KEY_COLUMNS == ["flight_date", "carrier", "flight", "origin"]
