"""One new day through the data half of the graph, against the same work as plain library calls.

Pipeline: the landing-sensor tick and the automation tick of a newly landed day through
Dagster (``LocalDaemon`` on a SQLite or in-memory instance under a temporary state folder).
Pure: the same reads, contracts, pseudonyms, features, fingerprints, DVC commit and Parquet
writes as ``mlops_assets.lib`` calls. ``--chain`` carries the day on to the performance report
(a champion trained on the warm-up days first): batch predictions, drift report, model
performance on both sides. Both sides run in this process, day by day, alternating which goes
first, after warm-up days. Budget: median pipeline <= 3.0 x median pure. The method in full
and the latest result: docs/benchmarks.md, section 2. A measurement, not a test: the exit code
is non-zero only on errors (a failed run, a run of an unexpected shape, a missing output).

Usage::

    uv run python -m benchmarks.one_day [--chain] [--days 5] [--start 2013-01-10]
        [--warmup-days 2] [--instance home|ephemeral] [--dagster-yaml PATH] [--profile]
        [--out PATH] [--keep]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import sys
import time
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from benchmarks.common import (
    RESULTS,
    ROOT,
    BenchError,
    Profile,
    alternating,
    home_instance,
    machine_info,
    mark_start,
    median_of,
    open_state,
    run_reporting_errors,
    scratch_folder,
    write_result,
)

BUDGET_RATIO = 3.0

# The run of a new day: the landing run (raw and features), with --chain carrying the
# predictions, reports and the trial assets too (no trial runs: they check and skip, but
# online_predictions reads the day's prediction log).
LANDED = ("raw_flights", "raw_weather", "flight_features")
CHAINED = (
    "batch_predictions",
    "drift_report",
    "model_performance",
    "challenger_predictions",
    "online_predictions",
    "trial_evaluation",
)
# --chain: the champion is trained on these warm-up days (the measured days come after them).
CHAIN_WARMUP_DAYS = 21
CHAIN_START = date(2013, 1, 22)

PIPELINE_STAGES = {
    "landing_sensor": "landing sensor tick (evaluation)",
    "landing_run": "landing run: raw + features (incl. DVC commit); --chain: on to the reports",
    "automation_eval": "automation evaluation (finds nothing)",
}
PURE_STAGES = (
    "read_csv",
    "validate_raw",
    "pseudonymize_raw",
    "fingerprint_raw",
    "write_raw_parquet",
    "build_features",
    "validate_features",
    "leakage_check",
    "fingerprint_features",
    "features_parquet_bytes",
    "dvc_commit",
    "write_features_parquet",
)
CHAIN_STAGES = (
    "load_champion",
    "predict",
    "write_predictions",
    "compute_drift",
    "write_drift_reports",
    "write_drift_table",
    "performance",
    "write_performance",
    "trial_assets",
)


class Stopwatch:
    """Accumulates named durations."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    def __call__(self, name: str, func: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        value = func()
        self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - start
        return value


# -- the instance -----------------------------------------------------------------------------


@contextlib.contextmanager
def open_instance(args: argparse.Namespace, state: Path) -> Iterator[tuple[Any, Path]]:
    """The instance of ``--instance``: the SQLite home (optionally another yaml) or in memory."""
    if args.instance == "home":
        with home_instance(state, args.dagster_yaml) as opened:
            yield opened
        return
    where = open_state(state)
    import dagster as dg

    instance = dg.DagsterInstance.ephemeral()
    try:
        yield instance, where.dagster_home
    finally:
        instance.dispose()


def timed_daemon(instance: Any, home: Path) -> Any:
    """A ``LocalDaemon`` on the project's definitions that records every run's duration."""
    from mlops_assets.definitions import defs
    from mlops_assets.local_daemon import LocalDaemon, RunOutcome

    class TimedDaemon(LocalDaemon):
        run_seconds: list[float]

        def _execute(self, *a: Any, **kw: Any) -> RunOutcome:
            start = time.perf_counter()
            outcome = super()._execute(*a, **kw)
            self.run_seconds.append(time.perf_counter() - start)
            return outcome

    loop = TimedDaemon(defs, instance, home / "local_loop_cursors.json")
    loop.run_seconds = []
    return loop


def _one_row(row: dict[str, Any]) -> Any:
    import pandas as pd

    return pd.DataFrame([row])


def write_parquet(target: Path, frame: Any) -> None:
    """Serializes ``frame`` and writes it atomically (the lake's way)."""
    from mlops_assets.lib.storage import to_parquet_bytes, write_atomic

    write_atomic(target, to_parquet_bytes(frame))


