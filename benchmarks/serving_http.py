"""The HTTP side of ``benchmarks.serving``: the server, its clients, CPU accounting, the phases.

``Server`` runs ``bentoml serve`` on loopback in a session of its own; ``Client`` is one
keep-alive connection (one per client thread, this process being the client on the same
machine); ``CpuWindow`` splits the CPU of a phase between the server, this process and the
rest of the machine. ``measure_http`` and ``measure_load`` are the timed phases.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import math
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import BenchError
from mlops_assets import settings
from mlops_assets.lib.prediction_log import ROOT_VARIABLE as PREDICTION_LOG_VARIABLE
from mlops_assets.lib.scoring import MAX_BATCH
from mlops_assets.processes import (
    HOST,
    default_signals,
    free_port,
    live_group_members,
    stop_process_group,
)
from mlops_assets.serving.auth import ACCESS_VARIABLES

CONCURRENCY = 8
BATCH = 100
WARMUP = 200
ROUNDS = 4  # alternating blocks of concurrency 1 and 8
STOP_GRACE_S = 20.0
REQUEST_TIMEOUT_S = 30.0
SINGLE_SHARE, BATCH_SHARE = 0.85, 0.10  # the rest of the load is invalid requests


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


# -- the client and the server ----------------------------------------------------------------


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


def _proc_stat(pid: int | str) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name, if the process exists."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
    except OSError:
        return None


def _alive(pid: int) -> bool:
    fields = _proc_stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")


class Server:
    """``bentoml serve <tag>`` on loopback, in its own process group."""

    def __init__(
        self,
        tag: str,
        home: Path,
        log_path: Path,
        extra_env: dict[str, str] | None = None,
        *,
        state: Path,
    ) -> None:
        self.port = free_port()
        dropped = (*ACCESS_VARIABLES, "MLOPS_ENV")  # open and unlimited: the bare service
        env = {k: v for k, v in os.environ.items() if k not in dropped}
        env.update({"BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"})
        # The state's pseudonym key (the service finds its planes with it); the prediction log
        # beside the server's output, out of the deployed state.
        env[settings.STATE_DIR_VAR] = str(state)
        env[PREDICTION_LOG_VARIABLE] = str(log_path.parent / "prediction_log")
        env.update(extra_env or {})  # e.g. the serving mode, the workers, the log's root
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

    def _ready(self) -> bool:
        conn = http.client.HTTPConnection(HOST, self.port, timeout=5)
        try:
            conn.request("GET", "/readyz")
            return conn.getresponse().status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def wait_ready(self, timeout: float) -> float:
        """Seconds until ``GET /readyz`` answered 200."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.process.poll() is not None:
                raise BenchError(
                    f"bentoml serve exited ({self.process.returncode}):\n{self.log_tail()}"
                )
            if self._ready():
                return time.monotonic() - start
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
                fields = _proc_stat(entry.name)
                if fields is not None:
                    stats[int(entry.name)] = fields  # [0] state, [1] ppid, [11:13] CPU
        found, frontier = [], [self.process.pid]
        while frontier:
            pid = frontier.pop()
            if pid in stats and stats[pid][0] not in ("Z", "X"):
                found.append(pid)
                frontier += [child for child, f in stats.items() if int(f[1]) == pid]
        return found

    def _cpu_by_process(self) -> dict[int, float]:
        """User + system CPU seconds of the server and each live descendant (``/proc``)."""
        hz = os.sysconf("SC_CLK_TCK")
        out = {}
        for pid in self.processes():
            fields = _proc_stat(pid)
            if fields is not None:
                out[pid] = (int(fields[11]) + int(fields[12])) / hz  # utime, stime
        return out

    def cpu_seconds(self) -> tuple[float, float]:
        """CPU seconds of the supervisor and of its descendants together."""
        by_process = self._cpu_by_process()
        supervisor = by_process.pop(self.process.pid, 0.0)
        return supervisor, sum(by_process.values())

    def worker_cpu_seconds(self) -> dict[int, float]:
        """CPU seconds of each worker (the supervisor's descendants)."""
        return {pid: t for pid, t in self._cpu_by_process().items() if pid != self.process.pid}

    def resident_mib(self) -> dict[str, float]:
        """Resident memory (MiB, ``/proc``) of the supervisor and of each worker."""
        out = {}
        for pid in self.processes():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            rss = [line for line in status.splitlines() if line.startswith("VmRSS:")]
            kib = int(rss[0].split()[1]) if rss else 0
            out["supervisor" if pid == self.process.pid else f"worker {pid}"] = kib / 1024
        return out

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


