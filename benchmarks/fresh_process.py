"""A training run and a day's monitoring run in a fresh process, against the same run warm.

Fresh: ``dagster job execute`` (training) and ``dagster asset materialize`` (monitoring) as
subprocesses on the state's Dagster instance: a new interpreter that imports Dagster, loads the
code location and executes the run in process, as the process a code server spawns for each
run the daemon launches. Warm: a child process that materializes the same selection twice on
the same instance; the second run is the warm time. The two kinds of process alternate, after
a setup (features of a 28-day window and the days after it, a first training that makes the
champion). Budget: median fresh wall <= 2.0 x median warm run. One more fresh run of each under
``python -X importtime`` attributes the imports. The method in full and the latest result:
docs/benchmarks.md, section 9. A measurement, not a test: the exit code is non-zero only on
errors (a failed run, a missing output).

Usage::

    uv run python -m benchmarks.fresh_process [--reps 3] [--start 2013-01-01] [--days 28]
        [--validation-days 7] [--no-importtime] [--out PATH] [--keep] [--reuse STATE_DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from benchmarks.common import (
    RESULTS,
    ROOT,
    BenchError,
    child_environment,
    home_instance,
    machine_info,
    mark_start,
    median_of,
    run_reporting_errors,
    scratch_folder,
    write_result,
)

BUDGET_RATIO = 2.0
MONITORING_ASSETS = ("batch_predictions", "drift_report", "model_performance")
# The libraries a run's steps import; numpy and dvc as context.
HEAVY = (
    "numpy",
    "pandas",
    "pyarrow",
    "scipy",
    "sklearn",
    "pandera",
    "lightgbm",
    "mlflow",
    "evidently",
    "dvc",
    "bentoml",
)
MONITORING_DAYS = 1
# What each run's steps import, in the order the run first needs them (scipy comes with
# sklearn, sklearn with lightgbm); the preloaded child times each one's increment. MLflow's
# SQLAlchemy store is the local flavour's (SQLite); against a tracking server it is not loaded.
MODEL_IMPORTS = [
    "pandas",
    "pyarrow.parquet",
    "sklearn",
    "lightgbm",
    "mlflow",
    "mlflow.store.tracking.sqlalchemy_store",
]
TRAINING_IMPORTS = [*MODEL_IMPORTS, "dvc.repo", "matplotlib.figure"]
MONITORING_IMPORTS = [*MODEL_IMPORTS, "evidently"]

# The child processes. Both time their phases inside (perf_counter) and print one JSON line.
_PRELUDE = """
import json, os, sys, time, warnings
warnings.simplefilter("ignore")
spec = json.loads(sys.argv[1])
t0 = time.perf_counter()
import dagster as dg
t1 = time.perf_counter()
from mlops_assets.definitions import defs
t2 = time.perf_counter()
instance = dg.DagsterInstance.get()
t3 = time.perf_counter()
phases = {"import_dagster": t1 - t0, "load_location": t2 - t1, "open_instance": t3 - t2}
keys = [dg.AssetKey.from_user_string(k) for k in spec["assets"]]
if spec["job"]:
    job = defs.resolve_job_def(spec["job"])
else:
    job = defs.resolve_implicit_job_def_def_for_assets(keys)
def once(instance):
    start = time.perf_counter()
    result = job.execute_in_process(
        asset_selection=keys, instance=instance, run_config=spec["run_config"],
        partition_key=spec["partition"], raise_on_error=False,
    )
    if not result.success:
        sys.exit(f"run {result.run_id} failed")
    return time.perf_counter() - start, result.run_id
"""

# Warm: the same run twice in one process; the second is the warm time.
_WARM = (
    _PRELUDE
    + """
first, first_id = once(instance)
heavy = [m for m in HEAVY if m in sys.modules]
warm, warm_id = once(instance)
print(json.dumps({
    "phases": phases, "first_run_s": first, "warm_run_s": warm, "heavy": heavy,
    "run_ids": [first_id, warm_id],
}))
""".replace("HEAVY", repr(HEAVY))
)

# Preloaded: the step's libraries imported one by one (each one's own increment), then the run
# in a forked child, as a launcher that forks runs from a process holding the imports would.
_PRELOADED = (
    _PRELUDE
    + """
import importlib
imports = {}
for name in spec["imports"]:
    start = time.perf_counter()
    importlib.import_module(name)
    imports[name] = time.perf_counter() - start
instance.dispose()
read, write = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(read)
    forked = dg.DagsterInstance.get()
    took, run_id = once(forked)
    forked.dispose()
    os.write(write, json.dumps([took, run_id]).encode())
    os._exit(0)
os.close(write)
with os.fdopen(read) as pipe:
    answer = pipe.read()
_, status = os.waitpid(pid, 0)
if status != 0 or not answer:
    sys.exit(f"the forked run failed (status {status})")
