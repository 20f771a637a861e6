"""Serving latency of the flight-delay service: a real ``bentoml serve`` against in-process scoring.

Setup (not timed): a deployed state folder. Without ``--state`` a temporary one is built with
``mlops_assets_tests.deployed.deploy`` in a child process (replay of 21 days, a trained and
promoted champion, the ``bento`` asset building the real Bento into ``<state>/bentoml``; about
1.5-2 minutes). ``--state DIR`` uses an existing state folder (deployed first if it has no
Bento yet). The latest Bento of ``flight_delay_service`` in ``<state>/bentoml`` is served,
with the model it was built with.

Requests are real flights: every flight of the last landed day of the state (2013-01-22 for a
``deploy``ed state, the day after the training window) joined with the weather of its origin
at its departure hour, each validated by the service's own request model (generated from the
landing contracts), shuffled with a fixed seed. The benchmark cycles through them, so carriers,
routes, tail numbers (known and unknown planes) and hours vary as in real traffic.

Measured:

* in-process (this process, no server running yet): ``ScoringBundle.load`` of the model
  folder in the BentoML store, then per request ``score(bundle, [request])`` (features +
  model: the whole scoring the service does); the bare model call
  ``bundle.classifier.predict_columns(features)`` on precomputed features; request validation
  + ``score`` (what the service does after JSON parsing); ``score`` of 100 flights. Before
  measuring, this process freezes its start-up objects (``gc.freeze()``), so its own full
  garbage collections (0.1-0.2 s with these libraries loaded) stay out of all timings.
* ``bentoml serve <tag> --host 127.0.0.1 --port <free port>`` (``BENTOML_HOME`` of the state,
  no API key, BentoML defaults: one worker, access log on), in a session of its own, ready when
  ``GET /readyz`` answers 200, stopped by SIGTERM to the supervisor (which stops its worker;
  the worker runs in yet another session, so it is tracked by parentage, and anything left is
  killed). Keep-alive ``http.client`` connections, one per client thread (this process is the
  client, on the same machine as the server):
  - ``POST /predict``, concurrency 1: warm-up, then ``--requests`` timed requests; the server
    CPU time (supervisor + worker, from ``/proc``) per request;
  - ``POST /predict``, concurrency 8 (8 threads, ``--requests`` in all): latency and
    throughput;
  - ``POST /predict_batch`` with 100 flights, concurrency 1: latency and flights/s;
  - a ``--duration`` second load: 8 threads, mixed single (85 %), batch of 1-100 flights
    (10 %) and invalid requests (5 %: unknown carrier, leaked field, missing field,
    impossible date, wrong type, NaN, malformed JSON, empty batch, oversized batch, wrong
    method, unknown path), responses counted by status class.
  Every measured answer must be 200 (the benchmark stops otherwise), and the first answers are
  checked against the in-process probabilities (same model, same number).

Each phase also records the CPU other processes used meanwhile (``/proc/stat`` minus server and
client): ``other_cores`` near 0 means the machine was otherwise idle.

Budgets: p99 of ``/predict`` at concurrency 1 under 10 ms; zero 5xx and zero connection errors
in the load (and every invalid request answered 4xx). A measurement, not a test: the exit code
is non-zero only when the benchmark cannot measure (setup, server start, a non-200 answer in
the timed phases).

Usage::

    uv run python benchmarks/serving.py [--state DIR] [--requests 2000] [--duration 30]
        [--keep] [--out PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import gc
import http.client
import json
import math
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _machine import machine_info, mark_start

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))  # mlops_assets_tests (the deploy helper, process helpers)

from mlops_assets_tests.e2e.processes import (  # noqa: E402
    HOST,
    default_signals,
    free_port,
    live_group_members,
    stop_process_group,
)

BUDGET_P99_MS = 10.0
SERVICE = "flight_delay_service"
MODEL = "flight_delay"
CONCURRENCY = 8
BATCH = 100
WARMUP = 200
STARTUP_TIMEOUT_S = 120.0
STOP_GRACE_S = 20.0
REQUEST_TIMEOUT_S = 30.0
SINGLE_SHARE, BATCH_SHARE = 0.85, 0.10  # the rest of the load is invalid requests

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


class BenchError(RuntimeError):
    """The benchmark could not measure what it claims to measure."""


# -- statistics -------------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def summary(seconds: list[float]) -> dict[str, float]:
    """Percentiles, max and mean in milliseconds, and how many samples took over 50 ms."""
    ms = [s * 1000 for s in seconds]
    return {
        "n": len(ms),
        "p50_ms": percentile(ms, 50),
        "p90_ms": percentile(ms, 90),
        "p99_ms": percentile(ms, 99),
        "p999_ms": percentile(ms, 99.9),
        "max_ms": max(ms),
        "over_50ms": sum(1 for m in ms if m > 50),
        "mean_ms": statistics.fmean(ms),
    }


def timed_loop(
    call: Callable[[Any], Any], items: list[Any], count: int, warmup: int
) -> list[float]:
    """Calls ``call`` on items cycled ``warmup`` times untimed, then ``count`` times timed."""
    for i in range(warmup):
        call(items[i % len(items)])
    out = []
    for i in range(count):
        item = items[(warmup + i) % len(items)]
        start = time.perf_counter()
        call(item)
        out.append(time.perf_counter() - start)
    return out


def machine_busy_seconds() -> float:
    """CPU seconds all processes of the machine have used (``/proc/stat``, all cores)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class CpuWindow:
    """CPU used during a phase by the server, this process (the client) and everything else.

    ``other_cores`` is the average number of cores other processes kept busy: 0 on a quiet
    machine; anything near 1 on this 2-core machine means the measurement shared the cores.
    """

    def __init__(self, server: Server | None = None) -> None:
        self.server = server
        self.start = self._now()

    def _now(self) -> tuple[float, ...]:
        supervisor, worker = self.server.cpu_seconds() if self.server else (0.0, 0.0)
        return time.perf_counter(), machine_busy_seconds(), time.process_time(), supervisor, worker

    def stop(self) -> dict[str, float]:
        """Seconds of wall, server, client and other CPU since the start."""
        end = self._now()
        wall, busy, client, supervisor, worker = (
            b - a for a, b in zip(self.start, end, strict=True)
        )
        other = max(0.0, busy - client - supervisor - worker)
        return {
            "wall_s": wall,
            "server_cpu_s": supervisor + worker,
            "server_supervisor_cpu_s": supervisor,
            "server_worker_cpu_s": worker,
            "client_cpu_s": client,
            "other_cpu_s": other,
            "other_cores": other / wall,
        }


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
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "MLOPS_ENV")}
    env.update({"MLOPS_STATE_DIR": str(state), "DAGSTER_DISABLE_TELEMETRY": "true"})
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _DEPLOY, str(state)],
        cwd=ROOT,
        env=env,
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


