"""The size of the state folder after the closed loop, part by part, against the landed data.

Runs ``mlops-assets demo`` (``--start``, ``--days``, ``--bootstrap-days`` passed through) into
a fresh ``MLOPS_STATE_DIR`` and samples the folder while it runs, or measures an existing
state folder (``--state``). Reports the size of every top-level folder and of the notable
subfolders below it, the landed data (``landing/``), their ratio, and each part's growth per
landed day over the day-by-day phase (a least-squares slope over the samples), so a year can
be extrapolated from a shorter run. Sizes are what the disk holds (allocated blocks, a file
with several hard links counted once), as ``du`` reports them; apparent bytes ride along.
Budget: a year's state <= 10 x the landed data. The method in full and the latest result:
docs/benchmarks.md, section 8. A measurement, not a test: the exit code is non-zero only on
errors (the demo failed, the folder is not a state folder).

Usage::

    uv run python -m benchmarks.state_size [--start 2013-01-01] [--days 50]
        [--bootstrap-days 28] [--year-days 365] [--interval 10] [--out PATH] [--keep]
    uv run python -m benchmarks.state_size --state state [--out PATH]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from benchmarks.common import (
    RESULTS,
    BenchError,
    child_environment,
    machine_info,
    mark_start,
    run_reporting_errors,
    scratch_folder,
    write_result,
)

BUDGET_RATIO = 10.0
LANDING = "landing"
# A subfolder is listed on its own from this share of the whole state.
NOTABLE_SHARE = 0.01
MB = 1_000_000
RUN_DATABASES = "dagster_home/history/runs"


@dataclass
class Usage:
    """Disk usage of a set of files: allocated bytes (as ``du``), apparent bytes, file count."""

    disk: int = 0
    apparent: int = 0
    files: int = 0

    def add(self, disk: int, apparent: int) -> None:
        self.disk += disk
        self.apparent += apparent
        self.files += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "disk_mb": round(self.disk / MB, 3),
            "apparent_mb": round(self.apparent / MB, 3),
            "files": self.files,
        }


@dataclass
class Census:
    """The state folder's usage by folder (three levels deep) and by file (two levels)."""

    total: Usage = field(default_factory=Usage)
    by_folder: dict[str, Usage] = field(default_factory=lambda: defaultdict(Usage))

    def top_level(self) -> dict[str, int]:
        """Allocated bytes of each top-level entry."""
        return {k: u.disk for k, u in self.by_folder.items() if "/" not in k}


def census(state: Path) -> Census:
    """Walks ``state`` without following links; a hard-linked file is counted once."""
    result, seen = Census(), set()
    for folder, _dirs, files in os.walk(state):
        parts = Path(folder).relative_to(state).parts
        for name in files:
            try:
                stat = os.lstat(Path(folder) / name)
            except FileNotFoundError:  # removed since listed (a SQLite journal, a staged file)
                continue
            if stat.st_nlink > 1:
                if (stat.st_dev, stat.st_ino) in seen:
                    continue
                seen.add((stat.st_dev, stat.st_ino))
            disk, apparent = stat.st_blocks * 512, stat.st_size
            result.total.add(disk, apparent)
            # Folders down to three levels, and the files of the first two (the databases).
            keys = ["/".join(parts[:depth]) for depth in range(1, min(3, len(parts)) + 1)]
            if len(parts) < 2:
                keys.append("/".join((*parts, name)))
            for key in keys:
                result.by_folder[key].add(disk, apparent)
    return result


def breakdown(found: Census) -> dict[str, Any]:
    """Top-level folders, and the subfolders of at least ``NOTABLE_SHARE`` of the whole."""
    floor = found.total.disk * NOTABLE_SHARE
    ordered = sorted(found.by_folder.items(), key=lambda kv: -kv[1].disk)
    return {
        "top_level": {k: u.as_dict() for k, u in ordered if "/" not in k},
        "notable": {k: u.as_dict() for k, u in ordered if "/" in k and u.disk >= floor},
    }


