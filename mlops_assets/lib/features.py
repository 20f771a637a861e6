"""Flight features: what is known before departure, joined with weather and planes.

Only facts known when a flight is scheduled to leave may be features: the schedule, carrier,
route, distance, the plane, and the weather at the origin in the scheduled departure hour.
Everything measured during or after the flight (``dep_delay``, ``arr_time``, ``air_time`` ...)
is leakage; ``find_leakage`` is the guard the pipeline runs on every feature frame.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import pandera.pandas as pa

KEY_COLUMNS = ["flight_date", "carrier", "flight", "origin"]
LABEL_COLUMN = "is_delayed"
DELAY_THRESHOLD_MINUTES = 15

# Above this share of a day's flights without weather at their origin in the departure hour,
# the weather delivery is incomplete and the day's features are blocked. Real 2013: none on
# 349 of 365 days, 4.6 % on 2013-01-01, above 5 % on 7 days (5.3-16 %) and 2013-12-31 (no
# weather). A lost hour of all three airports passes 5 % in 68 % of hours (docs/data.md).
MAX_FLIGHTS_WITHOUT_WEATHER_SHARE = 0.05
# Hours without weather named in a failed check's message (the metadata lists them all).
HOURS_SHOWN = 5

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


# Flight fields the features are derived from (all known when the flight is scheduled).
FLIGHT_INPUTS = (
    "year",
    "month",
    "day",
    "carrier",
    "flight",
    "origin",
    "dest",
    "tailnum",
    "sched_dep_time",
    "sched_arr_time",
    "distance",
)


@dataclass(frozen=True)
class PlaneLookup:
    """The planes reference table indexed by tail number (a join of any size, no pandas).

    Attributes:
        position: Row of each tail number.
        year: Year of manufacture (float, missing = NaN).
        seats: Seats (float).
        engines: Number of engines (float).
        engine: Engine type.
        plane_type: Plane type.
    """

    position: dict[str, int]
    year: np.ndarray
    seats: np.ndarray
    engines: np.ndarray
    engine: np.ndarray
    plane_type: np.ndarray

    @classmethod
    def from_frame(cls, planes: pd.DataFrame) -> PlaneLookup:
        """Indexes a validated planes table (tail numbers are unique by contract)."""
        import numpy as np

        tailnums = planes["tailnum"].astype(str).tolist()
        if len(set(tailnums)) != len(tailnums):
            raise ValueError("planes: tail numbers must be unique")
        return cls(
            position={t: i for i, t in enumerate(tailnums)},
            year=planes["year"].to_numpy(dtype="float64", na_value=np.nan),
            seats=planes["seats"].to_numpy(dtype="float64", na_value=np.nan),
            engines=planes["engines"].to_numpy(dtype="float64", na_value=np.nan),
            engine=object_values(planes["engine"]),
            plane_type=object_values(planes["type"]),
        )

    def rows(self, tailnums: Sequence[Any]) -> np.ndarray:
        """Row of each tail number, -1 for unknown or missing ones."""
        import numpy as np

        return np.fromiter(
            (self.position.get(t, -1) if isinstance(t, str) else -1 for t in tailnums),
            dtype="int64",
            count=len(tailnums),
        )

    def column(self, name: str, rows: np.ndarray) -> np.ndarray:
        """Values of ``name`` for ``rows`` (-1 = no plane record: NaN or None)."""
        import numpy as np

        values: np.ndarray = getattr(self, name)
        known = rows >= 0
        if values.dtype == object:
            out = np.full(len(rows), None, dtype=object)
        else:
            out = np.full(len(rows), np.nan)
        out[known] = values[rows[known]]
        return out


def object_values(series: pd.Series) -> np.ndarray:
    """The values as an object array with ``None`` for every missing value."""
    return series.astype(object).where(series.notna(), None).to_numpy()


def _minute_of_day(hhmm: np.ndarray) -> np.ndarray:
    return (hhmm // 100) * 60 + hhmm % 100


def derive_features(
    flights: Mapping[str, Any], weather: Mapping[str, Any], planes: PlaneLookup
) -> dict[str, np.ndarray]:
    """Feature columns of flights, given each flight's weather at its departure hour.

    The one implementation of the features: the pipeline calls it through
    ``build_flight_features`` (after joining a day's weather table), the prediction service
    calls it on the flights of a request (which carries the weather). Plain NumPy, so one
    request costs microseconds and a day of flights about a millisecond.

    Args:
        flights: Columns ``FLIGHT_INPUTS`` (equal-length sequences).
        weather: Columns ``WEATHER_FIELDS`` aligned with the flights (missing = NaN/None).
        planes: The planes reference table.

    Returns:
        ``flight_date`` (``YYYY-MM-DD``) and every column of ``FEATURE_COLUMNS``: categorical
        features as object arrays (missing = None), numeric features as float64.
    """
    import numpy as np

    year, month, dates = _flight_dates(flights)
    origin = np.asarray(flights["origin"], dtype=object)
    dest = np.asarray(flights["dest"], dtype=object)
    rows = planes.rows(list(flights["tailnum"]))
    return {
        "flight_date": np.datetime_as_string(dates, unit="D").astype(object),
        "carrier": np.asarray(flights["carrier"], dtype=object),
        "origin": origin,
        "dest": dest,
        "route": origin + "-" + dest,
        "engine": planes.column("engine", rows),
        "plane_type": planes.column("plane_type", rows),
        **_calendar_columns(month, dates),
        **_schedule_columns(flights),
        "distance": np.asarray(flights["distance"], dtype="float64"),
        "plane_age": year - planes.column("year", rows),
        "seats": planes.column("seats", rows),
        "engines": planes.column("engines", rows),
        **_weather_columns(weather, len(year)),
    }


def _flight_dates(flights: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Year, month and the ``datetime64[D]`` date of each flight."""
    import numpy as np

    year = np.asarray(flights["year"], dtype="int64")
    month = np.asarray(flights["month"], dtype="int64")
    day = np.asarray(flights["day"], dtype="int64")
    dates = (
        (year - 1970).astype("datetime64[Y]").astype("datetime64[M]")
        + (month - 1).astype("timedelta64[M]")
    ).astype("datetime64[D]") + (day - 1).astype("timedelta64[D]")
    return year, month, dates


def _calendar_columns(month: np.ndarray, dates: np.ndarray) -> dict[str, np.ndarray]:
    first_of_year = dates.astype("datetime64[Y]").astype("datetime64[D]")
    return {
        "month": month.astype("float64"),
        # 1970-01-01 was a Thursday (Monday = 0).
        "day_of_week": ((dates.astype("int64") + 3) % 7).astype("float64"),
        "day_of_year": ((dates - first_of_year).astype("int64") + 1).astype("float64"),
    }


def _schedule_columns(flights: Mapping[str, Any]) -> dict[str, np.ndarray]:
    import numpy as np

    sched_dep = np.asarray(flights["sched_dep_time"], dtype="int64")
    dep_minute = _minute_of_day(sched_dep)
    arr_minute = _minute_of_day(np.asarray(flights["sched_arr_time"], dtype="int64"))
    block = arr_minute - dep_minute
    return {
        "sched_dep_hour": (sched_dep // 100).astype("float64"),
        "sched_dep_minute_of_day": dep_minute.astype("float64"),
        "sched_arr_minute_of_day": arr_minute.astype("float64"),
        # An arrival clock time before the departure means the flight lands the next day.
        "scheduled_block_minutes": np.where(block >= 0, block, block + 24 * 60).astype("float64"),
    }


def _weather_columns(weather: Mapping[str, Any], rows: int) -> dict[str, np.ndarray]:
    """Each weather field as float64 (missing: NaN; a field not given: all NaN)."""
    import numpy as np

    columns: dict[str, np.ndarray] = {}
    for name in WEATHER_FIELDS:
        values = weather.get(name)
        columns[name] = (
            np.full(rows, np.nan)
            if values is None
            else np.array([np.nan if v is None else v for v in values], dtype="float64")
            if isinstance(values, list)
            else np.asarray(values, dtype="float64")
        )
    return columns


def weather_rows(flights: pd.DataFrame, weather: pd.DataFrame) -> np.ndarray:
    """For each flight, the row of the weather at its origin in its UTC hour (-1: none).

    Raises:
        ValueError: if the weather has two records for one origin and hour.
    """
    import numpy as np

    keys = list(zip(weather["origin"].astype(str), weather["time_hour"].array.asi8, strict=True))
    hour_row = {key: i for i, key in enumerate(keys)}
    if len(hour_row) != len(keys):
        raise ValueError("weather has more than one record for an origin and hour")
    wanted = zip(flights["origin"].astype(str), flights["time_hour"].array.asi8, strict=True)
    return np.fromiter((hour_row.get(k, -1) for k in wanted), dtype="int64", count=len(flights))


@dataclass(frozen=True)
class WeatherCoverage:
    """How many of a day's flights have weather at their origin in their departure hour.

    Attributes:
        flights: Flights of the day.
        without_weather: Flights with no weather record for their origin and UTC hour.
        missing_hours: ``(origin, UTC hour, flights)`` of each hour without weather that
            has flights, the busiest first.
    """

    flights: int
    without_weather: int
    missing_hours: list[tuple[str, str, int]]

    @property
    def share(self) -> float:
        """Share of the day's flights without weather (0 for a day without flights)."""
        return self.without_weather / self.flights if self.flights else 0.0

    def message(self, day: str, limit: float) -> str:
        """One line for a failed check: the counts, the limit and the hours to re-deliver."""
        hours = ", ".join(f"{o} {h} ({n})" for o, h, n in self.missing_hours[:HOURS_SHOWN])
        more = len(self.missing_hours) - HOURS_SHOWN
        tail = f" and {more} more" if more > 0 else ""
        return (
            f"flight_features {day}: {self.without_weather} of {self.flights} flights "
            f"({self.share:.1%}) have no weather at their origin in their departure hour, "
            f"above the {limit:.0%} allowed; hours without weather (flights): {hours}{tail}"
        )


def weather_coverage(flights: pd.DataFrame, weather: pd.DataFrame) -> WeatherCoverage:
    """Counts the flights the day's weather does not cover (``WeatherCoverage``)."""
    missing = flights.loc[weather_rows(flights, weather) < 0, ["origin", "time_hour"]]
    counts = missing.groupby(["origin", "time_hour"]).size()
    counts = counts.sort_values(ascending=False, kind="stable")  # ties: by airport and hour
    hours = [
        (str(origin), f"{hour:%Y-%m-%d %H:00} UTC", int(n))
        for (origin, hour), n in zip(counts.index, counts.to_numpy(), strict=True)
    ]
    return WeatherCoverage(len(flights), len(missing), hours)


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

    Raises:
        ValueError: if the weather has two records for one origin and hour.
    """
    import numpy as np
    import pandas as pd

    rows = weather_rows(flights, weather)
    known = rows >= 0
    aligned = {}
    for name in WEATHER_FIELDS:
        values = np.full(len(flights), np.nan)
        values[known] = weather[name].to_numpy(dtype="float64", na_value=np.nan)[rows[known]]
        aligned[name] = values

    inputs = {name: flights[name].to_numpy() for name in FLIGHT_INPUTS}
    derived = derive_features(inputs, aligned, PlaneLookup.from_frame(planes))
    out = pd.DataFrame(
        {
            "flight_date": derived["flight_date"],
            "carrier": pd.array(derived["carrier"], dtype="string"),
            "flight": flights["flight"].to_numpy(dtype="int64"),
            "origin": pd.array(derived["origin"], dtype="string"),
            "sched_departure_utc": flights["time_hour"].to_numpy(),
            "tailnum": flights["tailnum"].to_numpy(),
        }
    )
    out["sched_departure_utc"] = flights["time_hour"].reset_index(drop=True)
    for column in CATEGORICAL_FEATURES:
        out[column] = pd.array(derived[column], dtype="string")
    for column in NUMERIC_FEATURES:
        out[column] = derived[column]
    no_arrival = flights["arr_delay"].isna().to_numpy()  # cancelled or diverted
    out["is_cancelled"] = flights["dep_time"].isna().to_numpy()
    label = (flights["arr_delay"] >= DELAY_THRESHOLD_MINUTES).astype("float64").to_numpy()
    out[LABEL_COLUMN] = pd.array(np.where(no_arrival, np.nan, label), dtype="Int8")
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
