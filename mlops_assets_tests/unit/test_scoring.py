"""The request contract and request scoring: generated from the pipeline's code, equal to it."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pydantic
import pytest

from mlops_assets.lib import contracts, estimator, features, modeling, scoring
from mlops_assets_tests.bundles import requests_for
from mlops_assets_tests.conftest import validated_day

DAYS = [date(2013, 1, 3), date(2013, 1, 4), date(2013, 1, 5)]


@pytest.fixture(scope="module")
def validated(tables) -> dict[str, Any]:
    carriers = tables["airlines"]["carrier"]
    planes = contracts.validate(tables["planes"], contracts.planes_schema(), source="planes")
    days = {day: validated_day(tables, day) for day in DAYS}
    return {
        "planes": planes,
        "days": days,
        "carriers": sorted(carriers),
        "airports": scoring.known_airports(tables["airports"]),
    }


@pytest.fixture(scope="module")
def bundle(validated) -> scoring.ScoringBundle:
    frames = [
        features.build_flight_features(f, w, validated["planes"])
        for f, w in validated["days"].values()
    ]
    train = pd.concat(frames[:2], ignore_index=True)
    train = train[train[features.LABEL_COLUMN].notna()]
    classifier = modeling.train_classifier(train, estimator.HyperParameters(n_estimators=30))
    classifier.threshold = 0.3
    return scoring.ScoringBundle(
        classifier=classifier,
        planes=validated["planes"],
        carriers=validated["carriers"],
        airports=validated["airports"],
        model={"model_name": "flight_delay", "model_version": "7"},
    )


@pytest.fixture(scope="module")
def model(bundle) -> type[pydantic.BaseModel]:
    return scoring.request_model(bundle.request_fields())


def test_request_fields_are_read_from_the_landing_contracts(validated, model):
    schema = model.model_json_schema()
    flights = contracts.flights_schema(validated["carriers"], validated["airports"]).columns
    properties = schema["properties"]
    assert set(properties) == set(scoring.REQUEST_FLIGHT_FIELDS) | set(features.WEATHER_FIELDS)
    required = {n for n in scoring.REQUEST_FLIGHT_FIELDS if not flights[n].nullable}
    assert set(schema["required"]) == required
    assert properties["distance"]["minimum"] == 1 and properties["distance"]["maximum"] == 10000
    assert properties["sched_dep_time"]["maximum"] == 2359
    assert set(properties["dest"]["enum"]) == set(validated["airports"])
    assert set(properties["carrier"]["enum"]) == set(validated["carriers"])
    assert set(properties["origin"]["enum"]) == set(contracts.ORIGINS)
    assert properties["wind_speed"]["anyOf"][0]["maximum"] == 200
    assert schema["additionalProperties"] is False
    model(**schema["example"])  # the published example passes every rule


def test_a_changed_contract_changes_the_api(validated, monkeypatch):
    pa = pytest.importorskip("pandera.pandas")
    real = contracts.flights_schema

    def stricter(*args: Any, **kwargs: Any) -> Any:
        schema = real(*args, **kwargs)
        return schema.update_column("distance", checks=[pa.Check.in_range(1, 3000)])

    monkeypatch.setattr(contracts, "flights_schema", stricter)
    model = scoring.request_model(scoring.request_fields(["UA"], ["IAH"]))
    with pytest.raises(pydantic.ValidationError, match="less than or equal to 3000"):
        model(**{**scoring.EXAMPLE_REQUEST, "distance": 4000})


def test_a_contract_rule_without_an_api_rule_is_refused(monkeypatch):
    pa = pytest.importorskip("pandera.pandas")
    real = contracts.flights_schema

    def custom(*args: Any, **kwargs: Any) -> Any:
        return real(*args, **kwargs).update_column("distance", checks=[pa.Check.ne(13)])

    monkeypatch.setattr(contracts, "flights_schema", custom)
    with pytest.raises(ValueError, match="no request rule for check not_equal_to on distance"):
        scoring.request_fields(["UA"], ["IAH"])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"dest": "XXX"}, "breaks the contract rule known_airport"),
        ({"carrier": "ZZ"}, "breaks the contract rule known_carrier"),
        ({"origin": "IAH"}, "breaks the contract rule known_departure_airport"),
        ({"distance": -5}, "greater than or equal to 1"),
        ({"distance": "far"}, "valid integer"),
        ({"tailnum": "n-1"}, "should match pattern"),
        ({"month": 2, "day": 31}, "day is out of range for month"),
        ({"time_hour": "2013-01-01T05:00:00"}, "timezone info"),
        ({"dep_delay": 12.0}, "Extra inputs are not permitted"),
        ({"temp": float("nan")}, "finite number"),
        ({"sched_dep_time": 1275}, "breaks the contract rule clock_time"),
        ({"sched_arr_time": 975}, "breaks the contract rule clock_time"),
        ({"sched_dep_time": 2399}, "less than or equal to 2359"),
        ({"distance": "1400"}, "valid integer"),  # strict: a number sent as a string
        ({"temp": "39.5"}, "valid number"),
        ({"year": 2013.0}, "valid integer"),
        ({"time_hour": "2013-01-01T06:00:00-05:00"}, "time_hour is not the scheduled departure"),
        ({"time_hour": "2013-01-02T05:00:00-05:00"}, "time_hour is not the scheduled departure"),
        ({"time_hour": "0001-01-01T01:01:09Z"}, "time_hour is not the scheduled departure"),
        ({"time_hour": "9999-12-31T23:00:00-05:00"}, "time_hour is not the scheduled departure"),
    ],
)
def test_bad_requests_name_the_rule(model, change, message):
    with pytest.raises(pydantic.ValidationError, match=message) as caught:
        model(**{**scoring.EXAMPLE_REQUEST, **change})
    # The message names the field and the rule, never the refused value.
    [error] = caught.value.errors(include_input=False, include_context=False)
    for value in change.values():
        if isinstance(value, str) and len(value) > 2:
            assert value not in error["msg"], error


def test_time_hour_in_any_offset_and_a_summer_date_match(model):
    summer = {"month": 7, "day": 1, "sched_dep_time": 1730}
    for stamp in ("2013-07-01T17:00:00-04:00", "2013-07-01T21:00:00Z", "2013-07-01T23:00:00+02:00"):
        model(**{**scoring.EXAMPLE_REQUEST, **summer, "time_hour": stamp})
    model(**{**scoring.EXAMPLE_REQUEST, "temp": 39})  # an integer for a number field


def test_missing_weather_and_unknown_plane_are_allowed(model, bundle):
    request = {k: v for k, v in scoring.EXAMPLE_REQUEST.items() if k not in features.WEATHER_FIELDS}
    request["tailnum"] = "N0NE"
    [result] = scoring.score(bundle, [model(**request).model_dump()])
    assert 0.0 <= result["probability"] <= 1.0


def test_requests_score_exactly_like_the_pipeline(validated, bundle, model):
    flights, weather = validated["days"][DAYS[2]]
    frame = features.build_flight_features(flights, weather, validated["planes"])
    expected = bundle.classifier.predict_proba(frame)
    requests = [model(**r).model_dump() for r in requests_for(flights, weather)]
    results = scoring.score(bundle, requests)
    assert len(results) == len(frame) > 500
    online = pd.DataFrame(results).sort_values(features.KEY_COLUMNS, kind="stable")
    assert list(online["flight_date"]) == list(frame["flight_date"])
    assert list(online["flight"]) == list(frame["flight"])
    np.testing.assert_array_equal(online["probability"].to_numpy(), expected)
    assert set(online["model_version"]) == {"7"}
    assert (online["delayed"] == (online["probability"] >= 0.3)).all()


def test_answers_keep_the_request_order(bundle, model):
    first = model(**scoring.EXAMPLE_REQUEST).model_dump()
    second = model(**{**scoring.EXAMPLE_REQUEST, "flight": 1, "carrier": "AA"}).model_dump()
    results = scoring.score(bundle, [second, first, second])
    assert [r["flight"] for r in results] == [1, 1545, 1]
    assert results[0]["probability"] == results[2]["probability"]


def test_array_prediction_equals_the_estimator_on_pandas_level_codes(validated, bundle):
    flights, weather = validated["days"][DAYS[2]]
    frame = features.build_flight_features(flights, weather, validated["planes"])
    frame.loc[0, "route"] = "EWR-NEVER"  # an unseen level
    frame.loc[1, "temp"] = np.nan
    frame.loc[2, "carrier"] = pd.NA
    classifier = bundle.classifier
    # The reference matrix, built independently: pandas categorical codes (-1 -> NaN).
    reference_matrix = np.column_stack(
        [
            _pandas_codes(frame[c], classifier.categories[c])
            if c in classifier.categories
            else frame[c].to_numpy(dtype="float64", na_value=np.nan)
            for c in classifier.features
        ]
    )
    np.testing.assert_array_equal(classifier.prepare(frame), reference_matrix)
    reference = estimator.predict(classifier.model_text, reference_matrix)
    np.testing.assert_array_equal(classifier.predict_proba(frame), reference)


def _pandas_codes(values: pd.Series, levels: list[str]) -> np.ndarray:
    codes = pd.Categorical(values.astype("string"), categories=levels).codes
    return np.where(codes < 0, np.nan, codes.astype("float64"))


def test_derived_calendar_and_schedule_features():
    planes = pd.DataFrame(
        {
            "tailnum": ["N1"],
            "year": [2003.0],
            "seats": [180],
            "engines": [2],
            "engine": ["Turbo-fan"],
            "type": ["Fixed wing multi engine"],
        }
    )
    flights = {
        "year": [2013, 2013],
        "month": [1, 12],
        "day": [1, 31],
        "carrier": ["UA", "AA"],
        "flight": [1, 2],
        "origin": ["EWR", "JFK"],
        "dest": ["IAH", "LAX"],
        "tailnum": ["N1", None],
        "sched_dep_time": [2330, 515],
        "sched_arr_time": [110, 819],
        "distance": [1400, 2475],
    }
    out = features.derive_features(flights, {}, features.PlaneLookup.from_frame(planes))
    assert list(out["flight_date"]) == ["2013-01-01", "2013-12-31"]
    assert list(out["day_of_week"]) == [1.0, 1.0]  # both Tuesdays
    assert list(out["day_of_year"]) == [1.0, 365.0]
    assert list(out["scheduled_block_minutes"]) == [100.0, 184.0]  # overnight, same day
    assert out["plane_age"][0] == 10.0 and np.isnan(out["plane_age"][1])
    assert list(out["engine"]) == ["Turbo-fan", None]
    assert list(out["route"]) == ["EWR-IAH", "JFK-LAX"]
    assert np.isnan(out["temp"]).all()


def test_bundle_round_trip(bundle, tmp_path: Path, model):
    bundle.save(tmp_path / "bundle")
    loaded = scoring.ScoringBundle.load(tmp_path / "bundle")
    request = model(**scoring.EXAMPLE_REQUEST).model_dump()
    assert scoring.score(loaded, [request]) == scoring.score(bundle, [request])
    assert loaded.model == bundle.model
    assert loaded.carriers == sorted(bundle.carriers)


def test_timestamps_with_any_offset_mean_the_same_hour(bundle, model):
    local = model(**scoring.EXAMPLE_REQUEST).model_dump()
    utc = model(**{**scoring.EXAMPLE_REQUEST, "time_hour": "2013-01-01T10:00:00Z"}).model_dump()
    assert utc["time_hour"] == local["time_hour"] == datetime(2013, 1, 1, 10, tzinfo=UTC)
    assert scoring.score(bundle, [local]) == scoring.score(bundle, [utc])
