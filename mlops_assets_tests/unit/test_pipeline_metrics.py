"""The pipeline's metrics as Prometheus text: names, labels, values, escaping, push URLs.

The text is read back with prometheus_client's own parser (installed with BentoML), the
reference implementation of the format the Pushgateway accepts.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mlops_assets.lib import pipeline_metrics as pm
from mlops_assets.lib.retraining import ModelHealth

# Prometheus' metric and label name grammar.
METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
# Metrics about a day (the others are running totals and the registry's state).
PER_DAY = (
    "mlops_day_",
    "mlops_drift_",
    "mlops_model_",
    "mlops_contract_",
    "mlops_landing_",
    "mlops_retraining_last_",
)

DRIFT = {"status": "drifted", "drifted": True, "drift_share": 0.25, "drifted_count": 4}
PERFORMANCE = {
    "status": "ok",
    "usable": True,
    "rows": 950,
    "labelled_rows": 931,
    "roc_auc": 0.5612,
    "validation_roc_auc": 0.7121,
    "auc_drop": 0.1509,
}


def parsed(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Family name -> {sorted labels: value}, through prometheus_client's parser."""
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(family.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def test_every_metric_is_a_valid_uniquely_named_gauge() -> None:
    names = [metric.name for metric in pm.METRICS]
    assert len(names) == len(set(names))
    for metric in pm.METRICS:
        assert METRIC_NAME.match(metric.name) and metric.name.startswith("mlops_"), metric
        assert ":" not in metric.name  # colons are for recording rules
        assert metric.type == "gauge"  # a pushed counter restarts at every push
        assert metric.help and "\n" not in metric.help
        assert all(LABEL_NAME.match(label) for label in metric.labels), metric
        # The Pushgateway's grouping labels must not be metric labels too.
        assert not {"job", "instance", pm.GROUP_LABEL} & set(metric.labels), metric
        if metric.name.startswith(PER_DAY):
            assert "day" in metric.labels, metric  # their alerts name the day


def test_a_degraded_day_reads_back_with_its_day_and_model_version() -> None:
    health = ModelHealth(date(2013, 8, 5), "2", 3, rolling_roc_auc=0.64, rolling_auc_drop=0.07)
    samples = pm.day_samples("2013-08-05", "2", drift=DRIFT, performance=PERFORMANCE, health=health)
    families = parsed(pm.exposition(samples))
    key = (("day", "2013-08-05"), ("model_version", "2"))
    assert families == {
        pm.DRIFT_SHARE.name: {key: 0.25},
        pm.DAY_DRIFTED.name: {key: 1.0},
        pm.DRIFT_STREAK_DAYS.name: {key: 3.0},
        pm.ROLLING_ROC_AUC.name: {key: 0.64},
        pm.ROLLING_AUC_DROP.name: {key: 0.07},
        pm.PERFORMANCE_USABLE.name: {key: 1.0},
        pm.LABELLED_ROWS.name: {key: 931.0},
        pm.ROC_AUC.name: {key: 0.5612},
        pm.VALIDATION_ROC_AUC.name: {key: 0.7121},
    }


def test_help_and_type_lines_come_once_per_family_before_its_samples() -> None:
    samples = [
        *pm.contract_samples("raw_flights", "2013-02-12", 0),
        *pm.contract_samples("raw_weather", "2013-02-12", 2),
    ]
    text = pm.exposition(samples)
    assert text.splitlines() == [
        f"# HELP {pm.CONTRACT_FAILURES.name} {pm.CONTRACT_FAILURES.help}",
        f"# TYPE {pm.CONTRACT_FAILURES.name} gauge",
        f'{pm.CONTRACT_FAILURES.name}{{dataset="raw_flights",day="2013-02-12"}} 0.0',
        f'{pm.CONTRACT_FAILURES.name}{{dataset="raw_weather",day="2013-02-12"}} 2.0',
    ]
    assert text.endswith("\n")
    assert pm.exposition([]) == ""


def test_what_is_unknown_is_left_out() -> None:
    # A day without labels has no AUC; an empty day's drift report has no share.
    no_labels = {"status": "no labels", "usable": False, "rows": 12, "labelled_rows": 0}
    empty_day = {"status": "empty day", "detail": "no rows"}
    samples = pm.day_samples("2013-03-01", "1", drift=empty_day, performance=no_labels)
    assert {s.metric.name for s in samples} == {
        pm.PERFORMANCE_USABLE.name,
        pm.LABELLED_ROWS.name,
    }
    assert [s.value for s in samples] == [0.0, 0.0]
    assert pm.day_samples("2013-03-01", "1") == []


def test_label_values_and_special_numbers_are_escaped() -> None:
    odd = 'we"ird\\name\nwith newline'
    samples = [
        pm.Sample(pm.CONTRACT_FAILURES, math.nan, {"dataset": odd, "day": "2013-01-01"}),
        pm.Sample(pm.CONTRACT_FAILURES, math.inf, {"dataset": "b", "day": "2013-01-01"}),
        pm.Sample(pm.CONTRACT_FAILURES, 1e-7, {"dataset": "c", "day": "2013-01-01"}),
    ]
    text = pm.exposition(samples)
    assert r'dataset="we\"ird\\name\nwith newline"' in text
    values = parsed(text)[pm.CONTRACT_FAILURES.name]
    assert math.isnan(values[(("dataset", odd), ("day", "2013-01-01"))])
    assert values[(("dataset", "b"), ("day", "2013-01-01"))] == math.inf
    assert values[(("dataset", "c"), ("day", "2013-01-01"))] == 1e-7


def test_a_sample_needs_exactly_its_metric_labels() -> None:
    with pytest.raises(ValueError, match=r"takes labels \['day', 'model_version'\]"):
        pm.Sample(pm.ROC_AUC, 0.7, {"day": "2013-01-01"})
    with pytest.raises(ValueError, match="got"):
        pm.Sample(pm.ROC_AUC, 0.7, {"day": "d", "model_version": "1", "colour": "blue"})


def test_the_gate_pushes_its_newest_decision_totals_champion_and_trial() -> None:
    at = datetime(2013, 8, 8, tzinfo=UTC)
    trial = {"model_version": "2", "champion_version": "1", "mode": "shadow", "status": "running"}
    samples = pm.gate_samples(
        "trial", "2", at, champion="1", totals={"promoted": 1, "trial": 1}, trial=trial
    )
    families = parsed(pm.exposition(samples))
    assert families == {
        pm.GATE_LAST_DECISION.name: {(("decision", "trial"), ("model_version", "2")): 1375920000.0},
        pm.GATE_DECISIONS.name: {(("decision", "promoted"),): 1.0, (("decision", "trial"),): 1.0},
        pm.CHAMPION.name: {(("model_version", "1"),): 1.0},
        pm.TRIAL_RUNNING.name: {
            (("champion_version", "1"), ("mode", "shadow"), ("model_version", "2")): 1.0
        },
    }
    ended = pm.gate_samples(
        "promoted after trial",
        "2",
        at,
        champion="2",
        totals={},
        trial={**trial, "status": "promoted"},
    )
    assert [s.value for s in ended if s.metric is pm.TRIAL_RUNNING] == [0.0]
    with pytest.raises(ValueError, match="time zone"):
        pm.gate_samples("rejected", "3", datetime(2013, 8, 8), champion=None, totals={})


def test_a_label_less_metric_is_written_without_braces() -> None:
    text = pm.exposition([pm.misses_sample(3)])
    assert text.splitlines()[-1] == f"{pm.PUSH_MISSES.name} 3.0"
    assert parsed(text) == {pm.PUSH_MISSES.name: {(): 3.0}}


def test_landing_and_retraining_timestamps_are_unix_seconds() -> None:
    arrived = datetime(2026, 11, 30, 6, 0, tzinfo=timezone(timedelta(hours=-5)))
    (landing,) = pm.landing_samples("2013-03-01", arrived)
    assert landing.value == 1796036400.0  # 11:00 UTC
    failed, finished = pm.retraining_samples("2013-08-05", "1", failed=True, finished_at=arrived)
    assert (failed.metric, failed.value) == (pm.RETRAINING_FAILED, 1.0)
    assert (finished.metric, finished.value) == (pm.RETRAINING_FINISHED, landing.value)
    assert dict(failed.labels) == {"day": "2013-08-05", "model_version": "1"}
    naive = datetime(2026, 11, 30, 6, 0)
    with pytest.raises(ValueError, match="time zone"):
        pm.landing_samples("2013-03-01", naive)
    with pytest.raises(ValueError, match="time zone"):
        pm.retraining_samples("2013-08-05", "1", failed=False, finished_at=naive)
    assert pm.day_start("2013-03-01").timestamp() == 1362096000.0


def test_push_urls_name_the_job_and_the_source() -> None:
    assert pm.push_url("http://127.0.0.1:9091/", "model_performance") == (
        "http://127.0.0.1:9091/metrics/job/mlops_pipeline/asset/model_performance"
    )
    # A "/" would split the path: the Pushgateway's base64 escape (URL-safe alphabet).
    assert pm.push_url("http://gw:9091", "a/b", job="x") == (
        "http://gw:9091/metrics/job/x/asset@base64/YS9i"
    )
    assert pm.push_url("http://gw:9091", "").endswith("/asset@base64/=")


def test_push_to_an_unreachable_gateway_raises_oserror() -> None:
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    samples = pm.contract_samples("raw_flights", "2013-02-12", 0)
    with pytest.raises(OSError):
        pm.push(f"http://127.0.0.1:{port}", "raw_flights", samples, timeout=2.0)
