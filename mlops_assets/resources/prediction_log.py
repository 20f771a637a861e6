"""The online prediction log the service writes, read back by the pipeline."""

from typing import Any

import dagster as dg


class PredictionLog(dg.ConfigurableResource):
    """Where the prediction service logs every online prediction (JSON lines per flight date).

    Attributes:
        root: Folder or URL of the log (``MLOPS_PREDICTION_LOG``; locally
            ``<state>/prediction_log``), the same the service writes to.
    """

    root: str

    def read_day(self, day: str) -> Any:
        """The lines logged for the flights of ``day`` (``lib.prediction_log.read_day``)."""
        from mlops_assets.lib.prediction_log import read_day

        return read_day(self.root, day)
