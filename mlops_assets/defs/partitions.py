"""Partitions shared by the daily assets, and how they follow their upstream days."""

from collections.abc import Callable
from typing import Any

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


def daily_asset(
    group_name: str, *, automation_condition: dg.AutomationCondition | None = None, **kwargs: Any
) -> Callable[[Callable[..., Any]], dg.AssetsDefinition]:
    """``@dg.asset`` for a daily asset of ``group_name`` that follows its upstream days.

    Args:
        group_name: The asset group (lifecycle stage).
        automation_condition: Where it is not plain ``follow_upstream()``.
        **kwargs: Anything else ``@dg.asset`` takes (kinds, deps, check specs, ...).
    """
    if automation_condition is None:
        automation_condition = follow_upstream()
    return dg.asset(
        partitions_def=daily_partitions,
        group_name=group_name,
        automation_condition=automation_condition,
        **kwargs,
    )
