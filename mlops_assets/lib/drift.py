"""Daily data and prediction drift of the champion, measured with Evidently.

One day of feature rows, with the champion's predicted probability, is compared with a
bounded sample of the champion's reference window (its training window, scored by the
champion). Each monitored column gets one statistical test with a threshold; the day is
*drifted* when the share of drifted columns is over the policy's ``drift_share_threshold``.

The methods and thresholds are calibrated on this data (see ``DEFAULT_RULES``): Evidently's
defaults flag about half of the columns every day, training days included, because one day of
weather is a narrow slice of any multi-week window. Wasserstein distances (normed by the
reference standard deviation) are used for numeric columns and PSI for categorical ones, with
thresholds just above the day-to-day variation seen inside a 28-day training window: the signal
stays quiet in the weeks after training and rises as the season moves.

Evidently is imported inside the functions (the import alone takes seconds).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlops_assets.lib.features import CATEGORICAL_FEATURES

if TYPE_CHECKING:
    import pandas as pd

PREDICTION_COLUMN = "probability"
# Methods this module accepts (Evidently stattest names); all are distances where a larger
# score means more drift. Wasserstein is defined for numeric columns only.
METHODS = frozenset({"psi", "wasserstein", "jensenshannon", "hellinger"})
NUMERIC_ONLY_METHODS = frozenset({"wasserstein"})
# Columns of the stored per-column table.
TABLE_COLUMNS = ("column", "method", "score", "threshold", "drifted")


@dataclass(frozen=True)
class ColumnRule:
    """How one column is tested.

    Attributes:
        method: Evidently stattest name (``psi``, ``wasserstein``, ``jensenshannon``,
            ``hellinger``).
        threshold: The column drifted when its score is at or above this.
    """

    method: str
    threshold: float


# Why these columns: every model input that describes the population of flights, plus the
# prediction. Left out on purpose: the calendar (month, day_of_week, day_of_year: they drift by
# construction on every new day), derived duplicates (minute-of-day columns, route = origin +
# dest), near-constant plane attributes (engine, plane_type, engines; seats and plane_age
# cover the fleet), wind_gust (76 % missing: absent on calm days) and wind_dir (circular: 350
# and 10 degrees are neighbours, which no distance here knows).
#
# Why these thresholds: calibrated on 2013 with a 28-day January reference (5000 rows) and one
# day (~900 rows) as current; each is just above the largest daily score inside the reference
# window itself, so a day like the training days does not drift.
# - PSI for categorical columns: 0.1 is the usual "no significant change" bound; the daily
#   destination mix varies more (weekend schedules), hence 0.2.
# - Wasserstein distance normed by the reference standard deviation for numeric columns (a
#   score of 1 = the distribution moved by one reference standard deviation). Schedule and
#   fleet columns barely move from day to day: 0.1-0.15.
# - One day of weather is ~20 hourly readings per airport: against a 4-week window it always
#   looks different (PSI 5-8, Wasserstein ~1 on training days). 2.0 flags a day whose weather
#   lies beyond anything the training weeks saw, which happens for temp and dewp as the season
#   moves (spring and summer against a winter window) and rarely otherwise.
# - probability (prediction drift): the daily mean delay risk swings with the weather; 1.0 is
#   above 95 % of the training days.
DEFAULT_RULES: dict[str, ColumnRule] = {
    "carrier": ColumnRule("psi", 0.1),
    "origin": ColumnRule("psi", 0.1),
    "dest": ColumnRule("psi", 0.2),
    "sched_dep_hour": ColumnRule("wasserstein", 0.15),
    "scheduled_block_minutes": ColumnRule("wasserstein", 0.15),
    "distance": ColumnRule("wasserstein", 0.1),
    "plane_age": ColumnRule("wasserstein", 0.15),
    "seats": ColumnRule("wasserstein", 0.1),
    "temp": ColumnRule("wasserstein", 2.0),
    "dewp": ColumnRule("wasserstein", 2.0),
    "humid": ColumnRule("wasserstein", 2.0),
    "wind_speed": ColumnRule("wasserstein", 2.0),
    "precip": ColumnRule("wasserstein", 2.0),
    "pressure": ColumnRule("wasserstein", 2.0),
    "visib": ColumnRule("wasserstein", 2.0),
    PREDICTION_COLUMN: ColumnRule("wasserstein", 1.0),
}
DRIFT_COLUMNS: tuple[str, ...] = tuple(DEFAULT_RULES)


class EmptyDataError(ValueError):
    """The current or the reference data has nothing to compare."""


@dataclass(frozen=True)
class DriftPolicy:
    """What is monitored, how, and when a day counts as drifted.

    Attributes:
        rules: Method and threshold per monitored column (categorical columns are those of
            ``features.CATEGORICAL_FEATURES``).
        drift_share_threshold: The day drifted when the share of drifted columns is over this.
            With the 16 default columns, 0.15 means three or more columns: temperature and dew
            point alone (a warm day) are not enough.
        reference_max_rows: The reference is sampled down to this many rows (the drift report
            costs time in proportion to the rows; 5000 keeps a day under a second).
        seed: Seed of the reference sample (the same reference gives the same sample).
    """

    rules: Mapping[str, ColumnRule] = field(default_factory=lambda: dict(DEFAULT_RULES))
    drift_share_threshold: float = 0.15
    reference_max_rows: int = 5000
    seed: int = 2013

    def __post_init__(self) -> None:
        if not self.rules:
            raise ValueError("a drift policy needs at least one column")
        for column, rule in self.rules.items():
            if rule.method not in METHODS:
                raise ValueError(
                    f"{column}: unknown drift method {rule.method!r}; known: {sorted(METHODS)}"
                )
            if rule.method in NUMERIC_ONLY_METHODS and column in CATEGORICAL_FEATURES:
                raise ValueError(f"{column} is categorical: {rule.method} needs numbers")
            if not rule.threshold > 0:
                raise ValueError(f"{column}: threshold must be > 0, got {rule.threshold}")
        if not 0 <= self.drift_share_threshold < 1:
            raise ValueError(
                f"drift_share_threshold must be in [0, 1), got {self.drift_share_threshold}"
            )
        if self.reference_max_rows < 1:
            raise ValueError(f"reference_max_rows must be >= 1, got {self.reference_max_rows}")

    @property
    def columns(self) -> tuple[str, ...]:
        """The monitored columns, in report order."""
        return tuple(self.rules)

    def categorical(self, column: str) -> bool:
        """Whether a monitored column is tested as categorical."""
        return column in CATEGORICAL_FEATURES


@dataclass(frozen=True)
class ColumnDrift:
    """The verdict on one column.

    Attributes:
        column: Column name.
        method: Evidently stattest used.
        score: Its score (NaN when the column was not evaluated).
        threshold: The threshold applied.
        drifted: Evidently's test failed (score at or above the threshold).
        evaluated: False when the current or the reference has no value in the column (it
            then counts neither as drifted nor in the drift share).
    """

    column: str
    method: str
    score: float
    threshold: float
    drifted: bool
    evaluated: bool = True


@dataclass(frozen=True)
class DriftResult:
    """One drift report.

    Attributes:
        columns: Verdict per monitored column, in policy order.
        drift_share: Drifted columns / evaluated columns.
        drifted: Whether the share is over the policy's threshold.
        drifted_columns: Names of the drifted columns.
        current_rows: Rows compared on the current side.
        reference_rows: Rows compared on the reference side (after sampling).
        html: The Evidently report as a standalone HTML page.
        json: The Evidently report's metrics and tests as JSON.
    """

    columns: tuple[ColumnDrift, ...]
    drift_share: float
    drifted: bool
    drifted_columns: list[str]
    current_rows: int
    reference_rows: int
    html: str = field(repr=False)
    json: str = field(repr=False)

    def markdown(self) -> str:
        """A per-column Markdown table (for Dagster metadata)."""
        lines = [
            "| column | method | score | threshold | drifted |",
            "| --- | --- | ---: | ---: | --- |",
        ]
        for c in self.columns:
            score = f"{c.score:.4f}" if c.evaluated else "no data"
            verdict = "**yes**" if c.drifted else ("no" if c.evaluated else "-")
            lines.append(f"| {c.column} | {c.method} | {score} | {c.threshold:g} | {verdict} |")
        return "\n".join(lines)

    def table(self) -> pd.DataFrame:
        """One row per monitored column: method, score, threshold, verdict."""
        import pandas as pd

        rows = [{c: getattr(column, c) for c in TABLE_COLUMNS} for column in self.columns]
        return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))

    def summary(self, policy: DriftPolicy) -> dict[str, Any]:
        """The report's numbers and verdicts as plain values (Dagster metadata, logs)."""
        return {
            "status": "drifted" if self.drifted else "ok",
            "drifted": self.drifted,
            "drift_share": round(self.drift_share, 4),
            "drift_share_threshold": policy.drift_share_threshold,
            "drifted_columns": ", ".join(self.drifted_columns) or "none",
            "drifted_count": len(self.drifted_columns),
            # Columns without data on one side are not evaluated (no score, not in the share).
            "scores": json.dumps(
                {c.column: round(c.score, 4) for c in self.columns if c.evaluated}
            ),
            "not_evaluated": ", ".join(c.column for c in self.columns if not c.evaluated) or "none",
            "current_rows": self.current_rows,
            "reference_rows": self.reference_rows,
        }

    def verdict(self, policy: DriftPolicy) -> str:
        """One line: the share against the threshold and the drifted columns."""
        sign = ">" if self.drifted else "<="
        columns = ", ".join(self.drifted_columns) or "no column drifted"
        return (
            f"drift share {self.drift_share:.2f} {sign} {policy.drift_share_threshold}: {columns}"
        )


