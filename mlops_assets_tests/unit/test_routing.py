"""Sticky routing: the same flight always gets the same model, and the share is honoured."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mlops_assets.lib.routing import flight_key, routes_to_challenger, unit_draw

KEYS = [f"2013-01-{1 + i % 28:02d}|UA|{i}|EWR" for i in range(10_000)]


def test_the_key_is_the_same_for_a_request_and_its_answer():
    request = {"year": 2013, "month": 1, "day": 2, "carrier": "UA", "flight": 1545, "origin": "EWR"}
    answer = {"flight_date": "2013-01-02", "carrier": "UA", "flight": 1545, "origin": "EWR"}
    assert flight_key(request) == flight_key(answer) == "2013-01-02|UA|1545|EWR"
    assert flight_key({**request, "flight": "1545"}) == flight_key(request)


@pytest.mark.parametrize("share", [0.0, 0.05, 0.2, 0.5, 0.9, 1.0])
def test_the_observed_share_of_ten_thousand_keys_is_within_two_points(share: float):
    observed = sum(routes_to_challenger(k, share) for k in KEYS) / len(KEYS)
    assert abs(observed - share) <= 0.02, (share, observed)


def test_routing_is_sticky_and_monotone_in_the_share():
    first = [routes_to_challenger(k, 0.2) for k in KEYS]
    assert first == [routes_to_challenger(k, 0.2) for k in KEYS]
    # A flight with the challenger at 20 % stays with it at 50 %.
    at_half = [routes_to_challenger(k, 0.5) for k in KEYS]
    assert all(h for f, h in zip(first, at_half, strict=True) if f)
    assert all(0.0 <= unit_draw(k) < 1.0 for k in KEYS[:100])


def test_routing_is_the_same_in_a_fresh_interpreter():
    """Not Python's salted ``hash()``: another process (a restart) routes the same way."""
    code = (
        "from mlops_assets.lib.routing import routes_to_challenger as r\n"
        f"print(''.join('1' if r(k, 0.3) else '0' for k in {KEYS[:500]!r}))"
    )
    env = {"PYTHONHASHSEED": "12345"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    here = "".join("1" if routes_to_challenger(k, 0.3) else "0" for k in KEYS[:500])
    assert done.stdout.strip() == here
