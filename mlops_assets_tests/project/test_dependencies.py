"""Regression tests for the dvc/dagster dependency conflict (ANTLR runtime versions).

dvc -> hydra-core -> omegaconf pins antlr4-python3-runtime 4.9; dagster's selection parser
needs 4.13. The lock overrides the runtime to 4.13: string selections must parse and DVC's
data commands must still work.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date
from importlib.metadata import version
from pathlib import Path

import dagster as dg

from mlops_assets.definitions import defs


def test_antlr_runtime_is_the_one_dagster_needs():
    assert version("antlr4-python3-runtime").startswith("4.13.")


def test_string_selections_parse_and_resolve():
    graph = defs.resolve_asset_graph()
    selected = dg.AssetSelection.from_string("group:ingestion or key:flight_features").resolve(
        graph
    )
    assert {k.to_user_string() for k in selected} == {
        "raw_flights",
        "raw_weather",
        "flight_features",
    }
    upstream = dg.AssetSelection.from_string("+key:flight_features").resolve(graph)
    assert len(upstream) == 6
    job = defs.resolve_job_def("daily_data")
    assert {k.to_user_string() for k in job.asset_layer.selected_asset_keys} == {
        "raw_flights",
        "raw_weather",
        "flight_features",
    }


def test_dagster_cli_select_parses(tmp_path: Path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dagster",
            "asset",
            "list",
            "-m",
            "mlops_assets.definitions",
            "--select",
            "group:features or key:raw_*",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parents[2],
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(result.stdout.split()) == ["flight_features", "raw_flights", "raw_weather"]


def test_dvc_cli_data_commands_work(tmp_path: Path):
    dvc = [sys.executable, "-m", "dvc"]

    def run(*args: str) -> str:
        done = subprocess.run([*args], cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{args}: {done.stderr[-2000:]}"
        return done.stdout

    run("git", "init", "-q")
    run(*dvc, "init", "-q")
    run(*dvc, "remote", "add", "-d", "local", str(tmp_path / "remote"))
    (tmp_path / "data.csv").write_text("a,b\n1,2\n")
    run(*dvc, "add", "-q", "data.csv")
    run(*dvc, "push", "-q")
    (tmp_path / "data.csv").unlink()
    run(*dvc, "pull", "-q")
    assert (tmp_path / "data.csv").read_text() == "a,b\n1,2\n"
    assert "up to date" in run(*dvc, "status").lower()


def test_dg_loads_the_project_and_launches_a_string_selection(tmp_path: Path):
    from mlops_assets.lib.replay import replay

    state, home = tmp_path / "state", tmp_path / "home"
    home.mkdir()
    root = Path(__file__).parents[2]
    (home / "dagster.yaml").write_bytes((root / "dagster.yaml").read_bytes())
    replay(state / "landing", date(2013, 1, 1), 1)
    env = {**os.environ, "MLOPS_STATE_DIR": str(state), "DAGSTER_HOME": str(home)}
    dg_cli = str(Path(sys.executable).parent / "dg")

    check = subprocess.run(
        [dg_cli, "check", "defs"], cwd=root, env=env, capture_output=True, text=True, timeout=180
    )
    assert check.returncode == 0, check.stdout[-2000:] + check.stderr[-2000:]
    launch = subprocess.run(
        [dg_cli, "launch", "--assets", "group:reference"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert launch.returncode == 0, launch.stderr[-3000:]
    assert sorted(p.name for p in (state / "lake").glob("*.parquet")) == [
        "airlines.parquet",
        "airports.parquet",
        "planes.parquet",
    ]
