"""The DVC data registry as a Dagster resource."""

from pathlib import Path

import dagster as dg

from mlops_assets.lib.data_registry import DataRegistry


class DataRegistryResource(dg.ConfigurableResource):
    """A DVC data registry: its own git repository plus a DVC remote.

    Attributes:
        path: Local work tree of the registry repository.
        dvc_remote: DVC remote URL (a local directory by default, ``s3://...`` in production).
        git_remote: Optional git URL to clone from and push to (production).
    """

    path: str
    dvc_remote: str
    git_remote: str | None = None

    def open(self) -> DataRegistry:
        """The plain-Python registry this resource points at."""
        return DataRegistry(Path(self.path), self.dvc_remote, self.git_remote)