def expect(outcomes: list[Any], shapes: list[tuple[str, ...]], day: date, what: str) -> None:
    """Exactly one successful run of ``day`` per entry of ``shapes``, of those assets, in order."""
    got = [(set(o.assets), o.partition) for o in outcomes]
    if got != [(set(shape), day.isoformat()) for shape in shapes]:
        raise BenchError(f"{what} for {day}: expected runs of {shapes}, got {outcomes}")
    for outcome in outcomes:
        if not outcome.success:
            raise BenchError(f"{what} run for {day} failed: {outcome.error}")


# -- the two sides ----------------------------------------------------------------------------


class OneDay:
    """The pipeline and the pure side of one day, on one state folder."""

    def __init__(self, tmp: Path, instance: Any, home: Path) -> None:
        from mlops_assets import settings
        from mlops_assets.lib.data_registry import DataRegistry

        self.where = settings.locations()
        self.loop = timed_daemon(instance, home)
        self.pure_lake = tmp / "pure" / "lake"
        self.pure_registry = DataRegistry(
            tmp / "pure" / "registry", str(tmp / "pure" / "dvc-remote")
        )
        self.refs: dict[str, Any] = {}
        resources = self.loop.defs.resources or {}
        self.pseudonyms = resources["pseudonyms"]
        self.tracking = resources["tracking"]
        self.prediction_log = resources["prediction_log"]
        self.reports = type(resources["reports"])(base_url=str(tmp / "pure" / "reports"))
        self.reference: Any = None
        self.instance = instance
        self.floor: Any = None

    def floor_day(self, day: date, chain: bool) -> float:
        """Dagster's floor: a run of the landing run's shape whose steps do nothing."""
        from benchmarks.run_floor import floor_job, run_floor

        if self.floor is None:  # built once, outside the timing
            self.floor = floor_job(chain)
        start = time.perf_counter()
        run_floor(self.floor, self.instance, day.isoformat())
        return time.perf_counter() - start

    def replay(self, day: date, days: int = 1, *, include_reference: bool = False) -> None:
        """Writes ``days`` days from ``day`` into the landing zone (not timed)."""
        from mlops_assets.lib.replay import replay

        replay(self.where.landing, day, days, include_reference=include_reference)

    def load_references(self) -> None:
        """The reference frames the pure side validates against, read and validated once."""
        from mlops_assets.lib import contracts
        from mlops_assets.lib.landing import landing_path, read_csv

        self.refs = {
            name: contracts.validate(
                read_csv(landing_path(self.where.landing, name)),
                getattr(contracts, f"{name}_schema")(),
                source=name,
            )
            for name in ("airlines", "airports", "planes")
        }
        self.refs["planes"] = self._pseudonymized(self.refs["planes"], "planes")
        reference = self.where.lake / "drift_reference.parquet"
        if reference.exists():  # with --chain: the champion's drift reference
            import pandas as pd

            self.reference = pd.read_parquet(reference)

    def pipeline_day(self, day: date, chain: bool = False) -> dict[str, float]:
        """The landing tick and the automation tick of a landed day, through Dagster.

        As in a round of the demo loop: the automation evaluation after the landing run finds
        nothing to request (nothing of the day is requested twice).
        """
        loop = self.loop
        loop.run_seconds = []
        start = time.perf_counter()
        landed = loop.tick_landing()
        mid = time.perf_counter()
        automated = loop.tick_automation()
        end = time.perf_counter()
        expect(landed, [LANDED + CHAINED if chain else LANDED], day, "landing sensor")
        expect(automated, [], day, "automation")
        [landing_run] = loop.run_seconds
        return {
            "landing_sensor": (mid - start) - landing_run,
            "landing_run": landing_run,
            "automation_eval": end - mid,
        }

    def pure_day(self, day: date, chain: bool = False) -> tuple[dict[str, float], str]:
        """The same work as plain library calls; stage times and the features' MD5."""
        from mlops_assets.lib.fingerprints import md5_bytes

        watch = Stopwatch()
        flights, weather = self._pure_raw(watch, day)
        frame, payload = self._pure_features(watch, day, flights, weather)
        if chain:
            self._pure_chain(watch, day, frame)
        return watch.times, md5_bytes(payload)

    def _pure_raw(self, watch: Stopwatch, day: date) -> tuple[Any, Any]:
        from mlops_assets.lib import contracts
        from mlops_assets.lib.fingerprints import frame_fingerprint
        from mlops_assets.lib.landing import landing_path, read_csv

        landing, refs = self.where.landing, self.refs
        flights = watch("read_csv", lambda: read_csv(landing_path(landing, "flights", day)))
        weather = watch("read_csv", lambda: read_csv(landing_path(landing, "weather", day)))
        flights = watch(
            "validate_raw",
            lambda: contracts.validate(
                flights,
                contracts.flights_schema(refs["airlines"]["carrier"], refs["airports"]["faa"], day),
                source="flights",
            ),
        )
        weather = watch(
            "validate_raw",
            lambda: contracts.validate(weather, contracts.weather_schema(day), source="weather"),
        )
        flights = watch("pseudonymize_raw", lambda: self._pseudonymized(flights, "flights", day))
        for name, frame in (("raw_flights", flights), ("raw_weather", weather)):
            watch("fingerprint_raw", functools.partial(frame_fingerprint, frame))
            target = self.pure_lake / name / f"{day}.parquet"
            watch("write_raw_parquet", functools.partial(write_parquet, target, frame))
        return flights, weather

    def _pseudonymized(self, frame: Any, dataset: str, day: date | None = None) -> Any:
        """The contract's personal-data columns replaced by their pseudonyms (as ingestion does)."""
        from mlops_assets.lib import contracts

        refs = self.refs
        schema = (
            contracts.flights_schema(refs["airlines"]["carrier"], refs["airports"]["faa"], day)
            if dataset == "flights"
            else getattr(contracts, f"{dataset}_schema")()
        )
        sensitive = contracts.sensitive_columns(schema)
        return self.pseudonyms.pseudonymizer().frame(frame, sensitive) if sensitive else frame

    def _pure_features(
        self, watch: Stopwatch, day: date, flights: Any, weather: Any
    ) -> tuple[Any, bytes]:
        from mlops_assets.lib import contracts, features
        from mlops_assets.lib.fingerprints import frame_fingerprint
        from mlops_assets.lib.storage import to_parquet_bytes, write_atomic

        frame = watch(
            "build_features",
            lambda: features.build_flight_features(flights, weather, self.refs["planes"]),
        )
        frame = watch(
            "validate_features",
            lambda: contracts.validate(frame, features.features_schema(), source="features"),
        )
        leaks = watch("leakage_check", lambda: features.find_leakage(list(frame.columns)))
        if leaks:
            raise BenchError(f"pure path found leakage on {day}: {leaks}")
        watch("fingerprint_features", lambda: frame_fingerprint(frame))
        payload: bytes = watch("features_parquet_bytes", lambda: to_parquet_bytes(frame))
        watch(
            "dvc_commit",
            lambda: self.pure_registry.commit(
                f"flight_features/{day}.parquet", payload, f"flight_features {day} (benchmark)"
            ),
        )
        target = self.pure_lake / "flight_features" / f"{day}.parquet"
        watch("write_features_parquet", lambda: write_atomic(target, payload))
        return frame, payload

    def _pure_chain(self, watch: Stopwatch, day: date, features: Any) -> None:
        """Predictions, drift report and performance of the day, as the three assets do them."""
        from mlops_assets.lib.drift import DriftPolicy, compute_drift, scored_rows
        from mlops_assets.lib.fingerprints import frame_fingerprint
        from mlops_assets.lib.performance import day_performance
        from mlops_assets.lib.predictions import prediction_frame
        from mlops_assets.lib.report_assets import share_assets

        tracking, lake = self.tracking, self.pure_lake
        version = watch("load_champion", lambda: str(tracking.champion().version))
        classifier = watch("load_champion", lambda: tracking.classifier(version))
        predicted = watch(
            "predict",
            lambda: prediction_frame(features, classifier, tracking.model_name, version),
        )
        watch("predict", lambda: frame_fingerprint(predicted))
        target = lake / "batch_predictions" / f"{day}.parquet"
        watch("write_predictions", functools.partial(write_parquet, target, predicted))
        policy = DriftPolicy()
        current = scored_rows(features, predicted)
        result = watch("compute_drift", lambda: compute_drift(current, self.reference, policy))
        page = watch("write_drift_reports", lambda: share_assets(result.html))
        watch("write_drift_reports", lambda: self.reports.write_missing(page.files))
        watch(
            "write_drift_reports",
            lambda: self.reports.write(f"drift/{day}.html", page.html.encode()),
        )
        watch(
            "write_drift_reports",
            lambda: self.reports.write(f"drift/{day}.json", result.json.encode()),
        )
        watch("compute_drift", lambda: (result.summary(policy), result.markdown()))
        target = lake / "drift_report" / f"{day}.parquet"
        watch("write_drift_table", lambda: write_parquet(target, result.table()))
        facts = watch("performance", lambda: tracking.model_facts(version))
        scored = watch(
            "performance",
            lambda: day_performance(
                predicted, features, validation_predicted_rate=facts.validation_predicted_rate
            ),
        )
        watch("performance", lambda: scored.summary(facts.validation_roc_auc))
        target = lake / "model_performance" / f"{day}.parquet"
        row = {"day": day.isoformat(), "model_version": version, "status": scored.status}
        watch(
            "write_performance", lambda: write_parquet(target, _one_row({**row, **scored.metrics}))
        )
        self._pure_trial(watch, day, features, predicted)

    def _pure_trial(self, watch: Stopwatch, day: date, features: Any, predicted: Any) -> None:
        """The trial assets without a trial: two trial look-ups, the day's online predictions."""
        from mlops_assets.lib.predictions import online_summary

        if watch("trial_assets", self.tracking.trial) or watch("trial_assets", self.tracking.trial):
            raise BenchError(f"a trial is running on {day}: the chain measures days without one")
        log = watch("trial_assets", lambda: self.prediction_log.read_day(day.isoformat()))
        watch("trial_assets", lambda: online_summary(log, features, predicted))
        target = self.pure_lake / "online_predictions" / f"{day}.parquet"
        watch("trial_assets", lambda: write_parquet(target, log))

    def lake_features_md5(self, day: date) -> str:
        """MD5 of the features Parquet the pipeline wrote for ``day``."""
        from mlops_assets.lib.fingerprints import md5_bytes

        return md5_bytes((self.where.lake / "flight_features" / f"{day}.parquet").read_bytes())

    def lake_read_seconds(self, day: date) -> float:
        """Time to read the three inputs of flight_features back, as its IO manager does."""
        import pandas as pd

        lake = self.where.lake
        start = time.perf_counter()
        for path in (
            lake / "raw_flights" / f"{day}.parquet",
            lake / "raw_weather" / f"{day}.parquet",
            lake / "planes.parquet",
        ):
            with path.open("rb") as handle:
                pd.read_parquet(handle)
        return time.perf_counter() - start