def threads_measured(
    server: Any, clients: list[Any], count: int, work: Callable[[int], Any]
) -> tuple[float, list[Any], Any]:
    """``run_threads`` under a ``CpuWindow`` of ``server``; closes ``clients`` either way.

    Returns:
        Wall seconds, the threads' results and the window's CPU accounting.
    """
    try:
        window = CpuWindow(server)
        wall, results = run_threads(count, work)
        cpu = window.stop()
    finally:
        for client in clients:
            client.close()
    return wall, results, cpu


# -- single requests and batches --------------------------------------------------------------


def check_answers(
    client: Client, bundle: Any, as_scored: Callable[[dict], dict], pool: list[dict[str, Any]]
) -> int:
    """Server and in-process probabilities agree on the first requests; returns the count.

    ``as_scored`` turns a request into what the service scores (validated, pseudonymized).
    """
    from mlops_assets.lib.scoring import score

    checked = pool[:50]
    for request in checked:
        _, body = client.post_ok("/predict", json.dumps(request).encode())
        served = json.loads(body)["probability"]
        local = score(bundle, [as_scored(request)])[0]["probability"]
        if abs(served - local) > 1e-12:
            raise BenchError(f"served {served} != in-process {local} for {request}")
    return len(checked)


def single_block(server: Server, singles: list[bytes], count: int, offset: int) -> Block:
    """``count`` timed ``/predict`` requests at concurrency 1 (pool from ``offset``), on a
    connection of its own (the server closes one idle for 5 s, as between blocks)."""
    client = Client(server.port)
    try:
        for j in range(20):  # warm the connection
            client.post_ok("/predict", singles[(offset + 97 + j) % len(singles)])
        window = CpuWindow(server)
        seconds = [
            client.post_ok("/predict", singles[(offset + i) % len(singles)])[0]
            for i in range(count)
        ]
        return Block(seconds, count, window.stop())
    finally:
        client.close()


def concurrent_block(server: Server, singles: list[bytes], count: int, offset: int) -> Block:
    """``count`` ``/predict`` requests from ``CONCURRENCY`` threads, a connection each, every
    thread taking the next request of one shared queue (as ``ab -n count -c 8`` does).

    A keep-alive connection stays with the worker that accepted it, and the two workers rarely
    get four each: with equal shares per thread, the block would end when the busier worker's
    connections were done, the other worker idle for the last part. Each connection's 20
    warm-up requests go first, untimed.
    """
    clients = [Client(server.port) for _ in range(CONCURRENCY)]
    for i, client in enumerate(clients):
        for j in range(20):
            client.post_ok("/predict", singles[(i * 97 + j) % len(singles)])
    queue = itertools.count(offset)  # next() is atomic under the GIL
    end = offset + count
    calls_before = scoring_calls(server)
    before = server.worker_cpu_seconds()

    def burst(i: int) -> list[float]:
        seconds = []
        while (k := next(queue)) < end:
            seconds.append(clients[i].post_ok("/predict", singles[k % len(singles)])[0])
        return seconds

    _, results, cpu = threads_measured(server, clients, CONCURRENCY, burst)
    after = server.worker_cpu_seconds()
    used = [after[pid] - before.get(pid, 0.0) for pid in after]
    busiest = max(used) / sum(used) if sum(used) > 0 else 1.0
    calls = scoring_calls(server) - calls_before
    seconds = [s for r in results for s in r]
    connects = sum(c.connects for c in clients)
    per_call = len(seconds) / calls if calls else 0.0
    return Block(seconds, len(seconds), cpu, connects, busiest, [len(r) for r in results], per_call)


def scoring_calls(server: Server) -> float:
    """Scoring calls of the served model so far, all workers (its ``/metrics`` histogram)."""
    client = Client(server.port)
    try:
        status, body = client.request("GET", "/metrics")
    finally:
        client.close()
    if status != 200:
        raise BenchError(f"GET /metrics answered {status}")
    metric = f"{settings.MODEL_NAME}_scoring_seconds_count{{"
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in body.decode().splitlines()
        if line.startswith(metric) and 'role="champion"' in line
    )


@dataclass
class Block:
    """One timed block of requests: latencies, requests done (timed or not), CPU."""

    seconds: list[float]
    done: int
    cpu: dict[str, float]
    connections: int = 1
    busiest_worker_share: float = 1.0  # of the workers' CPU in the block
    per_connection: list[int] | None = None  # requests each connection sent
    flights_per_call: float = 1.0  # requests per scoring call of the service


