"""The lake sink of streamed predictions and the published scoring bundles, as resources.

Both live outside the code location's IO: the stream scorer (``mlops_assets.streaming``)
writes the sink and reads the bundles; the graph publishes the bundles and reads the sink.
"""

from collections.abc import Mapping
from typing import Any

import dagster as dg

from mlops_assets.lib.scoring_bundles import ROOT_VARIABLE as BUNDLES_VAR
from mlops_assets.lib.stream_sink import ROOT_VARIABLE as STREAM_SINK_VAR

# Optional production settings of streaming (``environments.OPTIONAL_PRODUCTION_VARS``).
OPTIONAL_PRODUCTION_VARS: dict[str, str] = {
    STREAM_SINK_VAR: "where the stream scorer writes its predictions, read back daily by "
    "`stream_predictions` (default <MLOPS_LAKE_URL>/stream_sink)",
    BUNDLES_VAR: "where the champion's scoring bundle is published for the stream scorer "
    "(default <MLOPS_LAKE_URL>/scoring_bundles)",
}


class StreamSink(dg.ConfigurableResource):
    """Where the stream scorer writes its predictions (``lib.stream_sink``).

    Attributes:
        root: Folder or URL (``MLOPS_STREAM_SINK``; locally ``<state>/lake/stream_sink``),
            the same the scorer writes to.
    """

    root: str

    def listing(self) -> dict[str, list[str]]:
        """Day folder -> part names: names only, nothing is read (for the sensor)."""
        from mlops_assets.lib.stream_sink import days, parts

        return {day: parts(self.root, day) for day in days(self.root)}

    def read_day(self, day: str) -> tuple[Any, int]:
        """The day's predictions, one row per event id, and the rows its parts hold."""
        from mlops_assets.lib.stream_sink import deduplicate, read_raw

        rows = read_raw(self.root, day)
        return deduplicate(rows), len(rows)


class ScoringBundles(dg.ConfigurableResource):
    """Where the champion's scoring bundle is published for scorers outside the code location.

    Attributes:
        root: Folder or URL (``MLOPS_SCORING_BUNDLES``; locally ``<state>/lake/scoring_bundles``).
    """

    root: str

    def publish(self, bundle: Any) -> dict[str, Any]:
        """Publishes ``bundle`` (``lib.scoring_bundles.publish``) as the champion.

        Returns:
            ``model_version``, ``where`` (the version's folder) and ``files``: name -> bytes.
        """
        from mlops_assets.lib.scoring_bundles import publish
        from mlops_assets.lib.storage import location

        version = publish(self.root, bundle)
        files = {name: len(content) for name, content in sorted(bundle.files().items())}
        return {
            "model_version": version,
            "where": str(location(self.root) / version),
            "files": files,
        }

    def champion_version(self) -> str | None:
        """The version the scorers serve now (None before the first publication)."""
        from mlops_assets.lib.scoring_bundles import champion_version

        return champion_version(self.root)


def stream_resources(env: Mapping[str, str]) -> dict[str, Any]:
    """The sink and the bundles' roots for ``env``: the stream scorer's defaults.

    ``MLOPS_STREAM_SINK`` and ``MLOPS_SCORING_BUNDLES`` name them; else in production
    ``<MLOPS_LAKE_URL>/stream_sink`` and ``<MLOPS_LAKE_URL>/scoring_bundles``, locally the
    same folders of the state's lake. The scorer reads the same variables, so both agree.
    """
    from mlops_assets.lib import scoring_bundles, stream_sink

    return {
        "stream_sink": StreamSink(root=stream_sink.default_root(env)),
        "scoring_bundles": ScoringBundles(root=scoring_bundles.default_root(env)),
    }
