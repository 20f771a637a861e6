"""Load time of the code location ``mlops_assets.definitions`` against a bare ``import dagster``.

Each sample is a fresh Python subprocess (``sys.executable -c ...``); the two kinds alternate so
machine noise spreads evenly. Inside the subprocess ``time.perf_counter()`` brackets the import;
outside, the wall time of the whole subprocess (interpreter start-up included) is recorded too.
The definitions subprocess also reports which heavy libraries ended up in ``sys.modules``
(there should be none: they are imported inside the functions that use them).

Budget: median import time of the definitions <= 1.3 x median ``import dagster``. This is a
measurement, not a test: the exit code is non-zero only when a subprocess fails.

Usage::

    uv run python benchmarks/load_time.py [--runs 7] [--warmup 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
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


def run_once(code: str, env: dict[str, str]) -> dict[str, object]:
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
        raise RuntimeError(f"subprocess failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["wall_s"] = wall
    return result


def machine() -> dict[str, object]:
    """Where the numbers were taken."""
    version = subprocess.run(
        [sys.executable, "-c", "import dagster; print(dagster.__version__)"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "dagster": version,
        "platform": platform.platform(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "loadavg_1min_at_end": round(os.getloadavg()[0], 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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

    load_before = round(os.getloadavg()[0], 2)
    with tempfile.TemporaryDirectory(prefix="mlops-bench-load-") as state:
        env = {**os.environ, "DAGSTER_DISABLE_TELEMETRY": "true", "MLOPS_STATE_DIR": state}
        env.pop("DAGSTER_HOME", None)
        samples: dict[str, list[dict[str, object]]] = {kind: [] for kind in KINDS}
        try:
            for _ in range(args.warmup):
                for code in KINDS.values():
                    run_once(code, env)
            for i in range(args.runs):
                # Alternate which kind goes first as well, so neither always follows the other.
                order = list(KINDS) if i % 2 == 0 else list(reversed(KINDS))
                for kind in order:
                    samples[kind].append(run_once(KINDS[kind], env))
        except RuntimeError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1

    def med(kind: str, field: str) -> float:
        return statistics.median(float(s[field]) for s in samples[kind])  # type: ignore[arg-type]

    imp = {kind: med(kind, "import_s") for kind in KINDS}
    wall = {kind: med(kind, "wall_s") for kind in KINDS}
    ratio = imp["definitions"] / imp["dagster"]
    wall_ratio = wall["definitions"] / wall["dagster"]
    heavy = sorted({m for s in samples["definitions"] for m in s["heavy"]})  # type: ignore[attr-defined]
    resolve = med("definitions", "resolve_s")
    result = {
        "machine": {**machine(), "loadavg_1min_at_start": load_before},
        "runs": args.runs,
        "warmup": args.warmup,
        "median_import_s": imp,
        "median_wall_s": wall,
        "median_resolve_definitions_s": resolve,
        "ratio_import": ratio,
        "ratio_wall": wall_ratio,
        "budget_ratio": BUDGET_RATIO,
        "within_budget": ratio <= BUDGET_RATIO,
        "heavy_modules_loaded": heavy,
        "samples": samples,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    verdict = "met" if ratio <= BUDGET_RATIO else "MISSED"
    print(f"load time, {args.runs} fresh subprocesses each (medians)\n")
    print("| what | import (perf_counter) | subprocess wall |")
    print("|---|---:|---:|")
    print(f"| `import dagster` | {imp['dagster']:.3f} s | {wall['dagster']:.3f} s |")
    print(
        f"| `import mlops_assets.definitions` | {imp['definitions']:.3f} s "
        f"| {wall['definitions']:.3f} s |"
    )
    print(f"| ratio | **{ratio:.2f}** (budget <= {BUDGET_RATIO}: {verdict}) | {wall_ratio:.2f} |")
    print(f"\nresolving the repository (`defs.get_repository_def()`): {resolve:.3f} s")
    print(f"heavy modules after loading the definitions: {', '.join(heavy) or 'none'}")
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