def load_requests(state: Path, model: Any) -> tuple[str, list[dict[str, Any]]]:
    """Valid requests: the last landed day's flights with their weather (validated)."""
    from mlops_assets.lib.features import WEATHER_FIELDS
    from mlops_assets.lib.scoring import REQUEST_FLIGHT_FIELDS

    days = sorted((state / "landing" / "flights").glob("*.csv"))
    if not days:
        raise BenchError(f"no landed flights in {state / 'landing'}")
    day = days[-1].stem
    weather: dict[tuple[str, str], dict[str, str]] = {}
    with (state / "landing" / "weather" / f"{day}.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            weather[(row["origin"], row["time_hour"])] = row

    def value(text: str | None) -> str | None:
        return None if text in (None, "", "NA") else text

    pool = []
    with days[-1].open(newline="") as f:
        for row in csv.DictReader(f):
            raw = {name: value(row[name]) for name in REQUEST_FLIGHT_FIELDS}
            observed = weather.get((row["origin"], row["time_hour"]), {})
            raw.update({name: value(observed.get(name)) for name in WEATHER_FIELDS})
            try:
                pool.append(json.loads(model.model_validate(raw).model_dump_json()))
            except ValueError:
                continue  # not a valid request (none expected: landed data passed contracts)
    if len(pool) < 2 * BATCH:
        raise BenchError(f"only {len(pool)} valid requests from {day}")
    random.Random(0).shuffle(pool)
    return day, pool


# -- in-process scoring -----------------------------------------------------------------------


def measure_in_process(
    bundle: Any, model: Any, pool: list[dict[str, Any]], count: int
) -> dict[str, Any]:
    """Timings of the scoring the service does, without the server."""
    from mlops_assets.lib.features import FLIGHT_INPUTS, WEATHER_FIELDS, derive_features
    from mlops_assets.lib.scoring import score

    validated = [model.model_validate(p).model_dump() for p in pool]
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
            timed_loop(
                lambda p: score(bundle, [model.model_validate(p).model_dump()]),
                pool,
                count,
                WARMUP,
            )
        ),
        f"score_{BATCH}": summary(
            timed_loop(lambda b: score(bundle, b), batches, max(50, count // 20), 10)
        ),
    }
    out["cpu"] = window.stop()
    return out


# -- the server -------------------------------------------------------------------------------


class Client:
    """One keep-alive HTTP/1.1 connection to the server (one per thread)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection(HOST, port, timeout=REQUEST_TIMEOUT_S)
        self.connects = 0  # TCP connections opened (keep-alive: one per client)

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        """Sends one request; returns status and body (raises on connection errors)."""
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if self.conn.sock is None:
            self.connects += 1
        try:
            self.conn.request(method, path, body=body, headers=headers)
            response = self.conn.getresponse()
            return response.status, response.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()  # the next request reconnects
            raise

    def post_ok(self, path: str, body: bytes) -> tuple[float, bytes]:
        """POSTs and returns (seconds, body); anything but 200 stops the benchmark."""
        start = time.perf_counter()
        status, payload = self.request("POST", path, body)
        took = time.perf_counter() - start
        if status != 200:
            raise BenchError(f"POST {path} answered {status}: {payload[:300]!r}")
        return took, payload

    def close(self) -> None:
        """Closes the connection."""
        self.conn.close()


class Server:
    """``bentoml serve <tag>`` on loopback, in its own process group."""

    def __init__(self, tag: str, home: Path, log_path: Path) -> None:
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if k not in ("MLOPS_API_KEY", "MLOPS_ENV")}
        env.update({"BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"})
        self.log_path = log_path
        self.log = log_path.open("wb")
        command = [sys.executable, "-m", "bentoml", "serve", tag]
        command += ["--host", HOST, "--port", str(self.port)]
        self.process = subprocess.Popen(
            command,
            cwd=log_path.parent,  # not the project: the Bento's own source is served
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=default_signals,
        )
        self.pgid = self.process.pid

    def log_tail(self, lines: int = 30) -> str:
        """The end of the server's output."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as error:
            return f"(no server log: {error})"
        return "\n".join(text.splitlines()[-lines:])

    def wait_ready(self, timeout: float) -> float:
        """Seconds until ``GET /readyz`` answered 200."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.process.poll() is not None:
                raise BenchError(
                    f"bentoml serve exited ({self.process.returncode}):\n{self.log_tail()}"
                )
            conn = http.client.HTTPConnection(HOST, self.port, timeout=5)
            try:
                conn.request("GET", "/readyz")
                if conn.getresponse().status == 200:
                    return time.monotonic() - start
            except (OSError, http.client.HTTPException):
                pass
            finally:
                conn.close()
            time.sleep(0.25)
        raise BenchError(f"/readyz not 200 after {timeout:.0f} s:\n{self.log_tail()}")

    def processes(self) -> list[int]:
        """The server and its live descendants.

        BentoML's supervisor starts the service worker in a session (and process group) of
        its own, so the worker is found by parentage, not by the process group.
        """
        stats = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    fields = (entry / "stat").read_text().rsplit(")", 1)[-1].split()
                except OSError:
                    continue
                stats[int(entry.name)] = fields  # fields[0] state, [1] ppid, [11:13] CPU
        found, frontier = [], [self.process.pid]
        while frontier:
            pid = frontier.pop()
            if pid in stats and stats[pid][0] not in ("Z", "X"):
                found.append(pid)
                frontier += [child for child, f in stats.items() if int(f[1]) == pid]
        return found

    def cpu_seconds(self) -> tuple[float, float]:
        """User + system CPU seconds of the supervisor and of its descendants (``/proc``)."""
        supervisor = workers = 0
        for pid in self.processes():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
            except OSError:
                continue
            ticks = int(fields[11]) + int(fields[12])  # utime, stime
            if pid == self.process.pid:
                supervisor += ticks
            else:
                workers += ticks
        hz = os.sysconf("SC_CLK_TCK")
        return supervisor / hz, workers / hz

    def stop(self) -> dict[str, Any]:
        """Stops the server (SIGTERM to the supervisor stops its worker); no leftovers."""
        workers = [pid for pid in self.processes() if pid != self.process.pid]
        escalations = stop_process_group(self.process, STOP_GRACE_S)
        self.log.close()
        left = [pid for pid in workers if _alive(pid)]
        left += live_group_members(self.pgid)
        for pid in left:  # only processes this benchmark started
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return {"workers": workers, "escalations": escalations, "killed_leftovers": left}


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def run_threads(count: int, work: Callable[[int], Any]) -> tuple[float, list[Any]]:
    """Runs ``work(i)`` in ``count`` threads started together; (wall seconds, results)."""
    results: list[Any] = [None] * count
    errors: list[BaseException] = []
    barrier = threading.Barrier(count + 1)

    def target(i: int) -> None:
        barrier.wait()
        try:
            results[i] = work(i)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=target, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    if errors:
        raise BenchError(f"a client thread failed: {errors[0]!r}") from errors[0]
    return wall, results


def check_answers(client: Client, bundle: Any, model: Any, pool: list[dict[str, Any]]) -> int:
    """Server and in-process probabilities agree on the first requests; returns the count."""
    from mlops_assets.lib.scoring import score

    checked = pool[:50]
    for request in checked:
        _, body = client.post_ok("/predict", json.dumps(request).encode())
        served = json.loads(body)["probability"]
        local = score(bundle, [model.model_validate(request).model_dump()])[0]["probability"]
        if abs(served - local) > 1e-12:
            raise BenchError(f"served {served} != in-process {local} for {request}")
    return len(checked)


def measure_http(
    server: Server, bundle: Any, model: Any, pool: list[dict[str, Any]], count: int
) -> dict[str, Any]:
    """Single requests at concurrency 1 and 8, and batches of 100 at concurrency 1."""
    singles = [json.dumps(r).encode() for r in pool]
    batches = [
        json.dumps({"flights": pool[i : i + BATCH]}).encode()
        for i in range(0, len(pool) - BATCH + 1, BATCH)
    ]
    out: dict[str, Any] = {}
    client = Client(server.port)
    try:
        out["answers_checked"] = check_answers(client, bundle, model, pool)
        for i in range(WARMUP):
            client.post_ok("/predict", singles[i % len(singles)])
        window = CpuWindow(server)
        latencies = [
            client.post_ok("/predict", singles[(WARMUP + i) % len(singles)])[0]
            for i in range(count)
        ]
        cpu = window.stop()
        out["c1"] = {
            **summary(latencies),
            "throughput_rps": count / cpu["wall_s"],
            "server_cpu_ms_per_request": cpu["server_cpu_s"] / count * 1000,
            "client_cpu_ms_per_request": cpu["client_cpu_s"] / count * 1000,
            "cpu": cpu,
        }

        for i in range(10):
            client.post_ok("/predict_batch", batches[i % len(batches)])
        batch_count = max(50, count // 20)
        window = CpuWindow(server)
        latencies = [
            client.post_ok("/predict_batch", batches[i % len(batches)])[0]
            for i in range(batch_count)
        ]
        cpu = window.stop()
        out[f"batch_{BATCH}"] = {
            **summary(latencies),
            "flights_per_s": batch_count * BATCH / cpu["wall_s"],
            "server_cpu_ms_per_request": cpu["server_cpu_s"] / batch_count * 1000,
            "cpu": cpu,
        }
    finally:
        client.close()
    out["connections_opened_c1"] = client.connects

    clients = [Client(server.port) for _ in range(CONCURRENCY)]
    per_thread = math.ceil(count / CONCURRENCY)

    def burst(i: int) -> list[float]:
        for j in range(20):  # warm the connection
            clients[i].post_ok("/predict", singles[(i * 97 + j) % len(singles)])
        offset = WARMUP + i * per_thread
        return [
            clients[i].post_ok("/predict", singles[(offset + j) % len(singles)])[0]
            for j in range(per_thread)
        ]

    try:
        window = CpuWindow(server)
        wall, results = run_threads(CONCURRENCY, burst)
        cpu = window.stop()
    finally:
        for c in clients:
            c.close()
    out[f"connections_opened_c{CONCURRENCY}"] = sum(c.connects for c in clients)
    latencies = [s for r in results for s in r]
    # The wall time includes each thread's 20 warm-up requests: count them in the throughput.
    done = len(latencies) + 20 * CONCURRENCY
    out[f"c{CONCURRENCY}"] = {
        **summary(latencies),
        "throughput_rps": done / wall,
        "server_cpu_ms_per_request": cpu["server_cpu_s"] / done * 1000,
        "cpu": cpu,
    }
    return out


# -- the mixed load ---------------------------------------------------------------------------


def invalid_requests(pool: list[dict[str, Any]]) -> list[tuple[str, str, str, bytes | None]]:
    """(name, method, path, body) of requests the service must refuse with a 4xx."""
    base = pool[0]

    def changed(**fields: Any) -> bytes:
        return json.dumps({**base, **fields}).encode()

    missing = {k: v for k, v in base.items() if k != "carrier"}
    nan = json.dumps({**base, "temp": 1.5}).replace('"temp": 1.5', '"temp": NaN')
    oversized = json.dumps({"flights": [pool[i % len(pool)] for i in range(1001)]}).encode()
    return [
        ("unknown carrier", "POST", "/predict", changed(carrier="ZZ")),
        ("leaked field dep_delay", "POST", "/predict", changed(dep_delay=5)),
        ("missing carrier", "POST", "/predict", json.dumps(missing).encode()),
        ("impossible date", "POST", "/predict", changed(month=2, day=30)),
        ("wrong type", "POST", "/predict", changed(year="next year")),
        ("NaN temperature", "POST", "/predict", nan.encode()),
        ("malformed JSON", "POST", "/predict", b'{"year": 2013, "carrier": '),
        ("empty batch", "POST", "/predict_batch", b'{"flights": []}'),
        ("batch of 1001", "POST", "/predict_batch", oversized),
        ("GET /predict", "GET", "/predict", None),
        ("unknown path", "POST", "/predikt", changed()),
    ]


def measure_load(server: Server, pool: list[dict[str, Any]], duration: float) -> dict[str, Any]:
    """``duration`` seconds of mixed traffic from 8 threads, answers counted by status class."""
    singles = [json.dumps(r).encode() for r in pool]
    invalid = invalid_requests(pool)
    deadline = time.perf_counter() + duration

    def client_loop(i: int) -> dict[str, Any]:
        rng = random.Random(1000 + i)
        client = Client(server.port)
        counts: Counter[str] = Counter()
        wrong: list[str] = []
        single_latencies: list[float] = []
        errors: list[str] = []
        n = 0
        try:
            while time.perf_counter() < deadline:
                draw = rng.random()
                if draw < SINGLE_SHARE:
                    kind, name = "single", "single"
                    method, path, body = "POST", "/predict", singles[rng.randrange(len(singles))]
                elif draw < SINGLE_SHARE + BATCH_SHARE:
                    kind, name = "batch", "batch"
                    size = rng.randint(1, BATCH)
                    first = rng.randrange(len(pool) - size)
                    method, path = "POST", "/predict_batch"
                    body = json.dumps({"flights": pool[first : first + size]}).encode()
                else:
                    kind = "invalid"
                    name, method, path, body = invalid[n % len(invalid)]
                    n += 1
                start = time.perf_counter()
                try:
                    status, payload = client.request(method, path, body)
                except (OSError, http.client.HTTPException) as error:
                    counts["connection_error"] += 1
                    errors.append(f"{name}: {error!r}")
                    continue
                took = time.perf_counter() - start
                counts[f"{status // 100}xx"] += 1
                counts[f"{kind}_{status // 100}xx"] += 1
                if kind == "single" and status == 200:
                    single_latencies.append(took)
                expected = 4 if kind == "invalid" else 2
                if status // 100 != expected:
                    wrong.append(f"{name} -> {status}: {payload[:200]!r}")
                if kind == "invalid":
                    counts[f"invalid {name} -> {status}"] += 1
        finally:
            client.close()
        return {"counts": counts, "wrong": wrong, "latencies": single_latencies, "errors": errors}

    window = CpuWindow(server)
    wall, results = run_threads(CONCURRENCY, client_loop)
    cpu = window.stop()
    counts: Counter[str] = Counter()
    for r in results:
        counts.update(r["counts"])
    total = sum(counts[c] for c in ("1xx", "2xx", "3xx", "4xx", "5xx", "connection_error"))
    wrong = [w for r in results for w in r["wrong"]]
    errors = [e for r in results for e in r["errors"]]
    latencies = [s for r in results for s in r["latencies"]]
    by_class = {c: counts[c] for c in ("2xx", "3xx", "4xx", "5xx", "connection_error")}
    return {
        "duration_s": wall,
        "threads": CONCURRENCY,
        "requests": total,
        "throughput_rps": total / wall,
        "cpu": cpu,
        "by_class": by_class,
        "by_kind": {k: v for k, v in sorted(counts.items()) if k.startswith(("single_", "batch_"))},
        "invalid_answers": {
            k.removeprefix("invalid "): v for k, v in sorted(counts.items()) if " -> " in k
        },
        "unexpected_status": len(wrong),
        "unexpected_examples": wrong[:10],
        "connection_error_examples": errors[:10],
        "single_latency": summary(latencies) if latencies else {},
        "budget_met": by_class["5xx"] == 0 and by_class["connection_error"] == 0,
    }


# -- report -----------------------------------------------------------------------------------


def report(result: dict[str, Any]) -> None:
    """Prints the results as Markdown tables."""
    inproc, http_, load = result["in_process"], result["http"], result["load"]
    c1, c8, batch = http_["c1"], http_[f"c{CONCURRENCY}"], http_[f"batch_{BATCH}"]

    def row(what: str, s: dict[str, float], extra: str = "") -> None:
        print(
            f"| {what} | {s['p50_ms']:.2f} | {s['p99_ms']:.2f} | {s['p999_ms']:.2f} "
            f"| {s['mean_ms']:.2f} | {s['max_ms']:.2f} | {s['over_50ms']} / {s['n']} | {extra} |"
        )

    print(f"\nserving latency, {result['requests']} requests per phase (ms)\n")
    print("| what | p50 | p99 | p99.9 | mean | max | > 50 ms | throughput |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    row("HTTP `/predict`, concurrency 1", c1, f"{c1['throughput_rps']:.0f} req/s")
    row(
        f"HTTP `/predict`, concurrency {CONCURRENCY}",
        c8,
        f"{c8['throughput_rps']:.0f} req/s",
    )
    row(
        f"HTTP `/predict_batch` ({BATCH} flights), c=1",
        batch,
        f"{batch['flights_per_s']:.0f} flights/s",
    )
    row("in-process validation + `score`, 1 flight", inproc["validate_score_1"])
    row("in-process `score(bundle, [request])`, 1 flight", inproc["score_1"])
    row("in-process bare model `predict_columns`, 1 flight", inproc["model_call_1"])
    row(f"in-process `score`, {BATCH} flights", inproc[f"score_{BATCH}"])

    r = result["ratios"]
    print("\n| ratio | p50 | p99 |")
    print("|---|---:|---:|")
    print(f"| HTTP c=1 / in-process `score` | {r['score_p50']:.1f} | {r['score_p99']:.1f} |")
    print(f"| HTTP c=1 / bare model call | {r['model_p50']:.1f} | {r['model_p99']:.1f} |")
    print(
        f"\nserver CPU per `/predict` at c=1: {c1['server_cpu_ms_per_request']:.2f} ms "
        f"(client {c1['client_cpu_ms_per_request']:.2f} ms); at c={CONCURRENCY}: "
        f"{c8['server_cpu_ms_per_request']:.2f} ms; per batch of {BATCH}: "
        f"{batch['server_cpu_ms_per_request']:.2f} ms"
    )
    supervisor = c1["cpu"]["server_supervisor_cpu_s"] / result["requests"] * 1000
    print(f"  of which the supervisor process (`bentoml serve`) at c=1: {supervisor:.2f} ms")
    phases = {
        "in-process": inproc["cpu"],
        "c=1": c1["cpu"],
        "batch": batch["cpu"],
        f"c={CONCURRENCY}": c8["cpu"],
        "load": load["cpu"],
    }
    print(
        "other processes on the machine (average cores busy, of "
        f"{os.cpu_count()}): " + ", ".join(f"{k} {v['other_cores']:.2f}" for k, v in phases.items())
    )
    cls = load["by_class"]
    print(
        f"\nload, {load['duration_s']:.0f} s, {load['threads']} threads: {load['requests']} "
        f"requests ({load['throughput_rps']:.0f}/s), 2xx {cls['2xx']}, 4xx {cls['4xx']}, "
        f"5xx {cls['5xx']}, connection errors {cls['connection_error']}, unexpected status "
        f"{load['unexpected_status']}"
    )
    if load["single_latency"]:
        s = load["single_latency"]
        print(f"  single requests under load: p50 {s['p50_ms']:.2f} ms, p99 {s['p99_ms']:.2f} ms")
    print(
        "  invalid requests: " + ", ".join(f"{k} ({v})" for k, v in load["invalid_answers"].items())
    )
    for example in load["unexpected_examples"] + load["connection_error_examples"]:
        print(f"  ! {example}")
    b = result["budgets"]
    print(
        f"\nbudget p99 /predict c=1 < {BUDGET_P99_MS:g} ms: {c1['p99_ms']:.2f} ms -> "
        f"{'MET' if b['p99_c1'] else 'MISSED'}"
    )
    print(
        f"budget zero 5xx and zero connection errors in {load['duration_s']:.0f} s: "
        f"{'MET' if b['load'] else 'MISSED'}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--state",
        type=Path,
        default=None,
        help="deployed state folder to serve (deployed first if it has no Bento); default: a "
        "temporary one, deployed",
    )
    parser.add_argument("--requests", type=int, default=2000, help="timed requests per phase")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of mixed load")
    parser.add_argument("--keep", action="store_true", help="keep the temporary state folder")
    parser.add_argument("--out", type=Path, default=RESULTS / "serving.json")
    args = parser.parse_args(argv)
    if args.requests < 100 or args.duration <= 0:
        parser.error("need --requests >= 100 and --duration > 0")
    warnings.simplefilter("ignore")

    tmp = Path(tempfile.mkdtemp(prefix="mlops-bench-serving-"))
    state = args.state.resolve() if args.state else tmp / "state"
    try:
        return run(args, tmp, state)
    except BenchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        if args.keep and not args.state:
            print(f"state kept in {state} (reuse with --state {state})")
            shutil.rmtree(tmp / "server", ignore_errors=True)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def run(args: argparse.Namespace, tmp: Path, state: Path) -> int:
    bento_tag, model_tag, deploy_s = ensure_deployed(state)
    home = state / "bentoml"

    from mlops_assets.lib.scoring import ScoringBundle, request_model

    name, version = model_tag.split(":")
    bundle = ScoringBundle.load(home / "models" / name / version)
    model = request_model(bundle.request_fields())
    day, pool = load_requests(state, model)
    variety = {
        f: len({p[f] for p in pool}) for f in ("carrier", "origin", "dest", "tailnum", "time_hour")
    }
    known = sum(1 for p in pool if p["tailnum"] in bundle.plane_lookup.position)
    print(
        f"{len(pool)} requests from {day}: {variety} distinct values, {known} with a known plane",
        flush=True,
    )

    # The client's start-up objects (libraries, the request pool) leave the cyclic GC's view:
    # otherwise its full collections (~0.1-0.2 s with these imports) land in the timings.
    gc.collect()
    gc.freeze()
    mark_start()
    print("in-process scoring ...", flush=True)
    inproc = measure_in_process(bundle, model, pool, args.requests)

    (tmp / "server").mkdir(exist_ok=True)
    server = Server(bento_tag, home, tmp / "server" / "bentoml-serve.log")
    print(f"bentoml serve {bento_tag} on {HOST}:{server.port} ...", flush=True)
    stopped: dict[str, Any] = {}
    try:
        ready_s = server.wait_ready(STARTUP_TIMEOUT_S)
        print(f"ready after {ready_s:.1f} s; HTTP phases ...", flush=True)
        http_ = measure_http(server, bundle, model, pool, args.requests)
        print(f"{args.duration:g} s of mixed load ...", flush=True)
        load = measure_load(server, pool, args.duration)
        alive_after = server.process.poll() is None
        server_log_tail = server.log_tail(10)
    finally:
        stopped = server.stop()
    if stopped["killed_leftovers"]:
        print(f"warning: server processes left after SIGTERM, killed: {stopped}")

    c1 = http_["c1"]
    ratios = {
        "score_p50": c1["p50_ms"] / inproc["score_1"]["p50_ms"],
        "score_p99": c1["p99_ms"] / inproc["score_1"]["p99_ms"],
        "model_p50": c1["p50_ms"] / inproc["model_call_1"]["p50_ms"],
        "model_p99": c1["p99_ms"] / inproc["model_call_1"]["p99_ms"],
    }
    other_cores = {
        "in_process": inproc["cpu"]["other_cores"],
        "c1": c1["cpu"]["other_cores"],
        f"batch_{BATCH}": http_[f"batch_{BATCH}"]["cpu"]["other_cores"],
        f"c{CONCURRENCY}": http_[f"c{CONCURRENCY}"]["cpu"]["other_cores"],
        "load": load["cpu"]["other_cores"],
    }
    budgets = {
        "p99_c1_ms": BUDGET_P99_MS,
        "p99_c1": c1["p99_ms"] < BUDGET_P99_MS,
        "load": load["budget_met"],
        "load_all_invalid_4xx": load["unexpected_status"] == 0,
    }
    result = {
        "machine": machine_info(__file__, "bentoml", "lightgbm", "pydantic"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "state": str(state) if args.state else "(temporary)",
        "deploy_s": deploy_s,
        "bento_tag": bento_tag,
        "model_tag": model_tag,
        "requests_day": day,
        "request_pool": len(pool),
        "request_variety": variety,
        "requests": args.requests,
        "warmup": WARMUP,
        "server_ready_s": ready_s,
        "server_alive_after_load": alive_after,
        "server_stop": stopped,
        "server_log_tail": server_log_tail,
        "in_process": inproc,
        "http": http_,
        "ratios": ratios,
        "other_processes_cores": other_cores,
        "load": load,
        "budgets": budgets,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    report(result)
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
