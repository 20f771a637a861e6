"""The trial policy and its paired decision rule, on synthetic paired scores."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from mlops_assets.lib.trials import (
    TrialPolicy,
    compare_paired,
    decide_trial,
    trial_policy_from_json,
)

FAST = TrialPolicy(rounds=300)


def _paired(seed: int, flights: int, challenger_noise: float) -> tuple[np.ndarray, ...]:
    """Labels and two models' scores sharing the signal (as two models of one day do)."""
    rng = np.random.default_rng(seed)
    labels = rng.random(flights) < 0.24
    signal = labels * 0.8 + rng.normal(0, 1, flights)
    return (
        labels,
        signal + rng.normal(0, 1, flights),
        signal + rng.normal(0, challenger_noise, flights),
    )


def test_the_comparison_reports_both_models_auc_on_the_same_flights() -> None:
    labels, champion, challenger = _paired(1, 1500, 0.5)
    result = compare_paired(labels, champion, challenger, FAST)
    assert result.flights == 1500
    assert result.champion_auc == pytest.approx(roc_auc_score(labels, champion))
    assert result.challenger_auc == pytest.approx(roc_auc_score(labels, challenger))
    assert result.gain == pytest.approx(result.challenger_auc - result.champion_auc)
    assert result.low < result.gain < result.high


def test_an_equally_good_challenger_is_rarely_promoted() -> None:
    # The rule's false-promotion rate is about 1 - confidence = 5 %; 120 trials of two
    # equally good models may promote a handful, never a fifth.
    promoted = sum(
        decide_trial(compare_paired(*_paired(s, 900, 1.0), FAST), 3, 3, FAST).outcome == "promote"
        for s in range(120)
    )
    assert promoted / 120 <= 0.10, promoted


def test_a_clearly_better_challenger_is_promoted_and_a_worse_one_retired() -> None:
    better = [compare_paired(*_paired(s, 900, 0.3), FAST) for s in range(20)]
    assert sum(decide_trial(c, 3, 3, FAST).outcome == "promote" for c in better) >= 18
    labels, champion, challenger = _paired(7, 900, 3.0)
    verdict = decide_trial(compare_paired(labels, champion, challenger, FAST), 3, 3, FAST)
    assert verdict.outcome == "retire" and "lower bound" in verdict.reason


def test_the_same_evidence_gives_the_same_decision() -> None:
    first = compare_paired(*_paired(3, 600, 1.0), FAST)
    assert compare_paired(*_paired(3, 600, 1.0), FAST) == first


def test_too_few_labelled_days_never_decide_until_the_timeout() -> None:
    policy = TrialPolicy(trial_days=3, timeout_days=5)
    strong = compare_paired(*_paired(1, 900, 0.1), policy)
    waiting = decide_trial(strong, labelled_days=2, days_running=4, policy=policy)
    assert waiting.outcome == "continue" and "2 of 3 labelled" in waiting.reason
    assert decide_trial(None, 0, 4, policy).outcome == "continue"
    late = decide_trial(strong, labelled_days=2, days_running=5, policy=policy)
    assert late.outcome == "retire" and late.reason.startswith("timed out")


def test_labels_of_one_class_are_refused() -> None:
    with pytest.raises(ValueError, match="one class only"):
        compare_paired(np.zeros(50), np.random.rand(50), np.random.rand(50), FAST)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ('{"mode": "blue"}', "mode must be one of shadow, canary, ab"),
        ('{"share": 1.5}', "share must be at most 1, got 1.5"),
        ('{"share": -0.1}', "share must be at least 0, got -0.1"),
        ('{"confidence": 1}', "confidence must be below 1, got 1"),
        ('{"trial_days": 9}', "timeout_days .7. must be at least trial_days .9."),
        ('{"trial_days": -1}', "trial_days must be at least 0"),
        ('{"days": 3}', "unknown field"),
        ("[3]", "unknown field"),
        ("{", "not valid JSON"),
    ],
)
def test_a_bad_policy_is_refused_naming_the_setting(raw: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as error:
        trial_policy_from_json(raw, "MLOPS_TRIAL_POLICY")
    assert str(error.value).startswith("MLOPS_TRIAL_POLICY")


def test_an_empty_policy_is_the_default_and_zero_days_turns_trials_off() -> None:
    assert trial_policy_from_json("  ") == TrialPolicy()
    assert TrialPolicy().enabled
    assert not trial_policy_from_json('{"trial_days": 0}').enabled
