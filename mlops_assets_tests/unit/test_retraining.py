"""The retraining policy: decay, sustained drift, cooldown, new data, one key per condition."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from mlops_assets.lib.retraining import (
    MAX_WINDOW_DAYS,
    DayStatus,
    RetrainPolicy,
    decide_retraining,
    policy_from_json,
)

POLICY = RetrainPolicy(
    window_days=7, max_auc_drop=0.05, drift_days=5, cooldown_days=14, min_new_days=7
)
WINDOW_END = date(2013, 1, 28)


def days(
    aucs: list[float | None],
    *,
    first: date = date(2013, 2, 1),
    version: str = "1",
    validation: float = 0.72,
    drifted: list[bool | None] | None = None,
    usable: bool = True,
    window_end: date | None = WINDOW_END,
) -> list[DayStatus]:
    flags = drifted if drifted is not None else [False] * len(aucs)
    return [
        DayStatus(
            day=first + timedelta(days=i),
            model_version=version,
            roc_auc=auc,
            usable=usable and auc is not None,
            validation_roc_auc=validation,
            window_end=window_end,
            drifted=flag,
            drift_share=0.6 if flag else 0.1,
        )
        for i, (auc, flag) in enumerate(zip(aucs, flags, strict=True))
    ]


def test_no_days_no_retraining() -> None:
    decision = decide_retraining([], POLICY)
    assert not decision.retrain
    assert decision.run_key is None


def test_stable_performance_does_not_retrain() -> None:
    decision = decide_retraining(days([0.71] * 10), POLICY)
    assert not decision.retrain
    assert "within policy" in decision.reason
    assert "rolling ROC AUC 0.710" in decision.reason


def test_decay_beyond_the_margin_retrains_with_a_reason() -> None:
    history = days([0.71] * 5 + [0.64] * 7)
    decision = decide_retraining(history, POLICY)
    assert decision.retrain
    assert decision.condition == "performance"
    assert decision.as_of == history[-1].day
    assert decision.champion_version == "1"
    assert "performance decay" in decision.reason
    assert "0.640" in decision.reason and "0.720" in decision.reason
    assert decision.run_key == f"retrain-v1-performance-{history[-1].day.isoformat()}"


def test_a_drop_exactly_at_the_margin_does_not_retrain() -> None:
    # 0.72 - 0.67 = 0.05: not *more* than the allowed drop.
    assert not decide_retraining(days([0.67] * 7), POLICY).retrain


def test_needs_a_full_window_of_usable_days() -> None:
    few = days([0.55] * 6)
    decision = decide_retraining(few, POLICY)
    assert not decision.retrain
    assert "6 of 7 usable" in decision.reason


def test_days_without_labels_are_not_judged() -> None:
    # A collapse on days without labels (auc None) is not evidence of decay.
    history = days([0.71] * 7 + [None] * 7)
    decision = decide_retraining(history, POLICY)
    assert not decision.retrain
    unusable = days([0.50] * 10, usable=False)
    assert not decide_retraining(unusable, POLICY).retrain


def test_days_inside_the_training_window_do_not_count() -> None:
    # In-sample days look good; only the days after the window are judged.
    inside = days([0.90] * 10, first=date(2013, 1, 19))
    after = days([0.60] * 7, first=date(2013, 2, 8))
    decision = decide_retraining(inside + after, POLICY)
    assert decision.retrain
    assert "from 2013-02-08 to 2013-02-14" in decision.reason


def test_only_the_current_champions_days_count() -> None:
    old = days([0.50] * 10, version="1")
    new = days([0.71] * 8, first=date(2013, 2, 11), version="2", window_end=date(2013, 2, 3))
    decision = decide_retraining(old + new, POLICY)
    assert not decision.retrain
    assert decision.champion_version == "2"


def test_sustained_drift_retrains_after_a_streak() -> None:
    history = days([0.71] * 10, drifted=[False] * 5 + [True] * 5)
    decision = decide_retraining(history, POLICY)
    assert decision.retrain
    assert decision.condition == "drift"
    assert "5 consecutive drifted" in decision.reason
    assert "mean drift share 0.60" in decision.reason


def test_drift_triggers_once_per_champion() -> None:
    history = days([0.71] * 30, drifted=[True] * 30)
    last_day = history[-1].day - timedelta(days=20)
    again = decide_retraining(
        history, POLICY, last_retraining=last_day, last_trigger=("1", "drift")
    )
    assert not again.retrain
    assert "already triggered a retraining of v1" in again.reason
    # After a performance retraining (or for a new champion) drift counts again.
    other = decide_retraining(
        history, POLICY, last_retraining=last_day, last_trigger=("1", "performance")
    )
    assert other.retrain and other.condition == "drift"


def test_a_broken_streak_does_not_retrain() -> None:
    history = days([0.71] * 10, drifted=[True] * 4 + [False] + [True] * 4 + [None])
    assert not decide_retraining(history, POLICY).retrain


def test_performance_wins_over_drift_when_both_hold() -> None:
    history = days([0.60] * 7, drifted=[True] * 7)
    assert decide_retraining(history, POLICY).condition == "performance"


def test_cooldown_blocks_a_second_retraining() -> None:
    history = days([0.60] * 20)
    last_day = history[-1].day
    blocked = decide_retraining(history, POLICY, last_retraining=last_day - timedelta(days=5))
    assert not blocked.retrain
    assert "cooldown" in blocked.reason
    allowed = decide_retraining(history, POLICY, last_retraining=last_day - timedelta(days=14))
    assert allowed.retrain


def test_needs_new_data_after_the_training_window() -> None:
    history = days([0.50] * 8, first=date(2013, 1, 29), window_end=date(2013, 2, 2))
    decision = decide_retraining(history, POLICY)
    assert not decision.retrain
    assert "need 7" in decision.reason


def test_same_data_same_run_key_new_day_new_key() -> None:
    history = days([0.60] * 8)
    first = decide_retraining(history, POLICY)
    again = decide_retraining(list(reversed(history)), POLICY)
    assert first.run_key == again.run_key
    later = decide_retraining(days([0.60] * 9), POLICY)
    assert later.run_key != first.run_key


def test_defaults_need_a_clear_drop() -> None:
    # Daily ROC AUC is noisy (a 7-day mean moves by about +-0.03): 0.05 below is not enough.
    assert RetrainPolicy().max_auc_drop == 0.07
    assert not decide_retraining(days([0.67] * 8), RetrainPolicy()).retrain
    assert decide_retraining(days([0.64] * 8), RetrainPolicy()).retrain


@pytest.mark.parametrize(
    "kwargs",
    [
        {"window_days": 0},
        {"training_days": 7, "validation_days": 7},
        {"cooldown_days": -1},
        {"max_auc_drop": -0.1},
    ],
)
def test_policy_refuses_nonsense(kwargs: dict[str, int | float]) -> None:
    with pytest.raises(ValueError):
        RetrainPolicy(**kwargs)  # type: ignore[arg-type]


def test_policy_from_json_overrides_defaults_and_names_its_source() -> None:
    assert policy_from_json("") == RetrainPolicy()
    assert policy_from_json('{"drift_days": 90}').drift_days == 90
    with pytest.raises(ValueError, match=r"MY_VAR: unknown field\(s\) \['windows'\]"):
        policy_from_json('{"windows": 3}', "MY_VAR")
    with pytest.raises(ValueError, match="MY_VAR is not valid JSON"):
        policy_from_json("drift_days=3", "MY_VAR")
    with pytest.raises(ValueError, match="MY_VAR: validation_days must be smaller"):
        policy_from_json('{"validation_days": 40}', "MY_VAR")


def test_lookback_covers_the_longest_window_and_refuses_more_than_a_year() -> None:
    assert RetrainPolicy().lookback_records() == 60  # the floor: a week's windows need less
    assert RetrainPolicy(drift_days=100).lookback_records() == 300
    assert RetrainPolicy(window_days=120, drift_days=30).lookback_days == 120
    with pytest.raises(ValueError, match=f"drift_days must be at most {MAX_WINDOW_DAYS}, got 400"):
        RetrainPolicy(drift_days=400)
