"""Where the benchmark numbers were taken: shared by the benchmark scripts."""

from __future__ import annotations

import hashlib
import importlib
import os
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

STARTED: dict[str, float] = {}


def mark_start() -> None:
    """Records the load average when the measurement starts."""
    STARTED["loadavg_1min_at_start"] = round(os.getloadavg()[0], 2)


def machine_info(script: str, *modules: str) -> dict[str, Any]:
    """Machine, versions of ``dagster`` and ``modules``, load, and the script's hash."""
    versions = {name: importlib.import_module(name).__version__ for name in ("dagster", *modules)}
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        **versions,
        "platform": platform.platform(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        **STARTED,
        "loadavg_1min_at_end": round(os.getloadavg()[0], 2),
        "sha256_of_script": hashlib.sha256(Path(script).read_bytes()).hexdigest()[:12],
    }
