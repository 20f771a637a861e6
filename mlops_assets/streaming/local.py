"""The stream on one machine (``make stream``): the broker, the scorer, and a replayed day.

A ``nats-server`` with JetStream on 127.0.0.1 (store ``<state>/stream/nats``), the scorer
(``mlops-assets stream-score``, its lines on this console) pointed at it, then one day of
flights replayed through it; everything runs until Ctrl-C, so more days can be replayed from
another shell (``mlops-assets stream-replay``). The scorer scores with the champion the graph
published (``make demo`` first); without one it waits for it.
"""

from __future__ import annotations

import signal
import subprocess
import threading
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from mlops_assets.processes import HOST, console_script, default_signals, stop_process_group
from mlops_assets.streaming.nats_server import NatsServerError, port_free, running

SCORER_STOP_GRACE_S = 20.0  # the scorer finishes (or gives back) its batch, then exits


@dataclass(frozen=True)
class Replay:
    """The day replayed once the scorer runs, and its rate (events per second)."""

    day: date
    rate: float


def start_scorer(url: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """``mlops-assets stream-score`` on ``url``, its lines on this console.

    In a process group of its own: Ctrl-C reaches this process only, which stops the scorer.
    """
    from mlops_assets.streaming.brokers import URL_VARIABLE

    command = [*console_script("mlops-assets", "mlops_assets.cli"), "stream-score"]
    return subprocess.Popen(
        command,
        env={**env, URL_VARIABLE: url},
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=default_signals,
    )


def run_foreground(
    store: Path,
    port: int,
    env: dict[str, str],
    *,
    scorer: bool = False,
    replay: Replay | None = None,
) -> None:
    """Runs the broker (with the scorer, then the replay, if asked) until SIGINT or SIGTERM.

    Raises:
        NatsServerError: the port is taken, the server does not start, or the scorer exits.
    """
    from mlops_assets.streaming.replay import replay_day

    if not port_free(port):
        raise NatsServerError(f"port {HOST}:{port} is in use; choose another (--port)")
    stopped = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopped.set())
    with running(store, port) as server:
        print(f"NATS with JetStream on {server.url} (store {store}, log {server.log_path})")
        process = start_scorer(server.url, env) if scorer else None
        try:
            if replay is not None:
                print(f"replaying {replay.day.isoformat()} at {replay.rate:g} events/s", flush=True)
                print(replay_day(server.url, replay.day, replay.rate).summary(), flush=True)
            print("Ctrl-C stops it.", flush=True)
            while not stopped.wait(0.5):
                server.check_alive()
                if process is not None and process.poll() is not None:
                    raise NatsServerError(f"the stream scorer exited ({process.returncode})")
        finally:
            if process is not None:
                stop_process_group(process, SCORER_STOP_GRACE_S)
    print("stopped", flush=True)
