"""The labelled pairs a trial is judged on."""

import pandas as pd

from mlops_assets.lib.features import LABEL_COLUMN
from mlops_assets.lib.predictions import labelled_days, labelled_pairs

KEYS = {"flight_date": ["d"] * 3, "carrier": ["AA"] * 3, "flight": [1, 2, 3], "origin": ["JFK"] * 3}


def test_only_labelled_flights_both_models_answered_are_paired() -> None:
    labels = pd.DataFrame({**KEYS, LABEL_COLUMN: [1.0, None, 0.0]})
    champion = pd.DataFrame({**KEYS, "probability": [0.9, 0.5, 0.1]})
    challenger = pd.DataFrame({**KEYS, "probability": [0.8, 0.4, 0.2]}).iloc[[0, 1]]
    pairs = labelled_pairs("d", labels, champion, challenger)
    # 2 has no label (cancelled), 3 no challenger answer.
    assert pairs[["flight", "champion", "challenger"]].values.tolist() == [[1, 0.9, 0.8]]
    assert labelled_days(pairs) == []  # one class only: the day does not count


def test_a_day_counts_once_it_holds_both_classes() -> None:
    labels = pd.DataFrame({**KEYS, LABEL_COLUMN: [1.0, 0.0, None]})
    scores = pd.DataFrame({**KEYS, "probability": [0.9, 0.5, 0.1]})
    day = labelled_pairs("2013-02-01", labels, scores, scores)
    empty = labelled_pairs("2013-02-02", labels.assign(**{LABEL_COLUMN: None}), scores, scores)
    assert labelled_days(pd.concat([day, empty])) == ["2013-02-01"]
    assert labelled_days(empty) == []
