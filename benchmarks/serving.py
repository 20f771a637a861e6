"""Serving latency of the flight-delay service: a real ``bentoml serve`` against in-process scoring.

A deployed state (built in a child process by ``mlops_assets_tests.deployed.deploy`` unless
``--state`` names one) serves its latest Bento; the requests are the real flights of its last
landed day with their weather, validated and shuffled. In-process first (``score``, the bare
model call, validation + ``score``, batches; this process's start-up objects frozen out of the
garbage collector), then over HTTP (``benchmarks.serving_http``): ``/predict`` at concurrency
1 and 8, ``/predict_batch`` of 100 flights, and a mixed load with invalid requests, with the
CPU of the server, the client and the rest of the machine per phase. Budgets: p99 of
``/predict`` at concurrency 1 under 10 ms; zero 5xx and zero connection errors in the load
(and every invalid request answered 4xx). The method in full and the latest result:
docs/benchmarks.md, section 4. A measurement, not a test: the exit code is non-zero only when
the benchmark cannot measure (setup, server start, a non-200 answer in the timed phases).

Usage::

    uv run python -m benchmarks.serving [--state DIR [--rebuild]] [--requests 2000]
        [--duration 30] [--workers 1,cpu_count] [--keep] [--out PATH]
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import os
import random
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import (
    RESULTS,
    ROOT,
    BenchError,
    add_state_arguments,
    child_environment,
    machine_info,
    mark_start,
    run_on_state,
    write_result,
)
from benchmarks.serving_http import (
    BATCH,
    CONCURRENCY,
    WARMUP,
    CpuWindow,
    Server,
    measure_http,
    measure_load,
    summary,
    timed_loop,
)
from mlops_assets import settings
from mlops_assets.lib.scoring import MAX_BATCH
from mlops_assets.serving.workers import DEFAULT_WORKERS, WORKERS_VARIABLE

BUDGET_P99_MS = 10.0
BUDGET_THROUGHPUT_RATIO = 1.6  # requests/s at concurrency 8 over concurrency 1
BUDGET_BATCH_FLIGHTS_PER_S = 20_000.0  # /predict_batch of MAX_BATCH flights
MODEL = settings.MODEL_NAME
SERVICE = f"{MODEL}_service"
STARTUP_TIMEOUT_S = 120.0

_DEPLOY = """
import json, os, sys, warnings
from pathlib import Path
warnings.simplefilter("ignore")
state = Path(sys.argv[1])
os.environ["MLOPS_STATE_DIR"] = str(state)
import dagster as dg
from mlops_assets_tests.deployed import deploy
with dg.instance_for_test() as instance:
    deployment = deploy(state, instance)
    meta = deployment.metadata("bento")
print(json.dumps({"bento_tag": meta["bento_tag"], "model_tag": meta["model_tag"]}))
"""


# -- the deployed state -----------------------------------------------------------------------


def latest_bento(home: Path) -> tuple[str, str] | None:
    """(bento tag, model tag) of the latest service Bento in a BentoML home, if any."""
    import yaml

    latest = home / "bentos" / SERVICE / "latest"
    if not latest.is_file():
        return None
    version = latest.read_text().strip()
    info = yaml.safe_load((home / "bentos" / SERVICE / version / "bento.yaml").read_text())
    models = [m["tag"] for s in info.get("services", []) for m in s.get("models", [])]
    models += [m["tag"] for m in info.get("models", [])]
    tags = sorted({t for t in models if t.startswith(f"{MODEL}:")})
    if len(tags) != 1:
        raise BenchError(f"bento {SERVICE}:{version} names {tags or 'no'} {MODEL} model")
    return f"{SERVICE}:{version}", tags[0]


def ensure_deployed(state: Path) -> tuple[str, str, float | None]:
    """Bento and model tags of the state, deploying it first if it has no Bento."""
    home = state / "bentoml"
    found = latest_bento(home)
    if found is not None:
        return (*found, None)
    print(f"deploying a state into {state} (replay, training, bento build) ...", flush=True)
    state.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _DEPLOY, str(state)],
        cwd=ROOT,
        env=child_environment(state),
        capture_output=True,
        text=True,
        check=False,
    )
    took = time.perf_counter() - start
    if done.returncode != 0:
        raise BenchError(f"deploy failed ({done.returncode}):\n{done.stderr[-3000:]}")
    tags = json.loads(done.stdout.strip().splitlines()[-1])
    found = latest_bento(home)
    if found != (tags["bento_tag"], tags["model_tag"]):
        raise BenchError(f"the store's latest bento {found} is not the deployed one {tags}")
    print(f"deployed in {took:.0f} s: {tags['bento_tag']} ({tags['model_tag']})", flush=True)
    return tags["bento_tag"], tags["model_tag"], took


def _landing_value(text: str | None, kind: str) -> Any:
    """A landing file's text as the JSON value a client sends (numbers are strict)."""
    if text in (None, "", "NA"):
        return None
    if kind == "int":
        return int(text)
    return float(text) if kind == "float" else text