def scored_rows(features: pd.DataFrame, predictions: pd.DataFrame) -> pd.DataFrame:
    """The day's feature rows with the probability and model version predicted for each."""
    from mlops_assets.lib.features import KEY_COLUMNS

    scores = predictions[[*KEY_COLUMNS, PREDICTION_COLUMN, "model_version"]]
    return features.merge(scores, on=KEY_COLUMNS, how="inner")


def empty_table() -> pd.DataFrame:
    """The per-column table of a day with nothing to compare."""
    import pandas as pd

    return pd.DataFrame({c: [] for c in TABLE_COLUMNS})


def sample_reference(frame: pd.DataFrame, max_rows: int, seed: int) -> pd.DataFrame:
    """A deterministic sample of at most ``max_rows`` rows, in the frame's row order.

    The same frame, ``max_rows`` and ``seed`` always give the same rows; a frame that is small
    enough is returned whole (index reset either way).

    Raises:
        ValueError: if ``max_rows`` is below 1.
    """
    if max_rows < 1:
        raise ValueError(f"max_rows must be >= 1, got {max_rows}")
    if len(frame) <= max_rows:
        return frame.reset_index(drop=True)
    import numpy as np

    rows = np.sort(np.random.default_rng(seed).choice(len(frame), size=max_rows, replace=False))
    return frame.iloc[rows].reset_index(drop=True)


