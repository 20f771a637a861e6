"""A small real scoring bundle: a classifier trained on two real days, the real references."""

from __future__ import annotations

from datetime import date
from typing import Any

import pandas as pd

from mlops_assets import settings
from mlops_assets.lib import contracts, estimator, features, modeling, scoring
from mlops_assets.lib.pseudonyms import Pseudonymizer
from mlops_assets_tests.conftest import validated_day

TRAINING_DAYS = (date(2013, 1, 3), date(2013, 1, 4))


def small_bundle(
    tables: dict[str, pd.DataFrame],
    version: str = "7",
    trees: int = 30,
    pseudonym_key: str | None = None,
) -> scoring.ScoringBundle:
    """A bundle of model ``version`` trained on ``TRAINING_DAYS`` (a second or two).

    With ``pseudonym_key`` the planes' tail numbers are pseudonymized as in the lake.
    """
    planes = contracts.validate(tables["planes"], contracts.planes_schema(), source="planes")
    frames = [
        features.build_flight_features(*validated_day(tables, day), planes) for day in TRAINING_DAYS
    ]
    train = pd.concat(frames, ignore_index=True)
    train = train[train[features.LABEL_COLUMN].notna()]
    classifier = modeling.train_classifier(train, estimator.HyperParameters(n_estimators=trees))
    if pseudonym_key is not None:
        planes = Pseudonymizer(pseudonym_key).frame(planes, ["tailnum"])
    return scoring.ScoringBundle(
        classifier=classifier,
        planes=planes,
        carriers=sorted(tables["airlines"]["carrier"]),
        airports=scoring.known_airports(tables["airports"]),
        model={"model_name": settings.MODEL_NAME, "model_version": version},
    )


def requests_for(flights: pd.DataFrame, weather: pd.DataFrame) -> list[dict[str, Any]]:
    """Requests as a client would send them: the flight plus the weather at its hour."""
    hourly = weather.set_index(["origin", "time_hour"])
    out = []
    for row in flights.to_dict("records"):
        request = {k: row[k] for k in scoring.REQUEST_FLIGHT_FIELDS}
        request["time_hour"] = row["time_hour"].isoformat()
        request["tailnum"] = None if pd.isna(row["tailnum"]) else row["tailnum"]
        key = (row["origin"], row["time_hour"])
        for name in features.WEATHER_FIELDS:
            value = hourly.loc[key, name] if key in hourly.index else None
            request[name] = None if value is None or pd.isna(value) else float(value)
        out.append(request)
    return out