# -- the measurement --------------------------------------------------------------------------


def warm_up(bench: OneDay, start: date, days: int, chain: bool) -> str:
    """References and ``days`` days before ``start`` through both sides; a summary line.

    With ``chain``, a champion is trained on the warm-up days (as the demo's bootstrap), and
    automation carries its Bento and drift reference.
    """
    warm_start = start - timedelta(days=days)
    bench.replay(warm_start, days, include_reference=True)
    setup_started = time.perf_counter()
    warm = bench.loop.run_until_idle()
    if chain:
        train(bench, warm_start, days)
        warm += bench.loop.run_until_idle()
    failed = [o for o in warm if not o.success]
    if failed or not warm:
        raise BenchError(f"warm-up runs failed: {failed or 'nothing ran'}")
    warm_days = [warm_start + timedelta(days=i) for i in range(days)]
    for day in warm_days:
        if not (bench.where.lake / "flight_features" / f"{day}.parquet").exists():
            raise BenchError(f"warm-up did not materialize flight_features {day}")
    bench.load_references()
    for day in warm_days[-2:]:
        bench.pure_day(day, chain)
    return (
        f"setup: {len(warm)} warm-up run(s) for references + {days} day(s)"
        f"{' + training' if chain else ''} in {time.perf_counter() - setup_started:.1f} s"
    )


