"""Prediction frames of a day, and the labelled pairs a trial is judged on."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from mlops_assets.lib.features import KEY_COLUMNS, LABEL_COLUMN

PAIR_COLUMNS = ["day", *KEY_COLUMNS, LABEL_COLUMN, "champion", "challenger"]


def prediction_frame(
    features: pd.DataFrame, classifier: Any, model_name: str, version: str
) -> pd.DataFrame:
    """A model's predictions for a day's flights.

    Returns:
        The flight key, ``probability`` of a 15+ minute arrival delay, ``delayed`` at the
        model's threshold, ``threshold``, ``model_name`` and ``model_version``.
    """
    probabilities = classifier.predict_proba(features) if len(features) else np.empty(0)
    out = features[KEY_COLUMNS].reset_index(drop=True)
    out["probability"] = probabilities
    out["delayed"] = probabilities >= classifier.threshold
    out["threshold"] = classifier.threshold
    out["model_name"] = model_name
    out["model_version"] = version
    return out


def labelled_pairs(
    day: str, labels: pd.DataFrame, champion: pd.DataFrame, challenger: pd.DataFrame
) -> pd.DataFrame:
    """The day's labelled flights with both models' probabilities (``PAIR_COLUMNS``).

    Flights either model did not score, and cancelled or diverted flights (no label), drop
    out: only flights both models answered count for both.
    """
    both = champion[[*KEY_COLUMNS, "probability"]].merge(
        challenger[[*KEY_COLUMNS, "probability"]], on=KEY_COLUMNS, suffixes=("_a", "_b")
    )
    pairs = labels[[*KEY_COLUMNS, LABEL_COLUMN]].merge(both, on=KEY_COLUMNS)
    pairs = pairs.dropna(subset=[LABEL_COLUMN]).rename(
        columns={"probability_a": "champion", "probability_b": "challenger"}
    )
    pairs.insert(0, "day", day)
    return pairs[PAIR_COLUMNS].reset_index(drop=True)


def labelled_days(pairs: pd.DataFrame) -> list[str]:
    """Days whose labelled flights hold both classes (the days a trial may count)."""
    if pairs.empty:
        return []
    classes = pairs.groupby("day")[LABEL_COLUMN].nunique()
    return sorted(str(day) for day in classes[classes == 2].index)


def online_summary(log: pd.DataFrame, labels: pd.DataFrame, batch: pd.DataFrame) -> dict[str, Any]:
    """What the service answered on a day, judged against the day's labels.

    Args:
        log: The day's prediction-log lines (``lib.prediction_log.COLUMNS``).
        labels: The day's ``flight_features`` (flight key and label).
        batch: The day's ``batch_predictions``: online answers of the same model version
            must match them (the same scoring code), the largest gap is reported.

    Returns:
        Lines and requests, the share of served answers the challenger gave, and per role the
        labelled flights and ROC AUC (when both classes are present).
    """
    from sklearn.metrics import roc_auc_score

    out: dict[str, Any] = {"online_lines": len(log), "online_requests": log["request_id"].nunique()}
    if log.empty:
        return out
    served = log[log["served"].astype(bool)]
    if len(served):
        out["online_challenger_share"] = round(float((served["role"] == "challenger").mean()), 4)
    lines = keyed(log)
    joined = lines.merge(keyed(labels)[[*KEY_COLUMNS, LABEL_COLUMN]], on=KEY_COLUMNS)
    joined = joined.dropna(subset=[LABEL_COLUMN])
    for role, rows in joined.groupby("role"):
        rows = rows.drop_duplicates(KEY_COLUMNS, keep="last")
        out[f"online_{role}_flights"] = len(rows)
        if rows[LABEL_COLUMN].nunique() == 2:
            auc = roc_auc_score(rows[LABEL_COLUMN].astype(bool), rows["probability"])
            out[f"online_{role}_roc_auc"] = round(float(auc), 4)
    same = lines.merge(keyed(batch), on=[*KEY_COLUMNS, "model_version"], suffixes=("", "_batch"))
    if len(same):
        gap = (same["probability"] - same["probability_batch"]).abs().max()
        out["online_vs_batch_max_gap"] = float(gap)
    return out


def keyed(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with its flight key (and model version) in one comparable form."""
    out = frame.copy()
    out["flight_date"] = pd.to_datetime(out["flight_date"]).dt.strftime("%Y-%m-%d")
    out["flight"] = out["flight"].astype("int64")
    out[["carrier", "origin"]] = out[["carrier", "origin"]].astype(str)
    if "model_version" in out:
        out["model_version"] = out["model_version"].astype(str)
    return out
