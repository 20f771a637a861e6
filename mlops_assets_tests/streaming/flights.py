"""Events and a champion for the stream scorer's tests: real flights of the demo data."""

from __future__ import annotations

import secrets
from dataclasses import replace
from datetime import date
from typing import Any

import pandas as pd

from mlops_assets.lib import scoring
from mlops_assets_tests.bundles import requests_for, small_bundle
from mlops_assets_tests.conftest import validated_day

EVENT_DAY = date(2013, 1, 5)
# The pseudonym key of the tests' lake: planes and requests pseudonymized with it.
PSEUDONYM_KEY = secrets.token_urlsafe(32)


def champion_bundle(tables: dict[str, pd.DataFrame], version: str) -> scoring.ScoringBundle:
    """A small scoring bundle, planes pseudonymized as in the lake (with ``PSEUDONYM_KEY``)."""
    return small_bundle(tables, version, trees=20, pseudonym_key=PSEUDONYM_KEY)


def as_version(bundle: scoring.ScoringBundle, version: str) -> scoring.ScoringBundle:
    """The same model published as another version."""
    return replace(bundle, model={**bundle.model, "model_version": version})


def flight_requests(tables: dict[str, pd.DataFrame], day: date = EVENT_DAY) -> list[dict[str, Any]]:
    """The day's flights as /predict requests (tail numbers raw, weather at the hour)."""
    requests = requests_for(*validated_day(tables, day))
    return [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()} for r in requests]


def event_id(request: dict[str, Any]) -> str:
    """The replay's event id: ``<flight_date>/<carrier>/<flight>/<origin>/<sched_dep_time>``."""
    day = date(request["year"], request["month"], request["day"]).isoformat()
    parts = (
        day,
        request["carrier"],
        request["flight"],
        request["origin"],
        request["sched_dep_time"],
    )
    return "/".join(str(p) for p in parts)


def flight_event(request: dict[str, Any], sent_at: float = 0.0) -> dict[str, Any]:
    """The event of one request."""
    return {"event_id": event_id(request), "sent_at": sent_at, "flight": request}
