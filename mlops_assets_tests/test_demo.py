from mlops_assets.demo import DayRecord, History, Retraining, TrialRecord, summary_table
from mlops_assets.local_daemon import RunOutcome


def _history() -> History:
    days = {
        "2013-02-27": DayRecord("2013-02-27", "1", 0.70, 900, "ok", 0.1, False, "2013-02-27"),
        "2013-02-28": DayRecord("2013-02-28", "1", 0.60, 900, "ok", 0.3, True, "2013-02-27"),
        "2013-03-01": DayRecord("2013-03-01", "1", 0.80, 900, "ok", 0.5, True, "2013-02-27"),
        "2013-03-02": DayRecord("2013-03-02", "2", 0.70, 900, "ok", 0.3, False, "2013-02-27"),
    }
    retrainings = [
        Retraining(
            "abcdef1234", "2013-03-01", "drift", "3 drifted days", "SUCCESS", "trial", "", "2"
        ),
        Retraining("0123456789", "2013-03-02", "auc", "AUC fell", "SUCCESS", "rejected", "worse"),
    ]
    trial = TrialRecord(
        "2", "2013-03-01", "1", "shadow", [{"day": "2013-03-02", "labelled_days": 1}]
    )
    trial.status = "promoted"
    return History(days=days, retrainings=retrainings, trials={"2": trial})


def test_the_summary_has_one_row_per_month_with_unseen_days_only_in_the_auc():
    blocked = RunOutcome("sensor", ["raw_weather"], "2013-03-02", False, "r1")
    text = summary_table(_history(), [blocked])
    rows = [line.split("|")[1:-1] for line in text.splitlines() if line.startswith("| 2013")]
    feb, mar = ([cell.strip() for cell in row] for row in rows)
    # The in-sample day (2013-02-27) stays out of February's AUC: only 0.60 counts.
    assert feb == ["2013-02", "2", "0", "1", "0.20", "0", "0", "0", "0", "v1", "0.600"]
    # March: one blocked day, one retraining on trial, one rejected, one promotion after trial.
    assert mar == ["2013-03", "2", "1", "1", "0.40", "2", "1", "1", "1", "v1,v2", "0.750"]
    assert "  as of 2013-03-01 [drift] 3 drifted days" in text
    assert "    -> run abcdef12 SUCCESS; gate: trial v2 " in text
    assert "  v2 vs champion v1 from 2013-03-01 (shadow)" in text


def test_a_loop_without_retrainings_says_none():
    text = summary_table(History(), [])
    assert "retrainings (requested by the retrain sensor):\n  none" in text
