"""The main job: the closed loop on real days, and the history it leaves in the instance.

``run_closed_loop`` bootstraps a champion on the first weeks and then replays the following
days one at a time through the same sensors and automation conditions the daemon evaluates
(``LocalDaemon``): landing -> ingestion -> features -> predictions -> drift and performance
reports -> retraining sensor -> training and the gate -> bento. ``read_history`` reads back
what happened from the Dagster instance alone (materialization metadata, observations, run
tags), so the summary is the same whether the loop ran here or under ``dagster dev``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import dagster as dg

from mlops_assets.defs import jobs
from mlops_assets.defs.retraining import RETRAIN_SENSOR
from mlops_assets.defs.trials import TRIAL_SENSOR
from mlops_assets.local_daemon import LocalDaemon, RunOutcome


@dataclass(frozen=True)
class Retraining:
    """A retraining run and what the gate made of it."""

    run_id: str
    as_of: str
    condition: str
    reason: str
    status: str
    decision: str = "no decision"
    gate_reason: str = ""
    challenger_version: str | None = None


@dataclass
class TrialRecord:
    """A live trial: its evaluations day by day, and how it ended."""

    version: str
    start_day: str = ""
    champion_version: str = ""
    mode: str = ""
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    status: str = "running"
    reason: str = ""


@dataclass
class DayRecord:
    """What monitoring recorded for one day."""

    day: str
    model_version: str | None = None
    roc_auc: float | None = None
    labelled_rows: int = 0
    status: str = ""
    drift_share: float | None = None
    drifted: bool | None = None
    window_end: str | None = None

    @property
    def out_of_sample(self) -> bool:
        """Whether the predicting model had not been trained or validated on this day."""
        return self.window_end is None or self.day > self.window_end


@dataclass
class History:
    """The loop's history as the instance records it."""

    days: dict[str, DayRecord] = field(default_factory=dict)
    retrainings: list[Retraining] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    blocked: dict[str, str] = field(default_factory=dict)
    trials: dict[str, TrialRecord] = field(default_factory=dict)


def _metadata(event: Any) -> dict[str, Any]:
    return {k: v.value for k, v in event.metadata.items()}


def read_history(instance: dg.DagsterInstance) -> History:
    """Reads drift, performance, gate decisions and retraining runs from the instance."""
    history = History()
    for key, apply in (("model_performance", _apply_performance), ("drift_report", _apply_drift)):
        records = instance.fetch_materializations(
            dg.AssetKey(key), limit=10_000, ascending=True
        ).records
        for record in records:
            if record.partition_key and record.asset_materialization:
                day = history.days.setdefault(record.partition_key, DayRecord(record.partition_key))
                apply(day, _metadata(record.asset_materialization))
    champion = dg.AssetKey("champion_model")
    events = [
        (r.storage_id, r.run_id, _metadata(r.asset_materialization))
        for r in instance.fetch_materializations(champion, limit=10_000).records
        if r.asset_materialization
    ] + [
        (r.storage_id, r.run_id, _metadata(r.asset_observation))
        for r in instance.fetch_observations(champion, limit=10_000).records
        if r.asset_observation
    ]
    history.decisions = [
        {"run_id": run_id, **meta} for _, run_id, meta in sorted(events, key=lambda e: e[0])
    ]
    by_run = {d["run_id"]: d for d in history.decisions}
    runs = instance.get_runs(filters=dg.RunsFilter(tags={jobs.TRIGGER_TAG: jobs.RETRAIN_TRIGGER}))
    for run in sorted(runs, key=lambda r: r.tags.get(jobs.AS_OF_TAG, "")):
        decision = by_run.get(run.run_id, {})
        history.retrainings.append(
            Retraining(
                run_id=run.run_id,
                as_of=run.tags.get(jobs.AS_OF_TAG, "?"),
                condition=run.tags.get(jobs.CONDITION_TAG, "?"),
                reason=run.tags.get(jobs.REASON_TAG, ""),
                status=run.status.value,
                decision=str(decision.get("decision", "no decision")),
                gate_reason=str(decision.get("reason", "")),
                challenger_version=decision.get("challenger_version"),
            )
        )
    history.trials = read_trials(instance)
    return history


def read_trials(instance: dg.DagsterInstance) -> dict[str, TrialRecord]:
    """Every live trial by version: its start, its daily evidence and its end."""
    trials: dict[str, TrialRecord] = {}
    for key, apply in (("model_trial", _apply_trial), ("trial_evaluation", _apply_evaluation)):
        records = instance.fetch_materializations(
            dg.AssetKey(key), limit=10_000, ascending=True
        ).records
        for record in records:
            if record.asset_materialization:
                apply(
                    trials, {"day": record.partition_key, **_metadata(record.asset_materialization)}
                )
    return trials


