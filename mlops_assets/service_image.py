"""``mlops-assets service-image``: the prediction service's container image, made from a bento.

No Docker engine runs next to Dagster, so the ``bento`` asset stops at a built and exported
bento; CI turns it into an image where Docker runs. The bento is the newest one of the service
in the local store, an explicit tag, or an exported ``.bento`` archive imported first. The image
reference is derived from the bento's version (``lib.release.image_reference``), so a release
can tell which bento an image holds. BentoML runs as a child process (``BENTOML_HOME`` set):
this module imports neither BentoML nor Docker's client.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from mlops_assets import settings
from mlops_assets.lib import release
from mlops_assets.lib.release import ReleaseError, image_reference

SERVICE = f"{settings.MODEL_NAME}_service"
DOCKER_INFO_TIMEOUT_S = 60


class ServiceImageError(RuntimeError):
    """The image cannot be made; the message is one line for the command's output."""


@dataclass(frozen=True)
class Plan:
    """What ``service-image`` does: the commands in order and the image they produce."""

    bento_tag: str
    image: str
    commands: tuple[tuple[str, ...], ...]


def image_repository(explicit: str | None, env: Mapping[str, str] | None = None) -> str:
    """``--repository``, else ``MLOPS_IMAGE_REPOSITORY``, else the default repository."""
    return explicit or release.image_repository(os.environ if env is None else env)


def bentoml_environment(home: Path) -> dict[str, str]:
    """The environment of BentoML commands on the store ``home`` (telemetry off)."""
    env = dict(os.environ)
    settings.telemetry_off(env)
    env["BENTOML_HOME"] = str(home)
    # The project's interpreter folder first: its `bentoml` is the locked version.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def _run(command: Sequence[str], env: Mapping[str, str], what: str) -> str:
    """Runs ``command`` capturing its output; a failure becomes one line naming ``what``."""
    try:
        done = subprocess.run(list(command), env=dict(env), capture_output=True, text=True)
    except OSError as error:
        raise ServiceImageError(f"{what} failed: {error}") from error
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines() or [f"exit {done.returncode}"]
        raise ServiceImageError(f"{what} failed: {lines[-1].strip()}")
    return done.stdout


def newest_bento(env: Mapping[str, str]) -> str:
    """The tag of the service's newest bento in the store of ``env``.

    The ``bento`` asset builds one for every change of champion (promotion, trial start and
    end, rollback), so the newest bento serves the current champion.
    """
    # Wide columns: the listing is printed through rich, which wraps at the terminal width.
    wide = {**env, "COLUMNS": "10000"}
    # All bentos, newest first: listing by name fails when there is none.
    listed = json.loads(_run(["bentoml", "list", "-o", "json"], wide, "bentoml list") or "[]")
    bentos = [b for b in listed if str(b["tag"]).partition(":")[0] == SERVICE]
    if not bentos:
        home = env.get("BENTOML_HOME", "")
        raise ServiceImageError(
            f"no bento of {SERVICE} in {home}: run `make demo` first, or pass --bento or "
            "--from-export"
        )
    return str(bentos[0]["tag"])


def export_tag(archive: Path) -> str:
    """The tag of the bento in an exported ``.bento`` archive, read from its ``bento.yaml``."""
    import yaml

    try:
        with tarfile.open(archive, "r:*") as tar:
            member = next(m for m in tar.getmembers() if m.name.lstrip("./") == "bento.yaml")
            handle = tar.extractfile(member)
            info = yaml.safe_load(handle.read()) if handle else None
    except (OSError, tarfile.TarError, StopIteration) as error:
        raise ServiceImageError(f"{archive} is not an exported bento ({error!r})") from error
    if not isinstance(info, dict) or not info.get("name") or not info.get("version"):
        raise ServiceImageError(f"{archive} holds no bento name and version in bento.yaml")
    return f"{info['name']}:{info['version']}"


def _pinned(tag: str) -> str:
    """``tag`` unless it names no fixed version: an image must say which bento it holds."""
    if tag.partition(":")[2] == "latest":
        raise ServiceImageError(
            f"--bento {tag}: name a bento version (without --bento: the newest bento)"
        )
    return tag


def in_store(tag: str, env: Mapping[str, str]) -> bool:
    """Whether the store of ``env`` holds ``tag`` (importing it again would fail)."""
    done = subprocess.run(["bentoml", "get", tag, "-o", "json"], env=dict(env), capture_output=True)
    return done.returncode == 0


def plan(
    env: Mapping[str, str],
    repository: str,
    *,
    bento: str | None = None,
    from_export: Path | None = None,
    push: bool = False,
) -> Plan:
    """Picks the bento and derives the image and the commands that build (and push) it.

    Raises:
        ServiceImageError: no bento to build from, or an unreadable export.
        ReleaseError: a bento tag without a version, or a repository with a tag.
    """
    commands: list[tuple[str, ...]] = []
    if from_export is not None:
        tag = export_tag(from_export)
        if not in_store(tag, env):
            commands.append(("bentoml", "import", str(from_export)))
    elif bento is not None:
        tag = _pinned(bento)
    else:
        tag = newest_bento(env)
    image = image_reference(tag, repository)
    commands.append(("bentoml", "containerize", tag, "-t", image))
    if push:
        commands.append(("docker", "push", image))
    return Plan(tag, image, tuple(commands))


def require_docker_engine() -> None:
    """Fails with one line unless ``docker info`` reaches an engine."""
    try:
        done = subprocess.run(
            ["docker", "info"], capture_output=True, text=True, timeout=DOCKER_INFO_TIMEOUT_S
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        reason = str(error)
    else:
        if done.returncode == 0:
            return
        lines = [line.strip() for line in (done.stderr or done.stdout).splitlines() if line]
        reason = lines[-1] if lines else f"exit {done.returncode}"
    raise ServiceImageError(
        f"building the service image needs a Docker engine (docker info failed: {reason})"
    )


def describe(made: Plan, env: Mapping[str, str]) -> str:
    """The plan's commands as shell lines (BentoML's with the store they use)."""
    home = f"BENTOML_HOME={shlex.quote(env['BENTOML_HOME'])} "
    return "\n".join(
        (home if command[0] == "bentoml" else "") + shlex.join(command) for command in made.commands
    )


def execute(made: Plan, env: Mapping[str, str]) -> None:
    """Runs the plan's commands, their output passed through to stderr."""
    for command in made.commands:
        print(f"$ {shlex.join(command)}", file=sys.stderr, flush=True)
        # Their output goes to stderr: stdout ends with the image reference alone.
        done = subprocess.run(list(command), env=dict(env), stdout=2)
        if done.returncode != 0:
            raise ServiceImageError(f"`{shlex.join(command)}` failed (exit {done.returncode})")


def run(
    *,
    bento: str | None,
    from_export: Path | None,
    repository: str | None,
    push: bool,
    dry_run: bool,
) -> int:
    """The command: prints the commands (dry run) or runs them; the image is the last line."""
    env = bentoml_environment(settings.locations().bentoml_home)
    try:
        if not dry_run:
            require_docker_engine()
        made = plan(
            env,
            image_repository(repository),
            bento=bento,
            from_export=from_export,
            push=push,
        )
        if dry_run:
            print(describe(made, env))
        else:
            execute(made, env)
    except (ServiceImageError, ReleaseError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(made.image)
    return 0
