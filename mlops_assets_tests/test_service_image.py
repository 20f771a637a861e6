"""service_image.py: which bento, which image, which commands; the refusals, one line each.

The command runs as a child process (`python -m mlops_assets.cli`) on a tiny real BentoML
store: two bentos of a one-endpoint service under the service's name and one of another
service, built once for the module (a few seconds; no image is ever built here).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mlops_assets import settings
from mlops_assets.lib.release import DEFAULT_IMAGE_REPOSITORY, IMAGE_REPOSITORY_VAR
from mlops_assets.service_image import SERVICE, export_tag, image_repository

ENGINE_LINE = "error: building the service image needs a Docker engine (docker info failed: "

BUILD = """
import json, sys
import bentoml

built = []
for module in ("older", "other", "newer"):
    built.append(str(bentoml.bentos.build(f"{module}:Service", build_ctx=".").tag))
export = bentoml.bentos.export_bento(built[0], sys.argv[1])
print(json.dumps({"older": built[0], "other": built[1], "newer": built[2], "export": export}))
"""


def _service(name: str) -> str:
    return textwrap.dedent(
        f"""
        import bentoml

        @bentoml.service(name="{name}")
        class Service:
            @bentoml.api
            def ping(self) -> str:
                return "ok"
        """
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A state folder whose BentoML store holds two bentos of the service, one of another."""
    state = tmp_path_factory.mktemp("state")
    source = tmp_path_factory.mktemp("service")
    for module, name in (("older", SERVICE), ("other", "another_service"), ("newer", SERVICE)):
        (source / f"{module}.py").write_text(_service(name))
    env = _env(state)
    done = subprocess.run(
        [sys.executable, "-c", BUILD, str(source / "older.bento")],
        cwd=source,
        env={**env, "BENTOML_HOME": str(settings.Locations(state).bentoml_home)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return {"state": str(state), **json.loads(done.stdout.strip().splitlines()[-1])}


def _env(state: Path | str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != IMAGE_REPOSITORY_VAR}
    env[settings.STATE_DIR_VAR] = str(state)
    settings.telemetry_off(env)
    return env


def service_image(state: Path | str, *args: str, **extra: str) -> subprocess.CompletedProcess:
    """``mlops-assets service-image ARGS`` on the state folder ``state``."""
    return subprocess.run(
        [sys.executable, "-m", "mlops_assets.cli", "service-image", *args],
        env={**_env(state), **extra},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_repository_from_the_flag_the_variable_or_the_default() -> None:
    env = {IMAGE_REPOSITORY_VAR: "ghcr.io/team/service"}
    assert image_repository("ghcr.io/x/y", env) == "ghcr.io/x/y"
    assert image_repository(None, env) == "ghcr.io/team/service"
    assert image_repository(None, {}) == DEFAULT_IMAGE_REPOSITORY


def test_dry_run_of_an_explicit_bento_prints_the_commands_and_the_image_last(
    tmp_path: Path,
) -> None:
    done = service_image(
        tmp_path,
        "--bento",
        f"{SERVICE}:v7abc",
        "--push",
        "--dry-run",
        MLOPS_IMAGE_REPOSITORY="ghcr.io/team/svc",
    )
    assert done.returncode == 0, done.stderr
    home = settings.Locations(tmp_path).bentoml_home
    assert done.stdout.splitlines() == [
        f"BENTOML_HOME={home} bentoml containerize {SERVICE}:v7abc -t ghcr.io/team/svc:v7abc",
        "docker push ghcr.io/team/svc:v7abc",
        "ghcr.io/team/svc:v7abc",
    ]


def test_the_default_is_the_newest_bento_of_the_service(store: dict[str, str]) -> None:
    done = service_image(store["state"], "--dry-run", "--repository", "ghcr.io/team/svc")
    assert done.returncode == 0, done.stderr
    version = store["newer"].partition(":")[2]
    assert store["other"] != store["newer"]
    assert f"bentoml containerize {store['newer']} -t ghcr.io/team/svc:{version}" in done.stdout
    assert done.stdout.splitlines()[-1] == f"ghcr.io/team/svc:{version}"


def test_an_export_is_imported_into_a_store_without_it(
    store: dict[str, str], tmp_path: Path
) -> None:
    archive = store["export"]
    assert export_tag(Path(archive)) == store["older"]
    fresh = service_image(tmp_path, "--from-export", archive, "--dry-run")
    assert fresh.returncode == 0, fresh.stderr
    lines = fresh.stdout.splitlines()
    assert lines[0].endswith(f"bentoml import {archive}")
    assert f"bentoml containerize {store['older']} -t " in lines[1]
    # The store that built it holds it already: importing again would fail.
    again = service_image(store["state"], "--from-export", archive, "--dry-run")
    assert "bentoml import" not in again.stdout
    assert again.stdout.splitlines()[-1] == fresh.stdout.splitlines()[-1]


def test_an_empty_store_or_a_file_that_is_no_export_is_refused(tmp_path: Path) -> None:
    empty = service_image(tmp_path, "--dry-run")
    assert empty.returncode == 1
    assert empty.stderr.strip() == (
        f"error: no bento of {SERVICE} in {settings.Locations(tmp_path).bentoml_home}: "
        "run `make demo` first, or pass --bento or --from-export"
    )
    (tmp_path / "not.bento").write_text("plain text")
    bad = service_image(tmp_path, "--from-export", str(tmp_path / "not.bento"), "--dry-run")
    assert bad.returncode == 1
    assert bad.stderr.startswith(f"error: {tmp_path / 'not.bento'} is not an exported bento")


def test_a_tag_without_a_version_or_with_latest_is_refused(tmp_path: Path) -> None:
    done = service_image(tmp_path, "--bento", SERVICE, "--dry-run")
    assert done.returncode == 1
    assert done.stderr.strip() == f"error: a bento tag is <name>:<version>, got '{SERVICE}'"
    latest = service_image(tmp_path, "--bento", f"{SERVICE}:latest", "--dry-run")
    assert latest.returncode == 1
    assert "name a bento version" in latest.stderr
    tagged = service_image(
        tmp_path, "--bento", f"{SERVICE}:v1", "--repository", "r/x:1", "--dry-run"
    )
    assert tagged.returncode == 1
    assert tagged.stderr.strip() == "error: an image repository has no tag or digest, got 'r/x:1'"


def _engine_reachable() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(_engine_reachable(), reason="a Docker engine is reachable here")
def test_without_a_docker_engine_it_fails_with_one_line(tmp_path: Path) -> None:
    done = service_image(tmp_path, "--bento", f"{SERVICE}:v1", "--push")
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith(ENGINE_LINE)
    assert len(done.stderr.strip().splitlines()) == 1
