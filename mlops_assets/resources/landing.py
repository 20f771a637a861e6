"""The landing zone where upstream systems drop one file per dataset and day."""

from datetime import date
from typing import Any

import dagster as dg


class LandingZone(dg.ConfigurableResource):
    """Root of the landing zone (local folder or fsspec URL).

    Attributes:
        url: Local folder or URL (``s3://bucket/landing``).
        storage_options: JSON object of fsspec options.
    """

    url: str
    storage_options: str = "{}"

    def root(self) -> Any:
        """The landing root as a UPath (imported here: upath is not needed to load)."""
        from mlops_assets.lib.storage import location

        return location(self.url, self.storage_options)

    def path(self, dataset: str, day: date | None = None) -> Any:
        """Path of a dataset's file for a day (or of a reference table)."""
        from mlops_assets.lib.landing import landing_path

        return landing_path(self.root(), dataset, day)
