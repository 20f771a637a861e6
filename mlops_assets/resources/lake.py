"""The lake: Parquet files under a local folder or any fsspec/UPath URL."""

from typing import Any

import dagster as dg

from mlops_assets.resources.data_registry import DataRegistryResource

# Definition metadata naming where an asset's versions live in the data registry.
REGISTRY_PATH_TEMPLATE = "data_registry_path"


def versioned_in_registry(path: str) -> dict[str, str]:
    """Definition metadata that has the lake IO manager version an asset in the data registry.

    Args:
        path: Path inside the registry; ``{partition}`` stands for the partition key
            (``flight_features/{partition}.parquet``).
    """
    return {REGISTRY_PATH_TEMPLATE: path}


class LakeIOManager(dg.ConfigurableIOManagerFactory):
    """Parquet lake IO manager, configured by a base URL.

    Each asset (partition) is one Parquet file: ``<base>/<asset>/<partition>.parquet``. Assets
    declared with ``versioned_in_registry`` are also committed to the data registry as part of
    the same write, so the lake and the registry hold the same version or neither holds it.

    Attributes:
        base_url: Local folder or URL (``s3://bucket/lake``).
        storage_options: JSON object of fsspec options (credentials come from the environment).
        data_registry: The DVC data registry that versions the declared assets.
    """

    base_url: str
    storage_options: str = "{}"
    data_registry: DataRegistryResource

    def create_io_manager(self, context: dg.InitResourceContext) -> Any:
        """Builds the UPath IO manager for the configured base URL."""
        # upath (and fsspec behind it) load only when a run needs the lake.
        from mlops_assets.lib.storage import location
        from mlops_assets.resources.parquet_io import ParquetLakeIOManager

        return ParquetLakeIOManager(
            base_path=location(self.base_url, self.storage_options),
            registry=self.data_registry.open(),
        )


class LakeReader(dg.ConfigurableResource):
    """Reads stored partitions directly, for assets that pick a window of days themselves.

    Attributes:
        base_url: The same base URL as the lake IO manager.
        storage_options: JSON object of fsspec options.
    """

    base_url: str
    storage_options: str = "{}"

    def read_partitions(self, asset: str, partitions: list[str]) -> dict[str, Any]:
        """Frames of the stored partitions among ``partitions`` (missing ones are skipped)."""
        import pandas as pd

        from mlops_assets.lib.storage import location

        root = location(self.base_url, self.storage_options) / asset
        frames = {}
        for key in partitions:
            path = root / f"{key}.parquet"
            if path.exists():
                with path.open("rb") as handle:
                    frames[key] = pd.read_parquet(handle)
        return frames
