"""What a model needs installed to predict: one list for the MLflow model and the service.

The MLflow model pins these in its requirements and the service's image installs them, so
the two cannot drift apart. Each consumer adds only what hosts it (``mlflow-skinny`` for the
pyfunc; BentoML brings itself into the image).
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib.metadata import version

from mlops_assets.lib import estimator

# What the scoring code imports at prediction time, whatever the estimator: frames and
# matrices, the planes table (Parquet), the request model generated from the contracts.
GENERIC_PACKAGES = ("numpy", "pandas", "pyarrow", "pandera", "pydantic")


def runtime_packages() -> tuple[str, ...]:
    """Distribution names: the generic packages, then the estimator's (``RUNTIME_PACKAGES``)."""
    return tuple(dict.fromkeys((*GENERIC_PACKAGES, *estimator.RUNTIME_PACKAGES)))


def pinned_requirements(extra: Iterable[str] = ()) -> list[str]:
    """``name==version`` of the runtime packages (then ``extra``) as installed here.

    Pinned from the running environment, which trained the model: inferring requirements
    would cost MLflow seconds per model and could pick up whatever else is imported.
    """
    names = dict.fromkeys((*runtime_packages(), *extra))
    return [f"{name}=={version(name)}" for name in names]
