"""Sticky traffic routing for online trials: which model answers a flight.

A flight is routed by a stable hash of its key, so the same flight always gets the same model,
in every worker and after every restart (Python's ``hash()`` is salted per process and would
not be). Plain Python: no BentoML, testable on its own.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

# 64 bits of the digest are plenty for a uniform draw in [0, 1).
_SCALE = float(2**64)


def flight_key(request: Mapping[str, Any]) -> str:
    """``flight_date|carrier|flight|origin`` of a request (year/month/day) or an answer.

    Args:
        request: A flight request (``year``, ``month``, ``day`` ...) or a prediction that
            carries ``flight_date``.
    """
    if request.get("flight_date"):
        flight_date = str(request["flight_date"])
    else:
        flight_date = (
            f"{int(request['year']):04d}-{int(request['month']):02d}-{int(request['day']):02d}"
        )
    return f"{flight_date}|{request['carrier']}|{int(request['flight'])}|{request['origin']}"


def unit_draw(key: str) -> float:
    """A uniform number in [0, 1) determined by ``key`` alone (SHA-256)."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE


def routes_to_challenger(key: str, share: float) -> bool:
    """Whether the flight ``key`` is answered by the challenger when it gets ``share``.

    Monotone in ``share``: a flight routed to the challenger at 10 % stays with it at 20 %, so
    raising the share only moves more flights over.
    """
    return unit_draw(key) < share
