"""A day's real performance of the champion, once the day's labels are known.

The batch predictions of a day are joined with the labels of the same flights (a flight's
label, 15+ minutes late on arrival, is known when it lands). Metrics are the ones the gate
judges models by (``lib.modeling.evaluate``), so a daily ROC AUC can be compared with the
champion's validation ROC AUC directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlops_assets.lib.features import KEY_COLUMNS, LABEL_COLUMN

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

# Below this many labelled flights a day's metrics are too noisy to act on; they are still
# computed and shown, and the retraining policy skips the day.
MIN_LABELLED_ROWS = 100


class PerformanceInputError(ValueError):
    """Predictions and labels do not describe the same flights."""


@dataclass(frozen=True)
class DayPerformance:
    """The champion's metrics on one day.

    Attributes:
        rows: Flights predicted.
        labelled_rows: Flights with a known label (cancelled and diverted flights have none).
        status: ``ok``, ``no labels``, ``one class`` (AUCs undefined) or ``too few labels``.
        metrics: ROC AUC, PR AUC, precision, recall, F1 (when defined), positive rate, predicted
            positive rate, mean probability and the prediction-rate shift against the model's
            validation predicted-positive rate.
    """

    rows: int
    labelled_rows: int
    status: str
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def usable(self) -> bool:
        """Whether the day has enough labels of both classes to judge the model by."""
        return self.status == "ok"

    def summary(self, validation_roc_auc: float | None = None) -> dict[str, Any]:
        """Status, counts and rounded metrics, plus the gap to the validation ROC AUC."""
        metrics = {k: round(v, 4) for k, v in self.metrics.items()}
        out: dict[str, Any] = {
            "status": self.status,
            "usable": self.usable,
            "rows": self.rows,
            "labelled_rows": self.labelled_rows,
            **metrics,
        }
        if validation_roc_auc is not None:
            out["validation_roc_auc"] = round(float(validation_roc_auc), 4)
            if "roc_auc" in metrics:
                out["auc_drop"] = round(out["validation_roc_auc"] - metrics["roc_auc"], 4)
        return out


def day_performance(
    predictions: pd.DataFrame,
    labels: pd.DataFrame,
    *,
    validation_predicted_rate: float | None = None,
    min_labelled_rows: int = MIN_LABELLED_ROWS,
) -> DayPerformance:
    """Joins a day's predictions with its labels and computes the metrics.

    Args:
        predictions: ``batch_predictions`` rows: the flight key, ``probability``, ``delayed``
            and ``threshold``.
        labels: ``flight_features`` rows of the same day: the flight key and ``is_delayed``
            (missing for cancelled or diverted flights).
        validation_predicted_rate: The model's predicted-positive rate on its validation
            holdout; the day's rate minus this is ``prediction_rate_shift``.
        min_labelled_rows: Fewer labelled flights make the status ``too few labels``.

    Raises:
        PerformanceInputError: when a flight key is duplicated or predictions and labels cover
            different flights.
    """
    joined = _join_labels(predictions, labels)
    rows = len(joined)
    probability = joined["probability"].to_numpy(dtype=float)
    delayed = joined["delayed"].to_numpy(dtype=bool)
    metrics: dict[str, float] = {}
    if rows:
        metrics["mean_probability"] = float(probability.mean())
        metrics["predicted_positive_rate"] = float(delayed.mean())
        if validation_predicted_rate is not None:
            metrics["prediction_rate_shift"] = float(delayed.mean() - validation_predicted_rate)
    known = joined[LABEL_COLUMN].notna().to_numpy()
    labelled = int(known.sum())
    if labelled == 0:
        return DayPerformance(rows, 0, "no labels", metrics)
    y = joined.loc[known, LABEL_COLUMN].astype(int).to_numpy()
    status = _labelled_metrics(y, probability[known], delayed[known].astype(int), metrics)
    if status == "ok" and labelled < min_labelled_rows:
        status = "too few labels"
    return DayPerformance(rows, labelled, status, metrics)


def _join_labels(predictions: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """Predictions joined one to one with their labels by flight key, or a clear error."""
    for name, frame in (("predictions", predictions), ("labels", labels)):
        duplicated = int(frame.duplicated(KEY_COLUMNS).sum())
        if duplicated:
            raise PerformanceInputError(f"{name}: {duplicated} duplicated flight key(s)")
    joined = predictions[[*KEY_COLUMNS, "probability", "delayed"]].merge(
        labels[[*KEY_COLUMNS, LABEL_COLUMN]], on=KEY_COLUMNS, how="outer", indicator=True
    )
    if (joined["_merge"] != "both").any():
        only_predicted = int((joined["_merge"] == "left_only").sum())
        only_labelled = int((joined["_merge"] == "right_only").sum())
        raise PerformanceInputError(
            f"predictions and labels cover different flights: {only_predicted} predicted "
            f"without a label row, {only_labelled} label rows without a prediction "
            "(were the features rewritten after the predictions?)"
        )
    return joined


def _labelled_metrics(
    y: np.ndarray, probability: np.ndarray, decided: np.ndarray, metrics: dict[str, float]
) -> str:
    """Adds the metrics that need labels to ``metrics``; ``one class`` when AUC is undefined."""
    import numpy as np
    from sklearn.metrics import (
        average_precision_score,
        f1_score,
        precision_score,
        recall_score,
        roc_auc_score,
    )

    metrics["positive_rate"] = float(y.mean())
    metrics["precision"] = float(precision_score(y, decided, zero_division=0))
    metrics["recall"] = float(recall_score(y, decided, zero_division=0))
    metrics["f1"] = float(f1_score(y, decided, zero_division=0))
    if len(np.unique(y)) < 2:
        return "one class"
    metrics["roc_auc"] = float(roc_auc_score(y, probability))
    metrics["pr_auc"] = float(average_precision_score(y, probability))
    return "ok"
