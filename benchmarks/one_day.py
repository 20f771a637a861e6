"""One new day through the data half of the graph, against the same work as plain library calls.

Setup (not timed): a temporary state folder (``MLOPS_STATE_DIR``, set before the code location
is imported), a Dagster instance under it (the project's ``dagster.yaml``, SQLite storage, as
``mlops-assets demo`` uses) or an ephemeral one, the reference tables and warm-up day(s)
replayed and materialized with ``LocalDaemon``, and the same warm-up done by the pure path, so
imports and caches are warm in this process.

For every measured day D (alternating which side goes first):

* pipeline: D is replayed into the landing zone (not timed), then ``loop.tick_landing()`` +
  ``loop.tick_automation()`` are timed: landing-sensor evaluation, the run of
  ``raw_flights[D]`` + ``raw_weather[D]``, the automation evaluation and the run of
  ``flight_features[D]`` (including its DVC commit), all through Dagster.
* pure: the same work with the plain ``mlops_assets.lib`` calls: read both landing CSVs,
  validate them, fingerprint and write them as Parquet, build the features, validate them,
  check for leakage, fingerprint, serialize, ``DataRegistry.commit`` to a separate registry,
  write the features Parquet.

Budget: median pipeline <= 2.0 x median pure. A measurement, not a test: the exit code is
non-zero only on errors (a failed run, a missing output).

Usage::

    uv run python benchmarks/one_day.py [--days 5] [--start 2013-01-10] [--warmup-days 2]
        [--instance home|ephemeral] [--dagster-yaml PATH] [--profile] [--out PATH]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import os
import pstats
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from _machine import machine_info, mark_start

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BUDGET_RATIO = 2.0

PIPELINE_STAGES = ("landing_sensor", "raw_run", "automation_eval", "features_run")
PURE_STAGES = (
    "read_csv",
    "validate_raw",
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


class Stopwatch:
    """Accumulates named durations."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    def __call__(self, name: str, func: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        value = func()
        self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - start
        return value


class BenchError(RuntimeError):
    """The benchmark could not measure what it claims to measure."""


def setup_environment(state: Path) -> None:
    """Must run before ``mlops_assets.definitions`` is imported (resources read it)."""
    os.environ["MLOPS_STATE_DIR"] = str(state)
    os.environ["DAGSTER_DISABLE_TELEMETRY"] = "true"
    os.environ.pop("MLOPS_ENV", None)
    warnings.filterwarnings("ignore", message=".*is currently in (beta|preview).*")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=5, help="measured days")
    parser.add_argument("--start", type=date.fromisoformat, default=date(2013, 1, 10))
    parser.add_argument("--warmup-days", type=int, default=2, help="days before --start")
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
        help="after measuring, push 2 more days through the pipeline under a profiler "
        "(pyinstrument if installed, else cProfile)",
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON result file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary state folder")
    args = parser.parse_args(argv)
    if args.days < 1 or args.warmup_days < 1:
        parser.error("--days and --warmup-days must be at least 1")
    if args.dagster_yaml and (args.instance != "home" or not args.dagster_yaml.is_file()):
        parser.error("--dagster-yaml needs --instance home and an existing file")
    suffix = "" if args.instance == "home" else f"_{args.instance}"
    if args.dagster_yaml:
        suffix += f"_{args.dagster_yaml.stem}"
    out = args.out or RESULTS / f"one_day{suffix}.json"

    mark_start()
    tmp = Path(tempfile.mkdtemp(prefix="mlops-bench-day-"))
    try:
        return run(args, tmp, out)
    except BenchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"state kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def run(args: argparse.Namespace, tmp: Path, out: Path) -> int:
    setup_environment(tmp / "state")

    import dagster as dg

    from mlops_assets import settings
    from mlops_assets.cli import prepare_dagster_home

    where = settings.locations()
    if where.state != (tmp / "state").resolve():
        raise BenchError(f"MLOPS_STATE_DIR not honoured: {where.state}")
    if args.instance == "home":
        home = prepare_dagster_home()  # DAGSTER_HOME with the project's dagster.yaml
        if args.dagster_yaml:
            shutil.copyfile(args.dagster_yaml, home / "dagster.yaml")
        instance = dg.DagsterInstance.get()
    else:
        home = where.dagster_home
        instance = dg.DagsterInstance.ephemeral()
    try:
        return measure(args, tmp, out, instance, home)
    finally:
        instance.dispose()


