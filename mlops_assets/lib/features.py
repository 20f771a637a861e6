"""Flight features: what is known before departure, joined with weather and planes.

Only facts known when a flight is scheduled to leave may be features: the schedule, carrier,
route, distance, the plane, and the weather at the origin in the scheduled departure hour.
Everything measured during or after the flight (``dep_delay``, ``arr_time``, ``air_time`` ...)
is leakage; ``find_leakage`` is the guard the pipeline runs on every feature frame.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    import pandera.pandas as pa

KEY_COLUMNS = ["flight_date", "carrier", "flight", "origin"]
LABEL_COLUMN = "is_delayed"
DELAY_THRESHOLD_MINUTES = 15

# Hourly weather at the origin, taken at the scheduled departure hour.
WEATHER_FIELDS = [
    "temp",
    "dewp",
    "humid",
    "wind_dir",
    "wind_speed",
    "wind_gust",
    "precip",
    "pressure",
    "visib",
]
CATEGORICAL_FEATURES = ["carrier", "origin", "dest", "route", "engine", "plane_type"]
NUMERIC_FEATURES = [
    "month",
    "day_of_week",
    "day_of_year",
    "sched_dep_hour",
    "sched_dep_minute_of_day",
    "sched_arr_minute_of_day",
    "scheduled_block_minutes",
    "distance",
    "plane_age",
    "seats",
    "engines",
    *WEATHER_FIELDS,
]
FEATURE_COLUMNS = CATEGORICAL_FEATURES + NUMERIC_FEATURES

# Measured during or after the flight: never features. The label is derived from arr_delay
# and kept in its own column.
POST_DEPARTURE_FIELDS = frozenset(
    {
        "dep_time",
        "dep_delay",
        "arr_time",
        "arr_delay",
        "air_time",
        "is_cancelled",
        "actual_block_minutes",
    }
)
# Columns carried alongside features that models must not use.
NON_FEATURE_COLUMNS = [*KEY_COLUMNS, "sched_departure_utc", "tailnum", "is_cancelled", LABEL_COLUMN]

# Keys first, then features (carrier and origin are both), then the non-features.
OUTPUT_COLUMNS = tuple(
    dict.fromkeys(
        [
            *KEY_COLUMNS,
            "sched_departure_utc",
            "tailnum",
            *FEATURE_COLUMNS,
            "is_cancelled",
            LABEL_COLUMN,
        ]
    )
)


def find_leakage(columns: list[str]) -> list[str]:
    """Returns the feature columns that carry post-departure information.

    Any column that is not a key, the label or a declared non-feature column counts as a
    feature; it leaks if it is (or is named after) a post-departure field.
    """
    features = [c for c in columns if c not in NON_FEATURE_COLUMNS]
    return sorted(
        c
        for c in features
        if c in POST_DEPARTURE_FIELDS or any(c.startswith(f + "_") for f in POST_DEPARTURE_FIELDS)
    )


def _minute_of_day(hhmm: pd.Series) -> pd.Series:
    return (hhmm // 100) * 60 + hhmm % 100


def build_flight_features(
    flights: pd.DataFrame, weather: pd.DataFrame, planes: pd.DataFrame
) -> pd.DataFrame:
    """Builds one day's feature rows from validated flights, weather and planes.

    Weather joins on origin and the UTC scheduled-departure hour (``time_hour``), which is
    unique per origin even across the daylight-saving change. Flights with no plane record
    keep missing plane fields (the gradient-boosted model handles missing values).

    Args:
        flights: Validated flights of one day.
        weather: Validated weather of the same day.
        planes: Validated planes reference table.

    Returns:
        One row per flight: keys, ``FEATURE_COLUMNS``, ``is_cancelled`` and the label
        ``is_delayed`` (1 when the flight arrived 15+ minutes late, 0 otherwise, missing
        when it was cancelled or diverted, so it has no arrival to judge).
    """
    import numpy as np
    import pandas as pd

    frame = flights.copy()
    flight_date = pd.to_datetime(dict(year=frame["year"], month=frame["month"], day=frame["day"]))
    out = pd.DataFrame(
        {
            "flight_date": flight_date.dt.date.astype(str),
            "carrier": frame["carrier"].astype(str),
            "flight": frame["flight"].astype("int64"),
            "origin": frame["origin"].astype(str),
            "dest": frame["dest"].astype(str),
            "route": frame["origin"].astype(str) + "-" + frame["dest"].astype(str),
            "tailnum": frame["tailnum"],
            "sched_departure_utc": frame["time_hour"],
            "month": frame["month"].astype("int64"),
            "day_of_week": flight_date.dt.dayofweek.astype("int64"),
            "day_of_year": flight_date.dt.dayofyear.astype("int64"),
            "sched_dep_hour": (frame["sched_dep_time"] // 100).astype("int64"),
            "sched_dep_minute_of_day": _minute_of_day(frame["sched_dep_time"]).astype("int64"),
            "sched_arr_minute_of_day": _minute_of_day(frame["sched_arr_time"]).astype("int64"),
            "distance": frame["distance"].astype("float64"),
        }
    )
    block = out["sched_arr_minute_of_day"] - out["sched_dep_minute_of_day"]
    out["scheduled_block_minutes"] = block.where(block >= 0, block + 24 * 60).astype("float64")

    plane_cols = planes[["tailnum", "year", "seats", "engines", "engine", "type"]].rename(
        columns={"year": "plane_year", "type": "plane_type"}
    )
    out = out.merge(plane_cols, on="tailnum", how="left", validate="many_to_one")
    out["plane_age"] = flight_date.dt.year.to_numpy() - out["plane_year"]
    out = out.drop(columns=["plane_year"])

    hourly = weather[["origin", "time_hour", *WEATHER_FIELDS]].rename(
        columns={"time_hour": "sched_departure_utc"}
    )
    out = out.merge(
        hourly, on=["origin", "sched_departure_utc"], how="left", validate="many_to_one"
    )

    no_arrival = frame["arr_delay"].isna().to_numpy()  # cancelled or diverted
    out["is_cancelled"] = frame["dep_time"].isna().to_numpy()
    label = (frame["arr_delay"] >= DELAY_THRESHOLD_MINUTES).astype("float64").to_numpy()
    out[LABEL_COLUMN] = pd.array(np.where(no_arrival, np.nan, label), dtype="Int8")

    for column in CATEGORICAL_FEATURES:
        out[column] = out[column].astype("string")
    # Every numeric feature is a float: any of them may be missing when a request is scored.
    for column in NUMERIC_FEATURES:
        out[column] = out[column].astype("float64")
    return out[list(OUTPUT_COLUMNS)].sort_values(KEY_COLUMNS, kind="stable").reset_index(drop=True)


def features_schema() -> pa.DataFrameSchema:
    """Contract of a feature partition: types, key uniqueness, label domain."""
    import pandera.pandas as pa

    string = pa.Column("string", nullable=True)
    columns: dict[str, Any] = {
        "flight_date": pa.Column(str, pa.Check.str_matches(r"^\d{4}-\d{2}-\d{2}$")),
        "flight": pa.Column("int64"),
        "sched_departure_utc": pa.Column("datetime64[ns, UTC]"),
        "tailnum": pa.Column(nullable=True),
        "is_cancelled": pa.Column(bool),
        LABEL_COLUMN: pa.Column("Int8", pa.Check.isin([0, 1]), nullable=True),
    }
    columns.update({c: string for c in CATEGORICAL_FEATURES})
    columns.update({"carrier": pa.Column("string"), "origin": pa.Column("string")})
    columns.update({c: pa.Column(nullable=True) for c in NUMERIC_FEATURES})
    return pa.DataFrameSchema(columns, unique=KEY_COLUMNS, strict=True, name="flight_features")