def run_databases(state: Path) -> dict[str, Any]:
    """Dagster's event log, one SQLite file per run (``index.db`` aside): count and average."""
    files = [p for p in (state / RUN_DATABASES).glob("*.db") if p.name != "index.db"]
    disk = sum(p.stat().st_blocks * 512 for p in files)
    return {"runs": len(files), "mb_per_run": round(disk / MB / len(files), 3) if files else None}


def landed_days(state: Path) -> int:
    """Days of flights in the landing zone."""
    return len(list((state / LANDING / "flights").glob("*.csv")))


# -- growth -----------------------------------------------------------------------------------


def slope(points: list[tuple[int, int]]) -> float | None:
    """Least-squares bytes per day over ``(day, bytes)`` points; None under two distinct days."""
    days = {d for d, _ in points}
    if len(days) < 2:
        return None
    mean_x = sum(d for d, _ in points) / len(points)
    mean_y = sum(b for _, b in points) / len(points)
    num = sum((d - mean_x) * (b - mean_y) for d, b in points)
    den = sum((d - mean_x) ** 2 for d, _ in points)
    return num / den


def growth(samples: list[dict[str, Any]], after_day: int) -> dict[str, float]:
    """Bytes per landed day of each top-level part, over the samples past ``after_day``."""
    day_by_day = [s for s in samples if s["landed_days"] > after_day]
    parts = {p for s in day_by_day for p in s["parts"]}
    rates = {}
    for part in sorted(parts):
        rate = slope([(s["landed_days"], s["parts"].get(part, 0)) for s in day_by_day])
        if rate is not None:
            rates[part] = rate
    return rates


def extrapolate(
    final: dict[str, int], rates: dict[str, float], days: int, year_days: int
) -> dict[str, Any]:
    """Each part after ``year_days`` days, growing at its rate from the measured ``days``."""
    more = year_days - days
    parts = {p: final.get(p, 0) + max(rates.get(p, 0.0), 0.0) * more for p in final}
    total, landed = sum(parts.values()), parts.get(LANDING, 0)
    return {
        "days": year_days,
        "parts_mb": {p: round(b / MB, 1) for p, b in sorted(parts.items(), key=lambda kv: -kv[1])},
        "total_mb": round(total / MB, 1),
        "landed_mb": round(landed / MB, 1),
        "ratio": round(total / landed, 2) if landed else None,
    }


# -- running --------------------------------------------------------------------------------


def sample(state: Path, started: float) -> dict[str, Any]:
    """One point of the timeline: landed days and each top-level part's allocated bytes."""
    return {
        "seconds": round(time.perf_counter() - started, 1),
        "landed_days": landed_days(state),
        "parts": census(state).top_level() if state.exists() else {},
    }


def run_demo(args: argparse.Namespace, state: Path) -> tuple[list[dict[str, Any]], float]:
    """``mlops-assets demo`` into ``state``, sampled every ``--interval`` seconds."""
    command = [sys.executable, "-m", "mlops_assets.cli", "demo", "--start", args.start]
    command += ["--days", str(args.days), "--bootstrap-days", str(args.bootstrap_days)]
    log = state.parent / "demo.log"
    started, samples = time.perf_counter(), []
    with log.open("w") as out:
        proc = subprocess.Popen(
            command, env=child_environment(state), stdout=out, stderr=subprocess.STDOUT
        )
        try:
            while proc.poll() is None:
                time.sleep(args.interval)
                samples.append(sample(state, started))
        finally:  # a failed sample must not leave the demo running on its own
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        tail = log.read_text()[-3000:]
        raise BenchError(f"demo failed ({proc.returncode}), log {log}:\n{tail}")
    print(log.read_text().rstrip())
    return [*samples, sample(state, started)], seconds