def scored_reference(
    flights: pd.DataFrame, classifier: Any, version: str, policy: DriftPolicy
) -> pd.DataFrame:
    """The reference: a bounded sample of the window's rows, each scored by the champion.

    Prediction drift is then measured like feature drift; every row carries the version.
    """
    sample = sample_reference(flights, policy.reference_max_rows, policy.seed)
    return sample.assign(
        **{PREDICTION_COLUMN: classifier.predict_proba(sample), "model_version": version}
    )


def _prepare(frame: pd.DataFrame, columns: list[str], policy: DriftPolicy) -> pd.DataFrame:
    """The monitored columns typed as Evidently expects (strings or floats, missing = NaN)."""
    import numpy as np
    import pandas as pd

    out = pd.DataFrame(index=range(len(frame)))
    for column in columns:
        values = frame[column].reset_index(drop=True)
        if policy.categorical(column):
            out[column] = values.astype(object).where(values.notna(), np.nan)
        else:
            out[column] = pd.to_numeric(values, errors="coerce").astype("float64")
    return out


def compute_drift(
    current: pd.DataFrame, reference: pd.DataFrame, policy: DriftPolicy | None = None
) -> DriftResult:
    """Compares the current rows with a sample of the reference rows, column by column.

    Args:
        current: One day of feature rows with the ``probability`` predicted for each.
        reference: The champion's reference window rows, same columns (sampled here to
            ``policy.reference_max_rows``).
        policy: Columns, methods and thresholds (default ``DriftPolicy()``).

    Returns:
        The per-column verdicts, the drift share and verdict, and the Evidently HTML and JSON.

    Raises:
        EmptyDataError: if either side has no rows, or no monitored column has a value on
            both sides.
        ValueError: if a monitored column is missing from either side.
    """
    policy = policy or DriftPolicy()
    _check_comparable(current, reference, policy)
    columns = list(policy.columns)
    sample = sample_reference(reference, policy.reference_max_rows, policy.seed)
    cur, ref = _prepare(current, columns, policy), _prepare(sample, columns, policy)
    evaluated = [c for c in columns if cur[c].notna().any() and ref[c].notna().any()]
    if not evaluated:
        raise EmptyDataError(
            f"no monitored column has values in both the current ({len(cur)} rows) and the "
            f"reference ({len(ref)} rows) data"
        )
    snapshot = _evidently_report(cur[evaluated], ref[evaluated], policy)
    report_json = snapshot.json()
    verdicts = _verdicts(json.loads(report_json))
    results = tuple(_column_drift(column, policy, verdicts.get(column)) for column in columns)
    drifted_columns = [c.column for c in results if c.drifted]
    share = len(drifted_columns) / len(evaluated)
    return DriftResult(
        columns=results,
        drift_share=share,
        drifted=share > policy.drift_share_threshold,
        drifted_columns=drifted_columns,
        current_rows=len(cur),
        reference_rows=len(ref),
        html=snapshot.get_html_str(as_iframe=False),
        json=report_json,
    )


