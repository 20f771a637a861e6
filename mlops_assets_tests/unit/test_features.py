from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from mlops_assets.lib import contracts, features
from mlops_assets_tests.conftest import day_slice

DAY = date(2013, 1, 5)


@pytest.fixture(scope="module")
def built(tables) -> tuple[pd.DataFrame, pd.DataFrame]:
    flights = contracts.validate(
        day_slice(tables["flights"], DAY),
        contracts.flights_schema(tables["airlines"]["carrier"], tables["airports"]["faa"], DAY),
        source="f",
    )
    weather = contracts.validate(
        day_slice(tables["weather"], DAY), contracts.weather_schema(DAY), source="w"
    )
    planes = contracts.validate(tables["planes"], contracts.planes_schema(), source="p")
    return flights, features.build_flight_features(flights, weather, planes)


def test_one_row_per_flight_with_the_contract(built):
    flights, frame = built
    assert len(frame) == len(flights)
    features.features_schema().validate(frame)
    assert list(frame.columns) == list(features.OUTPUT_COLUMNS)


def test_label_is_arrival_delay_of_15_minutes_or_more(built):
    flights, frame = built
    merged = frame.merge(
        flights.assign(flight_date=DAY.isoformat())[
            ["flight_date", "carrier", "flight", "origin", "arr_delay", "dep_time"]
        ],
        on=features.KEY_COLUMNS,
    )
    landed = merged[merged["arr_delay"].notna()]
    assert (landed[features.LABEL_COLUMN] == (landed["arr_delay"] >= 15).astype(int)).all()
    # Cancelled and diverted flights have no arrival to judge: no label.
    assert merged.loc[merged["arr_delay"].isna(), features.LABEL_COLUMN].isna().all()
    assert merged["dep_time"].isna().sum() == frame["is_cancelled"].sum() > 0


def test_weather_is_the_origin_at_the_scheduled_departure_hour(built, tables):
    _, frame = built
    weather = day_slice(tables["weather"], DAY)
    row = frame.iloc[100]
    hour = weather[
        (weather["origin"] == row["origin"])
        & (pd.to_datetime(weather["time_hour"], utc=True) == row["sched_departure_utc"])
    ]
    assert float(hour["temp"].iloc[0]) == row["temp"]


def test_no_feature_is_post_departure(built):
    _, frame = built
    assert features.find_leakage(list(frame.columns)) == []
    assert not set(features.FEATURE_COLUMNS) & features.POST_DEPARTURE_FIELDS


def test_leakage_guard_names_leaking_columns():
    columns = [*features.OUTPUT_COLUMNS, "dep_delay", "air_time_minutes", "arr_time"]
    assert features.find_leakage(columns) == ["air_time_minutes", "arr_time", "dep_delay"]