def _apply_trial(trials: dict[str, TrialRecord], meta: dict[str, Any]) -> None:
    if meta.get("status") == "none":  # a promotion without a trial
        return
    trial = trials.setdefault(str(meta["model_version"]), TrialRecord(str(meta["model_version"])))
    if meta.get("status") == "running":
        trial.start_day = str(meta.get("start_day", ""))
        trial.champion_version = str(meta.get("champion_version", ""))
        trial.mode = str(meta.get("mode", ""))
    else:
        trial.status, trial.reason = str(meta.get("status")), str(meta.get("reason", ""))


def _apply_evaluation(trials: dict[str, TrialRecord], meta: dict[str, Any]) -> None:
    version = str(meta["trial_version"])
    trials.setdefault(version, TrialRecord(version)).evaluations.append(meta)


def _apply_performance(day: DayRecord, meta: dict[str, Any]) -> None:
    day.model_version = str(meta.get("model_version")) if meta.get("model_version") else None
    day.roc_auc = meta.get("roc_auc")
    day.labelled_rows = int(meta.get("labelled_rows") or 0)
    day.status = str(meta.get("status", ""))
    day.window_end = str(meta["window_end"]) if meta.get("window_end") else None


def _apply_drift(day: DayRecord, meta: dict[str, Any]) -> None:
    day.drift_share = meta.get("drift_share")
    day.drifted = meta.get("drifted")


@dataclass
class LoopReport:
    """What one invocation of the main job did."""

    bootstrap: list[RunOutcome] = field(default_factory=list)
    replay: list[RunOutcome] = field(default_factory=list)
    days: list[date] = field(default_factory=list)
    seconds: float = 0.0


def _train(defs: dg.Definitions, instance: dg.DagsterInstance, window: dict[str, Any]) -> bool:
    """Runs the training job on one window (``training_set``'s config); True if it succeeded."""
    result = defs.resolve_job_def(jobs.TRAINING_JOB).execute_in_process(
        asset_selection=jobs.TRAINING_ASSETS,
        instance=instance,
        run_config={
            "ops": {"training_set": {"config": window}},
            "loggers": {"console": {"config": {"log_level": "WARNING"}}},
        },
        tags={jobs.TRIGGER_TAG: jobs.BOOTSTRAP_TRIGGER},
        raise_on_error=False,
    )
    return bool(result.success)


def run_closed_loop(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    loop: LocalDaemon,
    deliver: Callable[[date, int], None],
    *,
    start: date,
    bootstrap_days: int,
    until: date,
    validation_days: int = 7,
    progress: Callable[[str], None] = print,
) -> LoopReport:
    """Bootstraps a champion, then replays each following day through the loop.

    Args:
        defs: The code location's definitions.
        instance: The Dagster instance the loop records into.
        loop: Sensor and automation ticks in-process (with the retraining sensor).
        deliver: Puts ``n`` days starting at a day into the landing zone (skips existing).
        start: First day of the bootstrap window.
        bootstrap_days: Days delivered before the first training.
        until: Last day replayed (inclusive).
        validation_days: Held-out days of the bootstrap training.
        progress: Receives one line per replayed week, per retraining and per failed run.
    """
    began = time.perf_counter()
    report = LoopReport()
    deliver(start, bootstrap_days)
    report.bootstrap += _run_until_idle(loop, progress)
    if not instance.get_latest_materialization_event(dg.AssetKey("champion_model")):
        last = start + timedelta(days=bootstrap_days - 1)
        window = {"as_of": last.isoformat(), "days": bootstrap_days}
        trained = _train(defs, instance, {**window, "validation_days": validation_days})
        progress(f"bootstrap training on {start} .. {last}: {'succeeded' if trained else 'FAILED'}")
    report.bootstrap += _run_until_idle(loop, progress)
    first = start + timedelta(days=bootstrap_days)
    progress(
        f"bootstrap done in {time.perf_counter() - began:.0f} s "
        f"({len(report.bootstrap)} runs); replaying {first} .. {until} day by day"
    )
    week: list[RunOutcome] = []
    for offset in range((until - first).days + 1):
        day = first + timedelta(days=offset)
        deliver(day, 1)
        outcomes = _run_until_idle(loop, progress)
        report.replay += outcomes
        report.days.append(day)
        week += outcomes
        _report_automation(day, outcomes, progress)
        if day.weekday() == 6 or day == until:
            _report_week(day, week, time.perf_counter() - began, progress)
            week = []
    report.seconds = time.perf_counter() - began
    return report


def _run_until_idle(loop: LocalDaemon, progress: Callable[[str], None]) -> list[RunOutcome]:
    outcomes = loop.run_until_idle()
    for outcome in outcomes:
        if not outcome.success:
            progress(f"  {outcome.failure_report()}")
    return outcomes