def _check_comparable(current: pd.DataFrame, reference: pd.DataFrame, policy: DriftPolicy) -> None:
    """Raises when either side is empty or lacks a monitored column."""
    for name, frame in (("current", current), ("reference", reference)):
        if len(frame) == 0:
            raise EmptyDataError(
                f"the {name} data has no rows: there is nothing to compare (an empty day, or "
                "an empty reference window)"
            )
        missing = [c for c in policy.columns if c not in frame.columns]
        if missing:
            raise ValueError(f"{name} data lacks monitored column(s) {missing}")


def _evidently_report(current: pd.DataFrame, reference: pd.DataFrame, policy: DriftPolicy) -> Any:
    """Runs one Evidently ValueDrift test per column (with its policy's method and threshold)."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    columns = list(current.columns)
    definition = DataDefinition(
        categorical_columns=[c for c in columns if policy.categorical(c)],
        numerical_columns=[c for c in columns if not policy.categorical(c)],
    )
    rules = policy.rules
    report = Report(
        [
            ValueDrift(column=c, method=rules[c].method, threshold=rules[c].threshold)
            for c in columns
        ],
        include_tests=True,
    )
    return report.run(
        Dataset.from_pandas(current, data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition),
    )


def _column_drift(
    column: str, policy: DriftPolicy, verdict: tuple[float, bool] | None
) -> ColumnDrift:
    """A column's verdict; a column Evidently did not evaluate (no data) is not drifted."""
    rule = policy.rules[column]
    if verdict is None:
        return ColumnDrift(column, rule.method, math.nan, rule.threshold, False, evaluated=False)
    score, drifted = verdict
    return ColumnDrift(column, rule.method, score, rule.threshold, drifted)


def _verdicts(report: dict[str, Any]) -> dict[str, tuple[float, bool]]:
    """Score and drift verdict per column, read from a report's metrics and tests.

    The verdict is the status of Evidently's drift test (FAIL = drifted), so the direction of
    the score (a p-value or a distance) never has to be known here.
    """
    scores = {
        m["config"]["column"]: float(m["value"])
        for m in report["metrics"]
        if m.get("config", {}).get("type", "").endswith("ValueDrift")
    }
    status = {
        t["metric_config"]["params"]["column"]: t["status"]
        for t in report["tests"]
        if t["metric_config"]["params"].get("type", "").endswith("ValueDrift")
    }
    missing = sorted(set(scores) ^ set(status))
    if missing:
        raise RuntimeError(f"the drift report has no score or no test for {missing}")
    return {c: (scores[c], status[c] == "FAIL") for c in scores}
