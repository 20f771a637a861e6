"""When the champion has decayed enough to retrain: the policy, in plain code.

The retraining sensor feeds this the monitored days (each day's drift verdict and real
performance, read from materialization metadata) and acts on the decision. Days count in
*data days* (partition dates), not wall-clock time, so a replay of a year behaves like a year.

Two conditions trigger, checked in this order:

1. **Performance decay.** Over the last ``window_days`` days of the current champion that have
   enough labels (``DayStatus.usable``), the mean daily ROC AUC is more than ``max_auc_drop``
   below the champion's own validation ROC AUC.
2. **Sustained drift.** The drift report flagged each of the last ``drift_days`` monitored days
   of the current champion. Drift alone says the inputs moved, not that the model is worse,
   so it needs a whole streak.

Either only fires when the champion's training window ended at least ``min_new_days`` before
the latest day (a new model needs new data to learn from) and the last retraining was at least
``cooldown_days`` ago (a rejected challenger is not retried every day). The decision carries a
``run_key`` built from the champion version, the condition and the latest monitored day: the
same data gives the same key, so one condition starts at most one training run however often
the sensor evaluates it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from statistics import fmean

from mlops_assets.lib.overrides import bounded, check_bounds, from_json_overrides

# Longest window a policy may use: the sensor reads metadata for the whole window every tick
# (it has 60 s), so a longer question is one for an offline study, not for the sensor.
MAX_WINDOW_DAYS = 366


@dataclass(frozen=True)
class RetrainPolicy:
    """Thresholds of the retraining policy.

    Attributes:
        window_days: Usable days the rolling ROC AUC is taken over (K).
        max_auc_drop: Retrain when the rolling ROC AUC is this far below the champion's
            validation ROC AUC.
        drift_days: Retrain when this many consecutive monitored days drifted.
        cooldown_days: Data days between two retrainings.
        min_new_days: Data days after the champion's training window before a retraining.
        training_days: Days in the retraining window (ending at the latest monitored day).
        validation_days: Last days of that window held out for the gate.
    """

    window_days: int = bounded(7, low=1, high=MAX_WINDOW_DAYS)
    max_auc_drop: float = bounded(0.07, low=0)
    drift_days: int = bounded(7, low=1, high=MAX_WINDOW_DAYS)
    cooldown_days: int = bounded(14, low=0)
    min_new_days: int = bounded(7, low=0)
    training_days: int = bounded(28, low=1)
    validation_days: int = bounded(7, low=1)

    def __post_init__(self) -> None:
        check_bounds(self)
        if self.validation_days >= self.training_days:
            raise ValueError("validation_days must be smaller than training_days")

    @property
    def lookback_days(self) -> int:
        """Monitored days the policy looks back over: the longer of its two windows."""
        return max(self.window_days, self.drift_days)

    def lookback_records(self, floor: int = 60) -> int:
        """Materializations per report asset a decision needs, at least ``floor``.

        Three per day of the longer window: unusable days (no labels) stretch the window of
        usable ones, and a re-materialized day has more than one record.
        """
        return max(floor, 3 * self.lookback_days)


def policy_from_json(raw: str, source: str = "policy") -> RetrainPolicy:
    """A policy from a JSON object of field overrides; empty means the defaults.

    Raises:
        ValueError: for invalid JSON, unknown fields or invalid values, naming ``source``.
    """
    return from_json_overrides(RetrainPolicy, raw, source)


@dataclass(frozen=True)
class DayStatus:
    """What monitoring knows about one day.

    Attributes:
        day: The partition date.
        model_version: The champion version that predicted the day.
        roc_auc: The day's ROC AUC, when labels of both classes exist.
        usable: Whether the day has enough labels to judge the model by.
        validation_roc_auc: The predicting model's ROC AUC on its validation holdout.
        window_end: Last day of the predicting model's training window.
        drifted: The drift report's verdict (None: no report yet).
        drift_share: Share of monitored columns that drifted.
    """

    day: date
    model_version: str
    roc_auc: float | None = None
    usable: bool = False
    validation_roc_auc: float | None = None
    window_end: date | None = None
    drifted: bool | None = None
    drift_share: float | None = None


@dataclass(frozen=True)
class RetrainDecision:
    """The policy's verdict on the latest monitored day.

    Attributes:
        retrain: Whether to request a training run.
        reason: Why (or why not), in words for run tags and logs.
        condition: ``performance``, ``drift`` or None.
        as_of: The latest monitored day (end of the retraining window).
        champion_version: The champion the days were monitored for.
        run_key: Identity of the condition, for de-duplication of run requests.
    """

    retrain: bool
    reason: str
    condition: str | None = None
    as_of: date | None = None
    champion_version: str | None = None
    run_key: str | None = None


def decide_retraining(
    days: Sequence[DayStatus],
    policy: RetrainPolicy,
    *,
    last_retraining: date | None = None,
    last_trigger: tuple[str, str] | None = None,
) -> RetrainDecision:
    """Applies the policy to the monitored days of the champion.

    Args:
        days: Monitored days, any order; only those predicted by the version of the latest
            day (the current champion) count.
        policy: The thresholds.
        last_retraining: ``as_of`` day of the latest retraining requested, if any.
        last_trigger: Champion version and condition of that retraining. A drift streak
            triggers at most once per champion: drift that persists (a season, a holiday
            schedule) is not a reason to retrain again while performance holds.
    """
    if not days:
        return RetrainDecision(False, "no monitored days yet")
    mine, latest = _champion_days(days)
    version = latest.model_version

    def decision(
        retrain: bool, reason: str, condition: str | None = None, key: str | None = None
    ) -> RetrainDecision:
        return RetrainDecision(retrain, reason, condition, latest.day, version, key)

    waiting = _too_early(latest, policy, last_retraining)
    if waiting:
        return decision(False, waiting)
    performance_note, decayed = _performance(mine, latest, policy)
    if decayed:
        key = f"retrain-v{version}-performance-{latest.day.isoformat()}"
        return decision(True, f"performance decay: {performance_note}", "performance", key)
    streak = _drift_streak(mine)
    if streak >= policy.drift_days and last_trigger == (version, "drift"):
        notes = [performance_note] if performance_note else []
        notes.append(f"drift streak {streak} already triggered a retraining of v{version}")
        return decision(False, "within policy: " + "; ".join(notes))
    if streak >= policy.drift_days:
        shares = [d.drift_share for d in mine[-policy.drift_days :] if d.drift_share is not None]
        share_note = f", mean drift share {fmean(shares):.2f}" if shares else ""
        return decision(
            True,
            f"sustained drift: {streak} consecutive drifted day(s) up to {latest.day}{share_note}",
            "drift",
            f"retrain-v{version}-drift-{latest.day.isoformat()}",
        )
    notes = [n for n in (performance_note, f"drift streak {streak}/{policy.drift_days}") if n]
    return decision(False, "within policy: " + "; ".join(notes))


def _champion_days(days: Sequence[DayStatus]) -> tuple[list[DayStatus], DayStatus]:
    """The days of the latest day's model after its training window, in order; the latest."""
    ordered = sorted(days, key=lambda d: d.day)
    latest = ordered[-1]
    # Days the champion was trained or validated on say nothing about how it generalizes.
    mine = [
        d
        for d in ordered
        if d.model_version == latest.model_version
        and (d.window_end is None or d.day > d.window_end)
    ]
    return mine, latest


