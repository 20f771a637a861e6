"""Partitions shared by the daily assets."""

import dagster as dg

from mlops_assets import settings

daily_partitions = dg.DailyPartitionsDefinition(
    start_date=settings.PARTITION_START.isoformat(),
    end_date=settings.PARTITION_END.isoformat(),
)


def follow_upstream(ignore: dg.AssetSelection | None = None) -> dg.AutomationCondition:
    """Automation for daily assets that follow their upstream partitions.

    Every upstream partition that updates is followed, not only the latest day (plain
    `eager()`), and only once every blocking check upstream has passed.

    Args:
        ignore: Upstream assets whose updates do not trigger (e.g. a reference table whose
            change should not rewrite history).
    """
    eager = dg.AutomationCondition.eager()
    if ignore is not None:
        eager = eager.ignore(ignore)
    return (
        eager.without(dg.AutomationCondition.in_latest_time_window())
        & dg.AutomationCondition.all_deps_blocking_checks_passed()
    )
