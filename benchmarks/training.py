"""Training on a 90-day window through Dagster and MLflow, against the bare model fit.

Pipeline: ``dagster.materialize`` of ``candidate_model`` (fit, MLflow tracking, model logging
and registration) on a training set built once from the replayed window. Bare fit:
``modeling.fit`` on the same frame in the same process. Repetitions alternate which side goes
first, after a warm-up. Budget: median pipeline <= 2.0 x median bare fit. Timers around the
asset's library calls (``benchmarks.training_probes``) break the pipeline down; one extra
repetition runs under cProfile; ``benchmarks.log_model`` compares ``log_model`` with and
without explicit requirements. The method in full and the latest result: docs/benchmarks.md,
section 3. The benchmark changes into the project root: MLflow's uv detection looks at the
working directory. A measurement, not a test: the exit code is non-zero only on errors.

Usage::

    uv run python -m benchmarks.training [--days 90] [--validation-days 14] [--reps 3]
        [--reuse STATE_DIR] [--keep] [--no-profile] [--no-log-model] [--out PATH]
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import sys
import time
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
    run_reporting_errors,
    scratch_folder,
    write_result,
)
from benchmarks.log_model import compare_log_model, report_log_model
from benchmarks.training_probes import STAGES, TOP_STAGES, Probes, install_probes

BUDGET_RATIO = 2.0
TRAINING_ASSETS = {"training_set", "candidate_model", "champion_model", "model_card"}


# -- setup ------------------------------------------------------------------------------------


def missing_feature_days(days: list[date]) -> list[date]:
    """The days of ``days`` without a features file in the lake."""
    from mlops_assets import settings

    lake = settings.locations().lake
    return [d for d in days if not (lake / "flight_features" / f"{d}.parquet").exists()]


def run_ingestion(
    args: argparse.Namespace, instance: Any, home: Path
) -> tuple[int, dict[str, str]]:
    """Replays the window and ticks the local daemon until the feature days are built.

    Returns the number of runs and the days a data contract blocked (expected: 2013-02-12,
    see docs/data.md); any other failed ingestion or features run is an error.
    """
    from mlops_assets import settings
    from mlops_assets.definitions import defs
    from mlops_assets.lib.replay import replay
    from mlops_assets.local_daemon import LocalDaemon

    days = [args.start + timedelta(days=i) for i in range(args.days)]
    landing = settings.locations().landing
    replay(landing, args.start, args.days, include_reference=True, skip_existing=True)
    loop = LocalDaemon(defs, instance, home / "local_loop_cursors.json")
    runs = 0
    blocked: dict[str, str] = {}
    for _ in range(5):
        outcomes = loop.run_until_idle(max_ticks=200)
        runs += len(outcomes)
        for outcome in outcomes:
            if outcome.success or set(outcome.assets) & TRAINING_ASSETS:
                continue
            if "contract" not in (outcome.error or ""):
                raise BenchError(f"ingestion/features run failed: {outcome}")
            blocked[str(outcome.partition)] = str(outcome.error)
        if not missing_feature_days(days) or not outcomes:
            break
    return runs, blocked


def build_feature_days(args: argparse.Namespace, instance: Any, home: Path) -> dict[str, Any]:
    """Replays the window and runs ingestion + features until every feature day exists."""
    from mlops_assets import settings
    from mlops_assets.lib.landing import DAY_DATASETS, landing_path

    where = settings.locations()
    days = [args.start + timedelta(days=i) for i in range(args.days)]
    started = time.perf_counter()
    runs = 0
    blocked: dict[str, str] = {}
    replayed = all(
        landing_path(where.landing, dataset, d).exists() for d in days for dataset in DAY_DATASETS
    )
    # A reused state whose days were all replayed already ran its loop: its missing days were
    # blocked by the contracts then (ticking again would only start automated trainings).
    if missing_feature_days(days) and not (args.reuse and replayed):
        runs, blocked = run_ingestion(args, instance, home)
    absent = [d.isoformat() for d in missing_feature_days(days)]
    if len(absent) > args.days // 2:
        raise BenchError(f"{len(absent)} of {args.days} feature days missing: {absent[:5]} ...")
    return {
        "mlflow_store_existed": (where.state / "mlflow" / "mlflow.db").exists(),
        "feature_days": len(days) - len(absent),
        "missing_days": absent,
        "blocked_by_contracts": blocked,
        "setup_runs": runs,
        "setup_s": round(time.perf_counter() - started, 1),
        "reused": args.reuse is not None,
    }


# -- the two sides ----------------------------------------------------------------------------


class Training:
    """The pipeline (Dagster + MLflow) and the bare fit, on one instance and training set."""

    def __init__(self, instance: Any) -> None:
        from mlops_assets.definitions import defs
        from mlops_assets.lib import estimator

        self.instance = instance
        self.assets = list(defs.assets or [])
        self.resources = dict(defs.resources or {})
        self.params = estimator.HyperParameters()
        self.data: Any = None

    def materialize(self, selection: list[str], run_config: dict[str, Any]) -> Any:
        """One run of ``selection`` with the project's assets and resources; must succeed."""
        import dagster as dg

        loggers = {"console": {"config": {"log_level": "WARNING"}}}
        result = dg.materialize(
            self.assets,  # type: ignore[arg-type]
            selection=selection,
            instance=self.instance,
            resources=self.resources,
            run_config={**run_config, "loggers": loggers},
            tags={"mlops/trigger": "benchmark"},
            raise_on_error=False,
        )
        if not result.success:
            failures = [e.message for e in result.all_events if e.is_step_failure]
            raise BenchError(f"{selection} run failed: {failures}")
        return result

    def build_training_set(self, window: dict[str, Any]) -> float:
        """Materializes ``training_set`` for ``window`` and reads it; returns the run's time."""
        import pandas as pd

        from mlops_assets import settings
        from mlops_assets.lib import modeling

        start = time.perf_counter()
        self.materialize(["training_set"], {"ops": {"training_set": {"config": window}}})
        took = time.perf_counter() - start
        self.data = pd.read_parquet(settings.locations().lake / "training_set.parquet")
        split = self.data[modeling.SPLIT_COLUMN].value_counts().to_dict()
        print(
            f"training_set {window}: {len(self.data)} rows ({split.get('train', 0)} train, "
            f"{split.get('validation', 0)} validation) materialized in {took:.2f} s",
            flush=True,
        )
        return took

    def pipeline(self, probes: Probes) -> dict[str, Any]:
        """Materializes ``candidate_model``: total, probed stages and the asset's metadata."""
        with probes.recording() as stages:
            start = time.perf_counter()
            result = self.materialize(["candidate_model"], {})
            total = time.perf_counter() - start
        meta = materialization_metadata(result, "candidate_model")
        stages = dict(stages)
        stages["dagster_and_rest"] = total - sum(stages.get(k, 0.0) for k in TOP_STAGES)
        return {"total": total, "stages": stages, "metadata": meta}

    def bare(self) -> dict[str, Any]:
        """``modeling.fit`` on the same frame: total, model and metrics."""
        from mlops_assets.lib import modeling

        start = time.perf_counter()
        model, metrics = modeling.fit(self.data, self.params)
        return {"total": time.perf_counter() - start, "model": model, "metrics": metrics}