def measure(
    state: Path, args: argparse.Namespace, demo: dict[str, Any], samples: list[dict[str, Any]]
) -> dict[str, Any]:
    """The result of a measured state: breakdown, ratio, growth, the year."""
    if not (state / LANDING).is_dir():
        raise BenchError(f"{state} has no {LANDING}/ folder: not a state folder")
    found = census(state)
    days = landed_days(state)
    landed = found.by_folder[LANDING].disk
    total = found.total.disk
    result: dict[str, Any] = {
        "state": str(state),
        "landed_days": days,
        "total": found.total.as_dict(),
        "landed": found.by_folder[LANDING].as_dict(),
        "ratio": round(total / landed, 2),
        "budget_ratio": BUDGET_RATIO,
        **breakdown(found),
        "dagster_run_databases": run_databases(state),
        "demo": demo,
    }
    rates = growth(samples, args.bootstrap_days) if samples else {}
    if not rates and days:
        # No timeline (an existing folder): the average day, bootstrap included.
        rates = {p: b / days for p, b in found.top_level().items()}
        result["growth_basis"] = "average over all landed days (no timeline)"
    else:
        result["growth_basis"] = f"slope over {len(samples)} samples past the bootstrap"
    result["growth_per_day_mb"] = {
        p: round(r / MB, 4) for p, r in sorted(rates.items(), key=lambda kv: -kv[1])
    }
    result["year"] = extrapolate(found.top_level(), rates, days, args.year_days)
    return result


def report(result: dict[str, Any]) -> None:
    """Prints the breakdown and the verdict."""
    print(f"\nstate {result['state']}: {result['landed_days']} landed days")
    for part, usage in result["top_level"].items():
        rate = result["growth_per_day_mb"].get(part, 0.0)
        print(f"  {part:<20} {usage['disk_mb']:>10.1f} MB  {rate:>8.3f} MB/day")
    print("notable subfolders:")
    for part, usage in result["notable"].items():
        print(f"  {part:<50} {usage['disk_mb']:>10.1f} MB  {usage['files']:>7} files")
    runs = result["dagster_run_databases"]
    print(f"Dagster runs: {runs['runs']}, {runs['mb_per_run']} MB of event log each")
    total, landed = result["total"]["disk_mb"], result["landed"]["disk_mb"]
    print(f"total {total:.1f} MB, landed {landed:.1f} MB: {result['ratio']:.1f}x")
    year = result["year"]
    verdict = "met" if year["ratio"] and year["ratio"] <= BUDGET_RATIO else "NOT met"
    print(
        f"{year['days']} days (extrapolated): {year['total_mb']:.0f} MB for "
        f"{year['landed_mb']:.0f} MB landed = {year['ratio']}x "
        f"(budget {BUDGET_RATIO:.0f}x: {verdict})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state", type=Path, default=None, help="measure this state folder")
    parser.add_argument("--start", default="2013-01-01")
    parser.add_argument("--days", type=int, default=50, help="days in all, bootstrap included")
    parser.add_argument("--bootstrap-days", type=int, default=28)
    parser.add_argument("--year-days", type=int, default=365, help="days to extrapolate to")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--out", type=Path, default=RESULTS / "state_size.json")
    parser.add_argument("--keep", action="store_true", help="keep the demo's state folder")
    args = parser.parse_args(argv)
    date.fromisoformat(args.start)

    def body(tmp: Path) -> int:
        mark_start()
        samples: list[dict[str, Any]] = []
        demo: dict[str, Any]
        if args.state:
            state, demo = args.state.resolve(), {"ran": False}
        else:
            state = tmp / "state"
            samples, seconds = run_demo(args, state)
            demo = {"ran": True, "start": args.start, "days": args.days}
            demo |= {"bootstrap_days": args.bootstrap_days, "seconds": round(seconds, 1)}
        result = measure(state, args, demo, samples)
        result["timeline"] = samples
        result["machine"] = machine_info(__file__)
        report(result)
        write_result(args.out, result)
        print(f"wrote {args.out}")
        return 0

    keep = args.keep and not args.state
    with scratch_folder("state-size-", keep, "state kept in {}/state") as tmp:
        return run_reporting_errors(lambda: body(tmp))


if __name__ == "__main__":
    raise SystemExit(main())