def train(bench: OneDay, first: date, days: int) -> None:
    """The training job on the warm-up days, as the demo's bootstrap runs it."""
    from mlops_assets.defs import jobs

    last = first + timedelta(days=days - 1)
    result = bench.loop.defs.resolve_job_def(jobs.TRAINING_JOB).execute_in_process(
        asset_selection=jobs.TRAINING_ASSETS,
        instance=bench.loop.instance,
        run_config={
            "ops": {
                "training_set": {
                    "config": {"as_of": last.isoformat(), "days": days, "validation_days": 7}
                }
            },
            "loggers": {"console": {"config": {"log_level": "WARNING"}}},
        },
        raise_on_error=False,
    )
    if not result.success:
        raise BenchError(f"training on the warm-up days {first} .. {last} failed")


def measure_day(bench: OneDay, day: date, i: int, chain: bool) -> dict[str, Any]:
    """Both sides on ``day`` (the first alternates with ``i``), and their comparison."""
    bench.replay(day)
    order = alternating(i, "pipeline", "pure")
    record: dict[str, Any] = {"day": day.isoformat(), "first": order[0]}
    for side in order:
        gc.collect()
        if side == "pipeline":
            record["pipeline"] = bench.pipeline_day(day, chain)
        else:
            record["pure"], record["pure_md5"] = bench.pure_day(day, chain)
    gc.collect()
    record["floor"] = bench.floor_day(day, chain)
    record["pipeline_md5"] = bench.lake_features_md5(day)
    record["same_output"] = record["pipeline_md5"] == record["pure_md5"]
    # Not part of either side: what the features run reads back through the IO manager.
    record["lake_reads"] = bench.lake_read_seconds(day)
    record["pipeline_total"] = sum(record["pipeline"].values())
    record["pure_total"] = sum(record["pure"].values())
    print(
        f"{day}: pipeline {record['pipeline_total']:.3f} s, pure {record['pure_total']:.3f} s "
        f"({order[0]} first)",
        flush=True,
    )
    return record


