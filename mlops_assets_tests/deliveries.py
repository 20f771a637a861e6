"""Landing deliveries for tests, as an upstream makes them: the day's files, then the manifest.

Every test that puts an edited or broken day file into a landing zone goes through here, so
the file reaches the contract it is meant to break (a file edited after its manifest was
written would be stopped by the manifest first, as a cut file is).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd

from mlops_assets.lib.landing import landing_path
from mlops_assets.lib.manifest import write_manifest
from mlops_assets.lib.replay import replay


def land_day(
    landing: Path,
    day: date,
    edit_flights: Callable[[pd.DataFrame], Any] | None = None,
    *,
    include_reference: bool = False,
) -> Path:
    """Lands a real day, ``edit_flights`` applied to its flights in place, manifest last.

    Returns:
        The flights file.
    """
    replay(landing, day, 1, include_reference=include_reference)
    path: Path = landing_path(landing, "flights", day)
    if edit_flights is not None:
        flights = pd.read_csv(path, dtype=str, keep_default_na=False)
        edit_flights(flights)
        redeliver(landing, "flights", day, flights.to_csv(index=False).encode())
    return path


def redeliver(landing: Path, dataset: str, day: date, payload: bytes) -> Path:
    """Writes a day file with ``payload``, then the day's manifest; always a new delivery.

    Returns:
        The file.
    """
    path: Path = landing_path(landing, dataset, day)
    path.write_bytes(payload)
    now = time.time_ns()
    os.utime(path, ns=(now, now))  # a new fingerprint even within the clock's resolution
    write_manifest(landing, day)
    return path
