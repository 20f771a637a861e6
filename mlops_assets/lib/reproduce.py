"""Reproduce a registered model from its recorded data version and config; roll back."""

from __future__ import annotations

import io
from dataclasses import dataclass, fields
from typing import Any, get_type_hints

from mlops_assets.lib import estimator, model_tags, modeling
from mlops_assets.lib.data_registry import DataRegistry
from mlops_assets.lib.fingerprints import md5_bytes


class ReproductionError(RuntimeError):
    """The model cannot be reproduced or rolled back as asked."""


@dataclass(frozen=True)
class Reproduction:
    """Recorded and reproduced validation metrics of one model version."""

    data_path: str
    data_rev: str
    data_md5: str
    recorded: dict[str, float]
    reproduced: dict[str, float]

    @property
    def identical(self) -> bool:
        """Whether every recorded metric was reproduced exactly."""
        return all(self.reproduced.get(k) == v for k, v in self.recorded.items())


def _hyper_parameters(params: dict[str, str]) -> estimator.HyperParameters:
    """The estimator's parameters from a run's logged ones (strings); others keep defaults."""
    from pydantic import TypeAdapter

    hints = get_type_hints(estimator.HyperParameters)
    kwargs: dict[str, Any] = {
        spec.name: TypeAdapter(hints[spec.name]).validate_python(params[spec.name])
        for spec in fields(estimator.HyperParameters)
        if spec.name in params
    }
    return estimator.HyperParameters(**kwargs)


def reproduce(tracking: Any, registry: DataRegistry, version: str) -> Reproduction:
    """Restores the training set a version was trained on and retrains with its config.

    Args:
        tracking: The ``MlflowTracking`` resource (client and model name).
        registry: The DVC data registry holding the training-set versions.
        version: Registered model version.

    Raises:
        ReproductionError: if the version, its data or its tags are missing.
    """
    import pandas as pd

    client = tracking.client()
    try:
        model_version = client.get_model_version(tracking.model_name, str(version))
        run = client.get_run(model_version.run_id)
    except Exception as exc:
        raise ReproductionError(f"model version {version} not found: {exc}") from exc
    tags = run.data.tags
    try:
        path = tags[model_tags.DATA_REGISTRY_PATH]
        rev = tags[model_tags.DATA_REGISTRY_REV]
        md5 = tags[model_tags.DATA_DVC_MD5]
    except KeyError as exc:
        raise ReproductionError(f"run {run.info.run_id} has no data-version tag {exc}") from exc
    payload = registry.read(path, rev)
    if md5_bytes(payload) != md5:
        raise ReproductionError(f"{path}@{rev} does not match the recorded md5 {md5}")
    data = pd.read_parquet(io.BytesIO(payload))
    _, reproduced = modeling.fit(data, _hyper_parameters(run.data.params))
    recorded = {k: v for k, v in run.data.metrics.items() if k in reproduced}
    return Reproduction(path, rev, md5, recorded, reproduced)
