"""The BentoML store the prediction service is built into.

Builds run ``python -m mlops_assets.serving.build`` in a child process with ``BENTOML_HOME``
set, so the code location never imports BentoML and every build lands in exactly the store
configured here (locally ``<state>/bentoml``).
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import dagster as dg

from mlops_assets import settings
from mlops_assets.lib.release import DEFAULT_IMAGE_REPOSITORY, image_reference

BUILD_TIMEOUT_S = 600
# What a build may see of the environment (plus UV_*, PIP_*, LC_*, XDG_*).
BUILD_VARIABLES = frozenset(
    {"PATH", "HOME", "USER", "LANG", "TMPDIR", "TEMP", "TMP", "SSL_CERT_FILE", "SSL_CERT_DIR"}
)


class BentoBuildError(RuntimeError):
    """Building or exporting the Bento failed (the message carries the build's output)."""


class BentoStore(dg.ConfigurableResource):
    """Where bentos are built (a BentoML home) and exported to.

    Attributes:
        home: ``BENTOML_HOME`` of the builds (models, bentos).
        export_dir: Folder that receives each exported ``.bento`` archive (the build context
            an image is built from where Docker runs).
        image_repository: Where CI pushes the service image of each bento (``MLOPS_IMAGE_
            REPOSITORY``); the image's tag is the bento's version.
    """

    home: str
    export_dir: str
    image_repository: str = DEFAULT_IMAGE_REPOSITORY

    def image(self, bento_tag: str) -> str:
        """The service image CI builds from ``bento_tag`` (``bentoml containerize``)."""
        return image_reference(bento_tag, self.image_repository)

    def environment(self) -> dict[str, str]:
        """Environment of BentoML commands on this store (telemetry off, ``uv`` on PATH).

        Only what a build needs is passed on: no secrets (database passwords, tracking URIs
        with credentials, API keys) reach the build, and the service's production guard
        (``MLOPS_ENV``/``MLOPS_API_KEY``) is a serving-time setting, not a build-time one.
        """
        env = {
            name: value
            for name, value in os.environ.items()
            if name in BUILD_VARIABLES or name.startswith(("UV_", "LC_", "XDG_", "PIP_"))
        }
        settings.telemetry_off(env)
        env["BENTOML_HOME"] = self.home
        # The project's interpreter folder first: `bentoml` and, when installed there, `uv`.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        return env

    def build(
        self,
        bundle: Any,
        labels: dict[str, str],
        challenger: Any = None,
        trial: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Builds and exports a Bento serving ``bundle`` (a ``ScoringBundle``).

        Args:
            bundle: The champion's ``ScoringBundle``.
            labels: Labels of the model and the Bento.
            challenger: The challenger's ``ScoringBundle`` (its ``model`` dict holds its
                identity), stored beside the champion for shadow, canary and A/B trials.
            trial: The Bento's default serving mode, ``{"mode": str, "share": float}``
                (overridden at start by ``MLOPS_SERVING_MODE`` / ``MLOPS_CANARY_SHARE``).

        Returns:
            ``bento_tag``, ``model_tag``, ``challenger_model_tag`` (None without a
            challenger), ``bento_path``, ``size_bytes``, ``export_path``.

        Raises:
            BentoBuildError: with the tail of the build's output.
        """
        env = self.environment()
        if shutil.which("uv", path=env["PATH"]) is None:
            raise BentoBuildError("building a Bento needs `uv` on PATH (BentoML calls it)")
        Path(self.home).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.home, prefix="bundle-") as folder:
            bundle.save(Path(folder) / "champion")
            command = [
                sys.executable,
                "-m",
                "mlops_assets.serving.build",
                str(Path(folder) / "champion"),
                "--labels",
                json.dumps(labels),
                "--export-dir",
                self.export_dir,
                "--trial",
                json.dumps(trial),
            ]
            if challenger is not None:
                challenger.save(Path(folder) / "challenger")
                command += ["--challenger", str(Path(folder) / "challenger")]
            try:
                done = subprocess.run(
                    command,
                    env=env,
                    cwd=settings.project_root(),
                    capture_output=True,
                    text=True,
                    timeout=BUILD_TIMEOUT_S,
                )
            except subprocess.TimeoutExpired as error:
                raise BentoBuildError(f"bento build timed out after {BUILD_TIMEOUT_S} s") from error
        if done.returncode != 0:
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
            raise BentoBuildError(f"bento build failed (exit {done.returncode}):\n{tail}")
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def local_bentos(state: Path, image_repository: str = DEFAULT_IMAGE_REPOSITORY) -> BentoStore:
    """The embedded default: a BentoML home in the state folder."""
    home = settings.Locations(state).bentoml_home
    return BentoStore(
        home=str(home), export_dir=str(home / "exports"), image_repository=image_repository
    )