def measure(args: argparse.Namespace, tmp: Path, out: Path, instance: Any, home: Path) -> int:
    """Warm-up, the alternating measurement, the report."""
    from mlops_assets import settings
    from mlops_assets.definitions import defs
    from mlops_assets.lib import contracts, features
    from mlops_assets.lib.data_registry import DataRegistry
    from mlops_assets.lib.fingerprints import frame_fingerprint, md5_bytes
    from mlops_assets.lib.landing import landing_path, read_csv
    from mlops_assets.lib.replay import replay
    from mlops_assets.lib.storage import to_parquet_bytes, write_atomic
    from mlops_assets.local_daemon import LocalDaemon, RunOutcome

    where = settings.locations()

    class TimedLoop(LocalDaemon):
        """LocalDaemon that also records the duration of every executed run."""

        run_seconds: list[float]

        def _execute(self, *a: Any, **kw: Any) -> RunOutcome:
            start = time.perf_counter()
            outcome = super()._execute(*a, **kw)
            self.run_seconds.append(time.perf_counter() - start)
            return outcome

    loop = TimedLoop(defs, instance, home / "local_loop_cursors.json")
    loop.run_seconds = []

    # -- pure side: reference frames validated once, a separate lake folder and registry ------
    landing = where.landing
    pure_lake = tmp / "pure" / "lake"
    pure_registry = DataRegistry(tmp / "pure" / "registry", str(tmp / "pure" / "dvc-remote"))

    def pure_day(day: date) -> tuple[dict[str, float], str]:
        watch = Stopwatch()
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
        for name, frame in (("raw_flights", flights), ("raw_weather", weather)):
            watch("fingerprint_raw", lambda frame=frame: frame_fingerprint(frame))
            target = pure_lake / name / f"{day}.parquet"
            watch(
                "write_raw_parquet", lambda f=frame, t=target: write_atomic(t, to_parquet_bytes(f))
            )
        frame = watch(
            "build_features",
            lambda: features.build_flight_features(flights, weather, refs["planes"]),
        )
        frame = watch(
            "validate_features",
            lambda: contracts.validate(frame, features.features_schema(), source="features"),
        )
        leaks = watch("leakage_check", lambda: features.find_leakage(list(frame.columns)))
        if leaks:
            raise BenchError(f"pure path found leakage on {day}: {leaks}")
        watch("fingerprint_features", lambda: frame_fingerprint(frame))
        payload = watch("features_parquet_bytes", lambda: to_parquet_bytes(frame))
        watch(
            "dvc_commit",
            lambda: pure_registry.commit(
                f"flight_features/{day}.parquet", payload, f"flight_features {day} (benchmark)"
            ),
        )
        target = pure_lake / "flight_features" / f"{day}.parquet"
        watch("write_features_parquet", lambda: write_atomic(target, payload))
        return watch.times, md5_bytes(payload)

    def expect(outcomes: list[RunOutcome], assets: set[str], day: date, what: str) -> None:
        if len(outcomes) != 1:
            raise BenchError(f"{what} for {day}: expected 1 run, got {outcomes}")
        outcome = outcomes[0]
        if not outcome.success:
            raise BenchError(f"{what} run for {day} failed: {outcome.error}")
        if set(outcome.assets) != assets or outcome.partition != day.isoformat():
            raise BenchError(f"{what} for {day}: unexpected run {outcome}")

    def pipeline_day(day: date) -> dict[str, float]:
        loop.run_seconds = []
        start = time.perf_counter()
        landed = loop.tick_landing()
        mid = time.perf_counter()
        automated = loop.tick_automation()
        end = time.perf_counter()
        expect(landed, {"raw_flights", "raw_weather"}, day, "landing sensor")
        expect(automated, {"flight_features"}, day, "automation")
        raw_run, features_run = loop.run_seconds
        return {
            "landing_sensor": (mid - start) - raw_run,
            "raw_run": raw_run,
            "automation_eval": (end - mid) - features_run,
            "features_run": features_run,
        }

    # -- warm-up (not timed) -------------------------------------------------------------------
    warm_start = args.start - timedelta(days=args.warmup_days)
    replay(landing, warm_start, args.warmup_days, include_reference=True)
    setup_started = time.perf_counter()
    warm = loop.run_until_idle()
    failed = [o for o in warm if not o.success]
    if failed or not warm:
        raise BenchError(f"warm-up runs failed: {failed or 'nothing ran'}")
    for day_offset in range(args.warmup_days):
        day = warm_start + timedelta(days=day_offset)
        if not (where.lake / "flight_features" / f"{day}.parquet").exists():
            raise BenchError(f"warm-up did not materialize flight_features {day}")
    refs = {
        name: contracts.validate(
            read_csv(landing_path(landing, name)),
            getattr(contracts, f"{name}_schema")(),
            source=name,
        )
        for name in ("airlines", "airports", "planes")
    }
    for day_offset in range(args.warmup_days):
        pure_day(warm_start + timedelta(days=day_offset))
    print(
        f"setup: {len(warm)} warm-up run(s) for references + {args.warmup_days} day(s) "
        f"in {time.perf_counter() - setup_started:.1f} s ({args.instance} instance)",
        flush=True,
    )

    # -- measurement ---------------------------------------------------------------------------
    days = [args.start + timedelta(days=i) for i in range(args.days)]
    per_day: list[dict[str, Any]] = []
    for i, day in enumerate(days):
        replay(landing, day, 1, include_reference=False)
        order = ("pipeline", "pure") if i % 2 == 0 else ("pure", "pipeline")
        record: dict[str, Any] = {"day": day.isoformat(), "first": order[0]}
        for side in order:
            gc.collect()
            if side == "pipeline":
                record["pipeline"] = pipeline_day(day)
            else:
                record["pure"], record["pure_md5"] = pure_day(day)
        lake_file = where.lake / "flight_features" / f"{day}.parquet"
        record["pipeline_md5"] = md5_bytes(lake_file.read_bytes())
        record["same_output"] = record["pipeline_md5"] == record["pure_md5"]
        # Not part of either side: what the features run reads back through the IO manager.
        record["lake_reads"] = lake_read_seconds(where.lake, day)
        record["pipeline_total"] = sum(record["pipeline"].values())
        record["pure_total"] = sum(record["pure"].values())
        per_day.append(record)
        print(
            f"{day}: pipeline {record['pipeline_total']:.3f} s, pure {record['pure_total']:.3f} s "
            f"({order[0]} first)",
            flush=True,
        )

    profile_text = None
    if args.profile:
        profile_text = profile_pipeline(loop, replay, landing, days[-1], pipeline_day, out)

    # -- report --------------------------------------------------------------------------------
    storage = {
        "event_log": type(instance.event_log_storage).__name__,
        "run_storage": type(instance.run_storage).__name__,
        "compute_logs": type(instance.compute_log_manager).__name__,
    }

    def med(side: str, stage: str) -> float:
        return statistics.median(r[side][stage] for r in per_day)

    pipeline = {s: med("pipeline", s) for s in PIPELINE_STAGES}
    pure = {s: med("pure", s) for s in PURE_STAGES}
    pipeline_total = statistics.median(r["pipeline_total"] for r in per_day)
    pure_total = statistics.median(r["pure_total"] for r in per_day)
    lake_reads = statistics.median(r["lake_reads"] for r in per_day)
    ratio = pipeline_total / pure_total
    per_day_ratio = [r["pipeline_total"] / r["pure_total"] for r in per_day]
    result = {
        "machine": machine_info(__file__),
        "instance": args.instance,
        "dagster_yaml": str(args.dagster_yaml or ROOT / "dagster.yaml")
        if args.instance == "home"
        else None,
        "storage": storage,
        "days": [d.isoformat() for d in days],
        "warmup_days": args.warmup_days,
        "median_pipeline_s": pipeline,
        "median_pipeline_total_s": pipeline_total,
        "median_pure_s": pure,
        "median_pure_total_s": pure_total,
        "median_lake_reads_s": lake_reads,
        "ratio": ratio,
        "per_day_ratio": per_day_ratio,
        "budget_ratio": BUDGET_RATIO,
        "within_budget": ratio <= BUDGET_RATIO,
        "same_output_every_day": all(r["same_output"] for r in per_day),
        "per_day": per_day,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")

    verdict = "met" if ratio <= BUDGET_RATIO else "MISSED"
    print(
        f"\none day through the data half, medians over {len(days)} day(s) "
        f"{days[0]} .. {days[-1]} ({args.instance} instance: {storage['event_log']} event log, "
        f"{storage['compute_logs']})\n"
    )
    print("| pipeline stage (Dagster) | median |")
    print("|---|---:|")
    labels = {
        "landing_sensor": "landing sensor tick (evaluation)",
        "raw_run": "run raw_flights + raw_weather",
        "automation_eval": "automation evaluation",
        "features_run": "run flight_features (incl. DVC commit)",
    }
    for stage in PIPELINE_STAGES:
        print(f"| {labels[stage]} | {pipeline[stage]:.3f} s |")
    print(f"| **total** | **{pipeline_total:.3f} s** |")
    print("\n| pure stage (plain lib calls) | median |")
    print("|---|---:|")
    for stage in PURE_STAGES:
        print(f"| {stage.replace('_', ' ')} | {pure[stage]:.3f} s |")
    print(f"| **total** | **{pure_total:.3f} s** |")
    print(
        f"\nratio pipeline / pure: **{ratio:.2f}** (budget <= {BUDGET_RATIO}: {verdict}); "
        f"per day: {', '.join(f'{r:.2f}' for r in per_day_ratio)}"
    )
    print(
        f"DVC commit: {pure['dvc_commit']:.3f} s = {pure['dvc_commit'] / pure_total:.0%} of pure; "
        f"Dagster overhead (pipeline - pure): {pipeline_total - pure_total:.3f} s"
    )
    print(f"reading the 3 inputs of flight_features back from the lake: {lake_reads:.3f} s")
    print(f"pipeline and pure features Parquet identical: {result['same_output_every_day']}")
    if profile_text:
        print(f"\n{profile_text}")
    print(f"written {out}")
    return 0


def lake_read_seconds(lake: Path, day: date) -> float:
    """Time to read the three inputs of flight_features back from the lake, as its IO manager."""
    import pandas as pd

    start = time.perf_counter()
    for path in (
        lake / "raw_flights" / f"{day}.parquet",
        lake / "raw_weather" / f"{day}.parquet",
        lake / "planes.parquet",
    ):
        with path.open("rb") as handle:
            pd.read_parquet(handle)
    return time.perf_counter() - start


def profile_pipeline(
    loop: Any, replay: Any, landing: Path, last: date, pipeline_day: Any, out: Path
) -> str:
    """Pushes two more days through the pipeline under a profiler; returns a text report.

    Uses pyinstrument when it is installed (a call tree), cProfile otherwise.
    """
    days = [last + timedelta(days=i) for i in (1, 2)]
    try:
        from pyinstrument import Profiler
    except ImportError:
        Profiler = None
    if Profiler is not None:
        sampler = Profiler(interval=0.001)
        for day in days:
            replay(landing, day, 1, include_reference=False)
            sampler.start()
            pipeline_day(day)
            sampler.stop()
        path = out.with_name(out.stem + "_profile.txt")
        path.parent.mkdir(parents=True, exist_ok=True)
        text = sampler.output_text(show_all=False, color=False, unicode=True)
        path.write_text(text)
        return f"pyinstrument of 2 extra pipeline days, saved to {path}"
    profiler = cProfile.Profile()
    for day in days:
        replay(landing, day, 1, include_reference=False)
        profiler.enable()
        pipeline_day(day)
        profiler.disable()
    prof_path = out.with_suffix(".prof")
    prof_path.parent.mkdir(parents=True, exist_ok=True)
    profiler.dump_stats(str(prof_path))
    buffer = io.StringIO()
    stats = pstats.Stats(profiler, stream=buffer).sort_stats("cumulative")
    stats.print_stats(40)
    return f"cProfile of 2 extra pipeline days (cumulative, top 40), saved to {prof_path}:\n" + (
        buffer.getvalue()
    )


if __name__ == "__main__":
    sys.exit(main())
