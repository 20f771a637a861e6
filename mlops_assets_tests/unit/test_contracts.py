from __future__ import annotations

import warnings
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from mlops_assets.lib import contracts
from mlops_assets.lib.landing import read_csv
from mlops_assets_tests.conftest import day_slice

DAY = date(2013, 1, 5)


@pytest.fixture
def flights_day(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    return day_slice(tables["flights"], DAY)


@pytest.fixture
def flights_schema(tables: dict[str, pd.DataFrame]):
    return contracts.flights_schema(tables["airlines"]["carrier"], tables["airports"]["faa"], DAY)


def violation(frame: pd.DataFrame, schema) -> contracts.ContractViolation:
    with pytest.raises(contracts.ContractViolation) as info:
        contracts.validate(frame, schema, source="flights/2013-01-05.csv")
    return info.value


def delivered(frame: pd.DataFrame, folder: Path) -> pd.DataFrame:
    """``frame`` written as a landing file and read back as the pipeline reads it."""
    path = folder / "2013-01-05.csv"
    frame.to_csv(path, index=False)
    return read_csv(path)


def test_real_day_passes_and_is_coerced(flights_day, flights_schema):
    valid = contracts.validate(flights_day, flights_schema, source="x")
    assert len(valid) == len(flights_day) > 700
    assert str(valid["time_hour"].dtype) == "datetime64[ns, UTC]"
    assert valid["sched_dep_time"].dtype == "int64"


def test_reference_tables_pass(tables):
    contracts.validate(tables["planes"], contracts.planes_schema(), source="planes")
    contracts.validate(tables["airports"], contracts.airports_schema(), source="airports")
    contracts.validate(tables["airlines"], contracts.airlines_schema(), source="airlines")


def test_header_only_file_is_an_empty_day(flights_day, flights_schema):
    error = violation(flights_day.iloc[0:0], flights_schema)
    assert "non_empty_day" in error.message
    assert "flights/2013-01-05.csv" in error.message


def test_missing_column_is_named(flights_day, flights_schema):
    error = violation(flights_day.drop(columns=["distance"]), flights_schema)
    assert any("distance" in rule for rule in error.rules)
    assert "column_in_dataframe" in error.message


def test_extra_column_is_named(flights_day, flights_schema):
    error = violation(flights_day.assign(gate="B12"), flights_schema)
    assert any("column_in_schema" in rule for rule in error.rules)
    assert "gate" in error.markdown()


def test_wrong_type_names_column_value_and_row(flights_day, flights_schema):
    frame = flights_day.copy()
    frame.loc[3, "distance"] = "far"
    error = violation(frame, flights_schema)
    assert any(rule.startswith("distance:") and "coerce" in rule for rule in error.rules)
    assert error.rows == [4]  # 1-based data row
    assert "far" in error.markdown()


def test_out_of_range_values(flights_day, flights_schema):
    frame = flights_day.copy()
    frame.loc[0, "distance"] = "-5"
    frame.loc[1, "hour"] = "25"
    error = violation(frame, flights_schema)
    assert {r.split(":")[0] for r in error.rules} == {"distance", "hour"}
    assert error.rows == [1, 2]


def test_duplicate_flight_keys_name_the_key_and_its_value(flights_day, flights_schema, tmp_path):
    frame = pd.concat([flights_day, flights_day.iloc[[7]]], ignore_index=True)
    error = violation(delivered(frame, tmp_path), flights_schema)
    rule = "<table>: unique_key(year, month, day, carrier, flight, origin)"
    assert error.rules == [rule]
    assert error.rows == [8, len(flights_day) + 1]
    row = flights_day.iloc[7]
    key = f"({row.year}, {row.month}, {row.day}, {row.carrier}, {row.flight}, {row.origin})"
    assert error.summary == (
        f"contract 'flights' failed: {rule} broken by {key} at row(s) 8, {len(flights_day) + 1}"
    )
    assert f"| <table> | unique_key(year, month, day, carrier, flight, origin) | {key} | 8 |" in (
        error.markdown()
    )


def test_blank_date_parts_name_only_their_rows(flights_day, flights_schema, tmp_path):
    # An empty value once made the whole column fail equal_to(...): every row was named.
    frame = flights_day.copy()
    frame.loc[3, "year"] = ""
    frame.loc[4, "month"] = ""
    frame.loc[5, "day"] = ""
    error = violation(delivered(frame, tmp_path), flights_schema)
    assert sorted(error.rules) == ["day: not_nullable", "month: not_nullable", "year: not_nullable"]
    assert error.rows == [4, 5, 6]
    assert error.total_failures == 3


def test_a_bad_value_does_not_hide_the_other_rows_of_its_column(
    flights_day, flights_schema, tmp_path
):
    frame = flights_day.copy()
    frame.loc[2, "day"] = "5th"  # cannot be a number
    frame.loc[8, "day"] = "6"  # a number, from another day
    frame.loc[3, "distance"] = ""
    frame.loc[6, "distance"] = "-5"
    error = violation(delivered(frame, tmp_path), flights_schema)
    assert sorted(error.rules) == [
        "day: coerce_dtype('int64')",
        "day: equal_to(5)",
        "distance: in_range(1, 10000)",
        "distance: not_nullable",
    ]
    assert error.rows == [3, 4, 7, 9]
    assert error.total_failures == 4
    assert error.summary == (
        "contract 'flights' failed: day: coerce_dtype('int64') broken by 5th; "
        "distance: not_nullable; distance: in_range(1, 10000) broken by -5; 1 more rule(s) "
        "at row(s) 3, 4, 7, 9"
    )
    assert "| day | equal_to(5) | 6 | 9 |" in error.markdown()


@pytest.mark.parametrize("column", ["carrier", "flight", "dep_time", "tailnum"])
def test_a_missing_column_is_reported_alone(flights_day, flights_schema, tmp_path, column):
    # Not as duplicates of the remaining key columns, nor as a table rule that needs it.
    error = violation(delivered(flights_day.drop(columns=[column]), tmp_path), flights_schema)
    assert error.rules == [f"{column}: column_in_dataframe"]
    assert error.rows == []
    assert error.summary == f"contract 'flights' failed: {column}: column_in_dataframe"


@pytest.mark.parametrize(
    ("column", "value"), [("dest", "XXX"), ("carrier", "ZZ"), ("origin", "BOS")]
)
def test_unknown_airport_or_carrier(flights_day, flights_schema, column, value):
    frame = flights_day.copy()
    frame.loc[2, column] = value
    error = violation(frame, flights_schema)
    assert any(rule.startswith(f"{column}:") and "known_" in rule for rule in error.rules)
    assert value in error.markdown()


def test_airports_missing_from_reference_are_accepted(flights_day, flights_schema):
    frame = flights_day.copy()
    frame.loc[0, "dest"] = "SJU"
    contracts.validate(frame, flights_schema, source="x")


def test_row_from_another_day(flights_day, flights_schema):
    frame = flights_day.copy()
    frame.loc[5, "day"] = "6"
    error = violation(frame, flights_schema)
    assert any(rule.startswith("day:") for rule in error.rules)


def test_null_rules_see_missing_values(flights_day, flights_schema):
    # Column checks skip nulls; these table-level rules must not.
    frame = flights_day.copy()
    frame.loc[0, "dep_delay"] = float("nan")
    frame["tailnum"] = None
    error = violation(frame, flights_schema)
    rules = " ".join(error.rules)
    assert "dep_time_and_dep_delay_missing_together" in rules
    assert "tailnum_null_share_at_most" in rules


def test_real_broken_wind_sensor_blocks_its_day(tables):
    day = date(2013, 2, 12)
    with pytest.raises(contracts.ContractViolation) as info:
        contracts.validate(
            day_slice(tables["weather"], day), contracts.weather_schema(day), source="w"
        )
    assert info.value.rules == ["wind_speed: in_range(0, 200)"]
    assert "1048.36" in info.value.markdown()
    assert info.value.summary == (
        "contract 'weather' failed: wind_speed: in_range(0, 200) broken by 1048.36058 at row(s) 4"
    )


def test_summary_is_one_quiet_line_with_a_value_per_row_rule(flights_day, flights_schema):
    frame = flights_day.assign(gate="B12")
    frame.loc[3, "distance"] = "far"
    frame.loc[0, "dep_delay"] = float("nan")
    frame.loc[5, "dest"] = "XXX"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        error = violation(frame, flights_schema)
    assert [f"{w.category.__name__}: {w.message}" for w in caught] == []
    assert len(error.rules) == 4
    summary = error.summary
    assert "\n" not in summary and "flights/2013-01-05.csv" not in summary  # path: in the UI
    assert "distance: coerce_dtype('int64') broken by far" in summary
    assert "gate: column_in_schema;" in summary  # a table's rule has no value to show
    assert summary.endswith("; 1 more rule(s) at row(s) 1, 4, 6")


def test_duplicate_weather_hour(tables):
    day = date(2013, 1, 5)
    weather = day_slice(tables["weather"], day)
    frame = pd.concat([weather, weather.iloc[[0]]], ignore_index=True)
    with pytest.raises(contracts.ContractViolation) as info:
        contracts.validate(frame, contracts.weather_schema(day), source="w")
    assert info.value.rules == ["<table>: unique_key(origin, time_hour)"]
    assert f"broken by (EWR, {weather.loc[0, 'time_hour']})" in info.value.summary


def test_failure_table_is_bounded(flights_day, flights_schema):
    frame = flights_day.assign(distance="-1")
    error = violation(frame, flights_schema)
    assert error.total_failures == len(frame)
    assert len(error.failure_cases) == contracts.FAILURE_ROWS_SHOWN
    assert "more failure case(s)" in error.markdown()
