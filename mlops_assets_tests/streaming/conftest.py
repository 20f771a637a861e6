"""Fixtures of the stream scorer's tests: one small champion per session."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from mlops_assets.lib import scoring
from mlops_assets_tests.streaming.flights import champion_bundle, flight_requests


@pytest.fixture(scope="session")
def champion(tables: dict[str, pd.DataFrame]) -> scoring.ScoringBundle:
    """A small champion, model version 1."""
    return champion_bundle(tables, "1")


@pytest.fixture(scope="session")
def requests(tables: dict[str, pd.DataFrame]) -> list[dict[str, Any]]:
    """A day of real flights as /predict requests."""
    return flight_requests(tables)