def profile_pipeline(bench: OneDay, last: date, out: Path, chain: bool) -> str:
    """Pushes two more days through the pipeline under cProfile; returns a text report."""
    profile = Profile()
    for day in (last + timedelta(days=1), last + timedelta(days=2)):
        bench.replay(day)
        profile.call(functools.partial(bench.pipeline_day, day, chain))
    path = out.with_suffix(".prof")
    profile.save(path)
    return f"cProfile of 2 extra pipeline days (cumulative, top 40), saved to {path}:\n" + (
        profile.top(40)
    )


def pure_stages(chain: bool) -> tuple[str, ...]:
    return PURE_STAGES + CHAIN_STAGES if chain else PURE_STAGES


def summarize(
    args: argparse.Namespace, instance: Any, per_day: list[dict[str, Any]]
) -> dict[str, Any]:
    """Medians per stage, ratios and the budget verdict, with every day's record."""
    pipeline_total = median_of(per_day, "pipeline_total")
    pure_total = median_of(per_day, "pure_total")
    ratio = pipeline_total / pure_total
    return {
        "machine": machine_info(__file__),
        "instance": args.instance,
        "dagster_yaml": str(args.dagster_yaml or ROOT / "dagster.yaml")
        if args.instance == "home"
        else None,
        "storage": {
            "event_log": type(instance.event_log_storage).__name__,
            "run_storage": type(instance.run_storage).__name__,
            "compute_logs": type(instance.compute_log_manager).__name__,
        },
        "chain": args.chain,
        "runs_per_day": 1,
        "days": [r["day"] for r in per_day],
        "warmup_days": args.warmup_days,
        "median_pipeline_s": {s: median_of(per_day, "pipeline", s) for s in PIPELINE_STAGES},
        "median_pipeline_total_s": pipeline_total,
        "median_pure_s": {s: median_of(per_day, "pure", s) for s in pure_stages(args.chain)},
        "median_pure_total_s": pure_total,
        "median_lake_reads_s": median_of(per_day, "lake_reads"),
        "median_floor_s": median_of(per_day, "floor"),
        "ratio": ratio,
        "per_day_ratio": [r["pipeline_total"] / r["pure_total"] for r in per_day],
        "budget_ratio": BUDGET_RATIO,
        "within_budget": ratio <= BUDGET_RATIO,
        "same_output_every_day": all(r["same_output"] for r in per_day),
        "per_day": per_day,
    }