def _report_automation(
    day: date, outcomes: list[RunOutcome], progress: Callable[[str], None]
) -> None:
    """One line per run the retraining or trial sensor launched on ``day``."""
    for outcome in outcomes:
        result = "ok" if outcome.success else "failed"
        if outcome.trigger == RETRAIN_SENSOR:
            progress(f"  {day}: retraining ({result})")
        if outcome.trigger == TRIAL_SENSOR:
            progress(f"  {day}: trial ended ({result})")


def _report_week(
    day: date, week: list[RunOutcome], elapsed: float, progress: Callable[[str], None]
) -> None:
    failed = sum(not o.success for o in week)
    progress(
        f"  through {day}: {len(week)} runs"
        + (f", {failed} failed" if failed else "")
        + f" ({elapsed:.0f} s)"
    )


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


_SUMMARY_HEADERS = [
    "month",
    "days",
    "blocked",
    "drift alerts",
    "drift share",
    "retrainings",
    "promoted",
    "on trial",
    "rejected",
    "champion",
    "daily AUC (unseen days)",
]


def summary_table(history: History, outcomes: list[RunOutcome]) -> str:
    """A month-by-month table of the loop, then the retrainings with their reasons."""
    from tabulate import tabulate

    blocked_days = {o.partition for o in outcomes if not o.success and o.partition}
    months: dict[str, list[DayRecord]] = {}
    for name in sorted(history.days):
        months.setdefault(name[:7], []).append(history.days[name])
    promoted_after_trial: dict[str, int] = {}
    for trial in history.trials.values():
        if trial.evaluations and trial.status == "promoted":
            month = str(trial.evaluations[-1]["day"])[:7]
            promoted_after_trial[month] = promoted_after_trial.get(month, 0) + 1
    rows = [
        _month_row(
            month,
            records,
            blocked=sum(1 for b in blocked_days if b.startswith(month)),
            retrainings=[r for r in history.retrainings if r.as_of.startswith(month)],
            promoted_after_trial=promoted_after_trial.get(month, 0),
        )
        for month, records in months.items()
    ]
    # Per-column formats: the drift share to 2 places, the AUC to 3; "-" for a month without.
    formats = ["g"] * 4 + [".2f"] + ["g"] * 5 + [".3f"]
    table = tabulate(
        rows, headers=_SUMMARY_HEADERS, tablefmt="github", floatfmt=formats, missingval="-"
    )
    lines = [table, "", "retrainings (requested by the retrain sensor):"]
    lines += _retraining_lines(history.retrainings) or ["  none"]
    return "\n".join([*lines, *trial_lines(history.trials)])


def _month_row(
    month: str,
    records: list[DayRecord],
    *,
    blocked: int,
    retrainings: list[Retraining],
    promoted_after_trial: int,
) -> list[object]:
    # In-sample days (the champion's own training window) would flatter the model.
    aucs = [
        r.roc_auc for r in records if r.roc_auc is not None and r.status == "ok" and r.out_of_sample
    ]
    mean_share = _mean([r.drift_share for r in records if r.drift_share is not None])
    versions = [r.model_version for r in records if r.model_version]
    decisions = [r.decision for r in retrainings]
    return [
        month,
        len(records),
        blocked,
        sum(1 for r in records if r.drifted),
        mean_share,
        len(retrainings),
        decisions.count("promoted") + promoted_after_trial,
        decisions.count("trial"),
        decisions.count("rejected"),
        ",".join(f"v{v}" for v in dict.fromkeys(versions)) or "-",
        _mean(aucs),
    ]


def _retraining_lines(retrainings: list[Retraining]) -> list[str]:
    lines = []
    for r in retrainings:
        version = f" v{r.challenger_version}" if r.challenger_version else ""
        lines.append(f"  as of {r.as_of} [{r.condition}] {r.reason}")
        lines.append(
            f"    -> run {r.run_id[:8]} {r.status}; gate: {r.decision}{version} {r.gate_reason}"
        )
    return lines


def trial_lines(trials: dict[str, TrialRecord]) -> list[str]:
    """The live trials: each day's paired evidence, then the outcome."""
    lines = ["", "live trials (both models score every new day; paired bootstrap decides):"]
    if not trials:
        lines.append("  none")
    for trial in trials.values():
        lines.append(
            f"  v{trial.version} vs champion v{trial.champion_version} from {trial.start_day} "
            f"({trial.mode})"
        )
        for e in trial.evaluations:
            evidence = (
                f"AUC {e['challenger_roc_auc']:.3f} vs {e['champion_roc_auc']:.3f}, "
                f"gain {e['roc_auc_gain']:+.3f} (lower bound {e['gain_lower_bound']:+.3f})"
                if "roc_auc_gain" in e
                else "no labelled flights yet"
            )
            lines.append(f"    {e['day']}: {e['labelled_days']} labelled day(s), {evidence}")
        lines.append(f"    -> {trial.status}{': ' + trial.reason if trial.reason else ''}")
    return lines
