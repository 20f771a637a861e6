"""Releases of made-up bentos, for the tests of lib.release and the deployment repository."""

from __future__ import annotations

from typing import Any

from mlops_assets import settings
from mlops_assets.lib import release as rel

REPOSITORY = rel.DEFAULT_IMAGE_REPOSITORY


def release_of(version: str, bento: str, **extra: Any) -> rel.Release:
    """The release of model ``version`` in bento ``<model>_service:<bento>``, with lineage."""
    tag = f"{settings.MODEL_NAME}_service:{bento}"
    return rel.Release(
        model_name=settings.MODEL_NAME,
        model_version=version,
        bento_tag=tag,
        image=rel.image_reference(tag, REPOSITORY),
        reason=f"Promoted by the gate: v{version} is better",
        mlflow_run_id=f"run{version}",
        training_set_md5=f"md5{version}",
        git_commit="abc1234",
        **extra,
    )
