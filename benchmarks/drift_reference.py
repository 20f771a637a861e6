"""Drift on a large reference: the cost of a day's report, and what sampling the reference costs.

The reference: 1,000,000 rows drawn (with replacement) from the 336,776 real flights of 2013,
as features scored by a model trained on the first half of the year. Each measured day is
compared with it by ``lib.drift.compute_drift``, which samples the reference down to
``DriftPolicy.reference_max_rows`` (5,000) rows; side by side in the same run, the same day
against a reference already that small (the report alone). Budget: a day's drift report on
the million-row reference under 5 s.

The sampling error, measured rather than assumed: for each numeric monitored column, the
largest distance between the sample's and the whole reference's distribution function
(``sup |F_sample - F_full|``) over several seeds, against the Dvoretzky-Kiefer-Wolfowitz bound
``sqrt(ln(2/alpha) / (2n))`` (0.0192 for n = 5,000 at 95 %); and how far each column's drift
score moves, and how many verdicts change, when only the seed of the sample changes. The method
and the latest result: docs/benchmarks.md, section 6. A measurement, not a test.

Usage::

    uv run python -m benchmarks.drift_reference [--rows 1000000] [--days 6] [--seeds 5]
        [--out PATH]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    RESULTS,
    alternating,
    machine_info,
    mark_start,
    run_reporting_errors,
    write_result,
)

BUDGET_SECONDS = 5.0
ALPHA = 0.05
# Spread over the year: winter, spring, summer peak, autumn.
DAYS = ("2013-02-14", "2013-04-18", "2013-06-27", "2013-07-25", "2013-09-12", "2013-11-27")


def dkw_bound(rows: int, alpha: float = ALPHA) -> float:
    """Largest gap between a sample's and the population's distribution function, w.p. 1-alpha."""
    return math.sqrt(math.log(2 / alpha) / (2 * rows))


def year_features() -> Any:
    """Every 2013 flight as feature rows, through the project's contracts and feature code."""
    from mlops_assets.lib import contracts, features
    from mlops_assets.lib.landing import parse_csv
    from mlops_assets.lib.source import read_source_csv

    def table(name: str) -> Any:
        return parse_csv(read_source_csv(name), name)

    refs = {
        name: contracts.validate(table(name), getattr(contracts, f"{name}_schema")(), source=name)
        for name in ("airlines", "airports", "planes")
    }
    schema = contracts.flights_schema(refs["airlines"]["carrier"], refs["airports"]["faa"])
    flights = contracts.validate(table("flights"), schema, source="flights")
    weather = table("weather")
    # The one reading the weather contract refuses (a 1,048 mph wind on 2013-02-12).
    weather = weather[weather["wind_speed"].astype(float).fillna(0) <= 200]
    weather = contracts.validate(weather, contracts.weather_schema(), source="weather")
    return features.build_flight_features(flights, weather, refs["planes"])


def scored(frame: Any) -> Any:
    """The frame with the probability of a model trained on January to June."""
    from mlops_assets.lib import estimator
    from mlops_assets.lib.drift import PREDICTION_COLUMN
    from mlops_assets.lib.features import LABEL_COLUMN
    from mlops_assets.lib.modeling import train_classifier

    first_half = frame[(frame["month"] <= 6) & frame[LABEL_COLUMN].notna()]
    model = train_classifier(first_half, estimator.HyperParameters())
    return frame.assign(**{PREDICTION_COLUMN: model.predict_proba(frame)})


def timed_reports(days: dict[str, Any], big: Any, small: Any) -> list[dict[str, Any]]:
    """Each day against the big reference and against the small one, alternating first."""
    from mlops_assets.lib.drift import compute_drift

    compute_drift(next(iter(days.values())), small)  # warm-up: Evidently's first report
    records = []
    for i, (day, current) in enumerate(days.items()):
        record: dict[str, Any] = {"day": day}
        for side in alternating(i, "big", "small"):
            start = time.perf_counter()
            compute_drift(current, big if side == "big" else small)
            record[side] = round(time.perf_counter() - start, 3)
        records.append(record)
        print(f"{day}: {record['big']:.2f} s on {len(big):,} rows, {record['small']:.2f} s sampled")
    return records