def report(result: dict[str, Any]) -> None:
    """Prints the result as Markdown tables."""
    days, storage = result["days"], result["storage"]
    pipeline, pure = result["median_pipeline_s"], result["median_pure_s"]
    pipeline_total, pure_total = result["median_pipeline_total_s"], result["median_pure_total_s"]
    what = (
        "the whole day chain (landing to performance report)"
        if result["chain"]
        else ("one day through the data half")
    )
    print(
        f"\n{what}, {result['runs_per_day']} run(s) a day, medians over {len(days)} day(s) "
        f"{days[0]} .. {days[-1]} ({result['instance']} instance: {storage['event_log']} event "
        f"log, {storage['compute_logs']})\n"
    )
    print("| pipeline stage (Dagster) | median |\n|---|---:|")
    for stage, label in PIPELINE_STAGES.items():
        print(f"| {label} | {pipeline[stage]:.3f} s |")
    print(f"| **total** | **{pipeline_total:.3f} s** |")
    print("\n| pure stage (plain lib calls) | median |\n|---|---:|")
    for stage in pure_stages(result["chain"]):
        print(f"| {stage.replace('_', ' ')} | {pure[stage]:.3f} s |")
    print(f"| **total** | **{pure_total:.3f} s** |")
    verdict = "met" if result["within_budget"] else "MISSED"
    per_day = ", ".join(f"{r:.2f}" for r in result["per_day_ratio"])
    print(
        f"\nratio pipeline / pure: **{result['ratio']:.2f}** (budget <= {BUDGET_RATIO}: "
        f"{verdict}); per day: {per_day}"
    )
    print(
        f"DVC commit: {pure['dvc_commit']:.3f} s = {pure['dvc_commit'] / pure_total:.0%} of pure; "
        f"Dagster overhead (pipeline - pure): {pipeline_total - pure_total:.3f} s"
    )
    floor = result["median_floor_s"]
    evaluations = pipeline["landing_sensor"] + pipeline["automation_eval"]
    print(
        f"Dagster's floor, a run of the landing run's shape with empty steps: {floor:.3f} s "
        f"= {floor / pure_total:.2f} x pure; with the day's two evaluations: "
        f"{floor + evaluations:.3f} s = {(floor + evaluations) / pure_total:.2f} x pure"
    )
    lake_reads = result["median_lake_reads_s"]
    print(f"reading the 3 inputs of flight_features back from the lake: {lake_reads:.3f} s")
    print(f"pipeline and pure features Parquet identical: {result['same_output_every_day']}")


def run(args: argparse.Namespace, tmp: Path, out: Path) -> int:
    """Setup, warm-up, the alternating measurement, the report."""
    with open_instance(args, tmp / "state") as (instance, home):
        bench = OneDay(tmp, instance, home)
        setup = warm_up(bench, args.start, args.warmup_days, args.chain)
        print(f"{setup} ({args.instance} instance)", flush=True)
        days = [args.start + timedelta(days=i) for i in range(args.days)]
        per_day = [measure_day(bench, day, i, args.chain) for i, day in enumerate(days)]
        profile = profile_pipeline(bench, days[-1], out, args.chain) if args.profile else None
        result = summarize(args, instance, per_day)
    write_result(out, result)
    report(result)
    if profile:
        print(f"\n{profile}")
    print(f"written {out}")
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--chain",
        action="store_true",
        help="the whole day chain: a champion trained on the warm-up days, then each day on to "
        f"batch predictions, drift report and model performance (defaults: --start "
        f"{CHAIN_START}, --warmup-days {CHAIN_WARMUP_DAYS})",
    )
    parser.add_argument("--days", type=int, default=5, help="measured days")
    parser.add_argument("--start", type=date.fromisoformat, default=None, help="default 2013-01-10")
    parser.add_argument(
        "--warmup-days", type=int, default=None, help="days before --start (default 2)"
    )
    parser.add_argument(
        "--instance",
        choices=("home", "ephemeral"),
        default="home",
        help="home: SQLite DAGSTER_HOME with the project's dagster.yaml (like the demo); "
        "ephemeral: DagsterInstance.ephemeral() (in-memory storage)",
    )
    parser.add_argument(
        "--dagster-yaml",
        type=Path,
        default=None,
        help="with --instance home: use this dagster.yaml instead of the project's (to compare "
        "instance configurations)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="after measuring, push 2 more days through the pipeline under cProfile",
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON result file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary state folder")
    args = parser.parse_args(argv)
    if args.start is None:
        args.start = CHAIN_START if args.chain else date(2013, 1, 10)
    if args.warmup_days is None:
        args.warmup_days = CHAIN_WARMUP_DAYS if args.chain else 2
    if args.days < 1 or args.warmup_days < 1:
        parser.error("--days and --warmup-days must be at least 1")
    if args.dagster_yaml and (args.instance != "home" or not args.dagster_yaml.is_file()):
        parser.error("--dagster-yaml needs --instance home and an existing file")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    suffix = ("_chain" if args.chain else "") + (
        "" if args.instance == "home" else f"_{args.instance}"
    )
    if args.dagster_yaml:
        suffix += f"_{args.dagster_yaml.stem}"
    out = args.out or RESULTS / f"one_day{suffix}.json"
    mark_start()
    with scratch_folder("mlops-bench-day-", args.keep) as tmp:
        return run_reporting_errors(lambda: run(args, tmp, out))


if __name__ == "__main__":
    sys.exit(main())
