"""Soak: the prediction service under steady mixed load for minutes, its memory watched.

A deployed state (as ``benchmarks.serving`` makes or reuses it) serves its latest Bento with
``bentoml serve`` on loopback; 8 client threads send the mixed load of the serving benchmark
(85 % single flights, 10 % batches of 1-100, 5 % invalid or hostile requests) without pause
for ``--minutes``. The resident memory (RSS) of every serving process (the supervisor and
its worker) is sampled every ``--sample-s`` seconds; the first ``--warmup-minutes`` are the
warm-up. Budgets: no 5xx and no connection error, every invalid request answered 4xx, and
the RSS at the end less than 5 % above the RSS after the warm-up. A measurement, not a test:
the exit code is non-zero only when the benchmark cannot measure. Method and latest result:
docs/benchmarks.md, section 4c.

Usage::

    uv run python -m benchmarks.soak [--state DIR] [--minutes 10] [--warmup-minutes 1]
        [--sample-s 15] [--keep] [--out PATH]
"""

from __future__ import annotations

import argparse
import gc
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

from benchmarks.common import (
    RESULTS,
    BenchError,
    add_state_arguments,
    machine_info,
    mark_start,
    run_on_state,
    write_result,
)
from benchmarks.serving import STARTUP_TIMEOUT_S, Deployed, deployed
from benchmarks.serving_http import (
    CONCURRENCY,
    HOST,
    CpuWindow,
    MixedLoad,
    Server,
    load_result,
    run_threads,
)

BUDGET_RSS_GROWTH = 0.05  # end over after-warm-up


def rss_bytes(pid: int) -> int:
    """Resident memory of one process (psutil when installed, else ``/proc``); 0 if gone."""
    try:
        import psutil
    except ImportError:
        return _proc_rss(pid)
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except psutil.Error:  # the process ended between listing and reading
        return 0


def _proc_rss(pid: int) -> int:
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return 0
    found = [line.split()[1] for line in lines if line.startswith("VmRSS:")]
    return int(found[0]) * 1024 if found else 0


def memory_sample(server: Server, started: float) -> dict[str, Any]:
    """The RSS (MiB) of the supervisor and of its descendants, at seconds since the start."""
    supervisor = workers = 0
    for pid in server.processes():
        if pid == server.process.pid:
            supervisor += rss_bytes(pid)
        else:
            workers += rss_bytes(pid)
    mib = 1024 * 1024
    return {
        "t_s": round(time.monotonic() - started, 1),
        "supervisor_mib": round(supervisor / mib, 2),
        "workers_mib": round(workers / mib, 2),
        "total_mib": round((supervisor + workers) / mib, 2),
    }


def soak(server: Server, target: Deployed, args: argparse.Namespace) -> dict[str, Any]:
    """Runs the load in the background and samples the memory until it ends."""
    duration = args.minutes * 60
    load = MixedLoad(server.port, target.pool, duration)
    outcome: dict[str, Any] = {}

    def drive() -> None:
        try:
            outcome["run"] = run_threads(CONCURRENCY, load.client_loop)
        except BaseException as error:  # reported by the main thread
            outcome["error"] = error

    started = time.monotonic()
    window = CpuWindow(server)
    samples = [memory_sample(server, started)]
    driver = threading.Thread(target=drive, name="soak-load")
    driver.start()
    warm: dict[str, Any] | None = None
    while driver.is_alive():
        driver.join(timeout=args.sample_s)
        if not driver.is_alive():
            break
        samples.append(memory_sample(server, started))
        if warm is None and samples[-1]["t_s"] >= args.warmup_minutes * 60:
            warm = samples[-1]
            print(f"after warm-up: {warm['total_mib']:.1f} MiB resident", flush=True)
    if "error" in outcome:
        raise BenchError(f"the load stopped: {outcome['error']!r}") from outcome["error"]
    cpu = window.stop()
    end = samples[-1]  # the last sample under load
    if warm is None or warm is end:
        raise BenchError("no sample between the warm-up and the end: run longer")
    wall, results = outcome["run"]
    growth = end["total_mib"] / warm["total_mib"] - 1
    return {
        "load": load_result(results, wall, cpu),
        "rss_after_warmup": warm,
        "rss_end": end,
        "rss_max_mib": max(s["total_mib"] for s in samples[1:]),
        "rss_growth": growth,
        "rss_samples": samples,
    }


