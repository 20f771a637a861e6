"""Validate-then-write: contracts run before anything is stored.

A contract failure yields a failed (blocking) asset check carrying the failure table, then
fails the step before the IO manager is called, so a bad delivery never replaces a good
partition and downstream assets are not requested.
"""

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import dagster as dg

from mlops_assets.defs.outputs import frame_output

CONTRACT_CHECK = "contract"


def contract_spec(
    asset: str,
    partitions_def: dg.PartitionsDefinition | None = None,
    name: str = CONTRACT_CHECK,
    description: str | None = None,
) -> dg.AssetCheckSpec:
    """A blocking check spec reported by the asset itself."""
    return dg.AssetCheckSpec(
        name,
        asset=asset,
        blocking=True,
        partitions_def=partitions_def,
        description=description or "The pandera contract of this dataset (validated before write).",
    )


# Called with the number of failure cases (0: passed); returns metadata to record.
Reporter = Callable[[int], Mapping[str, Any]]


def failed(
    check: str, message: str, metadata: Mapping[str, Any], summary: str | None = None
) -> Iterator[Any]:
    """Yields the failed check result, then raises the step failure (nothing is stored).

    The check carries the full ``message`` and the metadata; the step failure says it in one
    line (``summary``), which is what a console shows.
    """
    yield dg.AssetCheckResult(
        check_name=check, passed=False, description=message, metadata=dict(metadata)
    )
    raise dg.Failure(description=summary or message, metadata=dict(metadata), allow_retries=False)


def validated_output(
    validate: Callable[[], Any],
    *,
    source: str,
    metadata: Mapping[str, Any] | None = None,
    check: str = CONTRACT_CHECK,
    report: Reporter | None = None,
) -> Iterator[Any]:
    """Runs ``validate`` (returning a frame or raising), then yields output and check result.

    Args:
        validate: Reads and validates the data; raises ``ContractViolation`` or
            ``LandingFileError`` on bad input (an unreadable file, or one that does not
            match its manifest).
        source: Where the data came from, for metadata.
        metadata: Extra materialization metadata.
        check: Name of the check spec that reports the contract.
        report: Told the verdict (failure cases, 0 when it passed) before anything is
            yielded, e.g. to push it as a metric; its metadata is recorded with the verdict.
    """
    from mlops_assets.lib.contracts import ContractViolation
    from mlops_assets.lib.landing import LandingFileError

    try:
        frame = validate()
    except ContractViolation as violation:
        details = {
            "source": source,
            "rules_broken": violation.rules,
            "rows_failed": len(violation.rows),
            "failure_cases": dg.MetadataValue.md(violation.markdown()),
        }
        reported = report(max(violation.total_failures, 1)) if report else {}
        yield from failed(check, violation.message, {**details, **reported}, violation.summary)
        return
    except LandingFileError as error:
        reported = report(1) if report else {}
        details = {"source": source, "rules_broken": [error.rule], **reported}
        yield from failed(check, str(error), details)
        return
    reported = report(0) if report else {}
    yield frame_output(frame, {"source": source, **(metadata or {}), **reported})
    yield dg.AssetCheckResult(check_name=check, passed=True, metadata={"rows": len(frame)})
