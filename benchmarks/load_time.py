"""Load time of the code location ``mlops_assets.definitions`` against a bare ``import dagster``.

Each sample is a fresh Python subprocess (``sys.executable -c ...``); the two kinds alternate so
machine noise spreads evenly. Inside the subprocess ``time.perf_counter()`` brackets the import;
outside, the wall time of the whole subprocess (interpreter start-up included) is recorded too.
The definitions subprocess also reports which heavy libraries ended up in ``sys.modules``
(there should be none: they are imported inside the functions that use them).

Budget: median import time of the definitions <= 1.3 x median ``import dagster``. This is a
measurement, not a test: the exit code is non-zero only when a subprocess fails.

Usage::

    uv run python -m benchmarks.load_time [--runs 7] [--warmup 1] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    RESULTS,
    ROOT,
    BenchError,
    alternating,
    child_environment,
    machine_info,
    mark_start,
    median_of,
    run_reporting_errors,
    write_result,
)

BUDGET_RATIO = 1.3
HEAVY_MODULES = (
    "pandas",
    "pandera",
    "dvc",
    "mlflow",
    "evidently",
    "bentoml",
    "sklearn",
    "lightgbm",
    "numpy",
)

_DAGSTER = """
import json, time
t0 = time.perf_counter()
import dagster
t1 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0}))
"""

_DEFINITIONS = """
import json, sys, time, warnings
warnings.simplefilter("ignore")
t0 = time.perf_counter()
import mlops_assets.definitions as location
t1 = time.perf_counter()
heavy = [m for m in HEAVY if m in sys.modules]
t2 = time.perf_counter()
repo = location.defs.get_repository_def()
repo.get_all_jobs()
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "resolve_s": t3 - t2, "heavy": heavy}))
""".replace("HEAVY", repr(HEAVY_MODULES))

KINDS = {"dagster": _DAGSTER, "definitions": _DEFINITIONS}

Samples = dict[str, list[dict[str, Any]]]


def run_once(code: str, env: dict[str, str]) -> dict[str, Any]:
    """Runs ``code`` in a fresh interpreter; returns its JSON line plus the wall time."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise BenchError(f"subprocess failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    result["wall_s"] = wall
    return result


def sample(runs: int, warmup: int) -> Samples:
    """``warmup`` unmeasured runs of each kind, then ``runs`` measured ones, alternating."""
    with tempfile.TemporaryDirectory(prefix="mlops-bench-load-") as state:
        env = child_environment(state)
        for _ in range(warmup):
            for code in KINDS.values():
                run_once(code, env)
        samples: Samples = {kind: [] for kind in KINDS}
        for i in range(runs):
            # Alternate which kind goes first as well, so neither always follows the other.
            for kind in alternating(i, *KINDS):
                samples[kind].append(run_once(KINDS[kind], env))
    return samples


def summarize(samples: Samples, runs: int, warmup: int) -> dict[str, Any]:
    """Medians, ratios and the budget verdict, with the raw samples."""
    imp = {kind: median_of(samples[kind], "import_s") for kind in KINDS}
    wall = {kind: median_of(samples[kind], "wall_s") for kind in KINDS}
    ratio = imp["definitions"] / imp["dagster"]
    return {
        "machine": machine_info(__file__),
        "runs": runs,
        "warmup": warmup,
        "median_import_s": imp,
        "median_wall_s": wall,
        "median_resolve_definitions_s": median_of(samples["definitions"], "resolve_s"),
        "ratio_import": ratio,
        "ratio_wall": wall["definitions"] / wall["dagster"],
        "budget_ratio": BUDGET_RATIO,
        "within_budget": ratio <= BUDGET_RATIO,
        "heavy_modules_loaded": sorted({m for s in samples["definitions"] for m in s["heavy"]}),
        "samples": samples,
    }


def report(result: dict[str, Any]) -> None:
    """Prints the result as a Markdown table."""
    imp, wall, ratio = result["median_import_s"], result["median_wall_s"], result["ratio_import"]
    verdict = "met" if result["within_budget"] else "MISSED"
    print(f"load time, {result['runs']} fresh subprocesses each (medians)\n")
    print("| what | import (perf_counter) | subprocess wall |")
    print("|---|---:|---:|")
    print(f"| `import dagster` | {imp['dagster']:.3f} s | {wall['dagster']:.3f} s |")
    print(
        f"| `import mlops_assets.definitions` | {imp['definitions']:.3f} s "
        f"| {wall['definitions']:.3f} s |"
    )
    print(
        f"| ratio | **{ratio:.2f}** (budget <= {BUDGET_RATIO}: {verdict}) "
        f"| {result['ratio_wall']:.2f} |"
    )
    resolve = result["median_resolve_definitions_s"]
    print(f"\nresolving the repository (`defs.get_repository_def()`): {resolve:.3f} s")
    heavy = ", ".join(result["heavy_modules_loaded"]) or "none"
    print(f"heavy modules after loading the definitions: {heavy}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="measured runs of each kind")
    parser.add_argument(
        "--warmup",
        type=int,
        default=1,
        help="unmeasured runs of each kind first (file-system and .pyc caches)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "load_time.json")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")

    def measure() -> int:
        mark_start()
        result = summarize(sample(args.runs, args.warmup), args.runs, args.warmup)
        write_result(args.out, result)
        report(result)
        print(f"written {args.out}")
        return 0

    return run_reporting_errors(measure)


if __name__ == "__main__":
    sys.exit(main())
