"""What shadow mode costs the caller: ``/predict`` latency, champion only vs champion + shadow.

Three real ``bentoml serve`` run side by side on loopback, each with a private BentoML home on
the same store, serving two Bentos built from the deployed champion's bundle by the current
code: the champion alone (mode ``off``) and the champion with a challenger of the same size
(``lib.modeling.fit`` on the state's three weeks of features), served with
``MLOPS_SERVING_MODE=shadow``, and as a control the same two-model Bento with mode ``off``
(the spread between two servers doing the same work). Each writes the prediction log to a
temporary folder. ``/predict`` at concurrency 1, one keep-alive connection per server, in
rotating blocks (A B C, B C A, ...) so all see the same machine; every answer must be 200 and
the shadow server's answer must equal the champion-only one. Budget: shadow p50 at most
1.10 x the champion-only p50. docs/benchmarks.md, section 4b, has the method and the latest
result.

Usage::

    uv run python -m benchmarks.serving_shadow [--state DIR] [--requests 3000] [--block 250]
        [--keep] [--out PATH]
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import warnings
from dataclasses import replace
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
from benchmarks.serving_http import WARMUP, Client, CpuWindow, Server, summary

BUDGET_P50_RATIO = 1.10


def train_challenger(target: Deployed) -> Any:
    """The champion's bundle with a challenger classifier of the same size (other features'
    window split), version ``shadow``."""
    import pandas as pd

    from mlops_assets.lib import estimator
    from mlops_assets.lib.modeling import SPLIT_COLUMN, fit
    from mlops_assets_tests.deployed import AS_OF, TRAIN_DAYS, TRAIN_START

    lake = target.state / "lake" / "flight_features"
    days = pd.date_range(TRAIN_START, periods=TRAIN_DAYS).strftime("%Y-%m-%d")
    data = pd.concat([pd.read_parquet(lake / f"{d}.parquet") for d in days], ignore_index=True)
    data = data[data["is_delayed"].notna()].reset_index(drop=True)
    start = (pd.Timestamp(AS_OF) - pd.Timedelta(days=6)).strftime("%Y-%m-%d")
    data[SPLIT_COLUMN] = (data["flight_date"] >= start).map({True: "validation", False: "train"})
    classifier, _ = fit(data, estimator.HyperParameters(n_estimators=60, num_leaves=15))
    identity = {**target.bundle.model, "model_version": "shadow"}
    return replace(target.bundle, classifier=classifier, model=identity)


def bentos(target: Deployed) -> dict[str, str]:
    """Tags of two Bentos built now from the champion's bundle, by the current code: the
    champion alone, and the champion with the challenger.

    Built once per state and remembered in the state (``--state`` reuses them).
    """
    from mlops_assets.resources.bentos import local_bentos

    marker = target.state / "bench-shadow-bentos.json"
    if marker.exists():
        return dict(json.loads(marker.read_text()))
    store = local_bentos(target.state)
    labels = {k: str(v) for k, v in target.bundle.model.items()}
    alone = store.build(target.bundle, labels)
    trial = store.build(
        target.bundle, labels, challenger=train_challenger(target), trial={"mode": "shadow"}
    )
    tags = {"champion_only": str(alone["bento_tag"]), "shadow": str(trial["bento_tag"])}
    marker.write_text(json.dumps(tags))
    return tags


def private_home(store: Path, root: Path) -> Path:
    """A BentoML home linking the store's bentos and models (``/metrics`` kept apart)."""
    home = root / "bentoml_home"
    home.mkdir(parents=True, exist_ok=True)
    for name in ("bentos", "models"):
        (home / name).symlink_to(store / name, target_is_directory=True)
    return home