def _usable_window(mine: list[DayStatus], policy: RetrainPolicy) -> list[DayStatus]:
    return [d for d in mine if d.usable and d.roc_auc is not None][-policy.window_days :]


@dataclass(frozen=True)
class ModelHealth:
    """How the champion stands on its latest monitored day, as the policy measures it.

    Attributes:
        day: The latest monitored day.
        model_version: The champion that predicted it.
        drift_streak: Consecutive drifted days up to ``day``.
        rolling_roc_auc: Mean ROC AUC over the policy's window of usable days (None until
            the window is full).
        rolling_auc_drop: Validation ROC AUC minus ``rolling_roc_auc`` (None when either is
            unknown).
    """

    day: date
    model_version: str
    drift_streak: int
    rolling_roc_auc: float | None
    rolling_auc_drop: float | None


def model_health(days: Sequence[DayStatus], policy: RetrainPolicy) -> ModelHealth | None:
    """The champion's drift streak and rolling ROC AUC (None without monitored days)."""
    if not days:
        return None
    mine, latest = _champion_days(days)
    usable = _usable_window(mine, policy)
    full = len(usable) >= policy.window_days
    rolling = fmean(d.roc_auc for d in usable if d.roc_auc is not None) if full else None
    reference = latest.validation_roc_auc
    drop = reference - rolling if reference is not None and rolling is not None else None
    return ModelHealth(latest.day, latest.model_version, _drift_streak(mine), rolling, drop)


def _too_early(latest: DayStatus, policy: RetrainPolicy, last_retraining: date | None) -> str:
    """Why no retraining may start yet (too few new days, cooldown), or an empty string."""
    if latest.window_end is not None:
        new_days = (latest.day - latest.window_end).days
        if new_days < policy.min_new_days:
            return (
                f"only {new_days} day(s) since v{latest.model_version}'s training window ended "
                f"{latest.window_end} (need {policy.min_new_days})"
            )
    if last_retraining is not None:
        since = (latest.day - last_retraining).days
        if since < policy.cooldown_days:
            return (
                f"cooldown: last retraining as of {last_retraining}, {since} of "
                f"{policy.cooldown_days} day(s) ago"
            )
    return ""


def _performance(
    mine: list[DayStatus], latest: DayStatus, policy: RetrainPolicy
) -> tuple[str, bool]:
    """The rolling ROC AUC against validation, in words, and whether it decayed too far."""
    usable = _usable_window(mine, policy)
    reference = latest.validation_roc_auc
    if reference is None:
        return "", False
    if len(usable) < policy.window_days:
        return f"{len(usable)} of {policy.window_days} usable labelled day(s)", False
    rolling = fmean(d.roc_auc for d in usable if d.roc_auc is not None)
    drop = reference - rolling
    note = (
        f"rolling ROC AUC {rolling:.3f} over {len(usable)} usable day(s) from "
        f"{usable[0].day} to {usable[-1].day} vs validation {reference:.3f} (drop {drop:.3f})"
    )
    if drop > policy.max_auc_drop:
        return f"{note} > {policy.max_auc_drop}", True
    return note, False


def _drift_streak(mine: list[DayStatus]) -> int:
    """Consecutive drifted days up to the latest."""
    streak = 0
    for status in reversed(mine):
        if not status.drifted:
            break
        streak += 1
    return streak