def run(args: argparse.Namespace, tmp: Path, state: Path) -> int:
    """Setup, the soak, the result file and the report."""
    target = deployed(state)
    gc.collect()
    gc.freeze()  # the client's start-up objects out of the cyclic GC's view
    server_dir = tmp / "server"
    server_dir.mkdir(exist_ok=True)
    server = Server(
        target.bento_tag, target.home, server_dir / "bentoml-serve.log", state=target.state
    )
    print(f"bentoml serve {target.bento_tag} on {HOST}:{server.port} ...", flush=True)
    try:
        ready_s = server.wait_ready(STARTUP_TIMEOUT_S)
        mark_start()
        print(f"ready after {ready_s:.1f} s; {args.minutes:g} min of mixed load ...", flush=True)
        measured = soak(server, target, args)
        alive_after = server.process.poll() is None
    finally:
        stopped = server.stop()
    load = measured["load"]
    budgets = {
        "no_5xx_no_connection_error": load["budget_met"],
        "all_invalid_4xx": load["unexpected_status"] == 0,
        "rss_growth_under": BUDGET_RSS_GROWTH,
        "rss_growth": measured["rss_growth"] < BUDGET_RSS_GROWTH,
    }
    result = {
        "machine": machine_info(__file__, "bentoml", "pydantic"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "bento_tag": target.bento_tag,
        "request_pool": len(target.pool),
        "minutes": args.minutes,
        "warmup_minutes": args.warmup_minutes,
        "sample_s": args.sample_s,
        "server_ready_s": ready_s,
        "server_alive_after_load": alive_after,
        "server_stop": stopped,
        **measured,
        "budgets": budgets,
    }
    write_result(args.out, result)
    report(result)
    print(f"written {args.out}")
    return 0


def report(result: dict[str, Any]) -> None:
    """Requests by status class, memory after warm-up and at the end, the verdicts."""
    load, budgets = result["load"], result["budgets"]
    warm, end = result["rss_after_warmup"], result["rss_end"]
    print(
        f"\n{load['requests']} requests in {load['duration_s']:.0f} s "
        f"({load['throughput_rps']:.0f} req/s, {load['threads']} threads): {load['by_class']}"
    )
    single = load["single_latency"]
    if single:
        print(f"single /predict: p50 {single['p50_ms']:.2f} ms, p99 {single['p99_ms']:.2f} ms")
    print(
        f"resident memory: {warm['total_mib']:.1f} MiB after warm-up (t={warm['t_s']:.0f} s), "
        f"{end['total_mib']:.1f} MiB at the end (t={end['t_s']:.0f} s), "
        f"max {result['rss_max_mib']:.1f} MiB: growth {result['rss_growth'] * 100:+.2f} %"
    )
    for name, met in budgets.items():
        if isinstance(met, bool):
            print(f"budget {name}: {'MET' if met else 'MISSED'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add_state_arguments(parser)
    parser.add_argument("--minutes", type=float, default=10.0, help="minutes of load in all")
    parser.add_argument("--warmup-minutes", type=float, default=1.0, help="of which warm-up")
    parser.add_argument("--sample-s", type=float, default=15.0, help="seconds between samples")
    parser.add_argument("--out", type=Path, default=RESULTS / "soak.json")
    args = parser.parse_args(argv)
    if not 0 < args.warmup_minutes < args.minutes or args.sample_s <= 0:
        parser.error("need 0 < --warmup-minutes < --minutes and --sample-s > 0")
    warnings.simplefilter("ignore")

    return run_on_state("mlops-bench-soak-", args, lambda tmp, state: run(args, tmp, state))


if __name__ == "__main__":
    sys.exit(main())