def measure(target: Deployed, tmp: Path, count: int, block: int) -> dict[str, Any]:
    """Both servers up, warmed, then alternating timed blocks of ``block`` requests each."""
    tags = bentos(target)
    configs = {
        "champion_only": (tags["champion_only"], {"MLOPS_SERVING_MODE": "off"}),
        "shadow": (tags["shadow"], {"MLOPS_SERVING_MODE": "shadow"}),
        # The shadow Bento with its challenger idle: what server-to-server spread looks like.
        "trial_bento_off": (tags["shadow"], {"MLOPS_SERVING_MODE": "off"}),
    }
    servers: dict[str, Server] = {}
    clients: dict[str, Client] = {}
    out: dict[str, Any] = {"bentos": {name: tag for name, (tag, _) in configs.items()}}
    singles = [json.dumps(r).encode() for r in target.pool]
    try:
        for name, (tag, env) in configs.items():
            root = tmp / name
            root.mkdir(parents=True)
            home = private_home(target.home, root)
            servers[name] = Server(tag, home, root / "serve.log", env, state=target.state)
        for name, server in servers.items():
            out[f"{name}_ready_s"] = server.wait_ready(STARTUP_TIMEOUT_S)
            clients[name] = Client(server.port)
            for i in range(WARMUP):
                clients[name].post_ok("/predict", singles[i % len(singles)])
        for i in range(50):  # the shadow answers are the champion's
            a = json.loads(clients["champion_only"].post_ok("/predict", singles[i])[1])
            b = json.loads(clients["shadow"].post_ok("/predict", singles[i])[1])
            if a != b:
                raise BenchError(f"shadow answered {b}, champion only {a}")
        latencies: dict[str, list[float]] = {name: [] for name in configs}
        cpu: dict[str, list[dict[str, float]]] = {name: [] for name in configs}
        order = list(configs)
        offset = WARMUP
        for round_ in range(max(1, count // block)):
            shift = round_ % len(order)  # each server leads in turn
            for name in order[shift:] + order[:shift]:
                window = CpuWindow(servers[name])
                for j in range(block):
                    body = singles[(offset + j) % len(singles)]
                    latencies[name].append(clients[name].post_ok("/predict", body)[0])
                cpu[name].append(window.stop())
            offset += block
        for name in configs:
            server_cpu = sum(c["server_cpu_s"] for c in cpu[name])
            out[name] = {
                **summary(latencies[name]),
                "server_cpu_ms_per_request": server_cpu / len(latencies[name]) * 1000,
                "other_cores_max": max(c["other_cores"] for c in cpu[name]),
            }
        for name, server in servers.items():
            out[f"{name}_metrics"] = [
                line
                for line in _metrics(server).splitlines()
                if line.startswith(("flight_delay_predictions_total", "flight_delay_shadow"))
            ]
    finally:
        for client in clients.values():
            client.close()
        for server in servers.values():
            server.stop()
    base, shadow = out["champion_only"], out["shadow"]
    out["p50_ratio"] = shadow["p50_ms"] / base["p50_ms"]
    out["p99_ratio"] = shadow["p99_ms"] / base["p99_ms"]
    out["control_p50_ratio"] = out["trial_bento_off"]["p50_ms"] / base["p50_ms"]
    out["budget_p50_ratio"] = BUDGET_P50_RATIO
    out["budget_met"] = out["p50_ratio"] <= BUDGET_P50_RATIO
    return out


def _metrics(server: Server) -> str:
    client = Client(server.port)
    try:
        status, body = client.request("GET", "/metrics")
        return body.decode() if status == 200 else ""
    finally:
        client.close()


def run(args: argparse.Namespace, tmp: Path, state: Path) -> int:
    target = deployed(state)
    gc.collect()
    gc.freeze()  # the client's start-up objects out of the timings (as benchmarks.serving)
    mark_start()
    result = measure(target, tmp / "servers", args.requests, args.block)
    result["machine"] = machine_info(__file__, "bentoml")
    result["requests_per_config"] = result["champion_only"]["n"]
    write_result(args.out, result)
    print(f"{'':16}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'server CPU ms/req':>19}")
    for name in ("champion_only", "shadow", "trial_bento_off"):
        s = result[name]
        print(
            f"{name:16}{s['p50_ms']:9.2f}{s['p90_ms']:9.2f}{s['p99_ms']:9.2f}"
            f"{s['server_cpu_ms_per_request']:19.2f}"
        )
    verdict = "met" if result["budget_met"] else "MISSED"
    print(
        f"shadow / champion only: p50 x{result['p50_ratio']:.3f}, p99 x{result['p99_ratio']:.3f}"
        f" (budget p50 <= x{BUDGET_P50_RATIO:.2f}: {verdict}); control (trial Bento, mode off)"
        f" p50 x{result['control_p50_ratio']:.3f}"
    )
    print(f"written {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add_state_arguments(parser)
    parser.add_argument("--requests", type=int, default=3000, help="timed requests per server")
    parser.add_argument("--block", type=int, default=250, help="requests per alternating block")
    parser.add_argument("--out", type=Path, default=RESULTS / "serving_shadow.json")
    args = parser.parse_args(argv)
    if args.requests < args.block or args.block < 10:
        parser.error("need --block >= 10 and --requests >= --block")
    warnings.simplefilter("ignore")
    return run_on_state("mlops-bench-shadow-", args, lambda tmp, state: run(args, tmp, state))


if __name__ == "__main__":
    sys.exit(main())