took, run_id = json.loads(answer)
print(json.dumps({"phases": phases, "imports": imports, "forked_run_s": took, "run_id": run_id}))
"""
)


# -- setup ------------------------------------------------------------------------------------


def prepare(args: argparse.Namespace, instance: Any, home: Path) -> dict[str, Any]:
    """Features of the window and the day after it, then the training that makes the champion."""
    from benchmarks.training import build_feature_days
    from mlops_assets.definitions import defs
    from mlops_assets.defs import jobs

    days = args.days + MONITORING_DAYS
    setup = build_feature_days(
        argparse.Namespace(start=args.start, days=days, reuse=None), instance, home
    )
    if setup["missing_days"]:
        raise BenchError(f"feature days missing: {setup['missing_days']}")
    start = time.perf_counter()
    result = defs.resolve_job_def(jobs.TRAINING_JOB).execute_in_process(
        asset_selection=jobs.TRAINING_ASSETS,
        instance=instance,
        run_config=training_config(args),
        tags={jobs.TRIGGER_TAG: jobs.BOOTSTRAP_TRIGGER},
        raise_on_error=False,
    )
    if not result.success:
        raise BenchError(f"the first training failed (run {result.run_id})")
    setup["first_training_s"] = round(time.perf_counter() - start, 1)
    print(
        f"setup: {setup['feature_days']} feature days in {setup['setup_s']:.0f} s, first "
        f"training (the champion) in {setup['first_training_s']:.1f} s",
        flush=True,
    )
    return setup


def training_config(args: argparse.Namespace) -> dict[str, Any]:
    """The run config the retrain sensor gives a training run on the window."""
    as_of = args.start + timedelta(days=args.days - 1)
    window = {"as_of": as_of.isoformat(), "days": args.days}
    return {
        "ops": {"training_set": {"config": {**window, "validation_days": args.validation_days}}}
    }


def run_specs(args: argparse.Namespace, tmp: Path) -> dict[str, dict[str, Any]]:
    """Per kind: the job (or None: the assets' implicit job), assets, config, partition, CLI."""
    from mlops_assets.defs import jobs

    config = training_config(args)
    config_file = tmp / "training_run_config.json"
    config_file.write_text(json.dumps(config))
    day = (args.start + timedelta(days=args.days)).isoformat()
    location = ["-m", "mlops_assets.definitions"]
    return {
        "training": {
            "job": jobs.TRAINING_JOB,
            "assets": [k.to_user_string() for k in jobs.TRAINING_ASSETS],
            "run_config": config,
            "partition": None,
            "imports": TRAINING_IMPORTS,
            "cli": ["job", "execute", *location, "-j", jobs.TRAINING_JOB, "-c", str(config_file)],
        },
        "monitoring": {
            "job": None,
            "assets": list(MONITORING_ASSETS),
            "run_config": {},
            "partition": day,
            "imports": MONITORING_IMPORTS,
            "cli": [
                "asset",
                "materialize",
                *location,
                "--select",
                ",".join(MONITORING_ASSETS),
                "--partition",
                day,
            ],
        },
    }


# -- the two sides ----------------------------------------------------------------------------


def run_child(argv: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess]:
    """Runs ``argv`` from the project root; its wall time and the completed process."""
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise BenchError(
            f"{' '.join(argv[:6])} ... failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
        )
    return wall, proc


def fresh(spec: dict[str, Any], env: dict[str, str], instance: Any) -> dict[str, Any]:
    """One run launched as a new process (the Dagster CLI); checks that it succeeded."""
    wall, _ = run_child([sys.executable, "-m", "dagster", *spec["cli"]], env)
    run = instance.get_runs(limit=1)[0]
    if run.status.value != "SUCCESS":
        raise BenchError(f"fresh run {run.run_id} ended {run.status.value}")
    return {"wall_s": wall, "run_id": run.run_id, "shape": run_shape(instance, run.run_id)}


def warm(spec: dict[str, Any], env: dict[str, str], instance: Any) -> dict[str, Any]:
    """One child that runs the selection twice: its phases, and the warm (second) run."""
    record = child_json(_WARM, spec, env)
    record["shape"] = run_shape(instance, record["run_ids"][1])
    return record


def preloaded(spec: dict[str, Any], env: dict[str, str], instance: Any) -> dict[str, Any]:
    """One child that times the step's imports, then the run in a forked child."""
    record = child_json(_PRELOADED, spec, env)
    record["shape"] = run_shape(instance, record["run_id"])
    return record


def child_json(code: str, spec: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    """Runs ``code`` in a new interpreter with ``spec``; its JSON line plus its wall time."""
    wall, proc = run_child([sys.executable, "-c", code, json.dumps(spec)], env)
    record: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    record["wall_s"] = wall
    return record


def run_shape(instance: Any, run_id: str) -> dict[str, int]:
    """Steps and materializations of a run: both sides must do the same work."""
    stats = instance.get_run_stats(run_id)
    return {"steps": stats.steps_succeeded, "materializations": stats.materializations}


def interpreter_start(env: dict[str, str], count: int = 3) -> float:
    """Median wall time of ``python -c pass``: the interpreter's own start-up."""
    return sorted(run_child([sys.executable, "-c", "pass"], env)[0] for _ in range(count))[
        count // 2
    ]


_IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def import_times(kind: str, spec: dict[str, Any], env: dict[str, str], out: Path) -> list:
    """One more fresh run under ``-X importtime``: the process's top-level imports.

    Returns the 12 largest (module, cumulative seconds), each including what it was the first
    to import (pandas under whichever library loaded it first); the full listing is saved.
    The profiler inflates every figure: they attribute, the perf_counter phases measure.
    """
    argv = [sys.executable, "-X", "importtime", "-m", "dagster", *spec["cli"]]
    _, proc = run_child(argv, env)
    listing = out.with_name(f"{out.stem}_importtime_{kind}.txt")
    listing.parent.mkdir(parents=True, exist_ok=True)
    listing.write_text(proc.stderr)
    top = []
    for line in proc.stderr.splitlines():
        match = _IMPORT_LINE.match(line)
        if match and len(match.group(3)) == 1:
            top.append((match.group(4), int(match.group(2)) / 1e6))
    return sorted(top, key=lambda item: -item[1])[:12]


# -- the measurement --------------------------------------------------------------------------

SIDES = {"fresh": fresh, "warm": warm, "preloaded": preloaded}


def measure(
    args: argparse.Namespace, specs: dict[str, dict[str, Any]], env: dict[str, str], instance: Any
) -> dict[str, Any]:
    """Repetitions of the three sides for both kinds (rotating their order), then importtime."""
    records: dict[str, dict[str, list[dict[str, Any]]]] = {
        kind: {side: [] for side in SIDES} for kind in specs
    }
    order = list(SIDES)
    for i in range(args.reps):
        for kind, spec in specs.items():
            for side in order[i % 3 :] + order[: i % 3]:
                record = SIDES[side](spec, env, instance)
                record["loadavg_1min"] = round(os.getloadavg()[0], 2)
                records[kind][side].append(record)
            f, w, p = (records[kind][side][-1] for side in SIDES)
            print(
                f"rep {i + 1} {kind}: fresh {f['wall_s']:.2f} s; warm child: first run "
                f"{w['first_run_s']:.2f} s, second {w['warm_run_s']:.2f} s; preloaded: imports "
                f"{sum(p['imports'].values()):.2f} s, forked run {p['forked_run_s']:.2f} s "
                f"(load {p['loadavg_1min']})",
                flush=True,
            )
    imports = {}
    if not args.no_importtime:
        imports = {kind: import_times(kind, spec, env, args.out) for kind, spec in specs.items()}
    return {"records": records, "importtime": imports, "interpreter_s": interpreter_start(env)}


def summarize_kind(sides: dict[str, list[dict[str, Any]]], interpreter: float) -> dict[str, Any]:
    """One kind: medians, the ratio, the fresh process's phases and the import floor."""
    fresh_wall = median_of(sides["fresh"], "wall_s")
    warm_run = median_of(sides["warm"], "warm_run_s")
    shapes = {json.dumps(r["shape"]) for side in sides.values() for r in side}
    if len(shapes) != 1:
        raise BenchError(f"the sides did different work: {shapes}")
    both = sides["warm"] + sides["preloaded"]
    phases = {"interpreter": interpreter}
    phases.update({p: median_of(both, "phases", p) for p in PRELUDE_PHASES})
    imports = {
        m: median_of(sides["preloaded"], "imports", m) for m in sides["preloaded"][0]["imports"]
    }
    forked = median_of(sides["preloaded"], "forked_run_s")
    floor = sum(phases.values()) + sum(imports.values())
    return {
        "median_fresh_s": fresh_wall,
        "median_warm_s": warm_run,
        "ratio": fresh_wall / warm_run,
        "within_budget": fresh_wall / warm_run <= BUDGET_RATIO,
        "median_first_run_s": median_of(sides["warm"], "first_run_s"),
        "phases_s": phases,
        "imports_s": imports,
        "import_floor_s": floor,
        "ratio_at_the_floor": (floor + warm_run) / warm_run,
        "median_forked_run_s": forked,
        "ratio_forked": forked / warm_run,
        "heavy_modules": sides["warm"][0]["heavy"],
        "shape": json.loads(shapes.pop()),
        "per_rep": sides,
    }


PRELUDE_PHASES = ("import_dagster", "load_location", "open_instance")


def summarize(args: argparse.Namespace, measured: dict[str, Any]) -> dict[str, Any]:
    """Per kind: the summary and the budget verdict, with the machine and the window."""
    kinds = {
        kind: summarize_kind(sides, measured["interpreter_s"])
        for kind, sides in measured["records"].items()
    }
    for kind, top in measured["importtime"].items():
        kinds[kind]["importtime_top_s"] = top
    return {
        "machine": machine_info(__file__, "mlflow", "lightgbm", "evidently"),
        "window": {"start": str(args.start), "days": args.days, "validation": args.validation_days},
        "reps": args.reps,
        "budget_ratio": BUDGET_RATIO,
        "kinds": kinds,
    }


PHASE_LABELS = {
    "interpreter": "interpreter start-up (`python -c pass`)",
    "import_dagster": "`import dagster`",
    "load_location": "loading the code location (`mlops_assets.definitions`)",
    "open_instance": "opening the instance (`DagsterInstance.get()`, its SQL storage imports)",
}


def report(result: dict[str, Any]) -> None:
    """Prints the ratios and the breakdowns as Markdown tables."""
    print(f"\nfresh process against warm in process, medians of {result['reps']} repetition(s)\n")
    print(
        "| run | fresh process | warm in process | **ratio** | at the import floor | forked "
        "from a preloaded process |\n|---|---:|---:|---:|---:|---:|"
    )
    for kind, k in result["kinds"].items():
        verdict = "met" if k["within_budget"] else "missed"
        print(
            f"| {kind} | {k['median_fresh_s']:.2f} s | {k['median_warm_s']:.2f} s | "
            f"**{k['ratio']:.2f}** ({verdict}) | {k['ratio_at_the_floor']:.2f} | "
            f"{k['median_forked_run_s']:.2f} s ({k['ratio_forked']:.2f}) |"
        )
    for kind, k in result["kinds"].items():
        print(f"\n{kind}: where the fresh process's {k['median_fresh_s']:.2f} s go\n")
        print("| phase | seconds |\n|---|---:|")
        for phase, label in PHASE_LABELS.items():
            print(f"| {label} | {k['phases_s'][phase]:.2f} |")
        for module, seconds in k["imports_s"].items():
            print(f"| `import {module}` (after the above) | {seconds:.2f} |")
        print(f"| **import floor** (sum) | **{k['import_floor_s']:.2f}** |")
        print(f"| the work (a warm run) | {k['median_warm_s']:.2f} |")
        rest = k["median_fresh_s"] - k["import_floor_s"] - k["median_warm_s"]
        print(f"| the rest (first calls, CLI, run creation, exit) | {rest:.2f} |")
        if k.get("importtime_top_s"):
            listed = ", ".join(f"{m} {s:.2f}" for m, s in k["importtime_top_s"])
            print(f"\n-X importtime, top-level imports (cumulative s, inflated): {listed}")
        print(f"heavy modules after the first run: {', '.join(k['heavy_modules'])}")


def run(args: argparse.Namespace, tmp: Path, out: Path) -> int:
    """Setup, the alternating measurement, the result file and the report."""
    state = args.reuse.resolve() if args.reuse else tmp / "state"
    with home_instance(state) as (instance, home):
        import dagster as dg

        champion = instance.get_latest_materialization_event(dg.AssetKey("champion_model"))
        setup = {"reused": str(state)} if champion else prepare(args, instance, home)
        specs = run_specs(args, tmp)
        env = child_environment(state)
        env["DAGSTER_HOME"] = str(home)
        measured = measure(args, specs, env, instance)
        result = {**summarize(args, measured), "setup": setup}
    write_result(out, result)
    report(result)
    print(f"written {out}")
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--reps", type=int, default=3, help="measured repetitions of each side")
    parser.add_argument("--start", type=date.fromisoformat, default=date(2013, 1, 1))
    parser.add_argument("--days", type=int, default=28, help="training window (the policy's)")
    parser.add_argument("--validation-days", type=int, default=7)
    parser.add_argument(
        "--no-importtime", action="store_true", help="skip the -X importtime attribution"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "fresh_process.json")
    parser.add_argument("--keep", action="store_true", help="keep the temporary state folder")
    parser.add_argument(
        "--reuse",
        type=Path,
        default=None,
        help="state folder of an earlier --keep (its champion is kept; same --start/--days)",
    )
    args = parser.parse_args(argv)
    if args.reps < 1 or args.validation_days >= args.days:
        parser.error("--reps must be at least 1 and --validation-days below --days")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    mark_start()
    with scratch_folder("mlops-bench-fresh-", args.keep) as tmp:
        return run_reporting_errors(lambda: run(args, tmp, args.out))


if __name__ == "__main__":
    sys.exit(main())