def merged(blocks: list[Block]) -> dict[str, Any]:
    """Latency summary, throughput and CPU per request over blocks taken apart in time."""
    cpu = {k: sum(b.cpu[k] for b in blocks) for k in blocks[0].cpu if k != "other_cores"}
    cpu["other_cores"] = cpu["other_cpu_s"] / cpu["wall_s"]
    done = sum(b.done for b in blocks)
    return {
        **summary([s for b in blocks for s in b.seconds]),
        "throughput_rps": done / cpu["wall_s"],
        "server_cpu_ms_per_request": cpu["server_cpu_s"] / done * 1000,
        "client_cpu_ms_per_request": cpu["client_cpu_s"] / done * 1000,
        "cpu": cpu,
    }


def measure_singles(
    server: Server, client: Client, singles: list[bytes], count: int
) -> dict[str, Any]:
    """``/predict`` at concurrency 1 and at ``CONCURRENCY``, in ``ROUNDS`` alternating blocks.

    After ``WARMUP`` untimed requests, each round takes a block at concurrency 1 and one at
    ``CONCURRENCY`` (which leads alternates), so both see the same machine: on shared cores
    the load of other processes drifts, and the throughput ratio is read per round (its
    median and spread reported).
    """
    for i in range(WARMUP):
        client.post_ok("/predict", singles[i % len(singles)])
    per = max(50, count // ROUNDS)
    c1: list[Block] = []
    c8: list[Block] = []
    for r in range(ROUNDS):
        offset = WARMUP + r * per
        for phase in ("c1", "c8") if r % 2 == 0 else ("c8", "c1"):
            if phase == "c1":
                c1.append(single_block(server, singles, per, offset))
            else:
                c8.append(concurrent_block(server, singles, per, offset))
    ratios = [
        (b8.done / b8.cpu["wall_s"]) / (b1.done / b1.cpu["wall_s"])
        for b1, b8 in zip(c1, c8, strict=True)
    ]
    return {
        "c1": merged(c1),
        f"c{CONCURRENCY}": merged(c8),
        "throughput_ratio_rounds": ratios,
        "throughput_ratio": statistics.median(ratios),
        f"connections_opened_c{CONCURRENCY}": sum(b.connections for b in c8),
        f"busiest_worker_share_c{CONCURRENCY}": [b.busiest_worker_share for b in c8],
        f"per_connection_c{CONCURRENCY}": [b.per_connection for b in c8],
        f"flights_per_call_c{CONCURRENCY}": [b.flights_per_call for b in c8],
    }


def measure_batches(
    server: Server, client: Client, batches: list[bytes], count: int, size: int = BATCH
) -> dict:
    """``/predict_batch`` of ``size`` flights at concurrency 1 (10 untimed first)."""
    for i in range(10):
        client.post_ok("/predict_batch", batches[i % len(batches)])
    batch_count = max(50, count // 20)
    window = CpuWindow(server)
    latencies = [
        client.post_ok("/predict_batch", batches[i % len(batches)])[0] for i in range(batch_count)
    ]
    cpu = window.stop()
    return {
        **summary(latencies),
        "flights_per_s": batch_count * size / cpu["wall_s"],
        "server_cpu_ms_per_request": cpu["server_cpu_s"] / batch_count * 1000,
        "cpu": cpu,
    }


def measure_batches_parallel(
    server: Server, batches: list[bytes], count: int, size: int, threads: int
) -> dict:
    """``/predict_batch`` of ``size`` flights from ``threads`` clients at once (bulk callers
    on a server with a worker per core)."""
    clients = [Client(server.port) for _ in range(threads)]
    per_thread = max(50, count // 20) // threads

    def send(i: int) -> list[float]:
        clients[i].post_ok("/predict_batch", batches[i % len(batches)])  # warm the connection
        return [
            clients[i].post_ok("/predict_batch", batches[(i + j) % len(batches)])[0]
            for j in range(per_thread)
        ]

    wall, results, cpu = threads_measured(server, clients, threads, send)
    done = (per_thread + 1) * threads
    return {
        **summary([s for r in results for s in r]),
        "threads": threads,
        "flights_per_s": done * size / wall,
        "server_cpu_ms_per_request": cpu["server_cpu_s"] / done * 1000,
        "cpu": cpu,
    }


def measure_http(
    server: Server,
    bundle: Any,
    as_scored: Callable[[dict], dict],
    pool: list[dict[str, Any]],
    count: int,
) -> dict[str, Any]:
    """Single requests at concurrency 1 and 8, batches of 100 and 1000 at concurrency 1."""
    singles = [json.dumps(r).encode() for r in pool]
    batches = [
        json.dumps({"flights": pool[i : i + BATCH]}).encode()
        for i in range(0, len(pool) - BATCH + 1, BATCH)
    ]
    # The largest batch the API takes, the pool cycled: what bulk callers send.
    largest = [pool[(i + j) % len(pool)] for i in range(0, len(pool), 97) for j in range(MAX_BATCH)]
    large = [
        json.dumps({"flights": largest[i : i + MAX_BATCH]}).encode()
        for i in range(0, len(largest), MAX_BATCH)
    ]
    out: dict[str, Any] = {}
    client = Client(server.port)
    try:
        out["answers_checked"] = check_answers(client, bundle, as_scored, pool)
        out.update(measure_singles(server, client, singles, count))
    finally:
        client.close()
    client = Client(server.port)  # the first one sat idle through the rounds
    try:
        out[f"batch_{BATCH}"] = measure_batches(server, client, batches, count)
        out[f"batch_{MAX_BATCH}"] = measure_batches(server, client, large, count, MAX_BATCH)
    finally:
        client.close()
    out[f"batch_{MAX_BATCH}_c2"] = measure_batches_parallel(server, large, count, MAX_BATCH, 2)
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
    deep = b'{"a": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    return [
        ("JSON nested 10,000 deep", "POST", "/predict", deep),
        ("minutes over 59", "POST", "/predict", changed(sched_dep_time=1275)),
        ("number as a string", "POST", "/predict", changed(distance="1400")),
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


class MixedLoad:
    """Mixed traffic until a deadline: 85 % single, 10 % batches of 1-100, 5 % invalid."""

    def __init__(self, port: int, pool: list[dict[str, Any]], duration: float) -> None:
        self.port = port
        self.pool = pool
        self.singles = [json.dumps(r).encode() for r in pool]
        self.invalid = invalid_requests(pool)
        self.deadline = time.perf_counter() + duration

    def draw(self, rng: random.Random, n: int) -> tuple[str, str, str, str, bytes | None]:
        """(kind, name, method, path, body) of the next request; ``n`` cycles the invalid."""
        draw = rng.random()
        if draw < SINGLE_SHARE:
            body = self.singles[rng.randrange(len(self.singles))]
            return "single", "single", "POST", "/predict", body
        if draw < SINGLE_SHARE + BATCH_SHARE:
            size = rng.randint(1, BATCH)
            first = rng.randrange(len(self.pool) - size)
            body = json.dumps({"flights": self.pool[first : first + size]}).encode()
            return "batch", "batch", "POST", "/predict_batch", body
        name, method, path, invalid_body = self.invalid[n % len(self.invalid)]
        return "invalid", name, method, path, invalid_body

    def client_loop(self, i: int) -> dict[str, Any]:
        """One thread's requests: status counts, unexpected answers, single latencies."""
        rng = random.Random(1000 + i)
        client = Client(self.port)
        counts: Counter[str] = Counter()
        wrong: list[str] = []
        single_latencies: list[float] = []
        errors: list[str] = []
        n = 0
        try:
            while time.perf_counter() < self.deadline:
                kind, name, method, path, body = self.draw(rng, n)
                n += kind == "invalid"
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
                if status // 100 != (4 if kind == "invalid" else 2):
                    wrong.append(f"{name} -> {status}: {payload[:200]!r}")
                if kind == "invalid":
                    counts[f"invalid {name} -> {status}"] += 1
        finally:
            client.close()
        return {"counts": counts, "wrong": wrong, "latencies": single_latencies, "errors": errors}


def load_result(results: list[dict[str, Any]], wall: float, cpu: dict) -> dict[str, Any]:
    """The threads' counts and latencies merged, with the budget verdict."""
    counts: Counter[str] = Counter()
    for r in results:
        counts.update(r["counts"])
    total = sum(counts[c] for c in ("1xx", "2xx", "3xx", "4xx", "5xx", "connection_error"))
    wrong = [w for r in results for w in r["wrong"]]
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
        "connection_error_examples": [e for r in results for e in r["errors"]][:10],
        "single_latency": summary(latencies) if latencies else {},
        "budget_met": by_class["5xx"] == 0 and by_class["connection_error"] == 0,
    }


def measure_load(server: Server, pool: list[dict[str, Any]], duration: float) -> dict[str, Any]:
    """``duration`` seconds of mixed traffic from 8 threads, answers counted by status class."""
    load = MixedLoad(server.port, pool, duration)
    window = CpuWindow(server)
    wall, results = run_threads(CONCURRENCY, load.client_loop)
    return load_result(results, wall, window.stop())
