"""The landing zone where upstream systems drop one file per dataset and day."""

from datetime import date
from typing import Any

import dagster as dg


class LandingZone(dg.ConfigurableResource):
    """Root of the landing zone (local folder or fsspec URL).

    Attributes:
        url: Local folder or URL (``s3://bucket/landing``).
        storage_options: JSON object of fsspec options.
        require_manifests: Whether a day's files wait for the day's manifest
            (``MLOPS_LANDING_MANIFESTS``, ``settings.manifests_required``).
    """

    url: str
    storage_options: str = "{}"
    require_manifests: bool = True

    def root(self) -> Any:
        """The landing root as a UPath (imported here: upath is not needed to load)."""
        from mlops_assets.lib.storage import location

        return location(self.url, self.storage_options)

    def path(self, dataset: str, day: date | None = None) -> Any:
        """Path of a dataset's file for a day (or of a reference table)."""
        from mlops_assets.lib.landing import landing_path

        return landing_path(self.root(), dataset, day)

    def read(self, dataset: str, day: date) -> Any:
        """A day file as strings, once it matches the day's manifest (``read_delivered``)."""
        from mlops_assets.lib.manifest import read_delivered

        return read_delivered(self.root(), dataset, day, require_manifest=self.require_manifests)
