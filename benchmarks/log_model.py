"""``mlflow.pyfunc.log_model`` with and without explicit requirements (``benchmarks.training``).

Once each, after one unreported warm-up call, into a scratch MLflow SQLite store: the same
``DelayModel`` with the same signature and input example, no registration. The variants:
the project's explicit ``pip_requirements()``, the same with ``MLFLOW_LOG_UV_FILES=false``,
and MLflow's inference (``uv export`` when the working directory is a uv project; with
``MLFLOW_UV_AUTO_DETECT=false``, a subprocess that loads the model and records its imports).
"""

from __future__ import annotations

import contextlib
import gc
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.training_probes import Probes


@contextlib.contextmanager
def patched_env(values: dict[str, str]) -> Iterator[None]:
    """Sets environment variables for the block, then restores them."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def scratch_store(folder: Path) -> Iterator[tuple[str, str]]:
    """A new MLflow SQLite store as the tracking and registry URI; yields it and an experiment."""
    import mlflow

    folder.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    previous = (mlflow.get_tracking_uri(), mlflow.get_registry_uri())
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        client = mlflow.MlflowClient(uri)
        yield uri, client.create_experiment("log-model", artifact_location=folder.as_uri() + "/art")
    finally:
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])


def variants() -> list[tuple[str, dict[str, Any], dict[str, str]]]:
    """(label, ``log_model`` keyword arguments, environment) of each variant."""
    from mlops_assets.lib.pyfunc import pip_requirements

    return [
        ("warm-up (explicit, not reported)", {"pip_requirements": pip_requirements()}, {}),
        ("explicit `pip_requirements` (the project)", {"pip_requirements": pip_requirements()}, {}),
        (
            "explicit, `MLFLOW_LOG_UV_FILES=false`",
            {"pip_requirements": pip_requirements()},
            {"MLFLOW_LOG_UV_FILES": "false"},
        ),
        ("inferred, MLflow default (cwd = uv project: `uv export`)", {}, {}),
        (
            "inferred, `MLFLOW_UV_AUTO_DETECT=false` (subprocess loads the model)",
            {},
            {"MLFLOW_UV_AUTO_DETECT": "false"},
        ),
    ]


def model_example(data: Any, classifier: Any) -> tuple[Any, Any]:
    """Input example (5 rows, numeric columns as float) and signature, as the asset logs."""
    from mlflow.models import infer_signature

    from mlops_assets.lib import modeling

    numeric = {c: "float64" for c in classifier.features if c not in modeling.CATEGORICAL_FEATURES}
    example = data[classifier.features].head(5).astype(numeric)
    return example, infer_signature(example, classifier.predict_proba(example))


def logged_artifacts(model_uri: str, scratch: Path) -> dict[str, Any]:
    """Requirements, ``uv.lock`` presence and size of a logged model's artifacts."""
    import mlflow.artifacts

    folder = Path(mlflow.artifacts.download_artifacts(model_uri, dst_path=str(scratch)))
    requirements = [
        line
        for line in (folder / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    found = {
        "requirements": len(requirements),
        "requirements_head": requirements[:12],
        "uv_lock_copied": (folder / "uv.lock").exists(),
        "artifact_bytes": sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()),
    }
    shutil.rmtree(folder, ignore_errors=True)
    return found


def compare_log_model(tmp: Path, data: Any, classifier: Any, probes: Probes) -> dict[str, Any]:
    """``log_model`` of the same model with and without explicit requirements, once each."""
    import mlflow

    from mlops_assets.lib.pyfunc import DelayModel

    example, signature = model_example(data, classifier)
    results = []
    with scratch_store(tmp / "scratch-mlflow") as (uri, experiment):
        for label, kwargs, env in variants():
            gc.collect()
            with (
                patched_env(env),
                mlflow.start_run(experiment_id=experiment) as run,
                probes.recording() as inner,
            ):
                start = time.perf_counter()
                info = mlflow.pyfunc.log_model(
                    name="model",
                    python_model=DelayModel(classifier),
                    signature=signature,
                    input_example=example,
                    **kwargs,
                )
                seconds = time.perf_counter() - start
            found = logged_artifacts(info.model_uri, tmp / "dl")
            results.append(
                {
                    "label": label,
                    "seconds": seconds,
                    "infer_requirements_s": inner.get("infer_requirements", 0.0),
                    **found,
                    "run_id": run.info.run_id,
                }
            )
            print(
                f"log_model {label}: {seconds:.2f} s, {found['requirements']} requirement(s)",
                flush=True,
            )
    return {"store": uri, "variants": results[1:], "warmup": results[0]}


def report_log_model(log_model: dict[str, Any] | None) -> None:
    """Prints the comparison as a Markdown table (nothing when it was skipped)."""
    if not log_model:
        return
    print(
        "\n| `mlflow.pyfunc.log_model` (no registration), once each | seconds | "
        "requirements | inference | `uv.lock` in artifacts | artifacts |"
    )
    print("|---|---:|---:|---:|---|---:|")
    for variant in log_model["variants"]:
        print(
            f"| {variant['label']} | {variant['seconds']:.2f} | {variant['requirements']} | "
            f"{variant['infer_requirements_s']:.2f} | "
            f"{'yes' if variant['uv_lock_copied'] else 'no'} | "
            f"{variant['artifact_bytes'] / 1024:.0f} KiB |"
        )
