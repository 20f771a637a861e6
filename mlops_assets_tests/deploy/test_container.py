"""The user-code image (Dockerfile), checked without a Docker engine.

`hadolint` lints the Dockerfile; the image's install steps (its COPY and `uv sync` lines, as
written) are replayed in a temporary folder, and the environment they produce must load the
code location, serve `dagster api grpc` and hold no development tool.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from mlops_assets import settings
from mlops_assets.resources.environments import PRODUCTION_VARS

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
HADOLINT_CONFIG = ROOT / ".hadolint.yaml"
DEV_TOOLS = ("pytest", "ruff", "mypy", "schemathesis", "moto", "pandas-stubs", "hadolint")


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def instructions(path: Path = DOCKERFILE) -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    result: list[Instruction] = []
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = (pending + stripped).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        result.append(Instruction(keyword.upper(), " ".join(args.split())))
    assert not pending, "the Dockerfile ends with a continuation line"
    return result


def flags_and_rest(args: str) -> tuple[list[str], str]:
    """Leading ``--flag=value`` options of an instruction, and the rest."""
    flags: list[str] = []
    rest = args
    while rest.startswith("--"):
        flag, _, rest = rest.partition(" ")
        flags.append(flag)
    return flags, rest


def env_of(dockerfile: list[Instruction]) -> dict[str, str]:
    """Every ENV of the Dockerfile (``KEY=value`` pairs; quotes removed)."""
    env: dict[str, str] = {}
    for instruction in dockerfile:
        if instruction.keyword == "ENV":
            for pair in shlex.split(instruction.args):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def telemetry_env(dockerfile: list[Instruction]) -> dict[str, str]:
    """The ENV instruction that turns telemetry off, as a dict; no other ENV touches it."""
    envs = [env_of([i]) for i in dockerfile if i.keyword == "ENV"]
    [telemetry] = [env for env in envs if "DAGSTER_DISABLE_TELEMETRY" in env]
    for env in envs:
        if env is not telemetry:
            assert not env.keys() & settings.TELEMETRY_OFF.keys(), "telemetry set twice"
    return telemetry


def copies(dockerfile: list[Instruction]) -> list[tuple[list[str], str]]:
    """(sources, destination) of every COPY from the build context."""
    result = []
    for instruction in dockerfile:
        if instruction.keyword != "COPY":
            continue
        flags, rest = flags_and_rest(instruction.args)
        if any(flag.startswith("--from=") for flag in flags):
            continue
        *sources, destination = shlex.split(rest)
        result.append((sources, destination))
    return result


# -- .dockerignore, with Docker's rules ---------------------------------------------------------
def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out)


def dockerignore_excludes(path: str, rules: list[str]) -> bool:
    """Whether the build context leaves out ``path`` (last matching rule wins; a rule that
    matches a parent folder matches everything in it)."""
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for rule in rules:
        negated = rule.startswith("!")
        pattern = os.path.normpath(rule.lstrip("!").strip()).lstrip("/")
        regex = _pattern_regex(pattern)
        if any(regex.fullmatch(candidate) for candidate in candidates):
            excluded = not negated
    return excluded


def dockerignore_rules() -> list[str]:
    lines = (line.strip() for line in DOCKERIGNORE.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


# -- tests ----------------------------------------------------------------------------------------
def _hadolint() -> str | None:
    venv_bin = str(Path(sys.executable).parent)
    return shutil.which("hadolint", path=os.pathsep.join([venv_bin, os.environ.get("PATH", "")]))


@pytest.mark.skipif(_hadolint() is None, reason="hadolint is not installed (dev group)")
def test_hadolint_passes() -> None:
    done = subprocess.run(
        [str(_hadolint()), "--no-color", "--config", str(HADOLINT_CONFIG), str(DOCKERFILE)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_ignored_hadolint_rule_has_a_reason() -> None:
    import yaml

    text = HADOLINT_CONFIG.read_text()
    config = yaml.safe_load(text)
    assert config["failure-threshold"] == "info"
    for rule in config.get("ignored", []):
        assert re.search(rf"^\s*#.*{rule}\b.*\S", text, re.MULTILINE), f"no reason given for {rule}"


def test_image_settings() -> None:
    dockerfile = instructions()
    env = env_of(dockerfile)
    assert env["MLOPS_ENV"] == "production"
    assert telemetry_env(dockerfile) == settings.TELEMETRY_OFF
    assert env["UV_PROJECT_ENVIRONMENT"] == "/opt/venv"
    assert env["PATH"].startswith("/opt/venv/bin:")

    [user] = [i.args for i in dockerfile if i.keyword == "USER"]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0 and gid.isdigit() and int(gid) > 0
    # USER comes after every RUN: nothing the image runs at build time runs as that user...
    keywords = [i.keyword for i in dockerfile]
    assert keywords.index("USER") > max(i for i, k in enumerate(keywords) if k == "RUN")
    # ...and the container's command is the code server (no ENTRYPOINT: the Helm chart and
    # the run launcher pass whole commands as args).
    assert "ENTRYPOINT" not in keywords
    [cmd] = [json.loads(i.args) for i in dockerfile if i.keyword == "CMD"]
    assert cmd[:3] == ["dagster", "api", "grpc"]
    assert cmd[cmd.index("-m") + 1] == "mlops_assets.definitions"
    assert cmd[cmd.index("-h") + 1] == "0.0.0.0"
    [expose] = [i.args for i in dockerfile if i.keyword == "EXPOSE"]
    assert cmd[cmd.index("-p") + 1] == expose


def test_dependencies_are_installed_before_the_project_is_copied() -> None:
    dockerfile = instructions()
    syncs = [n for n, i in enumerate(dockerfile) if i.keyword == "RUN" and "uv sync" in i.args]
    assert len(syncs) == 2
    first, second = (flags_and_rest(dockerfile[n].args)[1] for n in syncs)
    assert "--no-install-project" in first
    for command in (first, second):
        assert "--frozen" in command and "--no-dev" in command
    copied_before = {
        source
        for n, i in enumerate(dockerfile[: syncs[0]])
        if i.keyword == "COPY"
        for source in shlex.split(flags_and_rest(i.args)[1])[:-1]
        if not flags_and_rest(i.args)[0]
    }
    assert copied_before == {"pyproject.toml", "uv.lock"}, "the dependency layer must not depend "
    "on the project's code"


def test_copied_files_exist_and_reach_the_build_context() -> None:
    rules = dockerignore_rules()
    copied = [source for sources, _ in copies(instructions()) for source in sources]
    assert copied
    for source in copied:
        assert (ROOT / source).exists(), f"COPY {source}: no such file in the repository"
        assert not dockerignore_excludes(source, rules), f".dockerignore drops {source}"
    for source in ("mlops_assets/definitions.py", "mlops_assets/serving/service.py"):
        assert not dockerignore_excludes(source, rules)


@pytest.mark.parametrize(
    "path",
    [
        "state",
        "state/lake/raw_flights/2013-01-01.parquet",
        ".venv",
        ".venv/bin/python",
        ".git",
        ".git/HEAD",
        "mlops_assets/__pycache__/settings.cpython-311.pyc",
        "mlops_assets_tests/deploy/test_container.py",
        "deploy/compose/.env",
        "benchmarks/results/load_time.json",
    ],
)
def test_dockerignore_leaves_out(path: str) -> None:
    assert dockerignore_excludes(path, dockerignore_rules())


def test_dockerignore_matcher_follows_docker_rules() -> None:
    rules = ["*", "!src", "**/__pycache__", "docs/*.md", "!docs/keep.md"]
    assert dockerignore_excludes("state/x", rules)
    assert not dockerignore_excludes("src/a.py", rules)
    assert dockerignore_excludes("src/__pycache__/a.pyc", rules)
    assert dockerignore_excludes("__pycache__", rules)
    assert dockerignore_excludes("docs/a.md", rules)
    assert not dockerignore_excludes("docs/keep.md", rules[3:])


@pytest.mark.timeout(300)  # slow but fine: ~5 s with a warm uv cache, more when it is cold
def test_install_steps_build_a_working_environment(tmp_path: Path) -> None:
    """Replays WORKDIR, COPY and `uv sync` of the Dockerfile exactly, in a fresh folder.

    The only differences from the image build: the environment lands in a temporary folder
    (UV_PROJECT_ENVIRONMENT), packages are hard-linked from uv's cache and not compiled to
    bytecode (how they are installed, not what), and the interpreter is this one's base
    Python (the image has python:3.11 from its base image).
    """
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not on PATH")
    dockerfile = instructions()
    app = tmp_path / "app"
    venv = tmp_path / "venv"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("UV_", "MLOPS_", "DAGSTER_")) and k not in ("VIRTUAL_ENV",)
    }
    env.update({k: v for k, v in env_of(dockerfile).items() if k.startswith("UV_")})
    env.update(
        UV_PROJECT_ENVIRONMENT=str(venv),
        UV_LINK_MODE="hardlink",
        UV_COMPILE_BYTECODE="0",
        UV_PYTHON=getattr(sys, "_base_executable", sys.executable),
    )

    workdir: Path | None = None
    ran: list[str] = []
    started = time.perf_counter()
    for instruction in dockerfile:
        flags, rest = flags_and_rest(instruction.args)
        if instruction.keyword == "WORKDIR":
            assert rest == "/app"
            workdir = app
            workdir.mkdir(parents=True, exist_ok=True)
        elif instruction.keyword == "COPY" and not any(f.startswith("--from=") for f in flags):
            assert workdir is not None, "COPY before WORKDIR"
            *sources, destination = shlex.split(rest)
            target = workdir / destination
            for source in sources:
                origin = ROOT / source
                if origin.is_dir():
                    shutil.copytree(
                        origin, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
                    )
                else:
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(origin, target / origin.name)
        elif instruction.keyword == "RUN" and "uv sync" in rest:
            assert workdir is not None, "uv sync before WORKDIR"
            assert not re.search(r"&&|;|\|", rest), f"keep `uv sync` alone on its line: {rest}"
            argv = shlex.split(rest)
            assert argv[:2] == ["uv", "sync"]
            done = subprocess.run(
                [uv, *argv[1:]], cwd=workdir, env=env, capture_output=True, text=True, timeout=280
            )
            assert done.returncode == 0, f"{rest}\n{done.stderr[-3000:]}"
            ran.append(rest)
    assert len(ran) == 2
    installed_s = time.perf_counter() - started

    python = venv / "bin" / "python"
    runtime = {
        **{k: v for k, v in env.items() if not k.startswith("UV_")},
        **{k: v for k, v in env_of(dockerfile).items() if not k.startswith(("UV_", "PATH"))},
        "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        settings.STATE_DIR_VAR: str(tmp_path / "state"),
        **{name: f"s3://bucket/{name.lower()}" for name in PRODUCTION_VARS},
        "MLFLOW_TRACKING_URI": "http://mlflow:5000",
    }
    probe = (
        "import warnings; warnings.simplefilter('ignore');"
        "import mlops_assets, mlops_assets.definitions as d;"
        "print(mlops_assets.__file__);"
        "print(sorted(j.name for j in d.defs.resolve_all_job_defs()))"
    )
    done = subprocess.run(
        [str(python), "-c", probe],
        cwd=tmp_path,
        env=runtime,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    location, jobs = done.stdout.strip().splitlines()[-2:]
    assert Path(location).is_relative_to(app), location
    assert "training" in jobs

    done = subprocess.run(
        [str(venv / "bin" / "dagster"), "api", "grpc", "--help"],
        env=runtime,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "--module-name" in done.stdout

    check = (
        "import importlib.util, json;"
        f"print(json.dumps([m for m in {['pytest', 'ruff', 'mypy', 'schemathesis', 'moto']!r}"
        " if importlib.util.find_spec(m)]))"
    )
    done = subprocess.run(
        [str(python), "-c", check],
        cwd=tmp_path,
        env=runtime,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout) == [], "development packages in the image"
    for tool in ("pytest", "ruff", "mypy", "hadolint", "st"):
        assert not (venv / "bin" / tool).exists(), f"{tool} installed in the image"
    print(f"install steps replayed in {installed_s:.1f} s")