def materialization_metadata(result: Any, key: str) -> dict[str, Any]:
    """Metadata values of the materialization of ``key`` in a run result."""
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        if materialization.asset_key.to_user_string() == key:
            return {k: v.value for k, v in materialization.metadata.items()}
    raise BenchError(f"no materialization of {key} in run {result.run_id}")


# -- the measurement --------------------------------------------------------------------------


def warm_up(training: Training, probes: Probes, count: int, store_existed: bool) -> list[dict]:
    """``count`` unmeasured repetitions of both sides (the first pays the imports)."""
    cold: list[dict[str, Any]] = []
    for i in range(count):
        gc.collect()
        first = training.pipeline(probes)
        gc.collect()
        cold.append(
            {
                "pipeline": first["total"],
                "bare_fit": training.bare()["total"],
                "stages": first["stages"],
            }
        )
        note = ""
        if i == 0:
            store = "" if store_existed else ", creation of the MLflow store"
            note = f" (first run in this process: imports{store})"
        print(
            f"warm-up {i + 1}: pipeline {cold[-1]['pipeline']:.2f} s, bare fit "
            f"{cold[-1]['bare_fit']:.2f} s{note}",
            flush=True,
        )
    return cold


def repetition(training: Training, probes: Probes, i: int) -> tuple[dict[str, Any], Any]:
    """Both sides once (the first alternates with ``i``); the record and the bare model."""
    order = alternating(i, "pipeline", "bare")
    record: dict[str, Any] = {"first": order[0]}
    bare: dict[str, Any] = {}
    for side in order:
        gc.collect()
        if side == "pipeline":
            outcome = training.pipeline(probes)
            record["pipeline"] = outcome["total"]
            record["stages"] = outcome["stages"]
            record["model_version"] = outcome["metadata"].get("model_version")
            record["asset_threshold"] = outcome["metadata"].get("threshold")
            record["asset_roc_auc"] = outcome["metadata"].get("roc_auc")
        else:
            bare = training.bare()
            record["bare_fit"] = bare["total"]
    record["same_model"] = record["asset_threshold"] == round(
        bare["model"].threshold, 4
    ) and record["asset_roc_auc"] == round(bare["metrics"]["roc_auc"], 4)
    record["ratio"] = record["pipeline"] / record["bare_fit"]
    record["loadavg_1min"] = round(os.getloadavg()[0], 2)
    print(
        f"rep {i + 1}: pipeline {record['pipeline']:.2f} s, bare fit {record['bare_fit']:.2f} s"
        f", ratio {record['ratio']:.2f} ({order[0]} first, load {record['loadavg_1min']})",
        flush=True,
    )
    return record, bare["model"]


