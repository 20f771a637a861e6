"""Training on a 90-day window through Dagster and MLflow, against the bare model fit.

Setup (not timed): a temporary state folder (``MLOPS_STATE_DIR``, set before the code location
is imported) with a Dagster instance in ``DAGSTER_HOME`` under it (the project's
``dagster.yaml``, SQLite storage, as ``mlops-assets demo`` uses); the reference tables and the
window's days replayed and pushed through ingestion and features with
``LocalDaemon(defs, instance, cursor_file).run_until_idle()`` (2-3 minutes for 90 days;
``--reuse STATE_DIR`` starts from an existing state folder instead); then ``training_set``
materialized once for the window, and one unmeasured warm-up of each side (imports, MLflow
store creation, the registered model).

Measured, N repetitions alternating which side goes first:

* pipeline: ``dagster.materialize(..., selection=["candidate_model"])``: the run loads the
  training set from the lake, starts the MLflow run, fits, logs parameters, metrics,
  importances (CSV + plot), logs the pyfunc model with signature, input example and explicit
  ``pip_requirements``, registers it, sets the ``challenger`` alias and ends the run.
* bare fit: ``modeling.fit(data, HyperParameters())`` on the same training-set frame, in the
  same process.

Budget: median pipeline <= 2.0 x median bare fit. Light timers wrapped around the library
calls the asset makes (MLflow, matplotlib, the IO manager) give a per-stage breakdown; one
extra repetition runs under cProfile.

Then, once each, into a scratch MLflow SQLite store: ``mlflow.pyfunc.log_model`` of the same
``DelayModel`` with the explicit requirements and without them (MLflow infers them: with
``uv export`` when the working directory is a uv project, else in a subprocess that loads the
model). The script runs from the project root (as ``uv run`` and the Makefile do), since
MLflow's uv detection looks at the working directory.

A measurement, not a test: the exit code is non-zero only on errors.

Usage::

    uv run python benchmarks/training.py [--days 90] [--validation-days 14] [--reps 3]
        [--reuse STATE_DIR] [--keep] [--no-profile] [--out PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import dataclasses
import functools
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
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

from _machine import machine_info, mark_start

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BUDGET_RATIO = 2.0

# Breakdown of the pipeline: (key, label, parent key or None). Top-level stages add up (with
# "dagster_and_rest") to the pipeline total; sub-stages are parts of their parent.
STAGES = (
    ("load_training_set", "load `training_set` from the lake (IO manager)", None),
    ("run_start", "MLflow run start (`training_run` enter)", None),
    ("git_fingerprint", "git commit + `uv.lock` hash (2 `git` subprocesses)", "run_start"),
    ("close_abandoned", "search runs left RUNNING", "run_start"),
    ("dagster_mlflow", "dagster-mlflow `MlFlow` (find or start the run, tags)", "run_start"),
    ("fit", "`modeling.fit` (the bare fit, inside the asset)", None),
    ("log_small", "`log_params` + `log_metrics` + `log_text` (importances CSV)", None),
    ("plot", "importance plot (matplotlib figure)", None),
    ("log_figure", "`log_figure` (PNG render + artifact)", None),
    ("signature", "`infer_signature`", None),
    ("log_model", "`mlflow.pyfunc.log_model` (explicit requirements)", None),
    ("lm_create", "create the LoggedModel (+ metrics copied to it)", "log_model"),
    ("lm_save", "`save_model` (pickle, MLmodel, env files)", "log_model"),
    ("lm_validate", "validate the serving input (reload + predict)", "log_model"),
    ("lm_artifacts", "copy the model artifacts to the store", "log_model"),
    ("lm_register", "register the model version", "log_model"),
    ("alias_tag", "set `challenger` alias + version tag", None),
    ("run_end", "MLflow run end (`training_run` exit)", None),
)
TOP_STAGES = [key for key, _, parent in STAGES if parent is None]
TRAINING_ASSETS = {"training_set", "candidate_model", "champion_model", "model_card"}


class BenchError(RuntimeError):
    """The benchmark could not measure what it claims to measure."""


class Probes:
    """Timers wrapped around library calls; they only record while ``active``.

    Top-level probes record only their outermost call that is not inside another top-level
    probe (so the top level never counts a second time what a nested call already counts).
    """

    def __init__(self) -> None:
        self.times: dict[str, float] = {}
        self.active = False
        self._top_depth = 0
        self._patches: list[Any] = []

    def _record(self, key: str, seconds: float) -> None:
        self.times[key] = self.times.get(key, 0.0) + seconds

    @contextlib.contextmanager
    def recording(self) -> Iterator[dict[str, float]]:
        """Records into a fresh dict for the duration of the block."""
        self.times = {}
        self.active = True
        try:
            yield self.times
        finally:
            self.active = False

    def wrap(self, owner: Any, attr: str, key: str, *, top: bool) -> None:
        """Replaces ``owner.attr`` by a timed pass-through (until ``remove``)."""
        original = getattr(owner, attr)
        probes = self

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if not probes.active:
                return original(*args, **kwargs)
            counted = not top or probes._top_depth == 0
            if top:
                probes._top_depth += 1
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                if top:
                    probes._top_depth -= 1
                if counted:
                    probes._record(key, time.perf_counter() - start)

        patcher = mock.patch.object(owner, attr, timed)
        patcher.start()
        self._patches.append(patcher)

    def wrap_context(self, owner: Any, attr: str, enter_key: str, exit_key: str) -> None:
        """Times the enter and the exit of a context-manager method separately."""
        original = getattr(owner, attr)
        probes = self

        @contextlib.contextmanager
        def timed(*args: Any, **kwargs: Any) -> Iterator[Any]:
            manager = original(*args, **kwargs)
            start = time.perf_counter()
            value = manager.__enter__()
            if probes.active:
                probes._record(enter_key, time.perf_counter() - start)
            try:
                yield value
            except BaseException:
                start = time.perf_counter()
                suppress = manager.__exit__(*sys.exc_info())
                if probes.active:
                    probes._record(exit_key, time.perf_counter() - start)
                if not suppress:
                    raise
            else:
                start = time.perf_counter()
                manager.__exit__(None, None, None)
                if probes.active:
                    probes._record(exit_key, time.perf_counter() - start)

        patcher = mock.patch.object(owner, attr, timed)
        patcher.start()
        self._patches.append(patcher)

    def remove(self) -> None:
        """Restores every wrapped attribute."""
        for patcher in reversed(self._patches):
            patcher.stop()
        self._patches.clear()


def install_probes(probes: Probes) -> None:
    """Wraps the calls ``candidate_model`` makes (looked up at call time, so patchable)."""
    import dagster_mlflow.resources
    import mlflow
    import mlflow.models
    import mlflow.models.model
    import mlflow.models.utils
    import mlflow.pyfunc
    import mlflow.tracking._model_registry.fluent as registry_fluent

    from mlops_assets.defs import training
    from mlops_assets.lib import modeling
    from mlops_assets.resources import tracking
    from mlops_assets.resources.parquet_io import ParquetLakeIOManager

    probes.wrap(ParquetLakeIOManager, "load_from_path", "load_training_set", top=True)
    probes.wrap_context(tracking.MlflowTracking, "training_run", "run_start", "run_end")
    probes.wrap(tracking, "project_fingerprint", "git_fingerprint", top=False)
    probes.wrap(tracking.MlflowTracking, "close_abandoned_runs", "close_abandoned", top=False)
    probes.wrap(dagster_mlflow.resources.MlFlow, "__init__", "dagster_mlflow", top=False)
    probes.wrap(modeling, "fit", "fit", top=True)
    for name in ("log_params", "log_metrics", "log_text"):
        probes.wrap(mlflow, name, "log_small", top=True)
    probes.wrap(training, "_importance_plot", "plot", top=True)
    probes.wrap(mlflow, "log_figure", "log_figure", top=True)
    probes.wrap(mlflow.models, "infer_signature", "signature", top=True)
    probes.wrap(mlflow.pyfunc, "log_model", "log_model", top=True)
    probes.wrap(mlflow.models.model, "_create_logged_model", "lm_create", top=False)
    probes.wrap(mlflow.pyfunc, "save_model", "lm_save", top=False)
    probes.wrap(mlflow.models.utils, "_validate_serving_input", "lm_validate", top=False)
    probes.wrap(mlflow.MlflowClient, "log_model_artifacts", "lm_artifacts", top=False)
    probes.wrap(registry_fluent, "_register_model", "lm_register", top=False)
    probes.wrap(mlflow.models, "infer_pip_requirements", "infer_requirements", top=False)
    probes.wrap(mlflow.MlflowClient, "set_registered_model_alias", "alias_tag", top=True)
    probes.wrap(mlflow.MlflowClient, "set_model_version_tag", "alias_tag", top=True)


def setup_environment(state: Path) -> None:
    """Must run before ``mlops_assets.definitions`` is imported (resources read it)."""
    os.environ["MLOPS_STATE_DIR"] = str(state)
    os.environ["DAGSTER_DISABLE_TELEMETRY"] = "true"
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    os.environ.pop("MLOPS_ENV", None)
    warnings.filterwarnings("ignore", message=".*is currently in (beta|preview).*")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
    parser.add_argument("--out", type=Path, default=None, help="JSON result file")
    args = parser.parse_args(argv)
    if args.reps < 1 or args.warmup < 0 or not 0 < args.validation_days < args.days:
        parser.error("need --reps >= 1, --warmup >= 0 and 0 < --validation-days < --days")
    if args.reuse is not None and not args.reuse.is_dir():
        parser.error(f"--reuse {args.reuse}: not a folder")
    out = args.out or RESULTS / "training.json"

    mark_start()
    os.chdir(ROOT)  # MLflow's uv detection looks at the working directory: be reproducible
    tmp = Path(tempfile.mkdtemp(prefix="mlops-bench-training-"))
    state = args.reuse.resolve() if args.reuse else tmp / "state"
    try:
        return run(args, tmp, state, out)
    except BenchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        if args.keep and not args.reuse:
            print(f"state kept in {state} (reuse with --reuse {state})")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def run(args: argparse.Namespace, tmp: Path, state: Path, out: Path) -> int:
    setup_environment(state)

    import dagster as dg

    from mlops_assets import settings
    from mlops_assets.cli import prepare_dagster_home

    where = settings.locations()
    if where.state != state.resolve():
        raise BenchError(f"MLOPS_STATE_DIR not honoured: {where.state}")
    home = prepare_dagster_home()  # DAGSTER_HOME with the project's dagster.yaml
    instance = dg.DagsterInstance.get()
    try:
        return measure(args, tmp, out, instance, home)
    finally:
        instance.dispose()


def build_feature_days(args: argparse.Namespace, instance: Any, home: Path) -> dict[str, Any]:
    """Replays the window and runs ingestion + features until every feature day exists."""
    from mlops_assets import settings
    from mlops_assets.definitions import defs
    from mlops_assets.lib.landing import DAY_DATASETS, landing_path
    from mlops_assets.lib.replay import replay
    from mlops_assets.local_daemon import LocalDaemon

    where = settings.locations()
    days = [args.start + timedelta(days=i) for i in range(args.days)]

    def missing() -> list[date]:
        return [d for d in days if not (where.lake / "flight_features" / f"{d}.parquet").exists()]

    started = time.perf_counter()
    runs = 0
    blocked: dict[str, str] = {}
    replayed = all(
        landing_path(where.landing, dataset, d).exists() for d in days for dataset in DAY_DATASETS
    )
    # A reused state whose days were all replayed already ran its loop: its missing days were
    # blocked by the contracts then (ticking again would only start automated trainings).
    if missing() and not (args.reuse and replayed):
        replay(where.landing, args.start, args.days, include_reference=True, skip_existing=True)
        loop = LocalDaemon(defs, instance, home / "local_loop_cursors.json")
        for _ in range(5):
            outcomes = loop.run_until_idle(max_ticks=200)
            runs += len(outcomes)
            for outcome in outcomes:
                if outcome.success or set(outcome.assets) & TRAINING_ASSETS:
                    continue
                # A day rejected by a data contract is expected (2013-02-12, see docs/data.md).
                if "contract" not in (outcome.error or ""):
                    raise BenchError(f"ingestion/features run failed: {outcome}")
                blocked[str(outcome.partition)] = str(outcome.error)
            if not missing() or not outcomes:
                break
    absent = [d.isoformat() for d in missing()]
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


def measure(args: argparse.Namespace, tmp: Path, out: Path, instance: Any, home: Path) -> int:
    """Setup, warm-up, the alternating measurement, the extra analyses, the report."""
    import dagster as dg
    import pandas as pd

    from mlops_assets import settings
    from mlops_assets.definitions import defs
    from mlops_assets.lib import modeling

    where = settings.locations()
    setup = build_feature_days(args, instance, home)
    print(
        f"setup: {setup['feature_days']} feature day(s) ready, {setup['setup_runs']} run(s) "
        f"in {setup['setup_s']:.1f} s ({'reused' if setup['reused'] else 'new'} state "
        f"{where.state}); missing days: {', '.join(setup['missing_days']) or 'none'}",
        flush=True,
    )

    as_of = args.start + timedelta(days=args.days - 1)
    assets = list(defs.assets or [])
    resources = dict(defs.resources or {})
    loggers = {"console": {"config": {"log_level": "WARNING"}}}

    def materialize(selection: list[str], run_config: dict[str, Any]) -> Any:
        result = dg.materialize(
            assets,  # type: ignore[arg-type]
            selection=selection,
            instance=instance,
            resources=resources,
            run_config={**run_config, "loggers": loggers},
            tags={"mlops/trigger": "benchmark"},
            raise_on_error=False,
        )
        if not result.success:
            failures = [e.message for e in result.all_events if e.is_step_failure]
            raise BenchError(f"{selection} run failed: {failures}")
        return result

    window = {"days": args.days, "validation_days": args.validation_days, "as_of": str(as_of)}
    start = time.perf_counter()
    materialize(["training_set"], {"ops": {"training_set": {"config": window}}})
    training_set_s = time.perf_counter() - start
    data = pd.read_parquet(where.lake / "training_set.parquet")
    split = data[modeling.SPLIT_COLUMN].value_counts().to_dict()
    print(
        f"training_set {window}: {len(data)} rows ({split.get('train', 0)} train, "
        f"{split.get('validation', 0)} validation) materialized in {training_set_s:.2f} s",
        flush=True,
    )

    probes = Probes()
    install_probes(probes)
    try:
        return measure_with_probes(
            args, tmp, out, materialize, data, probes, setup, window, training_set_s
        )
    finally:
        probes.remove()


def measure_with_probes(
    args: argparse.Namespace,
    tmp: Path,
    out: Path,
    materialize: Callable[[list[str], dict[str, Any]], Any],
    data: Any,
    probes: Probes,
    setup: dict[str, Any],
    window: dict[str, Any],
    training_set_s: float,
) -> int:
    from mlops_assets.lib import estimator, modeling

    params = estimator.HyperParameters()

    def pipeline() -> dict[str, Any]:
        with probes.recording() as stages:
            start = time.perf_counter()
            result = materialize(["candidate_model"], {})
            total = time.perf_counter() - start
        meta = materialization_metadata(result, "candidate_model")
        stages = dict(stages)
        stages["dagster_and_rest"] = total - sum(stages.get(k, 0.0) for k in TOP_STAGES)
        return {"total": total, "stages": stages, "metadata": meta}

    def bare() -> dict[str, Any]:
        start = time.perf_counter()
        model, metrics = modeling.fit(data, params)
        return {"total": time.perf_counter() - start, "model": model, "metrics": metrics}

    # -- warm-up (not part of the medians) -----------------------------------------------------
    cold: list[dict[str, Any]] = []
    for i in range(args.warmup):
        gc.collect()
        first = pipeline()
        gc.collect()
        cold.append(
            {"pipeline": first["total"], "bare_fit": bare()["total"], "stages": first["stages"]}
        )
        note = ""
        if i == 0:
            store = "" if setup["mlflow_store_existed"] else ", creation of the MLflow store"
            note = f" (first run in this process: imports{store})"
        print(
            f"warm-up {i + 1}: pipeline {cold[-1]['pipeline']:.2f} s, bare fit "
            f"{cold[-1]['bare_fit']:.2f} s{note}",
            flush=True,
        )

    # -- measurement ---------------------------------------------------------------------------
    reps: list[dict[str, Any]] = []
    last_bare: dict[str, Any] = {}
    for i in range(args.reps):
        order = ("pipeline", "bare") if i % 2 == 0 else ("bare", "pipeline")
        record: dict[str, Any] = {"first": order[0]}
        for side in order:
            gc.collect()
            if side == "pipeline":
                outcome = pipeline()
                record["pipeline"] = outcome["total"]
                record["stages"] = outcome["stages"]
                record["model_version"] = outcome["metadata"].get("model_version")
                record["asset_threshold"] = outcome["metadata"].get("threshold")
                record["asset_roc_auc"] = outcome["metadata"].get("roc_auc")
            else:
                last_bare = bare()
                record["bare_fit"] = last_bare["total"]
        record["same_model"] = record["asset_threshold"] == round(
            last_bare["model"].threshold, 4
        ) and record["asset_roc_auc"] == round(last_bare["metrics"]["roc_auc"], 4)
        record["ratio"] = record["pipeline"] / record["bare_fit"]
        record["loadavg_1min"] = round(os.getloadavg()[0], 2)
        reps.append(record)
        print(
            f"rep {i + 1}: pipeline {record['pipeline']:.2f} s, bare fit {record['bare_fit']:.2f} s"
            f", ratio {record['ratio']:.2f} ({order[0]} first, load {record['loadavg_1min']})",
            flush=True,
        )
    if not all(r["same_model"] for r in reps):
        raise BenchError(f"the asset and the bare fit disagree: {reps}")

    profile_text = None
    if not args.no_profile:
        profile_text = profile_pipeline(materialize, out)

    log_model = None
    if not args.no_log_model:
        log_model = compare_log_model(tmp, data, last_bare["model"], probes)

    # -- report --------------------------------------------------------------------------------
    pipeline_median = statistics.median(r["pipeline"] for r in reps)
    bare_median = statistics.median(r["bare_fit"] for r in reps)
    ratio = pipeline_median / bare_median
    keys = [key for key, _, _ in STAGES] + ["dagster_and_rest"]
    breakdown = {k: statistics.median(r["stages"].get(k, 0.0) for r in reps) for k in keys}
    result = {
        "machine": machine_info(__file__, "mlflow", "lightgbm"),
        "cwd": str(Path.cwd()),
        "setup": setup,
        "window": window,
        "rows": {
            "total": len(data),
            **{str(k): int(v) for k, v in data["split"].value_counts().items()},
        },
        "training_set_run_s": training_set_s,
        "estimator": estimator.KIND,
        "hyper_parameters": dataclasses.asdict(params),
        "warmup": cold,
        "repetitions": reps,
        "median_pipeline_s": pipeline_median,
        "median_bare_fit_s": bare_median,
        "ratio": ratio,
        "per_rep_ratio": [r["ratio"] for r in reps],
        "budget_ratio": BUDGET_RATIO,
        "within_budget": ratio <= BUDGET_RATIO,
        "median_breakdown_s": breakdown,
        "log_model_requirements": log_model,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")

    verdict = "met" if ratio <= BUDGET_RATIO else "MISSED"
    print(
        f"\ntraining on a {args.days}-day window ({len(data)} rows), medians of {len(reps)} "
        f"repetition(s)\n"
    )
    print("| | median | per repetition |")
    print("|---|---:|---|")
    per = ", ".join(f"{r['pipeline']:.2f}" for r in reps)
    print(f"| pipeline: materialize `candidate_model` | {pipeline_median:.3f} s | {per} |")
    per = ", ".join(f"{r['bare_fit']:.2f}" for r in reps)
    print(f"| bare `modeling.fit` | {bare_median:.3f} s | {per} |")
    per = ", ".join(f"{r['ratio']:.2f}" for r in reps)
    print(f"| **ratio** (budget <= {BUDGET_RATIO}: {verdict}) | **{ratio:.2f}** | {per} |")
    print("\n| pipeline stage (median) | seconds | share |")
    print("|---|---:|---:|")
    for key, label, parent in STAGES:
        name = f"&nbsp;&nbsp;- {label}" if parent else label
        print(f"| {name} | {breakdown[key]:.3f} | {breakdown[key] / pipeline_median:.0%} |")
    rest = breakdown["dagster_and_rest"]
    print(
        f"| Dagster run (creation, events, resources, step) + rest | {rest:.3f} | "
        f"{rest / pipeline_median:.0%} |"
    )
    if log_model:
        print(
            "\n| `mlflow.pyfunc.log_model` (no registration), once each | seconds | "
            "requirements | inference | `uv.lock` in artifacts | artifacts |"
        )
        print("|---|---:|---:|---:|---|---:|")
        for variant in log_model["variants"]:
            print(
                f"| {variant['label']} | {variant['seconds']:.2f} | {variant['requirements']} | "
                f"{variant['infer_requirements_s']:.2f} | "
                f"{'yes' if variant['uv_lock_copied'] else 'no'} | "
                f"{variant['artifact_bytes'] / 1024:.0f} KiB |"
            )
    if profile_text:
        print(f"\n{profile_text}")
    print(f"written {out}")
    return 0


def materialization_metadata(result: Any, key: str) -> dict[str, Any]:
    """Metadata values of the materialization of ``key`` in a run result."""
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        if materialization.asset_key.to_user_string() == key:
            return {k: v.value for k, v in materialization.metadata.items()}
    raise BenchError(f"no materialization of {key} in run {result.run_id}")


def profile_pipeline(materialize: Callable[..., Any], out: Path) -> str:
    """One more pipeline repetition under cProfile; returns a short text report."""
    profiler = cProfile.Profile()
    gc.collect()
    profiler.enable()
    materialize(["candidate_model"], {})
    profiler.disable()
    prof_path = out.with_name(out.stem + "_profile.prof")
    txt_path = out.with_name(out.stem + "_profile.txt")
    prof_path.parent.mkdir(parents=True, exist_ok=True)
    profiler.dump_stats(str(prof_path))
    buffer = io.StringIO()
    stats = pstats.Stats(profiler, stream=buffer)
    stats.sort_stats("cumulative").print_stats(80)
    txt_path.write_text(buffer.getvalue())
    lines = [
        "cProfile of 1 extra pipeline repetition (cumulative seconds, inflated by the profiler; "
        f"full listing {txt_path}, stats {prof_path}):",
        "",
        "| function (cProfile) | calls | cumulative |",
        "|---|---:|---:|",
    ]
    for label, calls, seconds in profile_summary(pstats.Stats(profiler)):
        lines.append(f"| {label} | {calls} | {seconds:.3f} s |")
    return "\n".join(lines)


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


def profile_summary(stats: pstats.Stats) -> list[tuple[str, int, float]]:
    """Cumulative time and calls of a few functions of interest in a cProfile result."""
    entries = stats.stats  # type: ignore[attr-defined]
    rows = []
    for label, path, name in PROFILE_TARGETS:
        calls, seconds = 0, 0.0
        for (filename, _, function), (_, ncalls, _, cumulative, _) in entries.items():
            if function == name and filename.endswith(path):
                calls += ncalls
                seconds += cumulative
        rows.append((label, calls, seconds))
    return rows


def compare_log_model(tmp: Path, data: Any, classifier: Any, probes: Probes) -> dict[str, Any]:
    """``log_model`` of the same model with and without explicit requirements, once each."""
    import mlflow
    import mlflow.artifacts
    from mlflow.models import infer_signature

    from mlops_assets.lib import modeling
    from mlops_assets.lib.pyfunc import DelayModel, pip_requirements

    store = tmp / "scratch-mlflow"
    store.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{store / 'mlflow.db'}"
    previous = (mlflow.get_tracking_uri(), mlflow.get_registry_uri())
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("log-model", artifact_location=store.as_uri() + "/art")

    example = (
        data[classifier.features]
        .head(5)
        .astype(
            {c: "float64" for c in classifier.features if c not in modeling.CATEGORICAL_FEATURES}
        )
    )
    signature = infer_signature(example, classifier.predict_proba(example))
    variants = [
        ("warm-up (explicit, not reported)", {"pip_requirements": pip_requirements()}, {}),
        ("explicit `pip_requirements` (the project)", {"pip_requirements": pip_requirements()}, {}),
        (
            "explicit, `MLFLOW_LOG_UV_FILES=false`",
            {"pip_requirements": pip_requirements()},
            {"MLFLOW_LOG_UV_FILES": "false"},
        ),
        ("inferred, MLflow default (cwd = uv project: `uv export`)", {}, {}),
        (
            "inferred, `MLFLOW_UV_AUTO_DETECT=false` (subprocess loads the model)",
            {},
            {"MLFLOW_UV_AUTO_DETECT": "false"},
        ),
    ]
    results = []
    try:
        for label, kwargs, env in variants:
            gc.collect()
            with (
                patched_env(env),
                mlflow.start_run(experiment_id=experiment) as run,
                probes.recording() as inner,
            ):
                start = time.perf_counter()
                info = mlflow.pyfunc.log_model(
                    name="model",
                    python_model=DelayModel(classifier),
                    signature=signature,
                    input_example=example,
                    **kwargs,
                )
                seconds = time.perf_counter() - start
            folder = Path(
                mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(tmp / "dl"))
            )
            requirements = [
                line
                for line in (folder / "requirements.txt").read_text().splitlines()
                if line.strip() and not line.startswith("#")
            ]
            size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
            results.append(
                {
                    "label": label,
                    "seconds": seconds,
                    "infer_requirements_s": inner.get("infer_requirements", 0.0),
                    "requirements": len(requirements),
                    "requirements_head": requirements[:12],
                    "uv_lock_copied": (folder / "uv.lock").exists(),
                    "artifact_bytes": size,
                    "run_id": run.info.run_id,
                }
            )
            shutil.rmtree(folder, ignore_errors=True)
            print(
                f"log_model {label}: {seconds:.2f} s, {len(requirements)} requirement(s)",
                flush=True,
            )
    finally:
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])
    return {"store": uri, "variants": results[1:], "warmup": results[0]}


@contextlib.contextmanager
def patched_env(values: dict[str, str]) -> Iterator[None]:
    """Sets environment variables for the block, then restores them."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


if __name__ == "__main__":
    sys.exit(main())
