"""What the benchmarks share: errors, scratch folders, the environment, the instance, reports.

Nothing here imports Dagster or a heavy library at import time: the state folder must be set
(``setup_environment``) before ``mlops_assets.definitions`` is imported.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import hashlib
import importlib
import io
import json
import os
import platform
import pstats
import shutil
import statistics
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlops_assets import settings

ROOT = settings.project_root()
RESULTS = ROOT / "benchmarks" / "results"

_STARTED: dict[str, float] = {}


class BenchError(RuntimeError):
    """The benchmark could not measure what it claims to measure."""


# -- running a benchmark ----------------------------------------------------------------------


def run_reporting_errors(body: Callable[[], int]) -> int:
    """Runs ``body``; a ``BenchError`` becomes a message on stderr and exit code 1."""
    try:
        return body()
    except BenchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


@contextlib.contextmanager
def scratch_folder(prefix: str, keep: bool, kept: str = "state kept in {}") -> Iterator[Path]:
    """A temporary folder, deleted afterwards unless ``keep`` (then ``kept`` is printed)."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield tmp
    finally:
        if keep:
            print(kept.format(tmp))
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def add_state_arguments(parser: argparse.ArgumentParser) -> None:
    """``--state`` (a deployed state to reuse) and ``--keep`` (keep the temporary one)."""
    parser.add_argument(
        "--state",
        type=Path,
        default=None,
        help="deployed state folder to serve (deployed first if it has no Bento); default: a "
        "temporary one, deployed",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary state folder")


def run_on_state(prefix: str, args: argparse.Namespace, run: Callable[[Path, Path], int]) -> int:
    """``run(tmp, state)`` on ``--state`` or a temporary state, errors reported as messages."""
    keep = args.keep and not args.state
    kept = "state kept in {0}/state (reuse with --state {0}/state)"
    with scratch_folder(prefix, keep, kept) as tmp:
        state = args.state.resolve() if args.state else tmp / "state"
        return run_reporting_errors(lambda: run(tmp, state))


def alternating(i: int, first: str, second: str) -> tuple[str, str]:
    """The two sides of repetition ``i``: each goes first every other time."""
    return (first, second) if i % 2 == 0 else (second, first)


def median_of(records: Iterable[dict[str, Any]], *keys: str) -> float:
    """Median of ``record[k1][k2]...`` over the records."""

    def value(record: dict[str, Any]) -> float:
        for key in keys:
            record = record[key]
        return float(record)  # type: ignore[arg-type]

    return statistics.median(value(r) for r in records)


# -- environment and instance -----------------------------------------------------------------


def setup_environment(state: Path) -> None:
    """Points this process at ``state``; before ``mlops_assets.definitions`` is imported."""
    os.environ["MLOPS_STATE_DIR"] = str(state)
    os.environ.pop("MLOPS_ENV", None)
    settings.telemetry_off()
    warnings.filterwarnings("ignore", message=".*is currently in (beta|preview).*")


def child_environment(state: Path | str) -> dict[str, str]:
    """The environment of a child process on ``state``: local flavour, no DAGSTER_HOME."""
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "MLOPS_ENV")}
    env["MLOPS_STATE_DIR"] = str(state)
    settings.telemetry_off(env)
    return env


def open_state(state: Path) -> settings.Locations:
    """``setup_environment``, checked: the project's settings resolve to ``state``."""
    setup_environment(state)
    where = settings.locations()
    if where.state != state.resolve():
        raise BenchError(f"MLOPS_STATE_DIR not honoured: {where.state}")
    return where


@contextlib.contextmanager
def home_instance(state: Path, dagster_yaml: Path | None = None) -> Iterator[tuple[Any, Path]]:
    """The Dagster instance in ``DAGSTER_HOME`` under ``state``, as ``mlops-assets demo`` uses.

    The project's ``dagster.yaml`` (SQLite storage), or ``dagster_yaml`` to compare instance
    configurations. Yields the instance and its home; disposes of it afterwards.
    """
    open_state(state)
    import dagster as dg

    from mlops_assets.cli import prepare_dagster_home

    home = prepare_dagster_home()
    if dagster_yaml is not None:
        shutil.copyfile(dagster_yaml, home / "dagster.yaml")
    instance = dg.DagsterInstance.get()
    try:
        yield instance, home
    finally:
        instance.dispose()


# -- where the numbers were taken -------------------------------------------------------------


def mark_start() -> None:
    """Records the load average when the measurement starts."""
    _STARTED["loadavg_1min_at_start"] = round(os.getloadavg()[0], 2)


def machine_info(script: str, *modules: str) -> dict[str, Any]:
    """Machine, versions of ``dagster`` and ``modules``, load, and the script's hash."""
    versions = {name: importlib.import_module(name).__version__ for name in ("dagster", *modules)}
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        **versions,
        "platform": platform.platform(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        **_STARTED,
        "loadavg_1min_at_end": round(os.getloadavg()[0], 2),
        "sha256_of_script": hashlib.sha256(Path(script).read_bytes()).hexdigest()[:12],
    }


def write_result(out: Path, result: dict[str, Any]) -> None:
    """Writes the JSON result file."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")


# -- profiles ---------------------------------------------------------------------------------


class Profile:
    """A cProfile of selected calls only (what runs between them is not profiled)."""

    def __init__(self) -> None:
        self.profiler = cProfile.Profile()

    def call(self, func: Callable[[], Any]) -> Any:
        """Runs ``func`` under the profiler."""
        self.profiler.enable()
        try:
            return func()
        finally:
            self.profiler.disable()

    def save(self, path: Path) -> None:
        """Writes the raw statistics (for ``python -m pstats`` or snakeviz)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self.profiler.dump_stats(str(path))

    def top(self, count: int) -> str:
        """The ``count`` functions with the most cumulative time, as pstats prints them."""
        buffer = io.StringIO()
        pstats.Stats(self.profiler, stream=buffer).sort_stats("cumulative").print_stats(count)
        return buffer.getvalue()

    def stats(self) -> pstats.Stats:
        """The statistics, for custom summaries."""
        return pstats.Stats(self.profiler)
