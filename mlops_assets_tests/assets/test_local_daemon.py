"""How the local daemon reports failed runs: one line for a deliberate failure, a stack for a bug.

Runs a two-asset graph of its own through ``LocalDaemon.tick_sensor`` on a throwaway instance.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from mlops_assets import settings
from mlops_assets.defs.automation import LANDING_SENSOR
from mlops_assets.defs.loggers import run_loggers
from mlops_assets.local_daemon import LocalDaemon, RunOutcome


@dg.asset
def refused() -> None:
    raise dg.Failure(
        description="the gate refused it\nwith more on a second line", metadata={"a": 1}
    )


@dg.asset
def broken() -> None:
    raise ValueError("a bug")


@dg.sensor(target=[refused, broken])
def asks() -> Iterator[dg.RunRequest]:
    yield dg.RunRequest(asset_selection=[refused.key])
    yield dg.RunRequest(asset_selection=[broken.key])


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[RunOutcome]]:
    defs = dg.Definitions(assets=[refused, broken], sensors=[asks])
    folder: Path = tmp_path_factory.mktemp("local_daemon")
    with dg.instance_for_test() as instance:
        yield LocalDaemon(defs, instance, folder / "cursors.json").tick_sensor("asks")


def test_a_deliberate_failure_is_one_line(outcomes: list[RunOutcome]):
    refusal = outcomes[0]
    assert not refusal.success
    assert refusal.error == "refused: the gate refused it"
    assert refusal.stack is None
    assert refusal.failure_report() == "blocked: refused: the gate refused it (details in the UI)"


def test_a_bug_keeps_its_stack(outcomes: list[RunOutcome]):
    bug = outcomes[1]
    assert not bug.success
    assert bug.error == "broken: ValueError: a bug"
    assert bug.stack is not None and 'raise ValueError("a bug")' in bug.stack
    assert bug.failure_report().startswith(
        f"FAILED: broken: ValueError: a bug (run {bug.run_id})\n"
    )


def test_runs_print_nothing_themselves(tmp_path: Path, capfd: pytest.CaptureFixture):
    # Like the daemon: a run's logs go to the instance; the outcome carries the failure.
    defs = dg.Definitions(assets=[refused, broken], sensors=[asks])
    with dg.instance_for_test() as instance:
        capfd.readouterr()
        LocalDaemon(defs, instance, tmp_path / "cursors.json").tick_sensor("asks")
        assert capfd.readouterr() == ("", "")


@dg.sensor(target=[refused])
def tells(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    context.log.info("what it decided")
    context.log.warning("what went wrong")
    return dg.SkipReason("nothing to do")


@pytest.mark.parametrize(
    ("level", "shown"), [("CRITICAL", ["WARNING"]), ("INFO", ["INFO", "WARNING"])]
)
def test_a_sensor_prints_its_warnings_only_unless_asked_for_more(
    tmp_path: Path, capfd: pytest.CaptureFixture, level: str, shown: list[str]
):
    # The daemon keeps a sensor's log with its tick; the local daemon has no tick to keep it.
    defs = dg.Definitions(assets=[refused], sensors=[tells])
    with dg.instance_for_test() as instance:
        capfd.readouterr()
        LocalDaemon(defs, instance, tmp_path / "cursors.json", log_level=level).tick_sensor("tells")
        lines = capfd.readouterr().err.splitlines()
    assert [w for line in lines for w in ("INFO", "WARNING") if f" - {w} - " in line] == shown


@pytest.mark.parametrize("log_format", settings.LOG_FORMATS)
@pytest.mark.usefixtures("steps_mirrored")
def test_at_error_level_a_deliberate_failure_prints_one_line_and_a_bug_its_stack(
    tmp_path: Path, capfd: pytest.CaptureFixture, log_format: str
):
    # With the code location's console loggers, as the main job runs them.
    defs = dg.Definitions(
        assets=[refused, broken],
        sensors=[asks],
        loggers=run_loggers({settings.LOG_FORMAT_VAR: log_format}),
    )
    with dg.instance_for_test() as instance:
        capfd.readouterr()
        LocalDaemon(defs, instance, tmp_path / "cursors.json", log_level="ERROR").tick_sensor(
            "asks"
        )
        printed = capfd.readouterr().err
    lines = printed.splitlines()
    if log_format == "json":
        lines = [json.loads(line)["message"] for line in lines if line.startswith("{")]
    refusal = [line for line in lines if 'step "refused" failed' in line]
    assert len(refusal) == 1, printed
    assert refusal[0].endswith(
        'Execution of step "refused" failed: the gate refused it (details in the UI)'
    )
    assert "raise dg.Failure(" not in printed  # the deliberate failure's stack is gone
    assert "with more on a second line" not in printed
    if log_format == "text":  # the JSON lines carry no step stacks at all
        assert 'raise ValueError("a bug")' in printed  # the bug keeps its stack


@pytest.mark.usefixtures("steps_mirrored")
def test_by_default_the_code_location_console_keeps_dagster_stacks(
    tmp_path: Path, capfd: pytest.CaptureFixture
):
    # Only the local loop asks for one line: other runs print what Dagster prints.
    defs = dg.Definitions(assets=[refused], loggers=run_loggers({}))
    with dg.instance_for_test() as instance:
        capfd.readouterr()
        result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
            instance=instance,
            raise_on_error=False,
            run_config={"loggers": {"console": {"config": {"log_level": "ERROR"}}}},
        )
        printed = capfd.readouterr().err
    assert not result.success
    assert "raise dg.Failure(" in printed


DAYS = dg.DailyPartitionsDefinition(start_date="2013-01-01", end_date="2013-01-03")


@dg.asset
def reference() -> None:
    return None


@dg.asset(partitions_def=DAYS, deps=[reference])
def day() -> None:
    return None


def landing_defs(ticks: list[int]) -> dg.Definitions:
    """A landing sensor that asks for the reference first, the days once it exists."""

    @dg.sensor(name=LANDING_SENSOR, target=[reference, day])
    def landing(context: dg.SensorEvaluationContext) -> Iterator[dg.RunRequest]:
        ticks.append(1)
        if not context.instance.get_latest_materialization_event(reference.key):
            yield dg.RunRequest(run_key="reference", asset_selection=[reference.key])
            return
        for key in DAYS.get_partition_keys():
            yield dg.RunRequest(run_key=key, partition_key=key, asset_selection=[day.key])

    return dg.Definitions(assets=[reference, day], sensors=[landing])


def test_a_round_of_landed_days_only_is_the_last(tmp_path: Path):
    # The automation and the other sensors ticked after the days' runs: nothing is left.
    ticks: list[int] = []
    with dg.instance_for_test() as instance:
        loop = LocalDaemon(landing_defs(ticks), instance, tmp_path / "cursors.json")
        ran = loop.run_until_idle()
    # Reference, then days (the round after the reference run), then no third landing tick.
    assert [(o.assets, o.partition) for o in ran] == [
        (["reference"], None),
        (["day"], "2013-01-01"),
        (["day"], "2013-01-02"),
    ]
    assert len(ticks) == 2
