"""How many worker processes serve requests: ``MLOPS_SERVING_WORKERS``.

Scoring is CPU-bound Python: one process answers one request at a time whatever its threads
(the GIL), so requests in parallel need processes. Each worker loads its own copy of the
models and keeps its own prediction log parts, metrics shard, off-path queue and rate-limit
buckets (docs/serving.md, "Workers"). Read once when the service module is imported (the
supervisor reads it to start the workers). Plain Python (no BentoML), so the refusals are
unit-tested.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

WORKERS_VARIABLE = "MLOPS_SERVING_WORKERS"
Workers = int | Literal["cpu_count"]
# One worker per core BentoML sees (the container's CPU limit under cgroups, else the cores).
PER_CORE: Literal["cpu_count"] = "cpu_count"
# Per core: on two cores, two workers answer 8 concurrent callers about twice as fast as one,
# and one caller as fast (docs/benchmarks.md, section 4); each worker costs its memory.
DEFAULT_WORKERS: Workers = PER_CORE
# More processes than that on one pod is a configuration error, not a tuning choice.
MAX_WORKERS = 64


def workers_from_environment(env: Mapping[str, str]) -> Workers:
    """``MLOPS_SERVING_WORKERS``: a number of processes, or ``cpu_count`` (the default).

    Raises:
        ValueError: anything but ``cpu_count`` or a whole number from 1 to ``MAX_WORKERS``
            (the message names the variable).
    """
    raw = env.get(WORKERS_VARIABLE, "").strip().lower()
    if not raw:
        return DEFAULT_WORKERS
    if raw == PER_CORE:
        return PER_CORE
    if raw.isdigit() and 1 <= int(raw) <= MAX_WORKERS:
        return int(raw)
    raise ValueError(
        f"{WORKERS_VARIABLE} must be {PER_CORE} or a whole number from 1 to {MAX_WORKERS}, "
        f"got {raw!r}"
    )
