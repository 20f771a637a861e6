"""What a landing run of a day selects: the plain helpers the landing sensor calls."""

from __future__ import annotations

import dagster as dg

from mlops_assets.defs.automation import DAY_CHAIN, day_selection, ready_chain

CHAMPION, REFERENCE, TRIAL = (
    dg.AssetKey(n) for n in ("champion_model", "drift_reference", "model_trial")
)
RAW = [dg.AssetKey("raw_flights"), dg.AssetKey("raw_weather")]


def names(keys: list[dg.AssetKey]) -> list[str]:
    return [k.to_user_string() for k in keys]


def test_nothing_of_the_chain_before_a_champion():
    assert ready_chain(lambda key: False) == []


def test_each_chain_asset_waits_for_what_it_reads_outside_the_day():
    # A champion alone: its predictions, the performance and the online log; the drift report
    # waits for its reference, the trial assets for the trial record.
    assert names(ready_chain(lambda key: key == CHAMPION)) == [
        "batch_predictions",
        "model_performance",
        "online_predictions",
    ]
    everything = ready_chain(lambda key: key in (CHAMPION, REFERENCE, TRIAL))
    assert everything == [a.key for a in DAY_CHAIN]
    # Without the champion nothing that reads the predictions can run.
    assert names(ready_chain(lambda key: key in (REFERENCE, TRIAL))) == ["challenger_predictions"]


def test_a_complete_day_carries_its_features_and_the_ready_chain():
    chain = ready_chain(lambda key: True)
    assert day_selection(["weather", "flights"], chain) == [
        *RAW,
        dg.AssetKey("flight_features"),
        *chain,
    ]
    assert day_selection(["flights", "weather"]) == [*RAW, dg.AssetKey("flight_features")]


def test_an_incomplete_day_lands_its_raw_files_only():
    chain = ready_chain(lambda key: True)
    assert day_selection(["flights"], chain) == RAW[:1]
    assert day_selection(["weather"], chain) == RAW[1:]
