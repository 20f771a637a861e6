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
