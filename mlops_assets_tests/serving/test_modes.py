"""The serving mode read at start: defaults from the Bento, refusals that name the setting."""

from __future__ import annotations

import pytest

from mlops_assets.lib.routing import flight_key, routes_to_challenger
from mlops_assets.serving.modes import (
    DEFAULT_AB_SHARE,
    DEFAULT_CANARY_SHARE,
    MODE_VARIABLE,
    SHARE_VARIABLE,
    ServingMode,
    serving_mode_from_environment,
)

FLIGHTS = [
    {"year": 2013, "month": 1, "day": 22, "carrier": c, "flight": n, "origin": "JFK"}
    for c in ("UA", "AA", "B6")
    for n in range(400)
]


def mode(
    env: dict[str, str],
    default: str | None = None,
    share: float | None = None,
    challenger: bool = True,
) -> ServingMode:
    return serving_mode_from_environment(env, default, share, challenger)


def test_defaults_come_from_the_bento_when_it_holds_a_challenger():
    assert mode({}, None, None, challenger=False) == ServingMode("off", 0.0)
    assert mode({}, "canary", 0.2, challenger=False) == ServingMode("off", 0.0)  # no challenger
    assert mode({}, "canary", 0.2) == ServingMode("canary", 0.2)
    assert mode({}, "shadow", None) == ServingMode("shadow", 0.0)
    assert mode({}, None, None) == ServingMode("off", 0.0)
    assert mode({}, "ab", None) == ServingMode("ab", DEFAULT_AB_SHARE)


def test_the_environment_overrides_the_bento():
    assert mode({MODE_VARIABLE: "shadow"}, "canary", 0.2) == ServingMode("shadow", 0.0)
    assert mode({MODE_VARIABLE: "canary"}, "shadow", None) == ServingMode(
        "canary", DEFAULT_CANARY_SHARE
    )
    assert mode({MODE_VARIABLE: "canary", SHARE_VARIABLE: "0.35"}, "canary", 0.2) == ServingMode(
        "canary", 0.35
    )
    assert mode({MODE_VARIABLE: " AB "}, "canary", 0.2) == ServingMode("ab", DEFAULT_AB_SHARE)
    assert mode({MODE_VARIABLE: "off"}, "canary", 0.2) == ServingMode("off", 0.0)
    assert mode({MODE_VARIABLE: "off"}, None, None, challenger=False) == ServingMode("off", 0.0)


@pytest.mark.parametrize("value", ["canary2", "on", "1"])
def test_an_unknown_mode_is_refused_naming_the_setting(value: str):
    with pytest.raises(ValueError, match=f"{MODE_VARIABLE} must be one of off, shadow, canary, ab"):
        mode({MODE_VARIABLE: value}, "canary", 0.2)


@pytest.mark.parametrize("value", ["-0.1", "1.5", "nan", "twenty", "20%"])
def test_a_share_outside_zero_one_is_refused_naming_the_setting(value: str):
    with pytest.raises(ValueError, match=f"{SHARE_VARIABLE} must be a number in \\[0, 1\\]"):
        mode({MODE_VARIABLE: "canary", SHARE_VARIABLE: value}, "canary", 0.2)


@pytest.mark.parametrize("value", ["shadow", "canary", "ab"])
def test_a_trial_mode_without_a_challenger_refuses_to_start(value: str):
    with pytest.raises(RuntimeError, match=f"{MODE_VARIABLE}={value} needs a challenger"):
        mode({MODE_VARIABLE: value}, None, None, challenger=False)


def test_who_answers_and_who_scores_off_the_path():
    off, shadow = ServingMode("off"), ServingMode("shadow")
    canary, ab = ServingMode("canary", 0.2), ServingMode("ab", 0.5)
    for flight in FLIGHTS:
        routed = routes_to_challenger(flight_key(flight), 0.2)
        assert off.answering_role(flight) == shadow.answering_role(flight) == "champion"
        assert off.shadow_role("champion") is None
        assert shadow.shadow_role("champion") == "challenger"
        assert canary.answering_role(flight) == ("challenger" if routed else "champion")
        assert canary.shadow_role(canary.answering_role(flight)) is None
        answering = ab.answering_role(flight)
        assert {answering, ab.shadow_role(answering)} == {"champion", "challenger"}
    share = sum(canary.answering_role(f) == "challenger" for f in FLIGHTS) / len(FLIGHTS)
    assert abs(share - 0.2) < 0.04, share
    with pytest.raises(ValueError, match="share must be a number"):
        ServingMode("canary", 2.0)