PROFILE_TARGETS = (
    ("whole run (`dagster.materialize`)", "definitions/materialize.py", "materialize"),
    ("`candidate_model` body", "mlops_assets/defs/training.py", "candidate_model"),
    ("run creation (`create_run_for_job`)", "runs/run_domain.py", "create_run_for_job"),
    ("new per-run event-log SQLite file (`_initdb`)", "sqlite_event_log.py", "_initdb"),
    ("event-log writes (`store_event`)", "sqlite_event_log.py", "store_event"),
    ("SQLite commits (Dagster + MLflow)", "~", "<method 'commit' of 'sqlite3.Connection' objects>"),
    ("compute-log capture", "local_compute_log_manager.py", "capture_logs"),
    ("resource initialization", "resources_init.py", "resource_initialization_event_generator"),
    ("IO manager `load_input`", "upath_io_manager.py", "load_input"),
)


def profile_summary(profile: Profile) -> list[tuple[str, int, float]]:
    """Cumulative time and calls of a few functions of interest in a cProfile result."""
    entries = profile.stats().stats  # type: ignore[attr-defined]
    rows = []
    for label, path, name in PROFILE_TARGETS:
        calls, seconds = 0, 0.0
        for (filename, _, function), (_, ncalls, _, cumulative, _) in entries.items():
            if function == name and filename.endswith(path):
                calls += ncalls
                seconds += cumulative
        rows.append((label, calls, seconds))
    return rows


def profile_pipeline(training: Training, out: Path) -> str:
    """One more pipeline repetition under cProfile; returns a short text report."""
    profile = Profile()
    gc.collect()
    profile.call(lambda: training.materialize(["candidate_model"], {}))
    prof_path = out.with_name(out.stem + "_profile.prof")
    txt_path = out.with_name(out.stem + "_profile.txt")
    profile.save(prof_path)
    txt_path.write_text(profile.top(80))
    lines = [
        "cProfile of 1 extra pipeline repetition (cumulative seconds, inflated by the profiler; "
        f"full listing {txt_path}, stats {prof_path}):",
        "",
        "| function (cProfile) | calls | cumulative |",
        "|---|---:|---:|",
    ]
    for label, calls, seconds in profile_summary(profile):
        lines.append(f"| {label} | {calls} | {seconds:.3f} s |")
    return "\n".join(lines)


def measure(
    args: argparse.Namespace, tmp: Path, training: Training, store_existed: bool
) -> dict[str, Any]:
    """Warm-up, the alternating repetitions and the extra analyses, with the probes on."""
    probes = Probes()
    install_probes(probes)
    try:
        cold = warm_up(training, probes, args.warmup, store_existed)
        reps, model = [], None
        for i in range(args.reps):
            record, model = repetition(training, probes, i)
            reps.append(record)
        if not all(r["same_model"] for r in reps):
            raise BenchError(f"the asset and the bare fit disagree: {reps}")
        profile_text = None if args.no_profile else profile_pipeline(training, args.out)
        log_model = None
        if not args.no_log_model:
            log_model = compare_log_model(tmp, training.data, model, probes)
    finally:
        probes.remove()
    return {"warmup": cold, "repetitions": reps, "profile": profile_text, "log_model": log_model}


# -- the result -------------------------------------------------------------------------------


def summarize(training: Training, context: dict[str, Any], measured: dict) -> dict[str, Any]:
    """Medians, the ratio, the stage breakdown and the budget verdict."""
    from mlops_assets.lib import estimator

    reps, data = measured["repetitions"], training.data
    pipeline_median = median_of(reps, "pipeline")
    ratio = pipeline_median / median_of(reps, "bare_fit")
    keys = [key for key, _, _ in STAGES] + ["dagster_and_rest"]
    return {
        "machine": machine_info(__file__, "mlflow", "lightgbm"),
        "cwd": str(Path.cwd()),
        **context,
        "rows": {
            "total": len(data),
            **{str(k): int(v) for k, v in data["split"].value_counts().items()},
        },
        "estimator": estimator.KIND,
        "hyper_parameters": dataclasses.asdict(training.params),
        "warmup": measured["warmup"],
        "repetitions": reps,
        "median_pipeline_s": pipeline_median,
        "median_bare_fit_s": median_of(reps, "bare_fit"),
        "ratio": ratio,
        "per_rep_ratio": [r["ratio"] for r in reps],
        "budget_ratio": BUDGET_RATIO,
        "within_budget": ratio <= BUDGET_RATIO,
        "median_breakdown_s": {k: median_of(reps, "stages", k) for k in keys},
        "log_model_requirements": measured["log_model"],
    }