def distribution_gaps(big: Any, seeds: int, rows: int) -> dict[str, Any]:
    """Per numeric monitored column, the largest ``sup |F_sample - F_full|`` over the seeds.

    Also how many of the (seed, column) draws exceed the 95 % bound: about 5 % may.
    """
    import numpy as np

    from mlops_assets.lib.drift import DriftPolicy, sample_reference

    policy = DriftPolicy()
    numeric = [c for c in policy.columns if not policy.categorical(c)]
    full = {c: np.sort(big[c].dropna().to_numpy(dtype="float64")) for c in numeric}
    gaps = dict.fromkeys(numeric, 0.0)
    over = 0
    for seed in range(seeds):
        sample = sample_reference(big, rows, seed)
        for column in numeric:
            values = np.sort(sample[column].dropna().to_numpy(dtype="float64"))
            grid = np.unique(full[column])
            f_full = np.searchsorted(full[column], grid, side="right") / len(full[column])
            f_sample = np.searchsorted(values, grid, side="right") / len(values)
            gap = float(np.abs(f_full - f_sample).max())
            gaps[column] = max(gaps[column], gap)
            over += gap > dkw_bound(rows)
    return {
        "largest_per_column": {c: round(g, 4) for c, g in gaps.items()},
        "draws_over_the_bound": over,
        "draws": seeds * len(numeric),
    }


def seed_stability(days: dict[str, Any], big: Any, seeds: int) -> dict[str, Any]:
    """How far scores move and how many verdicts change when only the sample's seed changes."""
    from mlops_assets.lib.drift import DriftPolicy, compute_drift

    moves: dict[str, float] = {}
    column_flips = day_flips = 0
    for current in days.values():
        results = [compute_drift(current, big, DriftPolicy(seed=seed)) for seed in range(seeds)]
        for position, first in enumerate(results[0].columns):
            scores = [r.columns[position].score for r in results]
            verdicts = {r.columns[position].drifted for r in results}
            spread = (max(scores) - min(scores)) / first.threshold
            moves[first.column] = max(moves.get(first.column, 0.0), spread)
            column_flips += len(verdicts) > 1
        day_flips += len({r.drifted for r in results}) > 1
    return {
        "largest_score_spread_over_threshold": {c: round(v, 3) for c, v in moves.items()},
        "columns_whose_verdict_changed_with_the_seed": column_flips,
        "column_verdicts": len(days) * len(moves),
        "days_whose_verdict_changed_with_the_seed": day_flips,
        "days": len(days),
    }


def main(argv: list[str] | None = None) -> int:
    """Measures, prints and writes the result file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the big reference")
    parser.add_argument("--days", type=int, default=len(DAYS), help="days measured")
    parser.add_argument("--seeds", type=int, default=5, help="reference samples compared")
    parser.add_argument("--out", type=Path, default=RESULTS / "drift_reference.json")
    args = parser.parse_args(argv)
    return run_reporting_errors(lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    from mlops_assets.lib.drift import DriftPolicy, sample_reference

    mark_start()
    year = scored(year_features())
    big = year.sample(n=args.rows, replace=True, random_state=0).reset_index(drop=True)
    rows = DriftPolicy().reference_max_rows
    small = sample_reference(big, rows, DriftPolicy().seed)
    days = {day: year[year["flight_date"] == day] for day in DAYS[: args.days]}
    records = timed_reports(days, big, small)
    median_big = statistics.median(r["big"] for r in records)
    median_small = statistics.median(r["small"] for r in records)
    gaps = distribution_gaps(big, args.seeds, rows)
    stability = seed_stability(days, big, args.seeds)
    result = {
        "reference_rows": len(big),
        "sampled_rows": rows,
        "per_day": records,
        "median_big_s": median_big,
        "median_small_s": median_small,
        "ratio_big_over_small": round(median_big / median_small, 3),
        "budget_s": BUDGET_SECONDS,
        "budget_met": median_big < BUDGET_SECONDS,
        "dkw_bound_95": round(dkw_bound(rows), 4),
        "cdf_gaps": gaps,
        "seed_stability": stability,
        "machine": machine_info(__file__, "evidently", "pandas"),
    }
    write_result(args.out, result)
    print(
        f"median {median_big:.2f} s on {len(big):,} rows vs {median_small:.2f} s on {rows:,} "
        f"(x{result['ratio_big_over_small']}), budget {BUDGET_SECONDS} s: "
        f"{'met' if result['budget_met'] else 'missed'}"
    )
    largest = max(gaps["largest_per_column"].values())
    print(
        f"largest CDF gap {largest:.4f}, {gaps['draws_over_the_bound']} of {gaps['draws']} draws "
        f"over the 95 % DKW bound {dkw_bound(rows):.4f}"
    )
    print(f"seed stability: {stability}")
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
