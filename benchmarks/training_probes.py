"""Pass-through timers around the library calls ``candidate_model`` makes (``benchmarks.training``).

The probes replace attributes with ``unittest.mock.patch`` (looked up at call time, so
patchable) and record only while ``Probes.recording()`` is active.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import time
from collections.abc import Iterator
from typing import Any
from unittest import mock

# Breakdown of the pipeline: (key, label, parent key or None). Top-level stages add up (with
# "dagster_and_rest") to the pipeline total; sub-stages are parts of their parent.
STAGES = (
    ("load_training_set", "load `training_set` from the lake (IO manager)", None),
    ("run_start", "MLflow run start (`training_run` enter)", None),
    ("git_fingerprint", "git commit + `uv.lock` hash (2 `git` subprocesses)", "run_start"),
    ("close_abandoned", "search runs left RUNNING", "run_start"),
    ("dagster_mlflow", "dagster-mlflow `MlFlow` (find or start the run, tags)", "run_start"),
    ("fit", "`modeling.fit` (the bare fit, inside the asset)", None),
    ("log_small", "`log_params` + `log_metrics` + `log_text` (importances CSV)", None),
    ("plot", "importance plot (matplotlib figure)", None),
    ("log_figure", "`log_figure` (PNG render + artifact)", None),
    ("signature", "`infer_signature`", None),
    ("log_model", "`mlflow.pyfunc.log_model` (explicit requirements)", None),
    ("lm_create", "create the LoggedModel (+ metrics copied to it)", "log_model"),
    ("lm_save", "`save_model` (pickle, MLmodel, env files)", "log_model"),
    ("lm_validate", "validate the serving input (reload + predict)", "log_model"),
    ("lm_artifacts", "copy the model artifacts to the store", "log_model"),
    ("lm_register", "register the model version", "log_model"),
    ("alias_tag", "set `challenger` alias + version tag", None),
    ("run_end", "MLflow run end (`training_run` exit)", None),
)
TOP_STAGES = [key for key, _, parent in STAGES if parent is None]


class Probes:
    """Timers wrapped around library calls; they only record while ``active``.

    Top-level probes record only their outermost call that is not inside another top-level
    probe (so the top level never counts a second time what a nested call already counts).
    """

    def __init__(self) -> None:
        self.times: dict[str, float] = {}
        self.active = False
        self._top_depth = 0
        self._patches: list[Any] = []

    def _record(self, key: str, seconds: float) -> None:
        self.times[key] = self.times.get(key, 0.0) + seconds

    @contextlib.contextmanager
    def recording(self) -> Iterator[dict[str, float]]:
        """Records into a fresh dict for the duration of the block."""
        self.times = {}
        self.active = True
        try:
            yield self.times
        finally:
            self.active = False

    def _patch(self, owner: Any, attr: str, replacement: Any) -> None:
        patcher = mock.patch.object(owner, attr, replacement)
        patcher.start()
        self._patches.append(patcher)

    def wrap(self, owner: Any, attr: str, key: str, *, top: bool) -> None:
        """Replaces ``owner.attr`` by a timed pass-through (until ``remove``)."""
        original = getattr(owner, attr)
        probes = self

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if not probes.active:
                return original(*args, **kwargs)
            counted = not top or probes._top_depth == 0
            if top:
                probes._top_depth += 1
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                if top:
                    probes._top_depth -= 1
                if counted:
                    probes._record(key, time.perf_counter() - start)

        self._patch(owner, attr, timed)

    def wrap_context(self, owner: Any, attr: str, enter_key: str, exit_key: str) -> None:
        """Times the enter and the exit of a context-manager method separately."""
        original = getattr(owner, attr)
        probes = self

        def exit_timed(manager: Any, *exc_info: Any) -> Any:
            start = time.perf_counter()
            suppress = manager.__exit__(*exc_info)
            if probes.active:
                probes._record(exit_key, time.perf_counter() - start)
            return suppress

        @contextlib.contextmanager
        def timed(*args: Any, **kwargs: Any) -> Iterator[Any]:
            manager = original(*args, **kwargs)
            start = time.perf_counter()
            value = manager.__enter__()
            if probes.active:
                probes._record(enter_key, time.perf_counter() - start)
            try:
                yield value
            except BaseException:
                if not exit_timed(manager, *sys.exc_info()):
                    raise
            else:
                exit_timed(manager, None, None, None)

        self._patch(owner, attr, timed)

    def remove(self) -> None:
        """Restores every wrapped attribute."""
        for patcher in reversed(self._patches):
            patcher.stop()
        self._patches.clear()


def install_probes(probes: Probes) -> None:
    """Wraps the calls ``candidate_model`` makes (looked up at call time, so patchable)."""
    import dagster_mlflow.resources
    import mlflow
    import mlflow.models
    import mlflow.models.model
    import mlflow.models.utils
    import mlflow.pyfunc
    import mlflow.tracking._model_registry.fluent as registry_fluent

    from mlops_assets.defs import training
    from mlops_assets.lib import modeling
    from mlops_assets.resources import tracking
    from mlops_assets.resources.parquet_io import ParquetLakeIOManager

    probes.wrap(ParquetLakeIOManager, "load_from_path", "load_training_set", top=True)
    probes.wrap_context(tracking.MlflowTracking, "training_run", "run_start", "run_end")
    probes.wrap(tracking, "project_fingerprint", "git_fingerprint", top=False)
    probes.wrap(tracking.MlflowTracking, "close_abandoned_runs", "close_abandoned", top=False)
    probes.wrap(dagster_mlflow.resources.MlFlow, "__init__", "dagster_mlflow", top=False)
    probes.wrap(modeling, "fit", "fit", top=True)
    for name in ("log_params", "log_metrics", "log_text"):
        probes.wrap(mlflow, name, "log_small", top=True)
    probes.wrap(training, "_importance_plot", "plot", top=True)
    probes.wrap(mlflow, "log_figure", "log_figure", top=True)
    probes.wrap(mlflow.models, "infer_signature", "signature", top=True)
    probes.wrap(mlflow.pyfunc, "log_model", "log_model", top=True)
    probes.wrap(mlflow.models.model, "_create_logged_model", "lm_create", top=False)
    probes.wrap(mlflow.pyfunc, "save_model", "lm_save", top=False)
    probes.wrap(mlflow.models.utils, "_validate_serving_input", "lm_validate", top=False)
    probes.wrap(mlflow.MlflowClient, "log_model_artifacts", "lm_artifacts", top=False)
    probes.wrap(registry_fluent, "_register_model", "lm_register", top=False)
    probes.wrap(mlflow.models, "infer_pip_requirements", "infer_requirements", top=False)
    probes.wrap(mlflow.MlflowClient, "set_registered_model_alias", "alias_tag", top=True)
    probes.wrap(mlflow.MlflowClient, "set_model_version_tag", "alias_tag", top=True)