def report(result: dict[str, Any], days: int) -> None:
    """Prints the ratio and the stage breakdown as Markdown tables."""
    reps, pipeline_median = result["repetitions"], result["median_pipeline_s"]
    verdict = "met" if result["within_budget"] else "MISSED"
    rows = result["rows"]["total"]
    print(f"\ntraining on a {days}-day window ({rows} rows), medians of {len(reps)} repetition(s)")
    print("\n| | median | per repetition |\n|---|---:|---|")
    per = ", ".join(f"{r['pipeline']:.2f}" for r in reps)
    print(f"| pipeline: materialize `candidate_model` | {pipeline_median:.3f} s | {per} |")
    per = ", ".join(f"{r['bare_fit']:.2f}" for r in reps)
    print(f"| bare `modeling.fit` | {result['median_bare_fit_s']:.3f} s | {per} |")
    per = ", ".join(f"{r['ratio']:.2f}" for r in reps)
    print(
        f"| **ratio** (budget <= {BUDGET_RATIO}: {verdict}) | **{result['ratio']:.2f}** | {per} |"
    )
    breakdown = result["median_breakdown_s"]
    print("\n| pipeline stage (median) | seconds | share |\n|---|---:|---:|")
    for key, label, parent in STAGES:
        name = f"&nbsp;&nbsp;- {label}" if parent else label
        print(f"| {name} | {breakdown[key]:.3f} | {breakdown[key] / pipeline_median:.0%} |")
    rest = breakdown["dagster_and_rest"]
    print(
        f"| Dagster run (creation, events, resources, step) + rest | {rest:.3f} | "
        f"{rest / pipeline_median:.0%} |"
    )


def prepare(args: argparse.Namespace, instance: Any, home: Path) -> dict[str, Any]:
    """The feature days of the window, then its training set; the context of the result."""
    from mlops_assets import settings

    setup = build_feature_days(args, instance, home)
    print(
        f"setup: {setup['feature_days']} feature day(s) ready, {setup['setup_runs']} run(s) "
        f"in {setup['setup_s']:.1f} s ({'reused' if setup['reused'] else 'new'} state "
        f"{settings.locations().state}); missing days: "
        f"{', '.join(setup['missing_days']) or 'none'}",
        flush=True,
    )
    as_of = args.start + timedelta(days=args.days - 1)
    window = {"days": args.days, "validation_days": args.validation_days, "as_of": str(as_of)}
    return {"setup": setup, "window": window}


def run(args: argparse.Namespace, tmp: Path, state: Path) -> int:
    """Setup, the measurement, the result file and the report."""
    with home_instance(state) as (instance, home):
        context = prepare(args, instance, home)
        training = Training(instance)
        context["training_set_run_s"] = training.build_training_set(context["window"])
        measured = measure(args, tmp, training, context["setup"]["mlflow_store_existed"])
        result = summarize(training, context, measured)
    write_result(args.out, result)
    report(result, args.days)
    report_log_model(result["log_model_requirements"])
    if measured["profile"]:
        print(f"\n{measured['profile']}")
    print(f"written {args.out}")
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--days", type=int, default=90, help="days in the training window")
    parser.add_argument("--validation-days", type=int, default=14)
    parser.add_argument("--start", type=date.fromisoformat, default=date(2013, 1, 1))
    parser.add_argument("--reps", type=int, default=3, help="measured repetitions")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured repetitions first")
    parser.add_argument(
        "--reuse",
        type=Path,
        default=None,
        metavar="STATE_DIR",
        help="use this existing state folder (feature days already built; missing days are "
        "built) instead of a temporary one; the measurement adds training runs to it",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary state folder")
    parser.add_argument("--no-profile", action="store_true", help="skip the cProfile repetition")
    parser.add_argument(
        "--no-log-model", action="store_true", help="skip the log_model requirements comparison"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "training.json")
    args = parser.parse_args(argv)
    if args.reps < 1 or args.warmup < 0 or not 0 < args.validation_days < args.days:
        parser.error("need --reps >= 1, --warmup >= 0 and 0 < --validation-days < --days")
    if args.reuse is not None and not args.reuse.is_dir():
        parser.error(f"--reuse {args.reuse}: not a folder")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    mark_start()
    os.chdir(ROOT)  # MLflow's uv detection looks at the working directory: be reproducible
    keep = args.keep and not args.reuse
    with scratch_folder(
        "mlops-bench-training-", keep, "state kept in {0}/state (reuse with --reuse {0}/state)"
    ) as tmp:
        state = args.reuse.resolve() if args.reuse else tmp / "state"
        return run_reporting_errors(lambda: run(args, tmp, state))


if __name__ == "__main__":
    sys.exit(main())
