"""Live trials: a challenger that passed the offline gate proves itself on new days first.

While a trial runs, every new day is scored by the champion and by the challenger. Once the
trial has seen ``trial_days`` labelled days, a paired bootstrap of the ROC AUC difference on
the same flights decides: the challenger is promoted when the lower end of the one-sided
interval clears ``min_gain``, retired otherwise. A trial that does not collect its labelled
days within ``timeout_days`` data days is retired. Days without labels never decide.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date
from typing import TYPE_CHECKING, Any, Literal

from mlops_assets.lib.overrides import bounded, check_bounds, from_json_overrides

if TYPE_CHECKING:  # numpy is imported where it is used: the code location loads this module
    import numpy as np

# How the challenger meets live traffic during a trial (the service's modes besides "off").
TRIAL_MODES = ("shadow", "canary", "ab")
Outcome = Literal["promote", "retire", "continue"]


@dataclass(frozen=True)
class TrialPolicy:
    """When a challenger is tried on live traffic, and how the trial is decided.

    Attributes:
        trial_days: Labelled days the trial needs before it decides; 0 = no trial (a
            challenger that passes the offline gate is promoted at once).
        mode: How the service meets the challenger during the trial: shadow, canary or ab.
        share: Share of traffic the challenger answers in canary and ab modes.
        confidence: One-sided confidence of the bootstrap interval; an equally good
            challenger is promoted with probability about ``1 - confidence``.
        min_gain: ROC AUC gain the interval's lower end must exceed.
        rounds: Bootstrap resamples.
        timeout_days: Data days after the start by which the trial must have decided.
        seed: Seed of the bootstrap (decisions are reproducible).
    """

    trial_days: int = bounded(3, low=0)
    mode: str = "shadow"
    share: float = bounded(0.1, low=0, high=1)
    confidence: float = bounded(0.95, low=0.5, below=1)
    min_gain: float = 0.0
    rounds: int = bounded(1000, low=100)
    timeout_days: int = 7
    seed: int = 2013

    def __post_init__(self) -> None:
        if self.mode not in TRIAL_MODES:
            raise ValueError(f"mode must be one of {', '.join(TRIAL_MODES)}, got {self.mode!r}")
        check_bounds(self)
        if self.timeout_days < self.trial_days:
            raise ValueError(
                f"timeout_days ({self.timeout_days}) must be at least trial_days "
                f"({self.trial_days})"
            )

    @property
    def enabled(self) -> bool:
        """Whether a challenger that passes the offline gate goes on trial."""
        return self.trial_days > 0

    def as_dict(self) -> dict[str, Any]:
        """The policy as plain values (tags, metadata)."""
        return asdict(self)


def trial_policy_from_json(raw: str, source: str = "trial policy") -> TrialPolicy:
    """A trial policy from a JSON object of field overrides; empty means the defaults.

    Raises:
        ValueError: for invalid JSON, unknown fields or invalid values, naming ``source``.
    """
    return from_json_overrides(TrialPolicy, raw, source)


def _auc_rows(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """ROC AUC of each row of ``scores`` against the same row of ``labels`` (ties averaged)."""
    import numpy as np
    from scipy.stats import rankdata

    ranks = rankdata(scores, axis=1)
    positives = labels.sum(axis=1)
    negatives = labels.shape[1] - positives
    rank_sum = (ranks * labels).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray((rank_sum - positives * (positives + 1) / 2) / (positives * negatives))


@dataclass(frozen=True)
class PairedComparison:
    """ROC AUC of two models on the same labelled flights, and the bootstrap of the gain.

    Attributes:
        flights: Labelled flights both models scored.
        champion_auc: The champion's ROC AUC on them.
        challenger_auc: The challenger's ROC AUC on them.
        gain: ``challenger_auc - champion_auc``.
        low: Lower end of the one-sided bootstrap interval of the gain.
        high: Upper end (the mirror quantile), for the plot.
    """

    flights: int
    champion_auc: float
    challenger_auc: float
    gain: float
    low: float
    high: float


def compare_paired(
    labels: Any, champion: Any, challenger: Any, policy: TrialPolicy
) -> PairedComparison:
    """Bootstraps the ROC AUC gain of the challenger over the champion on the same flights.

    Flights are resampled with replacement, the same indices for both models, so what the
    two have in common (an easy or a hard day) cancels out of the difference.

    Raises:
        ValueError: when the labels do not hold both classes.
    """
    import numpy as np

    y = np.asarray(labels, dtype=float)
    a = np.asarray(champion, dtype=float)
    b = np.asarray(challenger, dtype=float)
    if y.sum() in (0, len(y)):
        raise ValueError(f"{len(y)} labelled flights hold one class only: no ROC AUC")
    rng = np.random.default_rng(policy.seed)
    index = rng.integers(0, len(y), size=(policy.rounds, len(y)))
    gains = _auc_rows(y[index], b[index]) - _auc_rows(y[index], a[index])
    gains = gains[np.isfinite(gains)]  # a resample of one class has no AUC
    base_a, base_b = (float(_auc_rows(y[None, :], s[None, :])[0]) for s in (a, b))
    alpha = 1.0 - policy.confidence
    return PairedComparison(
        flights=len(y),
        champion_auc=base_a,
        challenger_auc=base_b,
        gain=base_b - base_a,
        low=float(np.quantile(gains, alpha)),
        high=float(np.quantile(gains, 1.0 - alpha)),
    )


@dataclass(frozen=True)
class TrialVerdict:
    """What the trial says now: promote, retire, or keep collecting days."""

    outcome: Outcome
    reason: str


def decide_trial(
    comparison: PairedComparison | None,
    labelled_days: int,
    days_running: int,
    policy: TrialPolicy,
) -> TrialVerdict:
    """The trial's verdict from its evidence so far.

    Args:
        comparison: The paired comparison over the trial's labelled days (None: none yet).
        labelled_days: Days of the trial with labels of both classes.
        days_running: Data days since the trial started (the newest evaluated day included).
        policy: The trial policy.
    """
    if labelled_days < policy.trial_days or comparison is None:
        if days_running >= policy.timeout_days:
            return TrialVerdict(
                "retire",
                f"timed out: {labelled_days} of {policy.trial_days} labelled day(s) after "
                f"{days_running} day(s) (timeout {policy.timeout_days})",
            )
        return TrialVerdict(
            "continue", f"{labelled_days} of {policy.trial_days} labelled day(s) so far"
        )
    interval = (
        f"ROC AUC gain {comparison.gain:+.4f} over {comparison.flights} flights, "
        f"{policy.confidence:.0%} lower bound {comparison.low:+.4f}"
    )
    if comparison.low > policy.min_gain:
        return TrialVerdict("promote", f"{interval} > {policy.min_gain:+.4f}")
    return TrialVerdict("retire", f"{interval} <= {policy.min_gain:+.4f}")


def days_between(start: date, end: date) -> int:
    """Days from ``start`` to ``end``, both included (0 when ``end`` is before ``start``)."""
    return max(0, (end - start).days + 1)