def load_requests(state: Path, model: Any) -> tuple[str, list[dict[str, Any]]]:
    """Valid requests: the last landed day's flights with their weather (validated)."""
    from mlops_assets.lib.features import WEATHER_FIELDS
    from mlops_assets.lib.scoring import REQUEST_FLIGHT_FIELDS, request_fields

    kinds = {spec.name: spec.kind for spec in request_fields([], [])}

    days = sorted((state / "landing" / "flights").glob("*.csv"))
    if not days:
        raise BenchError(f"no landed flights in {state / 'landing'}")
    day = days[-1].stem
    weather: dict[tuple[str, str], dict[str, str]] = {}
    with (state / "landing" / "weather" / f"{day}.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            weather[(row["origin"], row["time_hour"])] = row
    pool = []
    with days[-1].open(newline="") as f:
        for row in csv.DictReader(f):
            raw = {name: _landing_value(row[name], kinds[name]) for name in REQUEST_FLIGHT_FIELDS}
            observed = weather.get((row["origin"], row["time_hour"]), {})
            raw.update(
                {name: _landing_value(observed.get(name), kinds[name]) for name in WEATHER_FIELDS}
            )
            try:
                pool.append(json.loads(model.model_validate(raw).model_dump_json()))
            except ValueError:
                continue  # not a valid request (none expected: landed data passed contracts)
    if len(pool) < 2 * BATCH:
        raise BenchError(f"only {len(pool)} valid requests from {day}")
    random.Random(0).shuffle(pool)
    return day, pool


@dataclass
class Deployed:
    """What is served and what it is asked."""

    state: Path
    bento_tag: str
    model_tag: str
    deploy_s: float | None
    bundle: Any
    model: Any  # the request model
    day: str
    pool: list[dict[str, Any]]
    pseudonyms: Any  # the state's pseudonymizer, as the service loads it
    sensitive: tuple[str, ...]  # the request fields the service pseudonymizes

    @property
    def home(self) -> Path:
        """The BentoML home of the state."""
        return self.state / "bentoml"

    def as_scored(self, request: dict[str, Any]) -> dict[str, Any]:
        """What the service scores for a request: validated, its tail number pseudonymized
        (the bundle's planes are keyed by pseudonym)."""
        validated = self.model.model_validate(request).model_dump()
        return self.pseudonyms.records([validated], self.sensitive)[0]

    def variety(self) -> dict[str, int]:
        """Distinct values of the fields that make traffic vary."""
        fields = ("carrier", "origin", "dest", "tailnum", "time_hour")
        return {f: len({p[f] for p in self.pool}) for f in fields}


def rebuilt(state: Path, bundle: Any) -> tuple[str, str]:
    """(bento tag, model tag) of a Bento of ``bundle`` built now, by the current code."""
    from mlops_assets.resources.bentos import local_bentos

    print("building a Bento of the champion with the current code ...", flush=True)
    built = local_bentos(state).build(bundle, {k: str(v) for k, v in bundle.model.items()})
    return str(built["bento_tag"]), str(built["model_tag"])


def deployed(state: Path, rebuild: bool = False) -> Deployed:
    """The state deployed, its scoring bundle loaded and the request pool read.

    ``rebuild``: serve a Bento of the champion built now by the current code (the service's
    code is the Bento's: a state deployed earlier serves the code of its day).
    """
    from mlops_assets.lib.pseudonyms import service_pseudonymizer
    from mlops_assets.lib.scoring import ScoringBundle, request_model

    bento_tag, model_tag, deploy_s = ensure_deployed(state)
    name, version = model_tag.split(":")
    bundle = ScoringBundle.load(state / "bentoml" / "models" / name / version)
    if rebuild:
        bento_tag, model_tag = rebuilt(state, bundle)
    fields = bundle.request_fields()
    model = request_model(fields)
    day, pool = load_requests(state, model)
    pseudonyms = service_pseudonymizer({settings.STATE_DIR_VAR: str(state)})
    sensitive = tuple(spec.name for spec in fields if spec.sensitive)
    found = Deployed(
        state, bento_tag, model_tag, deploy_s, bundle, model, day, pool, pseudonyms, sensitive
    )
    known = sum(1 for p in pool if found.as_scored(p)["tailnum"] in bundle.plane_lookup.position)
    print(
        f"{len(pool)} requests from {day}: {found.variety()} distinct values, "
        f"{known} with a known plane",
        flush=True,
    )
    return found


# -- the phases -------------------------------------------------------------------------------


def measure_in_process(target: Deployed, count: int) -> dict[str, Any]:
    """Timings of the scoring the service does, without the server."""
    from mlops_assets.lib.features import FLIGHT_INPUTS, WEATHER_FIELDS, derive_features
    from mlops_assets.lib.scoring import score

    bundle, pool = target.bundle, target.pool
    validated = [target.as_scored(p) for p in pool]
    features = [
        derive_features(
            {n: [r.get(n)] for n in FLIGHT_INPUTS},
            {n: [r.get(n)] for n in WEATHER_FIELDS},
            bundle.plane_lookup,
        )
        for r in validated
    ]
    batches = [validated[i : i + BATCH] for i in range(0, len(validated) - BATCH + 1, BATCH)]
    classifier = bundle.classifier
    window = CpuWindow()
    out = {
        "score_1": summary(timed_loop(lambda r: score(bundle, [r]), validated, count, WARMUP)),
        "model_call_1": summary(timed_loop(classifier.predict_columns, features, count, WARMUP)),
        "validate_score_1": summary(
            timed_loop(lambda p: score(bundle, [target.as_scored(p)]), pool, count, WARMUP)
        ),
        f"score_{BATCH}": summary(
            timed_loop(lambda b: score(bundle, b), batches, max(50, count // 20), 10)
        ),
    }
    out["cpu"] = window.stop()
    return out


def serve(
    target: Deployed, server_dir: Path, workers: str, args: argparse.Namespace, load: bool
) -> dict:
    """Starts the server with ``workers``, runs the HTTP phases (and the load), stops it."""
    server_dir.mkdir(parents=True, exist_ok=True)
    server = Server(
        target.bento_tag,
        target.home,
        server_dir / "bentoml-serve.log",
        {WORKERS_VARIABLE: workers},
        state=target.state,
    )
    print(f"bentoml serve {target.bento_tag}, workers {workers}, port {server.port} ...")
    out: dict[str, Any] = {"workers": workers}
    try:
        out["server_ready_s"] = server.wait_ready(STARTUP_TIMEOUT_S)
        out["worker_processes"] = len(server.processes()) - 1
        print(f"ready after {out['server_ready_s']:.1f} s; HTTP phases ...", flush=True)
        out["http"] = measure_http(
            server, target.bundle, target.as_scored, target.pool, args.requests
        )
        out["resident_mib"] = server.resident_mib()  # after the phases: warm, not loaded
        if load:
            print(f"{args.duration:g} s of mixed load ...", flush=True)
            out["load"] = measure_load(server, target.pool, args.duration)
        out["server_alive_after_load"] = server.process.poll() is None
        out["server_log_tail"] = server.log_tail(10)
    finally:
        out["server_stop"] = server.stop()
    if out["server_stop"]["killed_leftovers"]:
        print(f"warning: server processes left after SIGTERM, killed: {out['server_stop']}")
    return out


def measure_served(target: Deployed, server_dir: Path, args: argparse.Namespace) -> dict:
    """One server per worker setting, one after the other; the last one also takes the load.

    The last setting is the one reported as the service's (``http``, ``load``); every
    setting's HTTP phases are kept under ``by_workers`` for the side-by-side table.
    """
    runs = [
        serve(target, server_dir / f"workers-{w}", w, args, load=i == len(args.workers) - 1)
        for i, w in enumerate(args.workers)
    ]
    last = runs[-1]
    return {
        **{k: v for k, v in last.items() if k not in ("workers",)},
        "by_workers": {
            r["workers"]: {
                **r["http"],
                "processes": r["worker_processes"],
                "resident_mib": r["resident_mib"],
            }
            for r in runs
        },
    }


# -- the result -------------------------------------------------------------------------------


def comparisons(inproc: dict[str, Any], served: dict[str, Any]) -> dict[str, Any]:
    """Ratios HTTP / in-process, other processes' CPU per phase, and the budget verdicts."""
    c1, http_, load = served["http"]["c1"], served["http"], served["load"]
    throughput_ratio = http_["throughput_ratio"]
    return {
        "ratios": {
            "score_p50": c1["p50_ms"] / inproc["score_1"]["p50_ms"],
            "score_p99": c1["p99_ms"] / inproc["score_1"]["p99_ms"],
            "model_p50": c1["p50_ms"] / inproc["model_call_1"]["p50_ms"],
            "model_p99": c1["p99_ms"] / inproc["model_call_1"]["p99_ms"],
        },
        "other_processes_cores": {
            "in_process": inproc["cpu"]["other_cores"],
            "c1": c1["cpu"]["other_cores"],
            f"batch_{BATCH}": http_[f"batch_{BATCH}"]["cpu"]["other_cores"],
            f"c{CONCURRENCY}": http_[f"c{CONCURRENCY}"]["cpu"]["other_cores"],
            "load": load["cpu"]["other_cores"],
        },
        "throughput_c8_over_c1": {
            w: h["throughput_ratio"] for w, h in served["by_workers"].items()
        },
        "budgets": {
            "p99_c1_ms": BUDGET_P99_MS,
            "p99_c1": c1["p99_ms"] < BUDGET_P99_MS,
            "throughput_ratio": BUDGET_THROUGHPUT_RATIO,
            "throughput_c8_over_c1": throughput_ratio >= BUDGET_THROUGHPUT_RATIO,
            "batch_flights_per_s": BUDGET_BATCH_FLIGHTS_PER_S,
            "batch": http_[f"batch_{MAX_BATCH}"]["flights_per_s"] >= BUDGET_BATCH_FLIGHTS_PER_S,
            "load": load["budget_met"],
            "load_all_invalid_4xx": load["unexpected_status"] == 0,
        },
    }


def summarize(
    args: argparse.Namespace, target: Deployed, inproc: dict, served: dict
) -> dict[str, Any]:
    """The whole result, as written to the JSON file."""
    return {
        "machine": machine_info(__file__, "bentoml", "lightgbm", "pydantic"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "state": str(target.state) if args.state else "(temporary)",
        "deploy_s": target.deploy_s,
        "bento_tag": target.bento_tag,
        "model_tag": target.model_tag,
        "requests_day": target.day,
        "request_pool": len(target.pool),
        "request_variety": target.variety(),
        "requests": args.requests,
        "warmup": WARMUP,
        "in_process": inproc,
        **served,
        **comparisons(inproc, served),
    }


def _row(what: str, s: dict[str, float], extra: str = "") -> None:
    print(
        f"| {what} | {s['p50_ms']:.2f} | {s['p99_ms']:.2f} | {s['p999_ms']:.2f} "
        f"| {s['mean_ms']:.2f} | {s['max_ms']:.2f} | {s['over_50ms']} / {s['n']} | {extra} |"
    )


def report_latencies(result: dict[str, Any]) -> None:
    """The latency table and the ratio table."""
    inproc, http_ = result["in_process"], result["http"]
    c1, c8, batch = http_["c1"], http_[f"c{CONCURRENCY}"], http_[f"batch_{BATCH}"]
    print(f"\nserving latency, {result['requests']} requests per phase (ms)\n")
    print("| what | p50 | p99 | p99.9 | mean | max | > 50 ms | throughput |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    _row("HTTP `/predict`, concurrency 1", c1, f"{c1['throughput_rps']:.0f} req/s")
    _row(f"HTTP `/predict`, concurrency {CONCURRENCY}", c8, f"{c8['throughput_rps']:.0f} req/s")
    _row(
        f"HTTP `/predict_batch` ({BATCH} flights), c=1",
        batch,
        f"{batch['flights_per_s']:.0f} flights/s",
    )
    _row("in-process validation + `score`, 1 flight", inproc["validate_score_1"])
    _row("in-process `score(bundle, [request])`, 1 flight", inproc["score_1"])
    _row("in-process bare model `predict_columns`, 1 flight", inproc["model_call_1"])
    _row(f"in-process `score`, {BATCH} flights", inproc[f"score_{BATCH}"])
    r = result["ratios"]
    print("\n| ratio | p50 | p99 |\n|---|---:|---:|")
    print(f"| HTTP c=1 / in-process `score` | {r['score_p50']:.1f} | {r['score_p99']:.1f} |")
    print(f"| HTTP c=1 / bare model call | {r['model_p50']:.1f} | {r['model_p99']:.1f} |")


def report_workers(result: dict[str, Any]) -> None:
    """Single requests at concurrency 1 and 8 and the largest batches, by worker setting."""
    print(f"\nby worker setting ({WORKERS_VARIABLE}), {result['requests']} requests per phase\n")
    print(
        f"| workers | processes | c=1 p50 / p99 ms | c=1 req/s | c={CONCURRENCY} p50 / p99 ms "
        f"| c={CONCURRENCY} req/s | c={CONCURRENCY} / c=1, median (rounds) "
        f"| batch of {MAX_BATCH}: flights/s "
        f"| same, 2 clients | server CPU ms per request (c=1) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for workers, h in result["by_workers"].items():
        c1, c8 = h["c1"], h[f"c{CONCURRENCY}"]
        print(
            f"| {workers} | {h['processes']} | {c1['p50_ms']:.2f} / {c1['p99_ms']:.2f} "
            f"| {c1['throughput_rps']:.0f} | {c8['p50_ms']:.2f} / {c8['p99_ms']:.2f} "
            f"| {c8['throughput_rps']:.0f} | x{result['throughput_c8_over_c1'][workers]:.2f} "
            f"({min(h['throughput_ratio_rounds']):.2f}-{max(h['throughput_ratio_rounds']):.2f}) "
            f"| {h[f'batch_{MAX_BATCH}']['flights_per_s']:,.0f} "
            f"| {h[f'batch_{MAX_BATCH}_c2']['flights_per_s']:,.0f} "
            f"| {c1['server_cpu_ms_per_request']:.2f} |"
        )
    for workers, h in result["by_workers"].items():
        memory = ", ".join(f"{k} {v:.0f}" for k, v in h["resident_mib"].items())
        print(f"resident memory (MiB), workers {workers}: {memory}")


def report_cpu(result: dict[str, Any]) -> None:
    """Server CPU per request, and what other processes used in each phase."""
    http_ = result["http"]
    c1, c8, batch = http_["c1"], http_[f"c{CONCURRENCY}"], http_[f"batch_{BATCH}"]
    print(
        f"\nserver CPU per `/predict` at c=1: {c1['server_cpu_ms_per_request']:.2f} ms "
        f"(client {c1['client_cpu_ms_per_request']:.2f} ms); at c={CONCURRENCY}: "
        f"{c8['server_cpu_ms_per_request']:.2f} ms; per batch of {BATCH}: "
        f"{batch['server_cpu_ms_per_request']:.2f} ms"
    )
    supervisor = c1["cpu"]["server_supervisor_cpu_s"] / result["requests"] * 1000
    print(f"  of which the supervisor process (`bentoml serve`) at c=1: {supervisor:.2f} ms")
    phases = {
        "in-process": result["in_process"]["cpu"],
        "c=1": c1["cpu"],
        "batch": batch["cpu"],
        f"c={CONCURRENCY}": c8["cpu"],
        "load": result["load"]["cpu"],
    }
    busy = ", ".join(f"{k} {v['other_cores']:.2f}" for k, v in phases.items())
    print(f"other processes on the machine (average cores busy, of {os.cpu_count()}): {busy}")
    shares = ", ".join(f"{x:.0%}" for x in http_[f"busiest_worker_share_c{CONCURRENCY}"])
    sent = "; ".join(
        " ".join(str(n) for n in sorted(block, reverse=True))
        for block in http_[f"per_connection_c{CONCURRENCY}"]
    )
    per_call = ", ".join(f"{x:.2f}" for x in http_[f"flights_per_call_c{CONCURRENCY}"])
    print(
        f"c={CONCURRENCY} blocks: the busiest worker's share of the workers' CPU {shares}; "
        f"requests per connection {sent}; requests per scoring call {per_call}"
    )


def report_load(result: dict[str, Any]) -> None:
    """The mixed load's answers, and the budget verdicts."""
    load, cls = result["load"], result["load"]["by_class"]
    print(
        f"\nload, {load['duration_s']:.0f} s, {load['threads']} threads: {load['requests']} "
        f"requests ({load['throughput_rps']:.0f}/s), 2xx {cls['2xx']}, 4xx {cls['4xx']}, "
        f"5xx {cls['5xx']}, connection errors {cls['connection_error']}, unexpected status "
        f"{load['unexpected_status']}"
    )
    if load["single_latency"]:
        s = load["single_latency"]
        print(f"  single requests under load: p50 {s['p50_ms']:.2f} ms, p99 {s['p99_ms']:.2f} ms")
    invalid = ", ".join(f"{k} ({v})" for k, v in load["invalid_answers"].items())
    print(f"  invalid requests: {invalid}")
    for example in load["unexpected_examples"] + load["connection_error_examples"]:
        print(f"  ! {example}")
    b, p99 = result["budgets"], result["http"]["c1"]["p99_ms"]
    print(
        f"\nbudget p99 /predict c=1 < {BUDGET_P99_MS:g} ms: {p99:.2f} ms -> "
        f"{'MET' if b['p99_c1'] else 'MISSED'}"
    )
    print(
        f"budget zero 5xx and zero connection errors in {load['duration_s']:.0f} s: "
        f"{'MET' if b['load'] else 'MISSED'}"
    )
    rounds = ", ".join(f"{r:.2f}" for r in result["http"]["throughput_ratio_rounds"])
    print(
        f"budget throughput c={CONCURRENCY} >= {BUDGET_THROUGHPUT_RATIO:g} x c=1: median "
        f"x{result['http']['throughput_ratio']:.2f} of rounds ({rounds}) "
        f"-> {'MET' if b['throughput_c8_over_c1'] else 'MISSED'}"
    )
    flights = result["http"][f"batch_{MAX_BATCH}"]["flights_per_s"]
    print(
        f"budget /predict_batch of {MAX_BATCH} >= {BUDGET_BATCH_FLIGHTS_PER_S:,.0f} flights/s: "
        f"{flights:,.0f} -> {'MET' if b['batch'] else 'MISSED'}"
    )


def run(args: argparse.Namespace, tmp: Path, state: Path) -> int:
    """Setup, in-process scoring, the served phases, the result file and the report."""
    target = deployed(state, args.rebuild)
    # The client's start-up objects (libraries, the request pool) leave the cyclic GC's view:
    # otherwise its full collections (~0.1-0.2 s with these imports) land in the timings.
    gc.collect()
    gc.freeze()
    mark_start()
    print("in-process scoring ...", flush=True)
    inproc = measure_in_process(target, args.requests)
    served = measure_served(target, tmp / "server", args)
    result = summarize(args, target, inproc, served)
    write_result(args.out, result)
    report_latencies(result)
    report_workers(result)
    report_cpu(result)
    report_load(result)
    print(f"written {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add_state_arguments(parser)
    parser.add_argument("--requests", type=int, default=2000, help="timed requests per phase")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of mixed load")
    parser.add_argument("--out", type=Path, default=RESULTS / "serving.json")
    parser.add_argument(
        "--rebuild",
        action="store_true",
        help="with --state: serve a Bento built now by the current code, not the state's",
    )
    parser.add_argument(
        "--workers",
        type=lambda text: [w.strip() for w in text.split(",") if w.strip()],
        default=["1", DEFAULT_WORKERS],
        help=f"worker settings ({WORKERS_VARIABLE}) served one after the other, comma "
        f"separated; the last takes the load (default: 1,{DEFAULT_WORKERS})",
    )
    args = parser.parse_args(argv)
    if args.requests < 100 or args.duration <= 0:
        parser.error("need --requests >= 100 and --duration > 0")
    warnings.simplefilter("ignore")

    return run_on_state("mlops-bench-serving-", args, lambda tmp, state: run(args, tmp, state))


if __name__ == "__main__":
    sys.exit(main())
