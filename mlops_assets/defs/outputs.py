"""Outputs of frames, versioned by their content."""

from collections.abc import Mapping
from typing import Any

import dagster as dg


def frame_output(frame: Any, metadata: Mapping[str, Any]) -> dg.Output[Any]:
    """The frame as an output whose data version is its content hash.

    The same rows give the same version whatever run wrote them, so automation does not
    re-run what depends on an unchanged day. Row count and hash go into the metadata.
    """
    from mlops_assets.lib.fingerprints import frame_fingerprint

    fingerprint = frame_fingerprint(frame)
    return dg.Output(
        frame,
        data_version=dg.DataVersion(fingerprint),
        metadata={"dagster/row_count": len(frame), "content_hash": fingerprint, **metadata},
    )
